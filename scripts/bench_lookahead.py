"""Cost of Lookahead over its inner optimizer, side by side in one process.

(a) optimizer step only: Lookahead(SGD momentum 0.9, wd) vs the same SGD, on ResNet-18's 11.2M
    parameters, averaged over whole k-cycles (k-1 plain steps + one step with the sync);
(b) the same difference against a whole training step (forward, backward, step) of the CIFAR
    ResNet-18 at batch 128.
Timings interleave the variants and report medians over repeats.

    python scripts/bench_lookahead.py [--k 5] [--repeats 15] [--batch 128] [--threads 0] [--device cpu]
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from algorithms.lookahead import Lookahead  # noqa: E402
from models.resnet import cifar_resnet18  # noqa: E402
from runners.core import hardware  # noqa: E402


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_cycles(opt, k, cycles, device) -> float:
    sync(device)
    t = time.perf_counter()
    for _ in range(cycles * k):
        opt.step()
    sync(device)
    return (time.perf_counter() - t) / (cycles * k)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--record", default=None, help="write the figures as results/<paper>/bench/<name>/summary.json")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--cycles", type=int, default=4)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--train-steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=None, help="append the printed report to this file")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)

    base = cifar_resnet18(10).to(device)
    models = {name: copy.deepcopy(base) for name in ("sgd", "lookahead", "lookahead_fused")}
    for m in models.values():
        for p in m.parameters():
            p.grad = torch.randn_like(p) * 1e-3
    hp = dict(lr=0.05, momentum=0.9, weight_decay=1e-3)
    opts = {"sgd": torch.optim.SGD(models["sgd"].parameters(), **hp),
            "lookahead": Lookahead(torch.optim.SGD(models["lookahead"].parameters(), **hp), k=args.k, alpha=0.8),
            "lookahead_fused": Lookahead(torch.optim.SGD(models["lookahead_fused"].parameters(), **hp), k=args.k,
                                         alpha=0.8, fused_sync=True)}
    n_params = sum(p.numel() for p in base.parameters())
    for o in opts.values():          # warm-up: momentum buffers exist, allocator primed, sync compiled
        time_cycles(o, args.k, 1, device)
    times = {n: [] for n in opts}
    for _ in range(args.repeats):
        for n, o in opts.items():
            times[n].append(time_cycles(o, args.k, args.cycles, device))
    med = {n: statistics.median(v) for n, v in times.items()}

    # a whole training step of the same network (forward, backward, SGD step)
    model = models["sgd"]
    x = torch.randn(args.batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    train_times = []
    for i in range(args.train_steps + 1):
        sync(device)
        t = time.perf_counter()
        opts["sgd"].zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opts["sgd"].step()
        sync(device)
        if i:   # the first step is warm-up
            train_times.append(time.perf_counter() - t)
    train_step = statistics.median(train_times)
    extra = med["lookahead"] - med["sgd"]
    extra_fused = med["lookahead_fused"] - med["sgd"]

    lines = [
        f"# Lookahead(SGD) vs SGD on CIFAR ResNet-18 ({n_params / 1e6:.2f}M params), k={args.k}, "
        f"device={device}, {hardware()}",
        f"# command: python scripts/bench_lookahead.py {' '.join(sys.argv[1:])}",
        f"sgd_step_ms            {med['sgd'] * 1e3:8.3f}",
        f"lookahead_step_ms      {med['lookahead'] * 1e3:8.3f}   (mean over whole {args.k}-step cycles)",
        f"optimizer_step_ratio   {med['lookahead'] / med['sgd']:8.3f}x   (foreach lerp_ + copy_ sync; target <= 1.10x)",
        f"lookahead_fused_ms     {med['lookahead_fused'] * 1e3:8.3f}   (fused_sync=True: torch.compile'd sync)",
        f"fused_step_ratio       {med['lookahead_fused'] / med['sgd']:8.3f}x",
        f"train_step_ms          {train_step * 1e3:8.1f}   (batch {args.batch}: forward + backward + SGD step)",
        f"overhead_of_train_step {100 * extra / train_step:8.3f}%   (fused: {100 * extra_fused / train_step:.3f}%; target < 1%)",
        json.dumps({"sgd_step_s": med["sgd"], "lookahead_step_s": med["lookahead"],
                    "lookahead_fused_step_s": med["lookahead_fused"], "train_step_s": train_step,
                    "ratio": med["lookahead"] / med["sgd"], "fused_ratio": med["lookahead_fused"] / med["sgd"],
                    "overhead_frac": extra / train_step}),
    ]
    print("\n".join(lines))
    if args.out:
        with open(args.out, "a") as f:
            f.write("\n".join(lines) + "\n")
    if args.record:
        from runners.core import record_bench

        figures = {"ratio": med["lookahead"] / med["sgd"], "fused_ratio": med["lookahead_fused"] / med["sgd"],
                   "overhead_frac": extra / train_step, "train_step_s": train_step, "device": args.device}
        record_bench(args.record, figures, sys.argv[1:], "bench_lookahead.py")


if __name__ == "__main__":
    main()

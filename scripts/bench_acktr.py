"""Time of one ACKTR update over one A2C update on the Atari network, side by side in one process,
with ACKTR's breakdown (Fisher backward, factor statistics, eigendecomposition, preconditioning and
trust region).

    python scripts/bench_acktr.py [--batch 640] [--conv3 32] [--stats-every 1] [--device cpu|cuda]

Batch 640 = 32 environments x 20 steps, the reference's Atari setting. The reference (baselines) takes factor
statistics and an eigendecomposition at every update, the eigendecomposition in a background thread, used from
the next update (``--eig-async``, default on): off the critical path. ``--eig-every`` / ``--stats-every`` > 1
amortize (deviations). The cold phase is skipped (the factors are warmed up first). Both updates share the same
forward pass and loss; interleaved rounds, median per update. (A2C's optimizer is RMSprop; batch and network are
the same on both sides.)
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import algorithms.kfac as kfac_mod  # noqa: E402
from algorithms.a2c import A2C  # noqa: E402
from algorithms.acktr import ACKTR  # noqa: E402
from models.actor_critic import AtariActorCritic  # noqa: E402
from runners.core import hardware  # noqa: E402

TIMES: dict[str, float] = defaultdict(float)


def timed(name, fn):
    def wrapper(*a, **k):
        t = time.perf_counter()
        out = fn(*a, **k)
        TIMES[name] += time.perf_counter() - t
        return out
    return wrapper


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--record", default=None, help="write the figures as results/<paper>/bench/<name>/summary.json")
    ap.add_argument("--batch", type=int, default=640)
    ap.add_argument("--conv3", type=int, default=32, help="32: ACKTR's small CNN; 64: Nature CNN")
    ap.add_argument("--stats-every", type=int, default=1)
    ap.add_argument("--eig-every", type=int, default=1)
    ap.add_argument("--eig-async", type=int, default=1, help="1: eigendecompositions in a background thread")
    ap.add_argument("--updates", type=int, default=20, help="updates per round (a multiple of eig-every)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--memory-format", choices=["channels_last", "contiguous"], default="channels_last",
                    help="the Atari CNN's layout (the runner's default: channels_last)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    dev = torch.device(args.device)
    torch.manual_seed(0)
    obs = torch.randint(0, 256, (args.batch, 4, 84, 84), dtype=torch.uint8, device=dev)
    actions = torch.randint(0, 6, (args.batch,), device=dev)
    ret, adv = torch.randn(args.batch, device=dev), torch.randn(args.batch, device=dev)

    cl = args.memory_format == "channels_last"
    a2c_model = AtariActorCritic(6, conv3_channels=args.conv3, channels_last=cl).to(dev)
    acktr_model = AtariActorCritic(6, conv3_channels=args.conv3, channels_last=cl).to(dev)
    acktr_model.load_state_dict(a2c_model.state_dict())
    a2c = A2C(a2c_model, total_updates=10**9)
    acktr = ACKTR(acktr_model, total_updates=10**9, eig_every=args.eig_every, stats_every=args.stats_every,
                  eig_async=bool(args.eig_async), cold_iters=0)

    # instrument K-FAC's pieces (module-level functions and methods are looked up at call time)
    kfac_mod.input_factor = timed("factor statistics", kfac_mod.input_factor)
    kfac_mod.grad_factor = timed("factor statistics", kfac_mod.grad_factor)
    k = acktr.opt
    if args.eig_async:   # the thread's own time overlaps; what the update waits for is the collect
        k._collect = timed("eigendecomposition (waiting for the thread)", k._collect)
        k._launch = timed("eigendecomposition (launch: factor copies)", k._launch)
    else:
        kfac_mod._eigendecompose = timed("eigendecomposition", kfac_mod._eigendecompose)
    k.precondition = timed("preconditioning + trust region", k.precondition)
    import algorithms.acktr as acktr_mod
    acktr_mod.fisher_loss = timed("fisher loss (sampling)", acktr_mod.fisher_loss)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(max(args.eig_every, 3)):  # warm-up, also fills the factors
        a2c.update(obs, actions, ret, adv)
        acktr.update(obs, actions, ret, adv)
    TIMES.clear()
    t_a2c, t_acktr = [], []
    for _ in range(args.rounds):
        sync(); t = time.perf_counter()
        for _ in range(args.updates):
            a2c.update(obs, actions, ret, adv)
        sync(); t_a2c.append((time.perf_counter() - t) / args.updates)
        sync(); t = time.perf_counter()
        for _ in range(args.updates):
            acktr.update(obs, actions, ret, adv)
        sync(); t_acktr.append((time.perf_counter() - t) / args.updates)
    a, b = statistics.median(t_a2c), statistics.median(t_acktr)
    n = args.rounds * args.updates
    print(f"# device={dev}, {hardware()}, batch={args.batch} "
          f"cnn=32-64-{args.conv3}-512 stats_every={args.stats_every} eig_every={args.eig_every} "
          f"eig_async={bool(args.eig_async)} {args.memory_format}")
    print(f"# command: python scripts/bench_acktr.py {' '.join(sys.argv[1:])}")
    print(f"A2C update    {a * 1e3:9.1f} ms")
    print(f"ACKTR update  {b * 1e3:9.1f} ms   ratio ACKTR/A2C = {b / a:.2f}x")
    print("ACKTR breakdown (ms per update, averaged; CPU-timed, so on CUDA these are launch times):")
    for name, tot in sorted(TIMES.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<32}{tot / n * 1e3:9.1f}")
    if args.record:
        from runners.core import record_bench

        figures = {"ratio": b / a, "a2c_update_s": a, "acktr_update_s": b, "batch": args.batch,
                   "stats_every": args.stats_every, "eig_every": args.eig_every, "eig_async": bool(args.eig_async)}
        record_bench(args.record, figures, sys.argv[1:], "bench_acktr.py")


if __name__ == "__main__":
    main()

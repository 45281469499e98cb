"""Training throughput of the fast-weights RNN vs the LSTM (and IRNN, A-LSTM) on associative
retrieval, side by side in one process: same batch (128 x 11 tokens), same Adam step and clipping.

    python scripts/bench_fastweights.py [--hidden 50] [--threads N] [--device cpu|cuda]

Models are timed in interleaved rounds so that machine noise hits them alike; the median round
time per step is reported. The target (issue #2): fast weights within 3x the LSTM's time per batch.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from models.fast_weights import build_retrieval_model  # noqa: E402
from runners.core import hardware  # noqa: E402
from runners.retrieval_data import N_CLASSES, VOCAB, generate  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hidden", type=int, default=50)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=50, help="steps per round")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    x, y = (torch.from_numpy(a).to(dev) for a in generate(0, args.batch, 1, 1)["train"])
    torch.manual_seed(0)
    names = ["fast_weights", "lstm", "irnn", "alstm"]
    setups = {}
    for n in names:
        m = build_retrieval_model(n, len(VOCAB), N_CLASSES, args.hidden, 100, 100).to(dev)
        setups[n] = (m, torch.optim.Adam(m.parameters(), 1e-3))

    def step(m, opt):
        loss = F.cross_entropy(m(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 5.0)
        opt.step()

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    for m, opt in setups.values():  # warm-up
        for _ in range(10):
            step(m, opt)
    times = {n: [] for n in names}
    for _ in range(args.rounds):
        for n in names:
            m, opt = setups[n]
            sync(); t = time.perf_counter()
            for _ in range(args.steps):
                step(m, opt)
            sync(); times[n].append((time.perf_counter() - t) / args.steps)
    med = {n: statistics.median(v) for n, v in times.items()}
    print(f"# device={dev}, {hardware()}, R={args.hidden} batch={args.batch}")
    print(f"# command: python scripts/bench_fastweights.py {' '.join(sys.argv[1:])}")
    print(f"{'model':<14}{'ms/step':>10}{'seqs/s':>10}{'x LSTM':>9}")
    for n in names:
        print(f"{n:<14}{med[n] * 1e3:>10.2f}{args.batch / med[n]:>10.0f}{med[n] / med['lstm']:>9.2f}")
    ratio = med["fast_weights"] / med["lstm"]
    print(f"fast_weights/lstm time per batch: {ratio:.2f}x (target <= 3x): {'OK' if ratio <= 3 else 'MISSED'}")


if __name__ == "__main__":
    main()

"""Reversible RNN training by reversal vs ordinary BPTT, side by side in one process, counted honestly.

For one PTB-shaped training step (T x B tokens, 10k vocabulary) of a reversible language model it prints:
  * the memory saving: bits ordinary BPTT stores for the hidden states (32 x T x B x H per layer and state tensor,
    the authors' numerator) over *everything* reversal keeps across time: the bit buffers' int64 words, their
    overflow slabs and one flag bit per push ("actual"); and over sum(-log2 z) ("information");
  * the profiled peak memory of a training step (torch profiler on CPU, max_memory_allocated on GPU) with the SAME
    softmax chunking on both sides (``--chunk`` time steps at a time; 1 = the authors' per-step loss), for
    reversal, BPTT through the same fixed-point cells and BPTT through torch's fused LSTM/GRU of the same size;
    and its growth with the sequence length (``--lengths``);
  * the step time of each, and the ratio reversal / fused BPTT.

    python scripts/bench_revrnn.py [--cell revlstm] [--bits 3] [--emb 200] [--layers 1] [--T 70] [--B 20]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from algorithms.reversible_bptt import lm_step  # noqa: E402
from models.awd_lstm import AWDLanguageModel, locked_dropout  # noqa: E402
from runners.core import hardware, peak_memory_bytes  # noqa: E402


def bptt_step(model, x, y, state, chunk: int):
    """Ordinary BPTT with the softmax in chunks of ``chunk`` time steps: the recurrent outputs (and graph) are kept,
    each chunk's logits exist only while its loss is backpropagated to those outputs."""
    T = x.size(0)
    e = model.encoder(x)
    h = locked_dropout(e, model.dropouti, model.training)
    for i, layer in enumerate(model.layers):
        h, _ = layer(h, state[i])
        h = locked_dropout(h, model.dropout if i == len(model.layers) - 1 else model.dropouth, model.training)
    out = h.detach().requires_grad_(True)
    for a in range(0, T, chunk):
        logits = model.decoder(out[a:a + chunk])
        (F.cross_entropy(logits.reshape(-1, logits.size(-1)), y[a:a + chunk].reshape(-1), reduction="sum")
         / y.numel()).backward()
    h.backward(out.grad)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--record", default=None, help="write the figures as results/<paper>/bench/<name>/summary.json")
    ap.add_argument("--cell", default="revlstm", choices=["revlstm", "revgru"])
    ap.add_argument("--bits", default="3")
    ap.add_argument("--emb", type=int, default=200, help="embedding = hidden size of the (tied) top layer")
    ap.add_argument("--hidden", type=int, default=200, help="hidden size of the layers below the top")
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--T", type=int, default=70)
    ap.add_argument("--B", type=int, default=20)
    ap.add_argument("--vocab", type=int, default=10000)
    ap.add_argument("--chunk", type=int, default=1, help="softmax chunk (time steps), the same on every side")
    ap.add_argument("--lengths", default="35,70,140", help="sequence lengths for the peak-memory growth")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    bits = None if args.bits in ("none", "null") else int(args.bits)
    torch.manual_seed(0)
    common = dict(emb_size=args.emb, hidden_size=args.hidden, n_layers=args.layers, dropout=0.4, dropouth=0.3,
                  dropouti=0.4, dropoute=0.0, wdrop=0.5)
    rev = AWDLanguageModel(args.vocab, cell=args.cell, max_forget_bits=bits, **common).to(dev).train()
    fused = AWDLanguageModel(args.vocab, cell=args.cell[3:], **common).to(dev).train()

    def data(T):
        return (torch.randint(0, args.vocab, (T, args.B), device=dev), torch.randint(0, args.vocab, (T, args.B), device=dev))

    def runs(T):
        x, y = data(T)
        rstate = [layer.init_state(args.B, dev) for layer in rev.layers]
        fstate = fused.init_state(args.B)
        return {"reversal": lambda: lm_step(rev, x, y, rstate),
                "bptt_same_cells": lambda: bptt_step(rev, x, y, rstate, args.chunk),
                f"bptt_fused_{args.cell[3:]}": lambda: bptt_step(fused, x, y, fstate, args.chunk)}

    fns = runs(args.T)
    for fn in fns.values():              # warm-up; .grad allocated so it is not counted below
        fn()
    stats = lm_step(rev, *data(args.T), [layer.init_state(args.B, dev) for layer in rev.layers])[2]
    times = {k: [] for k in fns}
    for _ in range(args.repeats):        # interleaved: a busy machine slows every side alike
        for k, fn in fns.items():
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            fn()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            times[k].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    lengths = [int(v) for v in args.lengths.split(",")]
    peaks = {T: {k: peak_memory_bytes(fn, dev) for k, fn in runs(T).items()} for T in lengths}
    fused_key = f"bptt_fused_{args.cell[3:]}"
    lines = [f"# {args.cell}, max_forget_bits={args.bits}, {args.layers} layer(s), emb {args.emb}, hidden {args.hidden}, "
             f"T={args.T}, B={args.B}, vocab {args.vocab}, softmax chunk {args.chunk} on every side; random words; "
             f"device={dev}, {hardware()}",
             f"# command: python scripts/bench_revrnn.py {' '.join(sys.argv[1:])}",
             f"hidden-state bits, ordinary BPTT      {stats['mem/bits_bptt']:>14,}",
             f"everything reversal keeps (buffers, slabs, flags) {stats['mem/bits_buffer']:>14,}   "
             f"saving {stats['mem/saving_actual']:.1f}x (actual)",
             f"information-theoretic bits           {stats['mem/bits_info']:>14,.0f}   saving {stats['mem/saving_info']:.1f}x"]
    for k in fns:
        lines.append(f"{k:<20} step {med[k] * 1e3:9.1f} ms   peak at T={args.T if args.T in peaks else lengths[-1]} "
                     f"{peaks.get(args.T, peaks[lengths[-1]])[k] / 2**20:8.1f} MiB")
    lines.append("peak MiB by T: " + "; ".join(
        f"{k}: " + ", ".join(f"T={T} {peaks[T][k] / 2**20:.1f}" for T in lengths) for k in fns))
    lines += [f"step time, reversal / fused BPTT          {med['reversal'] / med[fused_key]:.2f}x",
              f"step time, reversal / BPTT same cells     {med['reversal'] / med['bptt_same_cells']:.2f}x",
              f"peak memory at T={lengths[-1]}, fused BPTT / reversal   {peaks[lengths[-1]][fused_key] / peaks[lengths[-1]]['reversal']:.2f}x",
              json.dumps({"stats": stats, "step_s": med, "peak_bytes": {str(T): v for T, v in peaks.items()}})]
    print("\n".join(lines))
    if args.out:
        with open(args.out, "a") as f:
            f.write("\n".join(lines) + "\n\n")
    if args.record:
        from runners.core import record_bench

        first, last = peaks[lengths[0]], peaks[lengths[-1]]
        figures = {"peak_growth_reversal": last["reversal"] / first["reversal"],
                   "peak_growth_fused": last[fused_key] / first[fused_key],
                   "time_ratio_fused": med["reversal"] / med[fused_key],
                   "time_ratio_same_cells": med["reversal"] / med["bptt_same_cells"],
                   "saving_actual": stats["mem/saving_actual"], "saving_info": stats["mem/saving_info"],
                   "T": args.T, "B": args.B, "chunk": args.chunk, "device": args.device}
        record_bench(args.record, figures, sys.argv[1:], "bench_revrnn.py")


if __name__ == "__main__":
    main()

"""Reversible RNN training by reversal vs ordinary BPTT, side by side in one process.

For one PTB-shaped training step (T x B tokens, 10k vocabulary) of a 2-layer RevLSTM/RevGRU
language model it prints:
  * the hidden-state memory saving from the bit buffers: bits ordinary BPTT stores for the hidden
    states vs the buffers' words + flag bits ("actual"), and vs sum(-log2 z) ("information");
  * the peak memory a step allocates beyond the model (activations and temporaries): torch profiler
    on CPU, torch.cuda.max_memory_allocated on GPU; reversal vs ordinary BPTT through the same cells
    (and through torch's fused LSTM for reference);
  * the step time of reversal over ordinary BPTT through the same cells.

    python scripts/bench_revrnn.py [--cell revlstm] [--bits 3] [--hidden 200] [--emb 200] [--T 70] [--B 20]
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
from models.awd_lstm import AWDLanguageModel  # noqa: E402
from runners.core import hardware, peak_memory_bytes  # noqa: E402


def ordinary_step(model, x, y, state):
    logits, _, (raw, dropped) = model(x, state)
    loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.reshape(-1))
    (loss + 2 * dropped.pow(2).mean() + (raw[1:] - raw[:-1]).pow(2).mean()).backward()


def reversal_step(model, x, y, state, chunk):
    return lm_step(model, x, y, state, 2.0, 1.0, loss_chunk=chunk)[2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cell", default="revlstm", choices=["revlstm", "revgru"])
    ap.add_argument("--bits", default="3")
    ap.add_argument("--emb", type=int, default=200)
    ap.add_argument("--hidden", type=int, default=200)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--T", type=int, default=70)
    ap.add_argument("--B", type=int, default=20)
    ap.add_argument("--vocab", type=int, default=10000)
    ap.add_argument("--chunk", type=int, default=10, help="softmax chunk (time steps) in the reversal step")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--checkpoint", default=None, help="load a trained revlstm/revgru LM (e.g. a run's checkpoint.pt)")
    ap.add_argument("--data-root", default=None, help="use a real PTB segment from <root>/ptb instead of random words")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    bits = None if args.bits in ("none", "null") else int(args.bits)
    torch.manual_seed(0)
    common = dict(emb_size=args.emb, hidden_size=args.hidden, n_layers=args.layers, dropout=0.4, dropouth=0.3,
                  dropouti=0.4, dropoute=0.1, wdrop=0.5)
    rev = AWDLanguageModel(args.vocab, cell=args.cell, max_forget_bits=bits, **common).to(dev).train()
    fused = AWDLanguageModel(args.vocab, cell=args.cell[3:], **common).to(dev).train()
    if args.checkpoint:   # trained gates forget differently from fresh ones
        rev.load_state_dict(torch.load(args.checkpoint, map_location=dev, weights_only=True)["model"])
    if args.data_root:
        from omegaconf import OmegaConf

        from runners import text_data
        corpus = text_data.load(OmegaConf.create({"root": args.data_root, "verify_md5": True}), Path.cwd())
        stream = text_data.batchify(corpus.ids["train"], args.B).to(dev)
        x, y = text_data.get_batch(stream, 1000, args.T)
    else:
        x = torch.randint(0, args.vocab, (args.T, args.B), device=dev)
        y = torch.randint(0, args.vocab, (args.T, args.B), device=dev)
    rstate = [layer.init_state(args.B, dev) for layer in rev.layers]
    fstate = fused.init_state(args.B)

    runs = {
        "reversal": lambda: reversal_step(rev, x, y, rstate, args.chunk),
        "bptt_same_cells": lambda: ordinary_step(rev, x, y, rstate),
        f"bptt_fused_{args.cell[3:]}": lambda: ordinary_step(fused, x, y, fstate),
    }
    stats = runs["reversal"]()           # warm-up; grads allocated so they are not counted below
    runs["bptt_same_cells"]()
    runs[f"bptt_fused_{args.cell[3:]}"]()
    times = {k: [] for k in runs}
    for _ in range(args.repeats):
        for k, fn in runs.items():
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            fn()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            times[k].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    peaks = {k: peak_memory_bytes(fn, dev) for k, fn in runs.items()}

    lines = [f"# {args.cell}, max_forget_bits={args.bits}, {args.layers} layers, emb {args.emb}, hidden {args.hidden}, "
             f"T={args.T}, B={args.B}, vocab {args.vocab}, softmax chunk {args.chunk}; "
             f"{'trained weights ' + args.checkpoint if args.checkpoint else 'initial weights'}, "
             f"{'PTB text' if args.data_root else 'random words'}; device={dev}, {hardware()}",
             f"# command: python scripts/bench_revrnn.py {' '.join(sys.argv[1:])}",
             f"hidden-state bits, ordinary BPTT  {stats['mem/bits_bptt']:>14,}",
             f"hidden-state bits, buffers        {stats['mem/bits_buffer']:>14,}   saving {stats['mem/saving_actual']:.1f}x (actual)",
             f"information-theoretic bits        {stats['mem/bits_info']:>14,.0f}   saving {stats['mem/saving_info']:.1f}x",
             ]
    for k in runs:
        lines.append(f"{k:<20} step {med[k] * 1e3:9.1f} ms   peak {peaks[k] / 2**20:8.1f} MiB")
    lines += [f"peak memory, BPTT same cells / reversal   {peaks['bptt_same_cells'] / peaks['reversal']:.2f}x",
              f"peak memory, BPTT fused / reversal        {peaks[f'bptt_fused_{args.cell[3:]}'] / peaks['reversal']:.2f}x",
              f"step time, reversal / BPTT same cells     {med['reversal'] / med['bptt_same_cells']:.2f}x",
              json.dumps({"stats": stats, "step_s": med, "peak_bytes": peaks})]
    print("\n".join(lines))
    if args.out:
        with open(args.out, "a") as f:
            f.write("\n".join(lines) + "\n\n")


if __name__ == "__main__":
    main()

"""Peak memory of one training step vs the number of message-passing steps: GRevNet with reversible
backprop (node states recomputed by the inverse) vs GRevNet through ordinary autograd vs the GNN with
the same attention message-passing function (Liu et al. 2019, section 4: GRevNet memory is flat in the
number of steps, the GNN's grows linearly).

    python scripts/bench_gnf_memory.py                           # Cora-sized random graph
    python scripts/bench_gnf_memory.py --data-root ../shared/data # the real Cora graph
    python scripts/bench_gnf_memory.py --device cuda              # max_memory_allocated on a GPU

Peak = bytes allocated during the step beyond what was allocated before it (torch profiler on CPU,
torch.cuda.max_memory_allocated on GPU), the median step time over --repeats.
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
from models.gnf import NodeClassifier  # noqa: E402
from runners.core import hardware, peak_memory_bytes  # noqa: E402


def graph(args, device):
    if args.data_root:
        from runners.graph_data import load_planetoid

        root = Path(args.data_root)
        g = load_planetoid(root / "planetoid", "Cora", Path("data/cache/planetoid"))
        return g.x.to(device), g.edge_index.to(device), g.y.to(device), int(g.y.max()) + 1, "Cora"
    gen = torch.Generator().manual_seed(0)
    n, e = args.nodes, int(args.nodes * 5278 / 2708)          # Cora's size and mean degree by default
    src, dst = torch.randint(0, n, (2, e), generator=gen)
    ei = torch.stack([torch.cat([src, dst]), torch.cat([dst, src])])
    x = (torch.rand(n, args.features, generator=gen) < 0.0127).float()
    return x.to(device), ei.to(device), torch.randint(0, 7, (n,), generator=gen).to(device), 7, f"random graph ({n} nodes)"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--record", default=None, help="write the figures as results/<paper>/bench/<name>/summary.json")
    ap.add_argument("--steps", default="1,2,4,8,16")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--nodes", type=int, default=2708, help="random graph: nodes (Cora: 2708)")
    ap.add_argument("--features", type=int, default=1433, help="random graph: input features (Cora: 1433)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--data-root", default=None, help="read Cora from <root>/planetoid/Cora/raw")
    ap.add_argument("--out", default=None, help="write the figures as JSON here")
    args = ap.parse_args()
    dev = torch.device(args.device)
    x, ei, y, n_classes, what = graph(args, dev)
    variants = {"grevnet_reversible": ("grevnet", True), "grevnet_autograd": ("grevnet", False), "gnn": ("gnn", False)}
    rows = []
    print(f"{what}: {x.shape[0]} nodes, {ei.shape[1]} directed edges, dim {args.dim}; {hardware()}")

    def make(steps, kind, rev):
        torch.manual_seed(0)
        model = NodeClassifier(x.shape[1], n_classes, args.dim, steps, kind, args.hidden, args.heads,
                               dropout=0.0, reversible=rev).to(dev)

        def step():
            model.zero_grad(set_to_none=False)
            F.cross_entropy(model(x, ei), y).backward()

        step()    # warm-up; gradients allocated, so the peak is activations + temporaries
        return step

    all_steps = list(map(int, args.steps.split(",")))
    for steps in all_steps:       # all timings first: a torch profiler session slows what runs after it
        row = {"steps": steps}
        for name, (kind, rev) in variants.items():
            step, times = make(steps, kind, rev), []
            for _ in range(args.repeats):
                t = time.perf_counter()
                step()
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t)
            row[name] = {"step_s": statistics.median(times)}
        rows.append(row)
    print(f"{'steps':>5} " + " ".join(f"{k + ' MiB':>22} {'s/step':>7}" for k in variants))
    for row in rows:
        for name, (kind, rev) in variants.items():
            row[name]["peak_bytes"] = peak_memory_bytes(make(row["steps"], kind, rev), dev)
        print(f"{row['steps']:>5} " + " ".join(f"{row[k]['peak_bytes'] / 2**20:>22.1f} {row[k]['step_s']:>7.3f}" for k in variants))
    first, last = rows[0], rows[-1]
    span = last["steps"] - first["steps"]
    growth = {k: (last[k]["peak_bytes"] - first[k]["peak_bytes"]) / span / 2**20 for k in variants}
    print("peak growth per extra step (MiB): " + ", ".join(f"{k} {v:.2f}" for k, v in growth.items()))
    print(f"at {last['steps']} steps: GNN / GRevNet-reversible peak = "
          f"{last['gnn']['peak_bytes'] / last['grevnet_reversible']['peak_bytes']:.2f}x, GRevNet autograd / reversible = "
          f"{last['grevnet_autograd']['peak_bytes'] / last['grevnet_reversible']['peak_bytes']:.2f}x; time reversible / "
          f"autograd = {last['grevnet_reversible']['step_s'] / last['grevnet_autograd']['step_s']:.2f}x")
    if args.out:
        Path(args.out).write_text(json.dumps({"graph": what, "hardware": hardware(), "device": str(dev),
                                              "command": "python " + " ".join(sys.argv), "args": vars(args),
                                              "rows": rows, "growth_mib_per_step": growth}, indent=2) + "\n")
    if args.record:
        from runners.core import record_bench

        figures = {"growth_ratio": growth["grevnet_reversible"] / growth["gnn"],
                   **{f"growth_mib_per_step/{k}": v for k, v in growth.items()}}
        record_bench(args.record, figures, sys.argv[1:], "bench_gnf_memory.py")


if __name__ == "__main__":
    main()

"""Build results/gnf/ from graph-generation and node-classification runs: the MMD^2 table beside the
paper's and the train-vs-test noise floor, generated graphs drawn beside training graphs, the supervised
GRevNet vs GNN table, and the memory benchmark.

    python scripts/gnf_results.py --collect /work/runs/gnf ...   # copy runs in, rebuild
    python scripts/gnf_results.py                                # rebuild from results/gnf/runs/
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import networkx as nx  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lookahead_results import finish_readme, mean_std  # noqa: E402
from runners.graph_data import read_jsonl  # noqa: E402
from runners.graph_generation import STATS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "gnf"
# Liu et al. 2019, Table 2 (GNF), MMD^2 deg / clus / orbit, as recalled by a secondary source (issue #6);
# not confirmed against the paper here. Noise floors in the issue were computed from the authors' sets.
PAPER = {"community_small": (0.20, 0.20, 0.11), "ego_small": (0.03, 0.10, 0.001)}


def collect(dirs, out: Path = OUT) -> None:
    for d in dirs:
        for summ in sorted(Path(d).rglob("summary.json")):
            run = summ.parent
            s = json.loads(summ.read_text())
            exp = s["command"].split("experiment=")[1].split()[0]
            s["experiment"] = exp
            s["command"] = " ".join(t for t in s["command"].split() if not t.startswith(("logger.", "resume")))
            if "mmd/sum" in s:
                name = f"{exp}_{Path(s['data_path']).stem if s.get('data_path') else 'generated'}_seed{s['seed']}"
            else:
                name = f"{exp}_{s['kind']}_steps{s['steps']}_seed{s['seed']}"
            dst = out / "runs" / name
            dst.mkdir(parents=True, exist_ok=True)
            (dst / "summary.json").write_text(json.dumps(s, indent=2, sort_keys=True) + "\n")
            rows = (run / "metrics.jsonl").read_text().splitlines()
            (dst / "metrics.jsonl").write_text("".join(r + "\n" for r in rows[::max(1, len(rows) // 400)]))
            if (run / "samples_seed0.jsonl").exists():   # the first 64 samples of seed 0, for the figure
                (dst / "samples_seed0.jsonl").write_text("\n".join((run / "samples_seed0.jsonl").read_text().splitlines()[:64]) + "\n")


def load(out: Path = OUT) -> list[dict]:
    runs = []
    for summ in sorted((out / "runs").glob("*/summary.json")):
        s = json.loads(summ.read_text())
        s["dir"] = summ.parent
        runs.append(s)
    return runs


def fmt(xs: list[float]) -> str:
    """mean ± std (over all sampling seeds of all runs) to 3 significant digits: MMDs span 0.001..1."""
    import statistics

    return f"{statistics.mean(xs):.3g} ± {statistics.stdev(xs):.2g}" if len(xs) > 1 else f"{xs[0]:.3g}"


def draw(ax, g, color):
    G = nx.Graph()
    G.add_nodes_from(range(g.num_nodes))
    G.add_edges_from(g.without_self_loops().edges.tolist())
    nx.draw(G, nx.spring_layout(G, seed=0), ax=ax, node_size=12, width=0.6, node_color=color, edge_color="0.4")


def sample_figure(run: dict, train_file: Path, path: Path) -> None:
    samples = read_jsonl(run["dir"] / "samples_seed0.jsonl")[:8]
    train = read_jsonl(train_file)[:8]
    fig, axes = plt.subplots(2, 8, figsize=(14, 4))
    for j in range(8):
        draw(axes[0, j], train[j], "C0")
        draw(axes[1, j], samples[j], "C3")
    axes[0, 0].set_title("training graphs (first 8 of the set)", loc="left", fontsize=10)
    axes[1, 0].set_title("GNF samples (seed 0, first 8)", loc="left", fontsize=10)
    fig.tight_layout()
    fig.savefig(path.with_suffix(".png"), dpi=110)
    fig.savefig(path.with_suffix(".pdf"))
    plt.close(fig)


def mmd_figure(groups, path: Path) -> None:
    fig, axes = plt.subplots(1, len(groups), figsize=(max(7.0, 4.5 * len(groups)), 3.8), squeeze=False)
    for ax, ((exp, data), rs) in zip(axes[0], sorted(groups.items())):
        x = range(len(STATS))
        ours = [sum(r[f"mmd/{k}"] for r in rs) / len(rs) for k in STATS]
        floor = [rs[0][f"floor/{k}"] for k in STATS]
        recon = [sum(r[f"recon/{k}"] for r in rs) / len(rs) for k in STATS]
        key = "ego_small" if "ego" in exp else "community_small"
        ax.bar([i - 0.3 for i in x], ours, 0.2, label="GNF (ours)", color="C3")
        ax.bar([i - 0.1 for i in x], recon, 0.2, label="auto-encoder reconstruction", color="C1")
        ax.bar([i + 0.1 for i in x], PAPER[key], 0.2, label="GNF (paper)", color="C7")
        ax.bar([i + 0.3 for i in x], floor, 0.2, label="train vs test (noise floor)", color="C0")
        ax.set_xticks(list(x), STATS)
        ax.set_yscale("log")
        ax.set_ylabel("MMD$^2$ (lower is better)")
        ax.set_title(f"{key.replace('_', '-')} ({data})", fontsize=10)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.09, 1, 1))
    fig.savefig(path.with_suffix(".png"), dpi=110)
    fig.savefig(path.with_suffix(".pdf"))
    plt.close(fig)


def build() -> str:
    runs = load()
    gen = defaultdict(list)
    sup = defaultdict(list)
    for r in runs:
        if "mmd/sum" in r:
            gen[(r["experiment"], Path(r["data_path"]).name if r.get("data_path") else "generated")].append(r)
        else:
            sup[(r["experiment"], r["kind"], r["steps"])].append(r)
    lines = ["# Graph Normalizing Flows (Liu et al., NeurIPS 2019)", "",
             "Generated by `python scripts/gnf_results.py` from `runs/`; do not edit by hand.", ""]
    if gen:
        hw = sorted({r["hardware"] for rs in gen.values() for r in rs})
        lines += ["## Graph generation: GraphRNN's MMD^2 against the test split", "",
                  "Evaluation as GraphRNN's code (runners/graph_mmd.py; our orbit counts equal ORCA's output on ORCA's "
                  "own example graph): biased MMD^2, Gaussian-EMD kernels for degree (sigma 1) and clustering (100 bins, "
                  "sigma 0.1), Gaussian kernel (sigma 30) on per-node orbit counts; generated graphs matched to the test "
                  "graphs by nearest size; mean ± std over all sampling seeds of all training seeds (3 sampling seeds x 2 training seeds = 6 values). "
                  "`recon` is the auto-encoder's own reconstruction of the test graphs: the best the flow can reach "
                  "with that encoder.", "",
                  "| experiment | graphs | train seeds | sampling seeds | ours: deg | ours: clus | ours: orbit | AE recon (deg/clus/orbit) | paper GNF (deg/clus/orbit) | noise floor train vs test |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for (exp, data), rs in sorted(gen.items()):
            key = "ego_small" if "ego" in exp else "community_small"
            ours = [fmt([v for r in rs for v in r[f"mmd/{k}_per_seed"]]) for k in STATS]
            recon = "/".join(f"{sum(r[f'recon/{k}'] for r in rs) / len(rs):.3f}" for k in STATS)
            floor = "/".join(f"{rs[0][f'floor/{k}']:.4f}" for k in STATS)
            seeds = ",".join(str(r["seed"]) for r in sorted(rs, key=lambda r: r["seed"]))
            lines.append(f"| {exp} | {data} ({rs[0]['n_train']} train / {rs[0]['n_test']} test) | {seeds} | "
                         f"{rs[0]['eval/seeds']} | {ours[0]} | {ours[1]} | {ours[2]} | {recon} | "
                         f"{'/'.join(map(str, PAPER[key]))} | {floor} |")
        lines += ["", "Commands (one per run; `data.path` points at the authors' sets):", ""]
        lines += [f"- `{r['command']}` ({r['wall_s'] / 60:.1f} min)" for rs in gen.values() for r in rs]
        lines += ["", f"Hardware: {'; '.join(hw)}.", "", "![mmd](mmd.png)", ""]
        mmd_figure(gen, OUT / "mmd")
        for (exp, data), rs in sorted(gen.items()):
            if data != "generated" and (rs[0]["dir"] / "samples_seed0.jsonl").exists():
                fig = OUT / f"samples_{exp}"
                sample_figure(rs[0], ROOT.parent / "shared" / "data" / "graphs" / data
                              if not Path(rs[0]["data_path"]).is_absolute() else Path(rs[0]["data_path"]), fig)
                lines += [f"![samples {exp}](samples_{exp}.png)", ""]
    if sup:
        hw = sorted({r["hardware"] for rs in sup.values() for r in rs})
        lines += ["## Supervised GRevNet vs GNN (same attention message passing)", "",
                  "| experiment | model | steps | seeds | test score at best val | metric | peak memory of a training step (MiB) |",
                  "|---|---|---|---|---|---|---|"]
        for (exp, kind, steps), rs in sorted(sup.items()):
            lines.append(f"| {exp} | {'GRevNet (reversible backprop)' if kind == 'grevnet' else 'GNN'} | {steps} | "
                         f"{','.join(str(r['seed']) for r in rs)} | {mean_std([100 * r['test/score'] for r in rs])} | "
                         f"{rs[0]['metric']} (%) | {sum(r['mem/step_peak_bytes'] for r in rs) / len(rs) / 2**20:.1f} |")
        lines += ["", "The GNF paper's supervised numbers are not confirmed here, so none is quoted. For scale: GAT "
                  "(Velickovic et al. 2018) reports 83.0 ± 0.7% on Cora's public split. Both of our models sit ~11-13 "
                  "points below it: the shared message-passing function (attention + MLP, 4 residual/coupling steps, no "
                  "attention dropout, untuned) overfits the 140 labels. GRevNet is within ~2 points of the GNN with the "
                  "same function while its step memory does not grow with the number of steps (benchmark below).",
                  "", "Commands:", ""] + [f"- `{r['command']}`" for rs in sup.values() for r in rs]
        lines += ["", f"Hardware: {'; '.join(hw)}.", ""]
    return finish_readme(OUT, lines, "bench_memory.txt", "## Memory benchmark (scripts/bench_gnf_memory.py)",
                         "Peak bytes allocated by one training step beyond the model, vs message-passing steps.")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--collect", nargs="*", default=[])
    args = ap.parse_args()
    collect(args.collect)
    print(build())


if __name__ == "__main__":
    main()

"""The results figures: one style (colours fixed per method across every panel, legends outside the axes,
intervals clipped to what a metric can take) and one small function per paper. ``draw(paper, runs, out)`` returns
the figure files written (relative to ``out``)."""
from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

COLORS = {"ACKTR": "#d62728", "A2C": "#1f77b4", "Fast weights": "#d62728", "LSTM": "#1f77b4", "A-LSTM": "#2ca02c",
          "IRNN": "#7f7f7f", "GRU": "#9467bd", "RevLSTM": "#ff7f0e", "RevGRU": "#8c564b", "SGD": "#1f77b4",
          "Adam": "#2ca02c", "Lookahead(SGD)": "#9467bd", "Lookahead(Adam)": "#d62728", "Polyak": "#ff7f0e", "GNF": "#d62728",
          "perfect generator": "#7f7f7f", "paper (recalled)": "#bbbbbb"}


def style():
    plt.rcParams.update({"figure.dpi": 110, "axes.spines.top": False, "axes.spines.right": False, "font.size": 9,
                         "axes.titlesize": 9, "legend.fontsize": 8, "legend.frameon": False})


def save(fig, out: Path, name: str) -> str:
    fig.savefig(out / f"{name}.png", bbox_inches="tight", dpi=120)
    fig.savefig(out / f"{name}.pdf", bbox_inches="tight", metadata={"CreationDate": None})
    plt.close(fig)
    return f"{name}.png"


def rows(run, key: str, x: str = "step") -> tuple[np.ndarray, np.ndarray]:
    f = run.dir / "metrics.jsonl"
    xs, ys = [], []
    if f.exists():
        for line in f.read_text().splitlines():
            r = json.loads(line)
            if key in r and x in r and isinstance(r[key], (int, float)):
                xs.append(r[x])
                ys.append(r[key])
    return np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)


def band(ax, curves: list[tuple[np.ndarray, np.ndarray]], label: str, grid: np.ndarray, lo=None, hi=None):
    """Mean over runs on a common x grid with a +-1 std band, clipped to [lo, hi]."""
    ys = [np.interp(grid, x, y, left=np.nan, right=np.nan) for x, y in curves if len(x) > 1]
    if not ys:
        return
    Y = np.vstack(ys)
    m, s = np.nanmean(Y, 0), np.nanstd(Y, 0)
    low, high = m - s, m + s
    if lo is not None:
        low = np.maximum(low, lo)
    if hi is not None:
        high = np.minimum(high, hi)
    c = COLORS.get(label)
    ax.plot(grid, m, color=c, label=f"{label} ({len(ys)} seed{'s' if len(ys) > 1 else ''})", lw=1.3)
    if len(ys) > 1:
        ax.fill_between(grid, low, high, color=c, alpha=0.2, lw=0)


def legend_outside(fig, axes):
    """One legend for the whole figure, right of the panels, from every labelled line of every panel (the seed
    counts can differ between panels: each distinct label is listed once)."""
    seen = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(lab, h)
    if seen:
        fig.legend(list(seen.values()), list(seen), loc="upper left", bbox_to_anchor=(1.0, 0.97))


def not_run(ax):
    """An empty panel says why it is empty."""
    ax.text(0.5, 0.5, "not run", ha="center", va="center", transform=ax.transAxes, color="#777777")
    ax.set(xticks=[], yticks=[])


def moving(x: np.ndarray, y: np.ndarray, n: int = 10):
    if len(y) < n:
        return x, y
    k = np.convolve(y, np.ones(n) / n, mode="valid")
    return x[n - 1:], k


# ----------------------------------------------------------------------------------------- papers
def fastweights(runs, out: Path) -> list[str]:
    label = {"fast_weights": "Fast weights", "lstm": "LSTM", "alstm": "A-LSTM", "irnn": "IRNN"}
    groups = defaultdict(list)
    for r in runs:
        if r.name.startswith(tuple(label)) and "_R20_" in r.name and "steps20000" in r.name and "noln" not in r.name \
                and "nomem" not in r.name and r.get("lr") == {"fast_weights": 0.001, "lstm": 0.003, "alstm": 0.0003,
                                                             "irnn": 0.001}.get(r.get("variant")):
            groups[label[r.get("variant")]].append(rows(r, "val/error"))
    if not groups:
        return []
    fig, ax = plt.subplots(figsize=(5.2, 3.2))
    grid = np.linspace(0, 20000, 200)
    for lab, curves in groups.items():
        band(ax, [(x, 100 * y) for x, y in curves], lab, grid, lo=0.0, hi=100.0)
    ax.set(xlabel="training step", ylabel="validation error % (R = 20)", ylim=(0, 100))
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1))
    return [save(fig, out, "val_error")]


def acktr(runs, out: Path) -> list[str]:
    figs = []
    tasks = ["HalfCheetah", "Hopper", "Walker2d", "Ant", "Reacher", "Swimmer", "InvertedPendulum", "InvertedDoublePendulum"]
    mj = [r for r in runs if str(r.get("env", "")).split("-")[0] in tasks and r.name.startswith(("acktr_", "a2c_"))
          and r.group == "runs"]
    if mj:
        fig, axes = plt.subplots(2, 4, figsize=(13, 5.6))
        grid = np.linspace(0, 1_000_000, 100)
        for ax, task in zip(axes.flat, tasks):
            for algo, lab in (("acktr", "ACKTR"), ("a2c", "A2C")):
                curves = [moving(*rows(r, "episode/return", "timesteps")) for r in mj
                          if r.get("algo") == algo and str(r.get("env")).startswith(task + "-")]
                band(ax, curves, lab, grid)
            ax.set_title(task)
            ax.set_xlabel("timesteps")
            if not ax.lines:
                not_run(ax)
        axes[0, 0].set_ylabel("return (10-episode moving average)")
        fig.tight_layout()
        legend_outside(fig, axes.flat)
        figs.append(save(fig, out, "mujoco_curves"))
    atari = [r for r in runs if str(r.get("env", "")).startswith("ALE/") and r.group == "runs"]
    games = sorted({str(r.get("env")).split("/")[1].split("-")[0] for r in atari})
    if games:
        fig, axes = plt.subplots(1, len(games), figsize=(4.2 * len(games), 3.2), squeeze=False)
        for ax, g in zip(axes[0], games):
            for algo, lab in (("acktr", "ACKTR"), ("a2c", "A2C")):
                for r in atari:
                    if r.get("algo") == algo and f"/{g}-" in str(r.get("env")):
                        x, y = rows(r, "score/mean100", "timesteps")
                        ax.plot(np.asarray(x) / 1e6, y, color=COLORS[lab], lw=1.2, label=f"{lab} (seed {r.get('seed')})")
            ax.set(title=g, xlabel="timesteps, millions (10M lr schedule)", ylabel="mean score, last 100 games")
        axes[0][-1].legend(loc="upper left", bbox_to_anchor=(1.01, 1))
        fig.tight_layout()
        figs.append(save(fig, out, "atari_curves"))
    return figs


def revrnn(runs, out: Path) -> list[str]:
    ptb = [r for r in runs if "_ptb_small" in r.name and r.group == "runs"]
    if not ptb:
        return []
    fig, ax = plt.subplots(figsize=(5.6, 3.4))
    names = {"lstm": "LSTM", "gru": "GRU", "revlstm": "RevLSTM", "revgru": "RevGRU"}
    by = defaultdict(list)
    for r in ptb:
        bits = str(r.summary.get("command", "")).split("max_forget_bits=")[-1].split()[0] if "max_forget_bits=" in \
            r.get("command", "") else "3"
        by[(names.get(r.get("cell"), r.get("cell")), bits if str(r.get("cell")).startswith("rev") else "")].append(r)
    for (cell, bits), rs in sorted(by.items()):
        ppl = [r.get("val/ppl_best") for r in rs]
        sav = [r.get("mem/saving_actual", 1.0) for r in rs]
        ax.errorbar(np.mean(sav), np.mean(ppl), yerr=np.std(ppl) if len(ppl) > 1 else None, fmt="o",
                    color=COLORS.get(cell), ms=5)
        ax.annotate(f"{cell}{' ' + bits + ' bits' if bits and bits != 'null' else (' no limit' if bits == 'null' else '')}",
                    (np.mean(sav), np.mean(ppl)), fontsize=7, xytext=(4, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set(xlabel="memory saving: BPTT hidden-state bits / everything reversal keeps (log)",
           ylabel="validation perplexity (best)")
    return [save(fig, out, "ptb_perplexity_vs_saving")]


def lookahead_settings(run) -> dict:
    """alpha and k of a Lookahead run: from its summary, else from its resolved config (runs before they were logged)."""
    if run.get("alpha") is not None:
        return {"alpha": run.get("alpha"), "k": run.get("k")}
    f = run.dir / "resolved_config.yaml"
    if f.exists():
        import yaml

        la = (yaml.safe_load(f.read_text()).get("optimizer") or {}).get("lookahead") or {}
        return {"alpha": la.get("alpha"), "k": la.get("k")}
    return {}


def lookahead(runs, out: Path) -> list[str]:
    seeds = [r for r in runs if "/seeds/" in f"/{r.name}/" or "_seed1" in r.name or "_seed2" in r.name or "_seed3" in r.name]
    label = {"sgd": "SGD", "adam": "Adam", "lookahead_sgd": "Lookahead(SGD)", "lookahead_adam": "Lookahead(Adam)",
             "polyak": "Polyak"}
    more = ["#e377c2", "#17becf", "#bcbd22", "#8c564b"]   # further (alpha, k) settings of the robustness panels
    figs = []
    chosen = [r for r in seeds if r.get("seed") in (1, 2, 3) and r.name.startswith("lookahead_ptb_small")]
    if chosen:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
        grid = np.arange(1, 31)
        for opt, lab in label.items():
            rs = [r for r in chosen if r.get("optimizer") == opt]
            band(axes[0], [rows(r, "train/epoch_ppl", "epoch") for r in rs], lab, grid)
            band(axes[1], [rows(r, "val/ppl", "epoch") for r in rs], lab, grid)
        axes[0].set(xlabel="epoch", ylabel="training perplexity", yscale="log")
        axes[1].set(xlabel="epoch", ylabel="validation perplexity", yscale="log")
        axes[1].legend(loc="upper left", bbox_to_anchor=(1.01, 1))
        fig.tight_layout()
        figs.append(save(fig, out, "ptb_curves"))
    tune = [r for r in runs if r.get("seed") == 0 and r.name.startswith("lookahead_ptb_small")]
    if tune:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
        for ax, inner in zip(axes, ("sgd", "adam")):
            for opt in (inner, f"lookahead_{inner}"):
                pts = defaultdict(list)
                for r in tune:
                    if r.get("optimizer") == opt:
                        la = lookahead_settings(r)
                        key = "" if opt == inner else f" (alpha {la.get('alpha')}, k {la.get('k')})"
                        pts[key].append((r.get("lr"), r.get("val/ppl_best")))
                default = " (alpha 0.8, k 5)"   # the authors' setting keeps Lookahead's colour
                for i, (key, p) in enumerate(sorted(pts.items(), key=lambda kv: kv[0] != default)):
                    p = sorted(x for x in p if x[1] is not None and math.isfinite(x[1]))
                    if p:
                        color = COLORS[label[opt]] if key in ("", default) else more[i % len(more)]
                        ax.plot(*zip(*p), "o-", ms=3, lw=1, color=color, label=label[opt] + key)
            ax.set(xlabel="learning rate", ylabel="best validation perplexity (seed 0)",
                   title=f"robustness over the {label[inner]} grid")
            if not ax.lines:
                not_run(ax)
                continue
            ax.set(xscale="log", yscale="log")
            ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
            ax.yaxis.set_minor_formatter(matplotlib.ticker.ScalarFormatter())
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=6)
        fig.tight_layout()
        figs.append(save(fig, out, "ptb_robustness"))
    return figs


def gnf(runs, out: Path) -> list[str]:
    gen = [r for r in runs if r.get("mmd/degree") is not None and r.group == "runs"]
    if not gen:
        return []
    stats = ("degree", "clustering", "orbit")
    paper = {"community_small": (0.20, 0.20, 0.11), "ego_small": (0.03, 0.10, 0.001)}
    sets = sorted({Path(str(r.get("data_path") or r.get("dataset"))).stem for r in gen})
    fig, axes = plt.subplots(1, len(sets), figsize=(5.2 * len(sets), 3.2), squeeze=False)
    for ax, ds in zip(axes[0], sets):
        rs = [r for r in gen if Path(str(r.get("data_path") or r.get("dataset"))).stem == ds]
        x = np.arange(3)
        for i, (key, lab) in enumerate((("mmd", "GNF"), ("floor", "perfect generator"))):
            vals = np.array([[r.get(f"{key}/{s}") for s in stats] for r in rs], dtype=float)
            m = vals.mean(0)
            err = vals.std(0) if len(vals) > 1 else None
            ax.bar(x + (i - 1) * 0.27, m, 0.27, yerr=err, color=COLORS[lab], label=lab)
        if ds in paper:
            ax.bar(x + 0.27, paper[ds], 0.27, color=COLORS["paper (recalled)"], hatch="//", label="paper (recalled)")
        ax.set_xticks(x, stats)
        n = f"{len(rs)} training seed{'s' if len(rs) != 1 else ''}" + (": mean, bar = std" if len(rs) > 1 else "")
        ax.set(title=f"{ds} ({n})", ylabel="MMD^2 (largest component, all vs all)", yscale="log")
    axes[0][-1].legend(loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    figs = [save(fig, out, "mmd")]
    for ds in sets:
        r = next(r for r in gen if Path(str(r.get("data_path") or r.get("dataset"))).stem == ds)
        f = r.dir / "samples_seed0.jsonl"
        if f.exists():
            figs.append(samples_grid(f, out, f"samples_{ds}"))
    return figs


def samples_grid(path: Path, out: Path, name: str, n: int = 16) -> str:
    import networkx as nx

    graphs = [json.loads(x) for x in path.read_text().splitlines()[:n]]
    fig, axes = plt.subplots(2, n // 2, figsize=(n // 2 * 1.4, 3))
    for ax, g in zip(axes.flat, graphs):
        G = nx.Graph()
        G.add_nodes_from(range(g["num_nodes"]))
        G.add_edges_from(map(tuple, g["edges"]))
        nx.draw(G, nx.spring_layout(G, seed=0), ax=ax, node_size=8, width=0.5, node_color="#d62728")
        ax.set_axis_off()
    fig.suptitle("the first 16 sampled graphs (seed 0), raw: isolated nodes included", fontsize=8)
    return save(fig, out, name)


DRAW = {"fastweights": fastweights, "acktr": acktr, "revrnn": revrnn, "lookahead": lookahead, "gnf": gnf}


def draw(paper: str, runs, out: Path) -> list[str]:
    style()
    out.mkdir(parents=True, exist_ok=True)
    for old in list(out.glob("*.png")) + list(out.glob("*.pdf")):   # every figure here is drawn again
        old.unlink()
    return DRAW[paper]([r for r in runs if r.group == "runs"], out)   # earlier code's runs are never drawn

"""Build results/fastweights/ from run directories: the Table-1 style table (test error, mean and
spread over seeds, the paper's column beside it), the learning-rate selection on validation, and
the validation-error-vs-steps figure.

    python scripts/fastweights_results.py --collect multirun/fastweights_*   # copy runs in, rebuild
    python scripts/fastweights_results.py                                     # rebuild from results/

Each collected run keeps its summary.json, metrics.jsonl and the exact command under
results/fastweights/runs/<name>/, so the table and plot can be rebuilt from committed files alone.
Selection rule: for each (model, R) the learning rate with the lowest best validation error at
seed 0 is chosen; the table reports test error (at the best-validation step) over all seeds run
with that learning rate and budget.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "fastweights"
# Ba et al. 2016, Table 1: test error (%) on associative retrieval.
PAPER = {
    ("irnn", 20): 62.11, ("lstm", 20): 60.81, ("alstm", 20): 60.13, ("fast_weights", 20): 1.81,
    ("irnn", 50): 60.23, ("lstm", 50): 1.85, ("alstm", 50): 1.62, ("fast_weights", 50): 0.0,
    ("irnn", 100): 0.34, ("lstm", 100): 0.0, ("alstm", 100): 0.0, ("fast_weights", 100): 0.0,
}
LABEL = {"fast_weights": "Fast weights", "lstm": "LSTM", "alstm": "A-LSTM", "irnn": "IRNN",
         "fast_weights_noln": "Fast weights, no LN", "fast_weights_nomem": "Fast weights, A=0"}


def variant(cfg) -> str:
    m = cfg["model"]
    if m["name"] == "fast_weights" and not m.get("layer_norm", True):
        return "fast_weights_noln"
    if m["name"] == "fast_weights" and not m.get("use_fast_weights", True):
        return "fast_weights_nomem"
    return m["name"]


DROP = ("logger.progress", "resume", "launcher", "hydra.")


def clean_command(cmd: str) -> str:
    """Drop the bookkeeping overrides (progress bar, resume, launcher) from a recorded command."""
    return " ".join(t for t in cmd.split() if not t.startswith(DROP))


def collect(dirs: list[Path], hardware_default: str | None = None) -> None:
    for d in dirs:
        for summ in sorted(d.rglob("summary.json")):
            run = summ.parent
            cfg = OmegaConf.to_container(OmegaConf.load(run / "resolved_config.yaml"))
            overrides = OmegaConf.to_container(OmegaConf.load(run / ".hydra" / "overrides.yaml"))
            s = json.loads(summ.read_text())
            sched = cfg["train"].get("schedule", "constant")
            name = (f"{variant(cfg)}_R{cfg['model']['hidden_size']}_lr{cfg['train']['lr']:g}"
                    f"_steps{cfg['train']['steps']}{'' if sched == 'constant' else '_' + sched}_seed{cfg['seed']}")
            dst = OUT / "runs" / name
            dst.mkdir(parents=True, exist_ok=True)
            shutil.copy(run / "metrics.jsonl", dst / "metrics.jsonl")
            s["command"] = clean_command(s.get("command") or "python run.py " + " ".join(overrides))
            if "wall_s" not in s:  # older runs: first to last metrics row (misses start-up, a few s)
                rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
                s["wall_s"] = rows[-1]["time"] - rows[0]["time"]
            if "hardware" not in s and hardware_default:
                s["hardware"] = hardware_default
            s.update(variant=variant(cfg), steps=cfg["train"]["steps"], lr=cfg["train"]["lr"], schedule=sched)
            (dst / "summary.json").write_text(json.dumps(s, indent=2, sort_keys=True) + "\n")


def load_runs() -> list[dict]:
    runs = []
    for summ in sorted((OUT / "runs").glob("*/summary.json")):
        s = json.loads(summ.read_text())
        s["dir"] = summ.parent
        runs.append(s)
    return runs


NOTES = """
## Reading the table

- **Fast weights reproduce.** R=50: 0.03% test error after 20k steps (paper 0%); R=100: 0.00%
  (paper 0%); R=20: 5.1% after 20k steps, and 0.83% with the longer budget (200k steps, cosine
  decay, about 20 minutes on one core; paper 1.81%). It passes 2% validation error after 53k steps
  (5.6 minutes of training) in that run.
- **The baselines are much stronger than the paper's at R=20/50.** Our LSTM reaches 12.8% (paper
  60.8%) at R=20 and our IRNN 54%/18% (paper 62%/60%). They share the fast-weights model's input
  embedding (100) and ReLU output layer (100) and a learning rate picked on validation; the paper
  does not give its baselines' input and output layers. The gap between fast weights and LSTM is
  still clear at R=20 and R=50.
- **A-LSTM here is an LSTM with soft attention over all its past hidden states** (as the issue
  specifies). Such a model can read the stored pair back directly, so it solves the task at every
  size (0.01%), unlike the paper's A-LSTM (60.1% at R=20). Secondary sources identify the paper's
  A-LSTM as the Associative LSTM of Danihelka et al. (2016), a different, holographic memory; that
  model is not implemented yet, so this row does not reproduce the paper's.
- **Ablations (R=20/50, one seed, learning rate not tuned):** without layer norm 60.9%/47.7%; with
  A fixed at 0 (same inner loop, no memory) 71.5%/65.4%: both the memory and layer normalisation
  are needed, as the paper argues.
- R=100 rows and the ablations have one seed and an untuned learning rate (1e-3 or the R=50 pick).
""".strip("\n").splitlines()


def fmt(vals: list[float]) -> str:
    pct = [100 * v for v in vals]
    if len(pct) == 1:
        return f"{pct[0]:.2f}"
    return f"{statistics.mean(pct):.2f} ± {statistics.stdev(pct):.2f}"


def build() -> str:
    runs = load_runs()
    if not runs:
        sys.exit("no runs under results/fastweights/runs; use --collect <run dirs>")
    by = defaultdict(list)
    for r in runs:
        by[(r["variant"], r["hidden_size"], (r["steps"], r.get("schedule", "constant")))].append(r)
    # learning-rate selection on validation, seed 0, per (variant, R, budget)
    chosen = {}
    tuning_rows = []
    for (v, R, steps), rs in sorted(by.items()):
        seed0 = [r for r in rs if r["seed"] == 0]
        if not seed0:
            continue
        best = min(seed0, key=lambda r: (r["val/error_best"], r["lr"]))
        chosen[(v, R, steps)] = best["lr"]
        if len({r["lr"] for r in seed0}) > 1:
            tuning_rows.append((v, R, steps, sorted((r["lr"], r["val/error_best"]) for r in seed0), best["lr"]))

    lines = ["# Fast weights: associative retrieval (Ba et al., NeurIPS 2016, Table 1)", "",
             "Generated by `python scripts/fastweights_results.py` from the runs under `runs/`; do not edit by hand.",
             "", "Scale: **CPU-small budget** (the paper's models and data, 100k/10k/20k sequences, but "
             "training for minutes on a 2-core CPU rather than to convergence). Test error (%) at the "
             "step with the best validation error; mean ± sample std over seeds. The paper trained "
             "longer, with a grid search whose budget it does not state.", "",
             f"Hardware: {'; '.join(sorted({r.get('hardware', '?') for r in runs}))}; runs were made two at a "
             "time, one per core (`threads=1`).", "",
             "| model | R | ours: test error % | seeds | steps | lr | paper % |",
             "|---|---|---|---|---|---|---|"]
    for (v, R, steps), lr in sorted(chosen.items(), key=lambda kv: (kv[0][1], list(LABEL).index(kv[0][0]), kv[0][2])):
        rs = [r for r in by[(v, R, steps)] if r["lr"] == lr]
        paper = PAPER.get((v, R))
        tuned = any(t[0] == v and t[1] == R and t[2] == steps for t in tuning_rows)
        budget = f"{steps[0]}" + ("" if steps[1] == "constant" else f" ({steps[1]} lr)")
        lines.append(f"| {LABEL[v]} | {R} | {fmt([r['test/error'] for r in rs])} | "
                     f"{','.join(str(r['seed']) for r in sorted(rs, key=lambda r: r['seed']))} | {budget} | {lr:g}{'' if tuned else ' (untuned)'} | "
                     f"{'' if paper is None else f'{paper:.2f}'} |")
    lines += ["", "## Learning-rate selection (best validation error %, seed 0)", "",
              "| model | R | steps | lr: val error % | picked |", "|---|---|---|---|---|"]
    for v, R, steps, pairs, lr in sorted(tuning_rows, key=lambda t: (t[1], list(LABEL).index(t[0]), t[2])):
        lines.append(f"| {LABEL[v]} | {R} | {steps[0]} | "
                     + ", ".join(f"{a:g}: {100 * b:.2f}" for a, b in pairs) + f" | {lr:g} |")
    lines += ["", "## Commands", "", "Every run's exact command is in `runs/<name>/summary.json` (key `command`). "
              "The table's runs:", ""]
    for (v, R, steps), lr in sorted(chosen.items(), key=lambda kv: (kv[0][1], list(LABEL).index(kv[0][0]))):
        for r in sorted((r for r in by[(v, R, steps)] if r["lr"] == lr), key=lambda r: r["seed"]):
            lines.append(f"- `{r['command']}` → test error {100 * r['test/error']:.2f}% "
                         f"({r.get('wall_s', float('nan')) / 60:.1f} min)")
    lines += ["", "![validation error](val_error.png)", "", "![long budget](val_error_long.png)", ""]
    lines += NOTES
    default = OUT / "default_run" / "summary.json"
    if default.exists():
        d = json.loads(default.read_text())
        lines += ["", "## The default run", "",
                  f"`{d['command']}` (the experiment as configured: R=50, lr 3e-4, 20k steps, W&B offline) "
                  f"finished in {d['wall_s'] / 60:.1f} min with test error {100 * d['test/error']:.3f}% "
                  f"on {d['hardware']}. Files: `default_run/`."]
    bench = OUT / "bench_fastweights.txt"
    if bench.exists():
        lines += ["", "## Throughput", "", "`python scripts/bench_fastweights.py [--threads 1]` (training step: "
                  "forward, backward, clipping, Adam; batch 128, R=50):", "", "```", bench.read_text().strip(), "```"]
    plot(by, chosen)
    return "\n".join(lines)


def plot(by, chosen) -> None:
    default = (20000, "constant")
    _plot(by, {k: v for k, v in chosen.items() if k[2] == default}, "val_error",
          "Associative retrieval, 20k Adam steps: mean over seeds, band = min..max")
    long = {k: v for k, v in chosen.items() if k[2] != default}
    if long:
        _plot(by, long, "val_error_long", "Associative retrieval, longer budget (200k Adam steps, cosine learning-rate decay)")


def _plot(by, chosen, stem, title) -> None:
    Rs = sorted({R for (_, R, _) in chosen})
    fig, axes = plt.subplots(1, len(Rs), figsize=(5.2 * len(Rs), 3.8), squeeze=False)
    colors = {"fast_weights": "C3", "lstm": "C0", "alstm": "C2", "irnn": "C7",
              "fast_weights_noln": "C1", "fast_weights_nomem": "C4"}
    for ax, R in zip(axes[0], Rs):
        for (v, R2, steps), lr in sorted(chosen.items()):
            if R2 != R:
                continue
            curves = []
            for r in by[(v, R, steps)]:
                if r["lr"] != lr:
                    continue
                rows = [json.loads(x) for x in (r["dir"] / "metrics.jsonl").read_text().splitlines()]
                curves.append({row["step"]: row["val/error"] for row in rows if "val/error" in row})
            steps_common = sorted(set.intersection(*(set(c) for c in curves)))
            vals = [[100 * c[s] for c in curves] for s in steps_common]
            mean = [statistics.mean(v_) for v_ in vals]
            ax.plot(steps_common, mean, color=colors[v], label=f"{LABEL[v]} ({len(curves)} seed{'' if len(curves) == 1 else 's'})")
            if len(curves) > 1:
                ax.fill_between(steps_common, [min(v_) for v_ in vals], [max(v_) for v_ in vals],
                                color=colors[v], alpha=0.2, linewidth=0)
        ax.set_yscale("symlog", linthresh=1.0)
        ax.set_ylim(0, 100)
        ax.set_title(f"R = {R} hidden units")
        ax.set_xlabel("training steps (batch 128)")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x / 1000:g}k" if x else "0"))
        ax.set_ylabel("validation error (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    for ext in ("png", "pdf"):
        fig.savefig(OUT / f"{stem}.{ext}", dpi=130)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--collect", nargs="*", type=Path, default=[])
    ap.add_argument("--hardware-default", default=None, help="for collected runs whose summary lacks it")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    collect(args.collect, args.hardware_default)
    (OUT / "README.md").write_text(build() + "\n")
    print(f"wrote {OUT / 'README.md'}")


if __name__ == "__main__":
    main()

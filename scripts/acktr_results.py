"""Build results/acktr/ from on-policy run directories: a table of final scores beside the paper's,
and score-vs-timesteps curves (ACKTR and A2C on one figure per environment, mean over seeds with a
min..max band).

    python scripts/acktr_results.py --collect multirun/mujoco_1m     # copy runs in, rebuild
    python scripts/acktr_results.py                                   # rebuild from results/acktr/runs

Each collected run keeps summary.json (with its command and hardware) and the episode rows of
metrics.jsonl under results/acktr/runs/<algo>_<env>_seed<s>/.
"""
from __future__ import annotations

import argparse
import warnings
import json
import sys
import statistics
from collections import defaultdict
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from runners.core import hardware  # noqa: E402
warnings.filterwarnings("ignore", category=RuntimeWarning)  # nan-means before the first episode
OUT = ROOT / "results" / "acktr"
# Wu et al. 2017: MuJoCo ACKTR at 1M timesteps (Table 2 as recalled by the issue, top-10 episode
# average); Atari Table 1 (ACKTR / A2C, 10M timesteps).
PAPER = {"HalfCheetah-v5": (5586.3, None), "Hopper-v5": (3915.9, None), "Walker2d-v5": (6198.8, None),
         "Ant-v5": (4621.6, None), "Reacher-v5": (-1.5, None), "Swimmer-v5": (138.0, None),
         "InvertedPendulum-v5": (1000.0, None), "InvertedDoublePendulum-v5": (9356.0, None),
         "pong": (20.9, 19.9), "breakout": (735.7, 581.6), "beam_rider": (13581.4, 8148.1),
         "qbert": (23151.5, 15967.4), "seaquest": (1776.0, 1754.0), "space_invaders": (19723.0, 1757.2)}


LABEL = {"acktr": "ACKTR", "a2c": "A2C", "acktr_stats10": "ACKTR, K-FAC statistics every 10 updates",
         "acktr_stats4": "ACKTR, K-FAC statistics every 4 updates",
         "acktr_ci1": "ACKTR, 1 critic step a batch (earlier setting)",
         "acktr_stats10_ci1": "ACKTR, 1 critic step, statistics every 10 (earlier setting)"}
COLORS = {"acktr": "C3", "a2c": "C0", "acktr_stats10": "C1", "acktr_stats4": "C4", "acktr_ci1": "C7",
          "acktr_stats10_ci1": "C8"}


def partial_summary(run: Path) -> dict:
    """A summary for an interrupted run (no summary.json yet): scores so far, marked partial."""
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    cfg = OmegaConf.load(run / "resolved_config.yaml")
    scores = [r["episode/score"] for r in rows if "episode/score" in r]
    overrides = OmegaConf.load(run / ".hydra" / "overrides.yaml")
    overrides = [o for o in overrides if not o.startswith(("resume=", "hydra.run.dir="))]
    return {"algo": cfg.algo.name, "env": (cfg.env.get("game") or cfg.env.id.split("/")[-1].split("-")[0].lower()) if cfg.env.kind == "atari" else cfg.env.id,
            "seed": cfg.seed, "timesteps": max(r.get("timesteps", 0) for r in rows),
            "score/mean10": float(np.mean(scores[-10:])), "score/mean100": float(np.mean(scores[-100:])),
            "score/top10": float(np.mean(sorted(scores)[-10:])), "episodes": len(scores),
            "wall_s": rows[-1]["time"] - rows[0]["time"], "partial": True,
            "hardware": hardware(threads=cfg.threads),
            "command": "python run.py " + " ".join(overrides) + f"  # interrupted; resume with: python run.py resume={run}"}


def collect(dirs):
    for d in dirs:
        found = sorted(Path(d).rglob("summary.json")) or [Path(d) / "summary.json"]
        for summ in found:
            run = summ.parent
            s = json.loads(summ.read_text()) if summ.exists() else partial_summary(run)
            cfg = OmegaConf.load(run / "resolved_config.yaml")
            if cfg.env.kind == "atari":
                s["env"] = cfg.env.id.split("/")[-1].split("-")[0].lower()         # one name per game, finished or interrupted
            se = cfg.algo.kfac.stats_every if cfg.algo.name == "acktr" else 1
            s["variant"] = s["algo"] + (f"_stats{se}" if se > 1 else "")
            if cfg.algo.name == "acktr" and cfg.algo.get("critic_lr") and cfg.algo.get("critic_iters", 1) == 1:
                s["variant"] += "_ci1"      # the earlier MuJoCo setting: one critic step per batch
            name = f"{s['variant']}_{s['env'].replace('/', '_')}_seed{s['seed']}"
            dst = OUT / "runs" / name
            dst.mkdir(parents=True, exist_ok=True)
            rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
            keep = [r for r in rows if "episode/score" in r or "score/mean100" in r]
            (dst / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in keep))
            if not s.get("partial"):
                s["command"] = " ".join(t for t in s["command"].split() if not t.startswith(("logger.progress", "resume")))
            (dst / "summary.json").write_text(json.dumps(s, indent=2, sort_keys=True) + "\n")


def curve(run_dir: Path, grid: np.ndarray, window: int = 10) -> np.ndarray:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    # episode rows carry frames (Atari: 4 per agent step); the x axis is agent timesteps
    per = 4 if any(r.get("frames", 0) > r.get("timesteps", float("inf")) for r in rows if "timesteps" in r) else 1
    eps = [(r["frames"] / per, r["episode/score"]) for r in rows if "episode/score" in r]
    if not eps:
        return np.full_like(grid, np.nan, dtype=float)
    t = np.array([e[0] for e in eps], dtype=float)
    s = np.array([e[1] for e in eps], dtype=float)
    smooth = np.array([s[max(0, i - window + 1):i + 1].mean() for i in range(len(s))])
    out = np.interp(grid, t, smooth, left=np.nan)
    out[grid > t[-1]] = np.nan
    return out


def build() -> str:
    runs = []
    for summ in sorted((OUT / "runs").glob("*/summary.json")):
        s = json.loads(summ.read_text())
        s["dir"] = summ.parent
        runs.append(s)
    by = defaultdict(list)
    for r in runs:
        by[(r["env"], r.get("variant", r["algo"]))].append(r)
    envs = sorted({e for e, _ in by})
    lines = ["# ACKTR vs A2C (Wu et al., NeurIPS 2017)", "",
             "Generated by `python scripts/acktr_results.py` from `runs/`; do not edit by hand.", "",
             "Scale: the paper's budget for MuJoCo (1M timesteps), on a 2-core CPU (one run per core, "
             "`threads=1`). Score: mean of the last 10 finished episodes (unclipped); mean ± sample std "
             "over seeds, and the best-10-episode average the paper reports.", "",
             "| env | algo | seeds | timesteps | ours: last-10 mean | ours: top-10 mean | paper ACKTR | paper A2C |",
             "|---|---|---|---|---|---|---|---|"]
    variants = sorted({v for _, v in by}, key=lambda v: (v != "acktr", v))
    for env in envs:
        for algo in variants:
            rs = sorted(by.get((env, algo), []), key=lambda r: r["seed"])
            if not rs:
                continue
            last = [r["score/mean10"] for r in rs]
            top = [r["score/top10"] for r in rs]
            f = (lambda v: f"{statistics.mean(v):.1f} ± {statistics.stdev(v):.1f}" if len(v) > 1 else f"{v[0]:.1f}")
            pa, pb = PAPER.get(env.replace("ALE/", ""), (None, None))
            lines.append(f"| {env} | {LABEL.get(algo, algo)} | {','.join(str(r['seed']) for r in rs)} | {rs[0]['timesteps']} | "
                         f"{f(last)} | {f(top)} | {'' if pa is None else pa} | {'' if pb is None else pb} |")
    hw = sorted({r.get("hardware", "?") for r in runs})
    lines += ["", f"Hardware: {'; '.join(hw)}.", "", "## Commands", ""]
    for r in runs:
        if r.get("partial"):
            lines.append(f"- `{r['command'].split('  #')[0]}` → **interrupted at {r['timesteps']:,} timesteps** "
                         f"(resumable from its checkpoint), last-10 {r['score/mean10']:.1f}, last-100 "
                         f"{r['score/mean100']:.1f} ({r['wall_s'] / 60:.1f} min)")
            continue
        lines.append(f"- `{r['command']}` → last-10 {r['score/mean10']:.1f}, top-10 {r['score/top10']:.1f} "
                     f"({r['wall_s'] / 60:.1f} min)")
    fig, axes = plt.subplots(1, len(envs), figsize=(5.2 * len(envs), 3.8), squeeze=False)
    for ax, env in zip(axes[0], envs):
        T = max(r["timesteps"] for algo in variants for r in by.get((env, algo), []))
        grid = np.linspace(0, T, 200)
        for algo, color in ((v, COLORS.get(v, "C2")) for v in variants):
            rs = by.get((env, algo), [])
            if not rs:
                continue
            C = np.stack([curve(r["dir"], grid) for r in rs])
            with np.errstate(all="ignore"):
                m = np.nanmean(C, 0)
            ax.plot(grid, m, color=color, label=f"{LABEL.get(algo, algo)} ({len(rs)} seed{'s' if len(rs) > 1 else ''})")
            if len(rs) > 1:
                ax.fill_between(grid, np.nanmin(C, 0), np.nanmax(C, 0), color=color, alpha=0.2, linewidth=0)
        ax.set_title(env)
        ax.set_xlabel("timesteps")
        ax.set_ylabel("episode return (10-episode mean)")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x / 1e6:g}M" if x else "0"))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    for ext in ("png", "pdf"):
        fig.savefig(OUT / f"curves.{ext}", dpi=130)
    plt.close(fig)
    lines += ["", "![curves](curves.png)", ""]
    bench = OUT / "bench_acktr.txt"
    if bench.exists():
        lines += ["## Update cost (`scripts/bench_acktr.py`)", "",
                  "One ACKTR update against one A2C update on the Atari network (32-64-32-512 CNN, batch 640 = "
                  "32 envs x 20 steps), side by side in one process, this 2-core CPU. Eigendecompositions every "
                  "10 (paper) or 20 updates; the network in channels_last (the runner's default). Targets: <= 4x at "
                  "the paper's settings (statistics every update), <= 1.5x amortized: both met (2.79x, 1.37x). "
                  "Measured `python scripts/bench_acktr.py` and `python scripts/bench_acktr.py --stats-every 10 "
                  "--eig-every 20` on an otherwise idle machine.", "", "```", bench.read_text().strip(), "```", ""]
    pong = OUT / "bench_pong_throughput.txt"
    if pong.exists():
        lines += ["## Pong training throughput (`scripts/bench_pong_throughput.py --steps 8000`)", "",
                  "Agent steps per second including updates, 16 environments, side by side in one process with "
                  "stable-baselines3 2.9.2's A2C and its Atari wrappers (installed for the benchmark only), this "
                  "2-core CPU. Target: ours >= 1.5x SB3 with K-FAC included. Our A2C: 1.59x; ACKTR with amortized "
                  "K-FAC statistics (every 10 updates): 1.47x, just short; ACKTR at the paper's settings: 0.90x. "
                  "What remains is the rollout, not K-FAC: a 16-env ALE step (2.9 ms) and the batch-16 policy "
                  "forward (1.9 ms) run one after the other; overlapping them (ale-py's asynchronous send/recv on "
                  "two halves of the envs) is the next step.", "",
                  "```", pong.read_text().strip(), "```", ""]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--collect", nargs="*", type=Path, default=[])
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    collect(args.collect)
    text = build()
    notes = OUT / "NOTES.md"
    if notes.exists():
        text += "\n" + notes.read_text()
    (OUT / "README.md").write_text(text + "\n")
    print(f"wrote {OUT / 'README.md'}")


if __name__ == "__main__":
    main()

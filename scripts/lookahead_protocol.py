"""Lookahead's PTB protocol at CPU-small scale (issue: tuned baselines, the paper's grids, equal budgets).

Stages (each a Hydra multirun with resume=auto into a fixed folder, so re-running finishes what is left):

  base     SGD (no momentum) lr in {1, 2.5, 5, 10, 30, 50} and Adam lr in {5e-4, 1e-3, 5e-3, 1e-2, 5e-2, 1e-1}:
           the paper's grids without their smallest value (which cannot converge in this budget), seed 0.
  la       Lookahead(SGD) / Lookahead(Adam) at the inner optimizer's chosen lr with (alpha, k) in {0.5, 0.8} x {5, 10}
           (the paper's Lookahead grid), seed 0.
  la2      the best (alpha, k) at the two neighbouring grid lrs: 6 configurations per optimizer, like the baselines.
  seeds    the validation-chosen configuration of each optimizer with fresh seeds 1, 2, 3 (seed 0 chose it).
  robust   Lookahead at its chosen (alpha, k) over the rest of its inner optimizer's lr grid (the robustness figure:
           spread over lr of Lookahead vs its inner optimizer, the same lrs).

``--la-tuning default`` skips the stages la and la2: Lookahead runs at its inner optimizer's chosen lr with the
authors' default (alpha 0.8, k 5), so Lookahead gets less tuning than its baselines (a conservative comparison that
costs up to 18 fewer runs). ``--seeds 1,2`` sets the fresh seeds of the final runs (default 1, 2, 3).

    python scripts/lookahead_protocol.py --stage all --data-root ../shared/data --launcher joblib
    python scripts/lookahead_protocol.py --stage base --dry-run

Selection uses only validation perplexity (``val/ppl_best``); test perplexity is never looked at here.
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = "lookahead_ptb_small"
GRIDS = {"sgd": [1.0, 2.5, 5.0, 10.0, 30.0, 50.0], "adam": [5e-4, 1e-3, 5e-3, 1e-2, 5e-2, 1e-1]}
ALPHAS, KS = (0.5, 0.8), (5, 10)
SEEDS = (1, 2, 3)
STAGES = ("base", "la", "la2", "seeds", "robust")


def summaries(folder: Path) -> list[dict]:
    """Finished runs under ``folder`` (summary.json) with their resolved optimizer settings."""
    from omegaconf import OmegaConf

    out = []
    for s in sorted(folder.glob("**/summary.json")):
        cfg = OmegaConf.load(s.parent / "resolved_config.yaml")
        la = cfg.optimizer.get("lookahead") or {}
        out.append({"optimizer": cfg.optimizer.name, "lr": float(cfg.optimizer.lr), "seed": int(cfg.seed),
                    "alpha": la.get("alpha"), "k": la.get("k"), **json.loads(s.read_text()), "dir": str(s.parent)})
    return out


def best(runs: list[dict], optimizer: str) -> dict | None:
    ok = [r for r in runs if r["optimizer"] == optimizer and math.isfinite(r.get("val/ppl_best", math.nan))]
    return min(ok, key=lambda r: r["val/ppl_best"]) if ok else None


def neighbours(grid: list[float], lr: float) -> list[float]:
    """The two grid lrs beside ``lr`` (the two nearest inside when lr is at an edge)."""
    i = min(range(len(grid)), key=lambda j: abs(math.log(grid[j] / lr)))
    lo = max(0, min(i - 1, len(grid) - 3))
    return [g for g in grid[lo:lo + 3] if g != grid[i]][:2]


DEFAULT_AK = {"alpha": 0.8, "k": 5}   # the authors' Lookahead defaults (michaelrzhang/lookahead)


def chosen(root: Path, la_tuning: str = "grid") -> dict[str, dict]:
    """The validation-chosen configuration of each optimizer (from the tuning stages); with ``la_tuning='default'``
    Lookahead takes its inner optimizer's chosen lr and the authors' (alpha, k)."""
    tune = summaries(root / "base") + summaries(root / "la") + summaries(root / "la2")
    out = {name: b for name in ("sgd", "adam", "lookahead_sgd", "lookahead_adam") if (b := best(tune, name))}
    if la_tuning == "default":
        for inner in GRIDS:
            if inner in out:
                out[f"lookahead_{inner}"] = {"lr": out[inner]["lr"], **DEFAULT_AK, "val/ppl_best": math.nan}
    return out


def sweeps(stage: str, root: Path, la_tuning: str = "grid", seeds=SEEDS) -> list[tuple[str, list[str]]]:
    """(folder, overrides) of each multirun of a stage; stages after 'base' read the earlier stages' results."""
    fmt = lambda xs: ",".join(f"{x:g}" for x in xs)   # noqa: E731
    if stage == "base":
        return [(f"base/{o}", [f"optimizer={o}", f"optimizer.lr={fmt(GRIDS[o])}", "seed=0"]) for o in GRIDS]
    if la_tuning == "default" and stage in ("la", "la2"):
        return []
    base = summaries(root / "base")
    out = []
    for inner in GRIDS:
        if stage == "seeds":
            break
        b = best(base, inner)
        if b is None:
            raise SystemExit(f"error: stage {stage} needs the finished '{inner}' runs of stage base under {root}")
        la = f"lookahead_{inner}"
        if stage == "la":
            out.append((f"la/{la}", [f"optimizer={la}", f"optimizer.lr={b['lr']:g}", f"optimizer.lookahead.alpha={fmt(ALPHAS)}",
                                     f"optimizer.lookahead.k={fmt(KS)}", "seed=0"]))
            continue
        la_best = (best(summaries(root / "la"), la) if la_tuning == "grid"
                   else {**DEFAULT_AK, "lr": b["lr"]})
        if la_best is None:
            raise SystemExit(f"error: stage {stage} needs the finished '{la}' runs of stage la under {root}")
        ak = [f"optimizer.lookahead.alpha={la_best['alpha']:g}", f"optimizer.lookahead.k={la_best['k']}"]
        if stage == "la2":
            out.append((f"la2/{la}", [f"optimizer={la}", f"optimizer.lr={fmt(neighbours(GRIDS[inner], b['lr']))}", *ak, "seed=0"]))
        elif stage == "robust":
            # seed-0 runs at the chosen (alpha, k) from the tuning stages (none with --la-tuning default)
            done = {r["lr"] for r in summaries(root / "la") + summaries(root / "la2")
                    if r["optimizer"] == la and r["alpha"] == la_best["alpha"] and r["k"] == la_best["k"]}
            rest = [g for g in GRIDS[inner] if not any(math.isclose(g, d) for d in done)]
            if rest:
                out.append((f"robust/{la}", [f"optimizer={la}", f"optimizer.lr={fmt(rest)}", *ak, "seed=0"]))
    if stage == "seeds":
        out = []
        for name, c in chosen(root, la_tuning).items():
            extra = ([f"optimizer.lookahead.alpha={c['alpha']:g}", f"optimizer.lookahead.k={c['k']}"]
                     if name.startswith("lookahead") else [])
            out.append((f"seeds/{name}", [f"optimizer={name}", f"optimizer.lr={c['lr']:g}", *extra,
                                          f"seed={','.join(map(str, seeds))}"]))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stage", default="all", help=f"all | {' | '.join(STAGES)}")
    ap.add_argument("--root", default="runs/lookahead_protocol", help="where the stages write their runs")
    ap.add_argument("--data-root", default="data", help="data.root holding ptb/")
    ap.add_argument("--launcher", default="joblib")
    ap.add_argument("--la-tuning", choices=["grid", "default"], default="grid",
                    help="grid: the paper's (alpha, k) grid (stages la, la2); default: the authors' (0.8, 5)")
    ap.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="fresh seeds of the final runs")
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("extra", nargs="*", help="more overrides for every run")
    a = ap.parse_args(argv)
    stages = STAGES if a.stage == "all" else (a.stage,)
    if any(s not in STAGES for s in stages):
        print(f"error: unknown stage '{a.stage}'; available: all, {', '.join(STAGES)}", file=sys.stderr)
        return 2
    root = Path(a.root)
    for stage in stages:
        try:
            seeds = [int(x) for x in a.seeds.split(",")]
        except ValueError:
            print(f"error: --seeds takes comma-separated integers, got '{a.seeds}'", file=sys.stderr)
            return 2
        for folder, overrides in sweeps(stage, root, a.la_tuning, seeds):
            cmd = [sys.executable, str(ROOT / "run.py"), "-m", f"experiment={EXPERIMENT}", *overrides,
                   f"launcher={a.launcher}", "threads=1", "resume=auto", f"data.root={a.data_root}",
                   f"hydra.sweep.dir={root / folder}", "logger.progress=false", *a.extra]
            print("python " + " ".join(cmd[1:]), flush=True)
            if not a.dry_run:
                subprocess.run(cmd, cwd=ROOT, check=False)
    if not a.dry_run:
        for name, c in chosen(root, a.la_tuning).items():
            print(f"chosen {name}: lr {c['lr']:g}" + (f" alpha {c['alpha']:g} k {c['k']}" if c["alpha"] else "")
                  + f"  val ppl {c['val/ppl_best']:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

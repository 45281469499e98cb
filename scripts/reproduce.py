"""Launch every experiment of the five papers as Hydra multiruns: ``make reproduce-all`` / ``-<paper>`` /
``-small`` call this.

    python scripts/reproduce.py --scale full  --paper all --launcher slurm          # paper-full, the papers' seeds
    python scripts/reproduce.py --scale small --launcher joblib --data-root ../shared/data
    python scripts/reproduce.py --scale small --dry-run                             # print the commands

Every sweep writes to ``<root>/<scale>/<paper>/<experiment>_seed<k>[_<overrides>]`` (a name that does not
depend on the date), with ``resume=auto``: re-running the same command skips the runs that wrote
``summary.json`` and resumes interrupted ones from their checkpoint, so an interrupted reproduction is
finished by running it again. A run that ends with a one-line error (missing data, NaN loss) leaves
``error.txt`` in its directory; the others go on, and the failures are listed at the end (exit 1).

Seeds: the papers' where stated (ACKTR: 2 seeds on Atari and 3 on MuJoCo, Figs. 1-2; Lookahead: 3 runs on
CIFAR), one for the reversible-RNN paper (single runs reported); our choice elsewhere (marked below).
Scale ``small`` is a first look: each paper's CPU-small configurations, one seed, short budgets (PTB: 1 epoch); it
checks that everything runs on a laptop and shows the first learning curves. The committed CPU-small results in
``results/`` come from the longer commands listed in each paper's ledger (``results/claims/<paper>.yaml``,
``reproduce:``), shown on its page.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import time
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAPERS = ("fastweights", "acktr", "revrnn", "lookahead", "gnf")
LAUNCHERS = ("basic", "joblib", "submitit_local", "slurm")


@dataclass
class Sweep:
    experiments: list[str]
    seeds: list[int]
    overrides: list[str] = field(default_factory=list)   # may sweep, e.g. "optimizer=sgd,lookahead_sgd"
    data: bool = False                                    # needs the external data root (PTB, Planetoid, ...)
    budget: list[str] = field(default_factory=list)       # training budget; --smoke drops it (smoke sets its own)


GAMES = ["pong", "breakout", "beamrider", "qbert", "seaquest", "spaceinvaders"]
TASKS = ["halfcheetah", "hopper", "walker2d", "ant", "reacher", "swimmer", "invertedpendulum", "inverteddoublependulum"]

FULL: dict[str, list[Sweep]] = {
    # the paper's training budget is not stated: 10x our CPU budget, with cosine decay; seeds: our choice
    "fastweights": [Sweep(["fastweights_retrieval", "lstm_retrieval", "alstm_retrieval", "irnn_retrieval"],
                          [0, 1, 2], ["model.hidden_size=20,50,100", "train.steps=200000", "train.schedule=cosine"])],
    "acktr": [Sweep([f"{a}_{g}" for a in ("acktr", "a2c") for g in GAMES], [0, 1]),
              Sweep([f"{a}_{t}" for a in ("acktr", "a2c") for t in TASKS], [0, 1, 2])],
    "revrnn": [Sweep(["lstm_ptb", "gru_ptb", "revlstm_ptb", "revgru_ptb"], [0], data=True),
               Sweep(["lstm_multi30k", "gru_multi30k", "revlstm_multi30k", "revgru_multi30k",
                      "lstm_iwslt", "revlstm_iwslt"], [0], data=True)],
    "lookahead": [Sweep(["lookahead_cifar10", "lookahead_cifar100"], [0, 1, 2],
                        ["optimizer=sgd,adam,lookahead_sgd,lookahead_adam"], data=True),
                  Sweep(["lookahead_imagenet"], [0], ["optimizer=sgd,lookahead_sgd"], data=True),
                  Sweep(["lookahead_ptb"], [0], ["optimizer=adam,lookahead_adam"], data=True)],
    "gnf": [Sweep(["gnf_community_small", "gnf_ego_small"], [0, 1, 2], data=True),   # seeds: our choice
            Sweep(["grevnet_cora", "grevnet_pubmed"], [0, 1], ["model.kind=grevnet,gnn"], data=True),
            Sweep(["grevnet_ppi"], [0], data=True)],
}

PTB_BUDGET = ["train.epochs=1", "train.max_batches_per_epoch=300"]
SMALL: dict[str, list[Sweep]] = {
    "fastweights": [Sweep(["fastweights_retrieval", "lstm_retrieval", "alstm_retrieval", "irnn_retrieval"], [0],
                          ["model.hidden_size=20"])],
    "acktr": [Sweep(["acktr_hopper_cpu", "a2c_hopper_cpu", "acktr_pong_cpu", "a2c_pong_cpu"], [0])],
    "revrnn": [Sweep(["lstm_synthetic", "revlstm_synthetic"], [0]),
               Sweep(["lstm_ptb_small", "revlstm_ptb_small"], [0], data=True, budget=PTB_BUDGET)],
    "lookahead": [Sweep(["lookahead_ptb_small"], [0], ["optimizer=adam,lookahead_adam"], data=True,
                        budget=PTB_BUDGET)],
    "gnf": [Sweep(["gnf_community_small_cpu"], [0], budget=["train.ae_epochs=150", "train.flow_epochs=600"]),
            Sweep(["grevnet_cora_cpu"], [0], ["model.kind=grevnet,gnn"], data=True)],
}
PLANS = {"full": FULL, "small": SMALL}


def commands(scale: str, papers, launcher: str, root: Path, data_root: str | None, smoke: bool,
             only: set[str] | None, extra: list[str], seeds: list[int] | None = None,
             gen_root: str | None = None) -> list[tuple[str, list[str]]]:
    out = []
    for paper in papers:
        for sw in PLANS[scale][paper]:
            exps = [e for e in sw.experiments if only is None or e in only]
            if not exps:
                continue
            cmd = [sys.executable, str(ROOT / "run.py"), "-m", f"experiment={','.join(exps)}",
                   f"seed={','.join(map(str, seeds or sw.seeds))}", *sw.overrides,
                   *([] if smoke else sw.budget), f"launcher={launcher}", "resume=auto",
                   f"hydra.sweep.dir={root / scale / paper}",
                   "logger.progress=false"]
            if sw.data and data_root:
                cmd.append(f"data.root={data_root}")
            elif not sw.data and gen_root:
                cmd.append(f"data.root={gen_root}")
            if smoke:
                cmd.append("smoke=true")
            out.append((paper, cmd + list(extra)))
    return out


def failures(root: Path) -> list[str]:
    return sorted(f"{p.parent}: {p.read_text().strip()}" for p in root.rglob("error.txt")
                  if not (p.parent / "summary.json").exists())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", choices=sorted(PLANS), default="small")
    ap.add_argument("--paper", default="all", help=f"all | {' | '.join(PAPERS)}")
    ap.add_argument("--launcher", choices=LAUNCHERS, default="basic")
    ap.add_argument("--root", default=str(ROOT / "runs" / "reproduce"), help="where the sweeps write their runs")
    ap.add_argument("--data-root", default=None, help="data.root for experiments with external data")
    ap.add_argument("--gen-root", default=None,
                    help="data.root for experiments that generate their data (default: the config's, data/)")
    ap.add_argument("--only", default=None, help="comma-separated experiment names (a subset of the plan)")
    ap.add_argument("--seeds", default=None, help="comma-separated seeds instead of the plan's (checks)")
    ap.add_argument("--smoke", action="store_true", help="smoke=true: seconds-long runs (tests)")
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("extra", nargs="*", help="more overrides for every run, e.g. device=cuda")
    a = ap.parse_args(argv)
    papers = PAPERS if a.paper == "all" else (a.paper,)
    if any(p not in PAPERS for p in papers):
        print(f"error: unknown paper '{a.paper}'; available: all, {', '.join(PAPERS)}", file=sys.stderr)
        return 2
    root = Path(a.root).resolve()
    only = set(a.only.split(",")) if a.only else None
    seeds = [int(x) for x in a.seeds.split(",")] if a.seeds else None
    unknown = sorted((only or set()) - {e for p in papers for sw in PLANS[a.scale][p] for e in sw.experiments})
    if unknown:
        print(f"error: not in the {a.scale} plan of {a.paper}: {', '.join(unknown)}", file=sys.stderr)
        return 2
    cmds = commands(a.scale, papers, a.launcher, root, a.data_root, a.smoke, only, a.extra, seeds, a.gen_root)
    t0 = time.time()
    for paper, cmd in cmds:
        shown = " ".join(c if " " not in c and "$" not in c else f"'{c}'" for c in cmd[1:])
        print(f"[{paper}] python {shown}", flush=True)
        if not a.dry_run:
            subprocess.run(cmd, cwd=ROOT, check=False)
    if a.dry_run:
        return 0
    bad = failures(root / a.scale)
    for b in bad:
        print(f"failed: {b}", file=sys.stderr)
    sys.path.insert(0, str(ROOT))
    from runners.core import hardware

    n_runs = len(list((root / a.scale).glob("*/*/summary.json")))
    timing = {"command": "python scripts/reproduce.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "elapsed_s": time.time() - t0, "launcher": a.launcher, "hardware": hardware(),
              "runs": n_runs, "failed": len(bad)}
    name = "timing.json" if a.paper == "all" else f"timing_{a.paper}.json"
    (root / a.scale / name).write_text(json.dumps(timing, indent=2) + "\n")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

"""`make reproduce-*` and `make results`: the plans name real experiments, the whole pipeline runs at smoke
scale and the results builder collects its runs and rebuilds every page, a re-run skips finished runs and redoes
only the interrupted one, the submitit path launches for real."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fixtures import write_parallel, write_planetoid, write_ptb

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import reproduce  # noqa: E402
import results  # noqa: E402

EXPERIMENTS = {p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml")}
# variants reachable by overrides or ablations, not part of a plan of their own
NOT_PLANNED = {"fastweights_nolayernorm_retrieval", "fastweights_nomemory_retrieval", "gru_ptb_small",
               "revgru_ptb_small", "gru_synthetic", "revgru_synthetic", "gnf_ego_small_cpu"}


def _script(name, *args, timeout=900):
    env = dict(os.environ, WANDB_SILENT="true", HYDRA_FULL_ERROR="0")
    return subprocess.run([sys.executable, str(ROOT / "scripts" / name), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_plans_name_existing_experiments_and_cover_every_experiment():
    planned = set()
    for scale, plan in reproduce.PLANS.items():
        assert set(plan) == set(reproduce.PAPERS), scale
        for paper, sweeps in plan.items():
            for sw in sweeps:
                assert set(sw.experiments) <= EXPERIMENTS, (scale, paper, set(sw.experiments) - EXPERIMENTS)
                planned |= set(sw.experiments)
    assert EXPERIMENTS - planned == NOT_PLANNED


def test_unknown_paper_or_experiment_is_one_line():
    p = _script("reproduce.py", "--paper", "alexnet", "--dry-run")
    assert p.returncode == 2 and p.stderr.strip().startswith("error: unknown paper 'alexnet'")
    p = _script("reproduce.py", "--only", "acktr_pong", "--paper", "gnf", "--dry-run")
    assert p.returncode == 2 and "not in the small plan of gnf: acktr_pong" in p.stderr


def test_dry_run_prints_resumable_sweeps_with_the_launcher():
    p = _script("reproduce.py", "--scale", "full", "--paper", "acktr", "--launcher", "slurm", "--dry-run")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.strip().splitlines()
    assert len(lines) == 2 and all("launcher=slurm" in ln and "resume=auto" in ln and " -m " in ln for ln in lines)
    assert "seed=0,1 " in lines[0] and "acktr_spaceinvaders" in lines[0]         # Atari: 2 seeds (paper)
    assert "seed=0,1,2 " in lines[1] and "a2c_inverteddoublependulum" in lines[1]  # MuJoCo: 3 seeds (paper)


def test_smoke_drops_the_small_plans_training_budgets():
    """--smoke runs every experiment at its smoke scale: the small plan's budgets (PTB 300 batches, GNF 150+600
    epochs) would override smoke's and cost minutes."""
    plain = _script("reproduce.py", "--scale", "small", "--paper", "gnf", "--dry-run").stdout
    smoke = _script("reproduce.py", "--scale", "small", "--paper", "gnf", "--dry-run", "--smoke").stdout
    assert "train.ae_epochs=150 train.flow_epochs=600" in plain
    assert "epochs=" not in smoke and smoke.count("smoke=true") == 2 and "model.kind=grevnet,gnn" in smoke


def _pipeline(tmp: Path):
    """`reproduce-small` at smoke scale over the whole small plan, then `results` into a fresh folder."""
    data = tmp / "data"
    write_ptb(data)
    write_planetoid(data, "Cora")
    write_parallel(data)
    runs = tmp / "runs"
    p = _script("reproduce.py", "--scale", "small", "--smoke", "--root", str(runs), "--data-root", str(data),
                "--gen-root", str(tmp / "gen"), "logger.mode=disabled")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    out = tmp / "out"
    shutil.copytree(ROOT / "results" / "claims", out / "claims")
    *first, last = reproduce.PAPERS   # one page rebuild (figures included) at the last collect, not one per paper
    for paper in first:
        assert results.collect(runs / "small" / paper, paper, out) > 0, paper
    q = _script("results.py", "--results", str(out), "--collect", str(runs / "small" / last), "--paper", last)
    assert q.returncode == 0, q.stderr[-3000:]
    return runs, out, p


def _n_planned(plan) -> int:
    n = 0
    for sweeps in plan.values():
        for sw in sweeps:
            mult = 1
            for o in sw.overrides:
                if "," in o.split("=", 1)[1]:
                    mult *= len(o.split("=", 1)[1].split(","))
            n += len(sw.experiments) * len(sw.seeds) * mult
    return n


def test_reproduce_small_then_results_rebuilds_the_page_and_a_rerun_redoes_only_the_interrupted_run(tmp_path):
    """One test, not two sharing a module fixture: under pytest-xdist's worksteal the two could land on different
    workers and each would run the whole pipeline."""
    runs, out, p = _pipeline(tmp_path)
    summaries = sorted(runs.glob("small/*/*/summary.json"))
    assert len(summaries) == _n_planned(reproduce.SMALL)
    timing = json.loads((runs / "small" / "timing.json").read_text())
    assert timing["runs"] == len(summaries) and timing["failed"] == 0 and timing["elapsed_s"] > 0
    page = (out / "README.md").read_text()
    for paper in reproduce.PAPERS:
        assert f"({paper}/README.md)" in page
        sub = (out / paper / "README.md").read_text()
        assert "## Claims" in sub and "## Deviations from the paper and its reference code" in sub
    # smoke runs are collected and listed, but never answer a claim
    totals = next(ln for ln in page.splitlines() if ln.startswith("Totals:"))
    assert totals.startswith("Totals: 0 holds, 0 direction only, 0 does not hold, ") and totals.endswith(" not run"), totals
    rows = (out / "runs.csv").read_text().strip().splitlines()
    assert len(rows) - 1 == len(summaries)
    assert str(ROOT) not in (out / "runs.csv").read_text()

    # a re-run skips the finished runs and redoes only the interrupted one
    done = sorted(runs.glob("small/revrnn/*/summary.json"))
    assert len(done) >= 2
    victim = done[0]
    victim.unlink()                                   # as if that run had been stopped before it finished
    before = {s: s.stat().st_mtime_ns for s in done[1:]}
    p = _script("reproduce.py", "--scale", "small", "--smoke", "--paper", "revrnn", "--root", str(runs),
                "--data-root", str(runs.parent / "data"), "--gen-root", str(runs.parent / "gen"), "logger.mode=disabled")
    assert p.returncode == 0, p.stderr[-3000:]
    assert victim.exists()
    assert all(s.stat().st_mtime_ns == t for s, t in before.items())
    assert p.stderr.count("already finished") == len(done) - 1


def test_submitit_launcher_runs_the_full_plan_at_smoke_scale(tmp_path):
    p = _script("reproduce.py", "--scale", "full", "--paper", "acktr", "--only", "acktr_hopper,a2c_hopper",
                "--seeds", "0", "--launcher", "submitit_local", "--smoke", "--root", str(tmp_path), "logger.mode=disabled")
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    done = sorted(tmp_path.glob("full/acktr/*/summary.json"))
    assert [d.parent.name.split(",")[0] for d in done] == ["experiment=a2c_hopper", "experiment=acktr_hopper"]
    assert (tmp_path / "full" / "acktr" / ".submitit").is_dir()      # launched through submitit, not in-process


def test_wandb_pull_writes_the_run_summaries(tmp_path, monkeypatch):
    """`make results WANDB=entity/project`: the W&B API's runs become one CSV row each (API faked offline)."""
    import types

    class FakeRun:
        def __init__(self, name, score):
            self.name, self.group, self.state = name, "acktr_pong", "finished"
            self.summary = {"score/mean10": score, "command": "python run.py experiment=acktr_pong", "_wandb": {}}

    class FakeApi:
        def runs(self, path):
            assert path == "me/ba-papers"
            return [FakeRun("a", 1.5), FakeRun("b", -3.0)]

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(Api=FakeApi))
    assert results.pull_wandb("me/ba-papers", tmp_path) == 2
    import csv
    rows = list(csv.DictReader(open(tmp_path / "wandb_runs.csv")))
    assert [(r["name"], float(r["score/mean10"])) for r in rows] == [("a", 1.5), ("b", -3.0)]
    assert "_wandb" not in rows[0]                       # nested values are not flattened into columns

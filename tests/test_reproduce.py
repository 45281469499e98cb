"""`make reproduce-*` and `make results`: the plans name real experiments, the whole pipeline runs at smoke
scale and rebuilds the results page, a re-run skips finished runs and redoes only the interrupted one, the
submitit path launches for real, and the aggregate statistics equal independent computations."""
import json
import os
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
    for row in results.ROWS:                        # every row of the results page points at a real experiment
        for m in (row.small, row.full):
            assert m is None or m.exp in EXPERIMENTS, (row.setting, m.exp)


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


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """`reproduce-small` at smoke scale over the whole small plan, then `results` into a fresh folder."""
    tmp = tmp_path_factory.mktemp("pipeline")
    data = tmp / "data"
    write_ptb(data)
    write_planetoid(data, "Cora")
    write_parallel(data)
    runs = tmp / "runs"
    p = _script("reproduce.py", "--scale", "small", "--smoke", "--root", str(runs), "--data-root", str(data),
                "--gen-root", str(tmp / "gen"), "logger.mode=disabled")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    out = tmp / "out"
    q = _script("results.py", "--runs", str(runs), "--out", str(out))
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


def test_reproduce_small_then_results_rebuilds_the_page(pipeline):
    runs, out, p = pipeline
    summaries = sorted(runs.glob("small/*/*/summary.json"))
    assert len(summaries) == _n_planned(reproduce.SMALL)
    timing = json.loads((runs / "small" / "timing.json").read_text())
    assert timing["runs"] == len(summaries) and timing["failed"] == 0 and timing["elapsed_s"] > 0
    page = (out / "README.md").read_text()
    for paper in reproduce.PAPERS:
        assert f"## {results.TITLES[paper]}" in page
    # every run is listed in the reproduce-small table and in runs.csv
    table = page.split("## `make reproduce-small`")[1].split("## `make reproduce-all`")[0]
    assert "min** wall clock" in table
    for exp in {e for sweeps in reproduce.SMALL.values() for sw in sweeps for e in sw.experiments}:
        assert f"| {exp} |" in table, exp
    rows = (out / "runs.csv").read_text().strip().splitlines()
    assert len(rows) - 1 == len(summaries)
    assert (out / "curves.csv").stat().st_size > 100 and (out / "summary_metrics.csv").exists()
    figs = sorted((out / "figures").glob("*.png"))
    assert figs, "no figure was drawn"
    for f in figs:
        assert f.with_suffix(".pdf").exists() and f"figures/{f.name}" in page


def test_rerun_skips_finished_runs_and_redoes_the_interrupted_one(pipeline):
    runs, _, _ = pipeline
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


def test_iqm_and_bootstrap_match_direct_computations():
    rng = np.random.default_rng(0)
    assert results.iqm(rng.permutation(np.arange(1.0, 9.0))) == pytest.approx(4.5)   # mean of 3, 4, 5, 6
    x = rng.normal(size=40)
    assert results.iqm(x) == pytest.approx(np.sort(x)[10:30].mean())                # the middle half, by hand
    scores = {"a": rng.normal(1, 0.1, 5), "b": rng.normal(0, 0.1, 5)}
    point, lo, hi = results.stratified_bootstrap(scores, np.mean, reps=500)
    assert point == pytest.approx(np.mean(np.concatenate(list(scores.values()))))
    assert lo <= point <= hi
    # stratified: each game keeps its 5 runs, so the interval of the mean is the games' own spread / 2
    assert hi - lo < 0.2


def test_table_row_aggregates_matching_runs_only(tmp_path):
    def run(exp, seed, value, **ov):
        return results.Run(f"r{exp}{seed}{ov}", "gnf", "committed", None, exp, {k.replace("__", "."): v for k, v in ov.items()},
                           seed, {"mmd/degree": value, "hardware": "Xeon, 2 cores, torch x", "command":
                                  f"python run.py experiment={exp} seed={seed}"}, tmp_path)

    runs = [run("gnf_community_small", 0, 0.3), run("gnf_community_small", 1, 0.5),
            run("gnf_community_small", 2, 9.0, train__flow_epochs="3"),     # another budget: not the same row
            run("gnf_community_small", 3, 7.0, smoke="true")]
    row = results.Row("gnf", "x", "mmd/degree", 0.2, None,
                      results.Match("gnf_community_small", without=("smoke", "train.flow_epochs")), tol=0.25)
    vals, used = results.cell(row, [r for r in runs if row.full(r)])
    assert sorted(vals) == [0.3, 0.5] and results.fmt(vals) == "0.40 ± 0.14"
    assert results.status(row, [], vals).startswith("differs")
    assert results.status(row, [], [0.22]).startswith("reproduced")
    assert results.status(row, [0.22], []).startswith("reproduced at small scale; not yet run at full scale")


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

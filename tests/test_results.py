"""`make results`: claim statuses are computed from the run data (and change when the data do), intervals equal
independent computations (scipy's Welch test, rliable's IQM by hand), commands lose machine paths, and every
committed ledger names real experiments and keys the builder understands."""
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import results  # noqa: E402

LEDGER = {
    "paper": "gnf", "title": "t", "short": "GNF",
    "claims": [
        {"id": "low", "claim": "degree MMD at most 0.2", "source": "Table 2 (recalled)", "metric": "mmd/degree",
         "runs": ["gen_seed*"], "rule": {"kind": "at_most", "value": 0.2}},
        {"id": "vs", "claim": "below the baseline", "source": "goal", "metric": "mmd/degree", "runs": ["gen_seed*"],
         "other": {"runs": ["base_seed*"], "label": "base"}, "rule": {"kind": "less_than"}},
        {"id": "both", "claim": "both hold", "source": "goal", "rule": {"kind": "count", "at_least": 2, "of": ["low", "vs"]}},
    ],
}


def _write(root: Path, values: dict[str, float]) -> None:
    for name, v in values.items():
        d = root / "gnf" / "runs" / name
        d.mkdir(parents=True, exist_ok=True)
        (d / "summary.json").write_text(json.dumps({"mmd/degree": v, "command": f"python run.py experiment=x seed=0"}))


def _statuses(root: Path) -> dict[str, str]:
    runs = results.load_runs(root)["gnf"]
    done = {}
    for c in LEDGER["claims"]:
        done[c["id"]] = results.evaluate_claim(c, runs, done)
    return {k: v["status"] for k, v in done.items()}


def test_status_follows_the_run_data(tmp_path):
    assert _statuses(tmp_path) == {"low": "not run", "vs": "not run", "both": "not run"}
    _write(tmp_path, {"gen_seed0": 0.10, "gen_seed1": 0.11, "gen_seed2": 0.12})
    assert _statuses(tmp_path) == {"low": "holds", "vs": "not run", "both": "not run"}   # 1 of 2 run
    _write(tmp_path, {"base_seed0": 0.50, "base_seed1": 0.52, "base_seed2": 0.55})
    assert _statuses(tmp_path) == {"low": "holds", "vs": "holds", "both": "holds"}
    # a wide spread: the mean still meets the rule, the interval does not -> direction only
    _write(tmp_path, {"gen_seed0": 0.01, "gen_seed1": 0.35, "gen_seed2": 0.01})
    assert _statuses(tmp_path)["low"] == "direction only"
    # one seed: no interval, so at best direction only
    for s in ("gen_seed1", "gen_seed2"):
        (tmp_path / "gnf" / "runs" / s / "summary.json").unlink()
    assert _statuses(tmp_path)["low"] == "direction only"
    _write(tmp_path, {"gen_seed0": 0.9})
    st = _statuses(tmp_path)
    assert st["low"] == "does not hold" and st["vs"] == "does not hold" and st["both"] == "does not hold"
    # runs in another group (earlier code) never answer a claim
    (tmp_path / "gnf" / "runs").rename(tmp_path / "gnf" / "runs_earlier")
    assert _statuses(tmp_path)["low"] == "not run"


def test_a_run_that_never_reached_the_threshold_cannot_be_the_faster_side():
    """Episodes-to-threshold claims: a run that never reached it counts as its length + 1 (a lower bound). That bound
    shows the other side slower, never ours faster: two runs that both failed must not read as 'ours fewer'."""
    claim = {"id": "eps", "claim": "fewer episodes", "source": "goal", "metric": "episodes_to_threshold",
             "missing": "episodes", "runs": ["ours_seed*"], "other": {"runs": ["base_seed*"], "label": "base"},
             "rule": {"kind": "less_than"}}
    mk = lambda name, reached, episodes: results.Run(name=name, group="runs", paper="acktr", dir=Path("."), summary={  # noqa: E731
        "episodes_to_threshold": reached, "episodes": episodes})
    def status(ours, base):
        runs = [mk(f"ours_seed{i}", *v) for i, v in enumerate(ours)] + [mk(f"base_seed{i}", *v) for i, v in enumerate(base)]
        return results.evaluate_claim(claim, runs, {})
    # ours reached it, the other never did: its count is a lower bound, so ours is at least that much faster
    r = status([(100, 900), (110, 900), (120, 900)], [(None, 5000), (None, 5100), (None, 5200)])
    assert r["status"] == "holds" and "base 3 of 3" in r["ours"]
    # neither reached it: ours has fewer (longer) episodes, which shows nothing about reaching the threshold
    r = status([(None, 2000)], [(None, 36000)])
    assert r["status"] == "does not hold" and "ours never reached it in 1 run(s)" in r["ours"]
    # one of ours never reached it: that run cannot be faster, whatever the mean says
    r = status([(100, 900), (None, 900), (120, 900)], [(None, 5000), (None, 5100), (None, 5200)])
    assert r["status"] == "does not hold"
    # greater_than: the other side's censored value is the one that cannot be beaten
    g = {**claim, "rule": {"kind": "greater_than"}}
    runs = [mk("ours_seed0", 900, 900), mk("base_seed0", None, 100)]
    assert results.evaluate_claim(g, runs, {})["status"] == "does not hold"
    runs = [mk("ours_seed0", None, 900), mk("base_seed0", 100, 900)]
    assert results.evaluate_claim(g, runs, {})["status"] == "direction only"


def test_robustness_range_needs_the_inner_optimizers_whole_grid():
    """spread_less_than: max - min of the metric over the lrs both ran, and only once Lookahead covers every lr its
    inner optimizer ran (a range over part of the grid would leave out the lrs that decide it)."""
    claim = {"id": "robust", "claim": "less sensitive", "source": "goal", "metric": "val/ppl_best",
             "runs": ["la_*_seed0"], "other": {"runs": ["adam_*_seed0"], "label": "Adam"},
             "rule": {"kind": "spread_less_than", "match": "lr"}}
    mk = lambda name, lr, v: results.Run(name=name, group="runs", paper="lookahead", dir=Path("."),  # noqa: E731
                                         summary={"lr": lr, "val/ppl_best": v})
    adam = [mk(f"adam_lr{lr}_seed0", lr, v) for lr, v in [(1e-3, 300.0), (1e-2, 230.0), (1e-1, 490.0)]]
    la = [mk("la_lr0.001_seed0", 1e-3, 310.0), mk("la_lr0.01_seed0", 1e-2, 231.0)]
    r = results.evaluate_claim(claim, adam + la, {})
    assert r["status"] == "not run" and r["ours"].startswith("2 of 3 lr values run")
    r = results.evaluate_claim(claim, adam + la + [mk("la_lr0.1_seed0", 1e-1, 300.0)], {})
    assert r["status"] == "direction only" and r["values"] == (310.0 - 231.0, 490.0 - 230.0)
    r = results.evaluate_claim(claim, adam + la + [mk("la_lr0.1_seed0", 1e-1, 600.0)], {})
    assert r["status"] == "does not hold" and r["values"] == (600.0 - 231.0, 490.0 - 230.0)


def test_intervals_equal_independent_computations():
    rng = np.random.default_rng(1)
    a, b = rng.normal(1.0, 0.3, 4), rng.normal(0.4, 0.6, 3)
    d, lo, hi = results.diff_interval(list(a), list(b))
    ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert (d, lo, hi) == pytest.approx((a.mean() - b.mean(), ci.low, ci.high))
    m, lo, hi = results.interval(list(a))
    ci = stats.ttest_1samp(a, 0).confidence_interval(0.95)
    assert (m, lo, hi) == pytest.approx((a.mean(), ci.low, ci.high))
    assert math.isnan(results.interval([1.0])[1])


def test_atari_aggregate_needs_three_games_and_is_rliables_iqm():
    def run(game, algo, score, seed):
        return results.Run(f"{algo}_{game}_{seed}", "runs", "acktr",
                           {"env": f"ALE/{game}-v5", "algo": algo, "score/mean100": score}, Path("."))

    runs = [run("Pong", "acktr", 10.0, 0), run("Breakout", "acktr", 100.0, 0)]
    assert results.atari_aggregates(runs, "acktr") is None            # 2 games: no aggregate
    runs += [run("SpaceInvaders", "acktr", 900.0, 0), run("Pong", "acktr", 14.0, 1), run("Breakout", "acktr", 30.0, 1),
             run("SpaceInvaders", "acktr", 300.0, 1)]
    agg = results.atari_aggregates(runs, "acktr")
    norm = lambda g, s: (s - results.ATARI_REF[g][0]) / (results.ATARI_REF[g][1] - results.ATARI_REF[g][0])  # noqa: E731
    x = np.sort([norm(r.get("env")[4:-3], r.get("score/mean100")) for r in runs])
    assert agg["games"] == ["Breakout", "Pong", "SpaceInvaders"] and agg["seeds"] == 2
    assert agg["mean"][0] == pytest.approx(x.mean())
    assert agg["iqm"][0] == pytest.approx(stats.trim_mean(x, 0.25))
    assert agg["iqm"][1] <= agg["iqm"][0] <= agg["iqm"][2]


def test_commands_lose_machine_paths_and_runs_get_stable_names(tmp_path):
    src = tmp_path / "sweep" / "experiment=gnf_community_small,seed=1"
    src.mkdir(parents=True)
    cmd = (f"python {results.ROOT}/run.py experiment=gnf_community_small seed=1 threads=1 resume=auto "
           f"data.root=/home/me/data data.path=../shared/data/graphs/community_small.jsonl logger.mode=disabled "
           f"hydra.sweep.dir=/tmp/x")
    (src / "summary.json").write_text(json.dumps({"command": cmd, "seed": 1, "mmd/degree": 0.1}))
    (src / "metrics.jsonl").write_text("{}\n")
    assert results.collect(tmp_path / "sweep", "gnf", tmp_path / "res") == 1
    (dst,) = (tmp_path / "res" / "gnf" / "runs").iterdir()
    assert dst.name == "gnf_community_small_pathcommunity_small_seed1"
    s = json.loads((dst / "summary.json").read_text())
    assert "/home/" not in s["command"] and str(results.ROOT) not in s["command"] and "/tmp" not in s["command"]
    assert "data.root=DATA" in s["command"] and "data.path=DATA/graphs/community_small.jsonl" in s["command"]
    assert (dst / "metrics.jsonl").exists()


@pytest.mark.parametrize("paper", results.PAPERS)
def test_committed_ledgers_are_well_formed(paper):
    led = yaml.safe_load((ROOT / "results" / "claims" / f"{paper}.yaml").read_text())
    experiments = {p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml")}
    ids = [c["id"] for c in led["claims"]]
    assert len(ids) == len(set(ids))
    for c in led["claims"]:
        assert c["rule"]["kind"] in ("at_most", "at_least", "within", "less_than", "greater_than", "count",
                                     "spread_less_than"), c["id"]
        assert c["source"] and c["claim"], c["id"]
        if c["rule"]["kind"] == "count":
            assert set(c["rule"]["of"]) <= set(ids[:ids.index(c["id"])]), c["id"]    # counts earlier claims only
        results.rule_text(c)
    for d in led.get("deviations", []):
        assert {"difference", "reference", "ours", "option", "effect"} <= set(d), d
    for cmd in led.get("reproduce", []):                  # every command runs a real experiment, no machine path
        for tok in cmd.split():
            if tok.startswith("experiment="):
                assert set(tok.split("=", 1)[1].split(",")) <= experiments, tok
        assert "/work/" not in cmd and "/home/" not in cmd and "shared/data" not in cmd, cmd


def test_the_committed_results_have_no_machine_paths():
    for f in (ROOT / "results").rglob("*"):
        if f.suffix in (".md", ".json", ".csv", ".yaml", ".txt", ".jsonl") and f.stat().st_size < 5_000_000:
            text = f.read_text(errors="ignore")
            assert str(ROOT) not in text and "/home/" not in text and "shared/data" not in text, f


def test_gpu_check_covers_every_runner_and_refuses_without_cuda():
    import subprocess

    import gpu_check

    experiments = {p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml")}
    names = [e for e, _ in gpu_check.SMOKES]
    assert set(names) <= experiments
    tasks = set()
    for e in names:     # every task (runner) of the project has a GPU smoke
        tasks |= {ln.split("/task:")[1].strip() for ln in (ROOT / "conf" / "experiment" / f"{e}.yaml").read_text().splitlines()
                  if "override /task:" in ln}
    assert tasks == {p.stem for p in (ROOT / "conf" / "task").glob("*.yaml")}
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--dry-run"], capture_output=True, text=True)
    assert p.returncode == 0 and len(p.stdout.strip().splitlines()) == len(gpu_check.SMOKES) + len(gpu_check.BENCHES)
    import torch

    if not torch.cuda.is_available():
        p = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--out", "/nonexistent/x"],
                           capture_output=True, text=True)
        assert p.returncode == 2 and p.stderr.strip().startswith("error:") and len(p.stderr.strip().splitlines()) == 1


def test_mujoco_figure_has_one_legend_and_marks_tasks_not_run(tmp_path, monkeypatch):
    """The legend used to sit on the Ant panel, which has no lines until Ant runs: no legend at all. It is now one
    figure legend from every panel's lines, and an empty panel says 'not run'."""
    import figures
    for algo, ret in (("acktr", 3.0), ("a2c", 1.0)):
        d = tmp_path / "acktr" / "runs" / f"{algo}_hopper_seed0"
        d.mkdir(parents=True)
        (d / "summary.json").write_text(json.dumps({"algo": algo, "env": "Hopper-v5", "seed": 0}))
        (d / "metrics.jsonl").write_text("".join(json.dumps({"timesteps": t, "episode/return": ret * t})
                                                 + "\n" for t in range(0, 1_000_001, 10_000)))
    shown = {}
    monkeypatch.setattr(figures, "save", lambda fig, out, name: shown.setdefault(name, fig) and f"{name}.png")
    figures.acktr(results.load_runs(tmp_path)["acktr"], tmp_path)
    fig = shown["mujoco_curves"]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["ACKTR (1 seed)", "A2C (1 seed)"]
    panels = {ax.get_title(): ax for ax in fig.axes}
    assert len(panels["Hopper"].lines) == 2 and not panels["Hopper"].texts
    for task in ("HalfCheetah", "Ant", "InvertedDoublePendulum"):
        assert not panels[task].lines and [t.get_text() for t in panels[task].texts] == ["not run"]


def test_runs_table_shows_each_sessions_commit_when_a_run_resumed_on_other_code(tmp_path):
    base = {"provenance/git_commit": "b" * 40, "provenance/git_dirty": True, "command": "python run.py seed=0", "v": 1.0}
    one = results.Run("r1", "runs", "gnf", dict(base, **{"provenance/git_commits_by_session": ["b" * 12 + " +changes"]}), tmp_path)
    two = results.Run("r2", "runs", "gnf", dict(base, **{"provenance/git_commits_by_session":
                                                         ["a" * 12, "not recorded", "b" * 12 + " +changes"]}), tmp_path)
    old = results.Run("r3", "runs", "gnf", {"v": 2.0}, tmp_path)
    rows = results.runs_table([one, two, old], {"metrics": ["v"], "runs": ["r*"]})
    assert f"| {'b' * 8} +changes |" in rows[2]
    assert f"| {'a' * 8}, then not recorded, then {'b' * 8} +changes |" in rows[3]
    assert "| not recorded |" in rows[4]

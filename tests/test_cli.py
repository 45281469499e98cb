"""The command line as a user meets it: every experiment composes and smoke-runs, bad input is one
line, interrupted runs resume to the same result, sweeps run through the submitit launcher."""
import functools
import json

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from fixtures import write_all
from conftest import ROOT, run_cli
from sigterm import sigterm_then_resume

EXPERIMENTS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))


@functools.lru_cache(maxsize=None)   # composed once per process (collection already composes every experiment)
def _compose(name):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=[f"experiment={name}"])


def _code_path(cfg) -> tuple:
    """What decides which code runs: the runner and every switch (string or boolean setting) of the data,
    model, algorithm, environment, optimizer and training loop. Experiments that differ only in sizes,
    schedules or the game / task id share a code path (their env ids are checked separately)."""
    from omegaconf import OmegaConf

    flat = []
    for group in ("data", "model", "algo", "env", "optimizer", "train"):
        node = cfg.get(group)
        if node is None:
            continue
        for k, v in OmegaConf.to_container(node, resolve=True).items():
            if isinstance(v, (bool, str)) and k not in ("id", "game", "root", "cache", "path"):
                flat.append((group, k, v))
    return (cfg.runner, *sorted(flat))


PREFERRED = ["acktr_pong", "a2c_pong", "acktr_halfcheetah", "a2c_halfcheetah"]   # the headline runs first


def _smoke_set() -> list[str]:
    seen, out = set(), []
    for name in PREFERRED + [n for n in EXPERIMENTS if n not in PREFERRED]:
        key = _code_path(_compose(name))
        if key not in seen:
            seen.add(key)
            out.append(name)
    return sorted(out)


SMOKE = _smoke_set()
ENV_EXPERIMENTS = [n for n in EXPERIMENTS if n.startswith(("acktr_", "a2c_"))]
QUIET = ["logger.mode=disabled", "logger.progress=false"]


def one_error_line(p):
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr + p.stdout
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1, p.stderr
    return errors[0]


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes(name):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment={name}"])
    assert cfg.experiment_name == name
    assert cfg.runner and cfg.objective and cfg.smoke_overrides


@pytest.fixture(scope="module")
def fixture_data(tmp_path_factory):
    """Tiny PTB / CIFAR / ImageNet / Planetoid / PPI / parallel-text fixtures in the real formats, written
    once for all smoke runs (runs only read them, or add caches the next run may reuse)."""
    root = tmp_path_factory.mktemp("fixture_data")
    write_all(root)
    return root


@pytest.mark.parametrize("name", SMOKE)
def test_every_code_path_smoke_runs(name, tmp_path, fixture_data):
    # polygraph's second opinion costs ~50 s of imports and numba compilation per process: one GNF smoke run has it
    extra = ["eval.polygraph=false"] if name == "gnf_community_small" else []
    p = run_cli(f"experiment={name}", "smoke=true", f"hydra.run.dir={tmp_path}", f"data.root={fixture_data}",
                *QUIET, *extra, check=True)
    summary = json.loads((tmp_path / "summary.json").read_text())
    cfg = OmegaConf.load(tmp_path / "resolved_config.yaml")
    assert cfg.objective in summary and summary["command"].startswith("python run.py experiment=")
    assert len(summary["provenance/git_commit"]) == 40 and "provenance/version/torch" in summary
    assert summary["provenance/cpu"].endswith(f"torch kernels {torch.backends.cpu.get_cpu_capability()}")
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows and all("step" in r for r in rows)
    assert (tmp_path / "checkpoint.pt").exists() and (tmp_path / ".hydra" / "config.yaml").exists()
    assert f"{cfg.objective}=" in p.stderr
    if cfg.runner == "retrieval":
        assert 0.0 <= summary["test/error"] <= 1.0 and summary["train/steps"] == 24
        assert any("val/error" in r for r in rows) and any("train/loss" in r for r in rows)
    if cfg.runner == "onpolicy":
        assert summary["timesteps"] == cfg.train.total_timesteps and any("loss/total" in r for r in rows)
    if cfg.runner == "language_model":
        assert summary["train/epochs"] == 2 and summary["test/ppl"] > 1 and any("val/ppl" in r for r in rows)
        if cfg.optimizer.get("lookahead") is not None:   # the values the run used (config, preset or default)
            from runners.core import make_optimizer

            built = make_optimizer([torch.zeros(1, requires_grad=True)], cfg)
            assert (summary["alpha"], summary["k"]) == (built.alpha, built.k)
    if cfg.runner == "classify":
        assert summary["train/epochs"] == 2 and 0 <= summary["test/acc"] <= 1 and any("test/acc" in r for r in rows)
    if cfg.runner == "graph_generation":
        assert summary["train/epochs"] == 2 and len(summary["mmd/degree_per_seed"]) == 2
        assert all(summary[f"{k}/{s}"] >= 0 for k in ("mmd", "floor", "recon") for s in ("degree", "clustering", "orbit"))
        assert len((tmp_path / "samples_seed1.jsonl").read_text().splitlines()) == 8
        assert ("polygraph/degree" in summary) == (not extra)
    if cfg.runner == "translate":
        assert summary["train/epochs"] == 2 and 0 <= summary["test/bleu"] <= 100 and any("valid/loss" in r for r in rows)
        assert ("mem/enc_saving_actual" in summary) == cfg.model.cell.startswith("rev")
    if cfg.runner == "node_classify":
        assert 0 <= summary["test/score"] <= 1 and summary["mem/step_peak_bytes"] > 0 and summary["train/epochs"] == 3


def test_smoke_set_covers_every_code_path():
    assert {_code_path(_compose(n)) for n in SMOKE} == {_code_path(_compose(n)) for n in EXPERIMENTS}
    assert len(SMOKE) < len(EXPERIMENTS)


@pytest.mark.parametrize("name", ENV_EXPERIMENTS)
def test_every_env_id_resolves(name):
    """The experiments the smoke set stands in for differ in their environment: each one's game / task
    must exist (ROM shipped with ale-py, MuJoCo model with gymnasium) with the spaces the runner expects."""
    import gymnasium as gym

    cfg = _compose(name)
    if cfg.env.kind == "atari":
        import ale_py

        gym.register_envs(ale_py)
        env = gym.make(cfg.env.id, frameskip=1, repeat_action_probability=0.0)
        from ale_py import roms

        from runners.onpolicy import ale_game

        assert roms.get_rom_path(ale_game(cfg.env.id)).exists()   # the ROM the native vector env loads
        assert env.action_space.n >= 2
    else:
        env = gym.make(cfg.env.id)
        assert len(env.observation_space.shape) == 1 and len(env.action_space.shape) == 1
    env.reset(seed=0)
    env.close()


def test_wandb_offline_run_is_written(tmp_path):
    run_cli("experiment=fastweights_retrieval", "smoke=true", f"hydra.run.dir={tmp_path}",
            f"data.root={tmp_path}/data", "logger.progress=false", check=True)
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    (log,) = runs[0].glob("run-*.wandb")  # the offline log `wandb sync` uploads
    raw = log.read_bytes()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert b"val/error" in raw and b"fastweights_retrieval" in raw  # history and resolved config
    assert json.dumps(summary["test/error"]).encode() in raw  # the summary was logged too


def test_wrong_type_override():
    line = one_error_line(run_cli("experiment=fastweights_retrieval", "model.hidden_size=abc"))
    assert "model.hidden_size=abc" in line and "integer" in line
    line = one_error_line(run_cli("-m", "experiment=fastweights_retrieval", "train.lr=abc,1e-3"))
    assert "train.lr" in line


def test_missing_data_directory(tmp_path):
    line = one_error_line(run_cli("experiment=fastweights_retrieval", "data.source=files",
                                  f"data.root={tmp_path}/absent", f"hydra.run.dir={tmp_path}/run", *QUIET))
    assert "absent" in line and "train.txt" in line


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    base = ["experiment=fastweights_retrieval", "smoke=true", f"data.root={tmp_path}/data", *QUIET]
    run_cli(*base, "train.steps=10", "checkpoint.every=5", f"hydra.run.dir={tmp_path}/run", check=True)
    (tmp_path / "run" / "summary.json").unlink()  # pretend it was interrupted, then resume with a bad lr
    p = run_cli(f"resume={tmp_path}/run", "train.steps=40", "train.lr=1e30", "train.clip=1e30")
    line = one_error_line(p)
    assert "non-finite loss" in line and "(step 10)" in line
    step = int(line.split(" at step ")[1].split(";")[0])
    assert 10 < step <= 40
    import torch
    ck = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert ck["step"] == 10
    assert all(torch.isfinite(v).all() for v in ck["model"].values())


def test_sigterm_then_resume_matches_uninterrupted(tmp_path):
    args = ["experiment=fastweights_retrieval", "smoke=true", "model.hidden_size=20", "train.steps=600",
            "train.batch_size=32", "train.eval_every=100", "train.log_every=10", "checkpoint.every=200",
            f"data.root={tmp_path}/data", "threads=1", *QUIET]
    full, resumed, stopped = sigterm_then_resume(tmp_path, args, total_key="train/steps")
    for key in ["test/error", "test/loss", "val/error_best", "best_step", "val/error_final", "train/steps"]:
        assert resumed[key] == full[key], key


def test_sweep_through_submitit_local(tmp_path):
    p = run_cli("-m", "launcher=submitit_local", "experiment=fastweights_retrieval", "smoke=true",
                "model.hidden_size=8,12", f"data.root={tmp_path}/data", f"hydra.sweep.dir={tmp_path}/sweep",
                *QUIET, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    sums = {d.name: json.loads((d / "summary.json").read_text())
            for d in (tmp_path / "sweep").iterdir() if (d / "summary.json").exists()}
    assert sorted(sums) == ["experiment=fastweights_retrieval,model.hidden_size=12,smoke=True",
                            "experiment=fastweights_retrieval,model.hidden_size=8,smoke=True"]
    assert {s["hidden_size"] for s in sums.values()} == {8, 12}
    assert len(list((tmp_path / "sweep" / ".submitit").glob("*/*_log.out"))) == 2  # ran as submitit jobs


def test_sweep_basic_launcher_returns_objective(tmp_path):
    p = run_cli("-m", "experiment=fastweights_retrieval,irnn_retrieval", "smoke=true", "seed=0,1", "model.hidden_size=12",
                f"data.root={tmp_path}/data", f"hydra.sweep.dir={tmp_path}/sweep", *QUIET)
    assert p.returncode == 0, p.stderr[-3000:]
    assert len(list((tmp_path / "sweep").glob("*/summary.json"))) == 4
    assert p.stderr.count("val/error_best=") == 4


@pytest.mark.parametrize("launcher,target", [("slurm", "SlurmLauncher"), ("submitit_local", "LocalLauncher"),
                                             ("joblib", "JoblibLauncher"), ("basic", "BasicLauncher")])
def test_launcher_configs_select_the_hydra_plugin(launcher, target):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["experiment=fastweights_retrieval", f"launcher={launcher}",
                                           "hydra.launcher.partition=gpu" if launcher == "slurm" else "seed=0"],
                      return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith(target)
    if launcher == "slurm":
        assert cfg.hydra.launcher.partition == "gpu" and cfg.hydra.launcher.array_parallelism == 64


def test_unknown_config_group_option_is_one_line():
    assert one_error_line(run_cli("experiment=lookahead_ptb_small", "optimizer=lion")) == \
        "error: unknown optimizer 'lion'; available: adam, adamw, lookahead_adam, lookahead_sgd, polyak, sgd"


def test_resume_overrides_give_each_key_once_with_its_new_value(tmp_path):
    """resume=<dir> replays the run's saved overrides; a key given again replaces the saved one (one entry, so the
    resumed run's command reads as the run it is)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("run_main", ROOT / "run.py")
    run_main = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_main)
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "overrides.yaml").write_text("- experiment=fastweights_retrieval\n- seed=1\n- train.lr=0.5\n"
                                                        "- threads=1\n")
    (tmp_path / "summary.json").write_text("{}")
    got = run_main.expand_resume([f"resume={tmp_path}", "seed=1", "train.lr=0.25", "eval.x=2"], multirun=False)
    keys = [run_main.key_of(o) for o in got]
    assert len(keys) == len(set(keys))
    assert got[:5] == ["experiment=fastweights_retrieval", "threads=1", "seed=1", "train.lr=0.25", "eval.x=2"]
    assert keys[5:] == ["resume", "hydra.run.dir"]

"""Runs that stop, resume and fail safely: fault injection (kill -9 inside a checkpoint write, a full disk,
truncated / corrupt / crafted checkpoints, SIGTERM mid-epoch in every runner kind, a second Ctrl-C), resuming
a sweep job with the exact printed command, a failed resume that changes nothing on disk, resume=auto on a
re-run sweep through every local launcher, sweep folder names that cannot leave the sweep, W&B online without
a key or a network."""
import errno
import hashlib
import json
import os
import pickle
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT, run_cli
from fixtures import write_all
from sigterm import sigterm_then_resume

QUIET = ["logger.mode=disabled", "logger.progress=false"]
FW = ["experiment=fastweights_retrieval", "smoke=true", *QUIET]


def one_error_line(p):
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr + p.stdout, p.stderr
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1, p.stderr
    return errors[0]


def tree_digest(folder: Path) -> dict:
    """Every file under ``folder`` with the hash of its bytes (what 'nothing changed on disk' compares)."""
    return {str(f.relative_to(folder)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(folder.rglob("*")) if f.is_file()}


def popen(args, cwd=ROOT, **kw):
    env = dict(os.environ, WANDB_SILENT="true", HYDRA_FULL_ERROR="0")
    return subprocess.Popen([sys.executable, str(ROOT / "run.py"), *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def wait_for(path: Path, lines: int = 1, timeout: float = 120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists() and path.read_text().count("\n") >= lines:
            return
        time.sleep(0.02)
    raise AssertionError(f"{path} never reached {lines} lines")


@pytest.fixture
def interrupted_run(tmp_path):
    """A fast-weights run stopped by SIGTERM after a few checkpoints: (run dir, the printed resume command)."""
    run = tmp_path / "run"
    proc = popen([*FW, "train.steps=800", "checkpoint.every=20", "threads=1", f"data.root={tmp_path}/data",
                  f"hydra.run.dir={run}"])
    wait_for(run / "metrics.jsonl", 3)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    cmd = re.search(r"continue with: (python run\.py .*)$", err, re.M).group(1)
    return run, cmd


# --------------------------------------------------------------------------- checkpoints
def _checkpoint_state(step):
    from runners.core import CHECKPOINT_FORMAT, rng_state

    return {"model": {"w": torch.full((4,), float(step))}, "step": step, "rng": rng_state(), "format": CHECKPOINT_FORMAT}


def test_checkpoint_holds_only_plain_values_and_loads_weights_only(tmp_path):
    import numpy as np

    from runners.core import Checkpointer

    ck = Checkpointer(tmp_path, every=1)
    ck.save({"arr": np.arange(3.0), "scalar": np.float32(2.5), "nested": {"t": (1, "a", None)}}, step=3)
    state = torch.load(ck.path, weights_only=True)
    assert torch.equal(state["arr"], torch.arange(3.0, dtype=torch.float64)) and state["scalar"] == 2.5
    assert state["nested"]["t"] == (1, "a", None) and state["step"] == 3
    with pytest.raises(TypeError):
        ck.save({"bad": object()}, step=4)
    assert not ck.tmp.exists() and torch.load(ck.path, weights_only=True)["step"] == 3


def test_wall_time_of_a_run_resumed_from_a_checkpoint_without_it_is_unknown_not_this_session(tmp_path):
    """A checkpoint from before wall times were recorded: the total is reported as unknown (None), not as the
    resumed session's few seconds; a checkpoint that records it carries it on."""
    from omegaconf import OmegaConf

    from runners.core import Checkpointer, Tracker

    cfg = OmegaConf.create({"logger": {"mode": "disabled", "progress": False}, "experiment_name": "t"})
    for recorded, expect_sessions in ((None, None), ((100.0, 3), 4)):
        ck = Checkpointer(tmp_path, every=1)
        state = _checkpoint_state(5)
        if recorded:
            state.update(wall_s=recorded[0], sessions=recorded[1])
        from runners.core import plain

        torch.save(plain(state), ck.path)
        ck.load()
        tr = Tracker(cfg, tmp_path, total_steps=10, start_step=5, ckpt=ck)
        out = tr.write_summary({"x": 1})
        assert out["sessions"] == expect_sessions and out["wall_s_last_session"] >= 0
        assert out["wall_s"] is None if recorded is None else out["wall_s"] >= 100.0
        ck.save({"m": 1}, step=6)
        tr.close()
        saved = torch.load(ck.path, weights_only=True)
        assert ("wall_s" in saved) == (recorded is not None)
        if recorded:
            assert saved["sessions"] == 4 and saved["wall_s"] >= 100.0


def test_provenance_is_the_code_each_session_started_with(tmp_path, monkeypatch):
    """A commit made while a run trains is not the run's code: the summary records the commit (and dirty flag) seen
    when the session started, and a resumed run lists every session's commit, carried in its checkpoints (a
    checkpoint from before they were recorded: 'not recorded' for the earlier sessions)."""
    from omegaconf import OmegaConf

    import runners.core as core
    from runners.core import Checkpointer, Tracker, plain

    cfg = OmegaConf.create({"logger": {"mode": "disabled", "progress": False}, "experiment_name": "t"})
    seen = {"git_commit": "a" * 40, "git_dirty": False}
    monkeypatch.setattr(core, "provenance", lambda: dict(seen))
    ck = Checkpointer(tmp_path, every=1)
    tr = Tracker(cfg, tmp_path, total_steps=10, ckpt=ck)
    seen.update(git_commit="b" * 40, git_dirty=True)            # committed and edited while the session runs
    ck.save({"m": 1}, step=3)
    out = tr.write_summary({"x": 1})
    tr.close()
    assert out["provenance/git_commit"] == "a" * 40 and out["provenance/git_dirty"] is False
    assert out["provenance/git_commits_by_session"] == ["a" * 12]
    ck2 = Checkpointer(tmp_path, every=1)
    ck2.load()
    tr = Tracker(cfg, tmp_path, total_steps=10, start_step=3, ckpt=ck2)   # resumed on the edited tree
    out = tr.write_summary({"x": 1})
    tr.close()
    assert out["provenance/git_commit"] == "b" * 40 and out["provenance/git_dirty"] is True
    assert out["provenance/git_commits_by_session"] == ["a" * 12, "b" * 12 + " +changes"]
    state = _checkpoint_state(5)                                  # a checkpoint that predates the record
    torch.save(plain(state), ck2.path)
    ck3 = Checkpointer(tmp_path, every=1)
    ck3.load()
    tr = Tracker(cfg, tmp_path, total_steps=10, start_step=5, ckpt=ck3)
    assert tr.write_summary({})["provenance/git_commits_by_session"] == ["not recorded", "b" * 12 + " +changes"]
    tr.close()


def test_crafted_pickle_checkpoint_is_refused_and_runs_nothing(interrupted_run, tmp_path):
    run, _ = interrupted_run
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"model": Payload(), "step": 1}, run / "checkpoint.pt")
    line = one_error_line(run_cli(f"resume={run}"))
    assert "refusing to load" in line and "system" in line
    assert not marker.exists()
    # the same file met by resume=auto inside a run (the runner's own load) is refused the same way
    line = one_error_line(run_cli(*FW, "resume=auto", f"hydra.run.dir={run}", f"data.root={tmp_path}/data"))
    assert "refusing to load" in line and not marker.exists()


def test_random_bytes_as_a_checkpoint_are_always_one_user_error(tmp_path):
    """Fuzz: 600 seeded garbage files (plain, and behind a zip or pickle header) all end in the one-line UserError.
    Before the fix about 6% of random 20 kB files escaped as IndexError / KeyError tracebacks."""
    from runners.core import load_checkpoint
    from runners.errors import UserError

    rng = np.random.default_rng(0)
    path = tmp_path / "checkpoint.pt"
    for i in range(600):
        body = rng.bytes(int(rng.integers(1, 20000)))
        path.write_bytes([b"", b"PK\x03\x04", b"\x80\x02"][i % 3] + body)
        with pytest.raises(UserError, match="corrupt or truncated|refusing to load"):
            load_checkpoint(path)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "old_format"])
def test_damaged_checkpoint_is_one_line_and_touches_nothing(interrupted_run, damage):
    run, _ = interrupted_run
    path = run / "checkpoint.pt"
    raw = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "garbage":
        path.write_bytes(os.urandom(len(raw)))
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        state = torch.load(path, weights_only=True)
        state.pop("format")
        torch.save(state, path)
    before = tree_digest(run)
    line = one_error_line(run_cli(f"resume={run}"))
    assert ("corrupt or truncated" in line) if damage != "old_format" else ("older version" in line)
    assert tree_digest(run) == before


def test_kill9_during_a_checkpoint_write_keeps_the_previous_one(tmp_path):
    """A process killed by SIGKILL in the middle of writing checkpoint 2: checkpoint 1 still loads, and the
    next load clears the half-written temporary file."""
    script = f"""
import sys, time, torch
sys.path.insert(0, {str(ROOT)!r})
sys.path.insert(0, {str(ROOT / 'tests')!r})
from runners.core import Checkpointer
from test_reliability import _checkpoint_state
ck = Checkpointer({str(tmp_path)!r}, every=1)
ck.save(_checkpoint_state(1), 1)
real = torch.save
def slow_save(obj, f, *a, **k):
    f.write(b"PK\\x03\\x04 half a checkpoint")
    f.flush()
    print("writing", flush=True)
    time.sleep(60)
torch.save = slow_save
ck.save(_checkpoint_state(2), 2)
"""
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.kill()
    proc.wait(timeout=30)
    from runners.core import Checkpointer

    ck = Checkpointer(tmp_path, every=1)
    assert ck.tmp.exists()                      # the killed write's remains
    state = ck.load()
    assert state["step"] == 1 and torch.equal(state["model"]["w"], torch.ones(4))
    assert not ck.tmp.exists()


@pytest.mark.parametrize("failure", [OSError(errno.ENOSPC, "No space left on device"),
                                     RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos "
                                                  "1024 vs 1000\nPytorchStreamWriter failed writing file data/0: "
                                                  "file write failed"),
                                     OSError(errno.EROFS, "Read-only file system")])
def test_disk_full_or_read_only_is_one_line_and_the_previous_checkpoint_intact(tmp_path, monkeypatch, failure):
    from runners.core import Checkpointer, UserError

    ck = Checkpointer(tmp_path, every=1)
    ck.save(_checkpoint_state(1), 1)

    def failing_save(obj, f, *a, **k):
        f.write(b"partial")
        raise failure

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(UserError) as e:
        ck.save(_checkpoint_state(2), 2)
    msg = str(e.value)
    assert "\n" not in msg and "cannot write the checkpoint" in msg and "(step 1) is intact" in msg
    monkeypatch.undo()
    assert not ck.tmp.exists() and ck.load()["step"] == 1


def test_disk_full_inside_a_run_is_one_line(tmp_path):
    """The whole path: a run whose checkpoint write hits ENOSPC (a writer patched in through sitecustomize)
    ends with one error line, exit 2, and its previous checkpoint intact."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import errno, os, torch\n"
        "real = torch.save\n"
        "count = [0]\n"
        "def save(obj, f, *a, **k):\n"
        "    count[0] += 1\n"
        "    if count[0] > int(os.environ['FAIL_AFTER']):\n"
        "        raise OSError(errno.ENOSPC, 'No space left on device')\n"
        "    return real(obj, f, *a, **k)\n"
        "torch.save = save\n")
    env = {"PYTHONPATH": f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "FAIL_AFTER": "2"}
    p = run_cli(*FW, "train.steps=200", "checkpoint.every=10", f"data.root={tmp_path}/data",
                f"hydra.run.dir={tmp_path}/run", env=env)
    line = one_error_line(p)
    assert "No space left on device" in line and "(step 20) is intact" in line
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["step"] == 20
    assert not list((tmp_path / "run").glob("*.tmp"))


def test_unwritable_output_folder_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    line = one_error_line(run_cli(*FW, f"hydra.run.dir={blocker}/run"))
    assert "cannot write the run folder" in line
    if os.access("/proc/sys", os.W_OK) is False or Path("/proc/sys").stat().st_dev:   # a read-only mount
        line = one_error_line(run_cli(*FW, "hydra.run.dir=/proc/sys/ba_papers_run"))
        assert "cannot write the run folder" in line or "Read-only" in line or "denied" in line


def test_double_ctrl_c_still_prints_resume_and_leaves_no_temp_file(tmp_path):
    run = tmp_path / "run"
    proc = popen([*FW, "train.steps=100000", "checkpoint.every=5", "threads=1", f"data.root={tmp_path}/data",
                  f"hydra.run.dir={run}"])
    wait_for(run / "metrics.jsonl", 2)
    t0 = time.time()
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert time.time() - t0 < 10
    assert "Traceback" not in err and "SIGINT: stopping" in err
    assert f"resume={run}" in err
    assert not list(run.glob("*.tmp"))
    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] > 0   # the last good one loads


def test_ctrl_c_is_acknowledged_at_once(tmp_path):
    run = tmp_path / "run"
    proc = popen([*FW, "train.steps=100000", "checkpoint.every=1000000", "threads=1", f"data.root={tmp_path}/data",
                  f"hydra.run.dir={run}"])
    wait_for(run / "metrics.jsonl", 2)
    t0 = time.time()
    proc.send_signal(signal.SIGINT)
    line = ""
    while "SIGINT" not in line:
        line = proc.stderr.readline()
        assert line, "stderr closed before the acknowledgement"
    assert time.time() - t0 < 2
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "continue with: python run.py resume=" in err


# --------------------------------------------------------------------------- resuming
def test_sweep_job_resumes_with_the_exact_printed_command(tmp_path):
    """The folder of a sweep job holds '=' and ','; the printed resume line must work as printed."""
    sweep = tmp_path / "sw"
    proc = popen(["-m", *FW, "seed=0,1", "train.steps=800", "checkpoint.every=20", "threads=1",
                  f"data.root={tmp_path}/data", f"hydra.sweep.dir={sweep}"])
    wait_for(next(iter(_poll_glob(sweep, "*seed=0*/metrics.jsonl"))), 3)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    job = re.search(r"continue with: (python run\.py .*)$", err, re.M).group(1)
    assert "sweep interrupted; finish it" in err and "resume=auto" in err
    argv = shlex.split(job)
    assert argv[:2] == ["python", "run.py"] and "=" in argv[2].split("resume=", 1)[1]
    p = run_cli(*argv[2:])
    assert p.returncode == 0, p.stderr
    (done,) = [d for d in sweep.iterdir() if (d / "summary.json").exists()]
    assert "seed=0" in done.name and json.loads((done / "summary.json").read_text())["train/steps"] == 800


def _poll_glob(folder: Path, pattern: str, timeout: float = 120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        hits = list(folder.glob(pattern))
        if hits:
            return hits
        time.sleep(0.05)
    raise AssertionError(f"nothing matched {folder}/{pattern}")


@pytest.mark.parametrize("change", ["model.hidden_size=24", "experiment=lstm_retrieval", "optimizer_state"])
def test_failed_resume_changes_nothing_on_disk(interrupted_run, change, tmp_path):
    run, cmd = interrupted_run
    before = tree_digest(run)
    if change == "optimizer_state":   # a checkpoint whose optimizer state does not fit the model
        state = torch.load(run / "checkpoint.pt", weights_only=True)
        state["optimizer"]["param_groups"][0]["params"] = [0]
        torch.save(state, run / "checkpoint.pt")
        before = tree_digest(run)
        p = run_cli(f"resume={run}")
    else:
        p = run_cli(f"resume={run}", change)
    line = one_error_line(p)
    assert ("does not fit" in line) if change != "experiment=lstm_retrieval" else ("keeps its experiment" in line)
    assert tree_digest(run) == before
    if change != "optimizer_state":   # and the plain resume still works afterwards
        p = run_cli(*shlex.split(cmd)[2:])
        assert p.returncode == 0, p.stderr


@pytest.mark.parametrize("launcher", ["basic", "joblib", "submitit_local"])
def test_resume_auto_on_a_rerun_sweep_does_only_what_is_left(tmp_path, launcher):
    """A sweep without hydra.sweep.dir, interrupted, then the same command with resume=auto: the same
    (command-derived) folder, finished jobs skipped, interrupted ones resumed from their checkpoints."""
    write_all(tmp_path / "data")
    total = 300   # the first periodic checkpoint (step 20) stops the sweep well before a job can finish
    args = ["-m", "experiment=fastweights_retrieval", "smoke=true", "seed=0,1", f"train.steps={total}",
            "checkpoint.every=20", f"launcher={launcher}", "threads=1", *QUIET]
    proc = popen(args, cwd=tmp_path, start_new_session=True)
    (first,) = _poll_glob(tmp_path, "multirun/*/*/*seed=0*/checkpoint.pt")   # a periodic checkpoint exists
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    time.sleep(1)   # launcher-managed job processes finish their own shutdown
    sweep = first.parent.parent
    stopped = {d.name: torch.load(d / "checkpoint.pt", weights_only=True)["step"]
               for d in sweep.iterdir() if (d / "checkpoint.pt").exists() and not (d / "summary.json").exists()}
    assert stopped and all(0 < s < total for s in stopped.values())
    p = run_cli(*args, cwd=tmp_path)              # a fresh sweep on top of it is refused
    assert "add resume=auto" in one_error_line(p)
    p = run_cli(*args, "resume=auto", cwd=tmp_path, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert [d.name for d in (tmp_path / "multirun").glob("*/*")] == [sweep.name]   # the same folder
    assert not list(sweep.rglob("*.tmp"))
    for name, step in stopped.items():
        rows = [json.loads(x) for x in (sweep / name / "metrics.jsonl").read_text().splitlines()]
        steps = [r["step"] for r in rows]
        assert steps == sorted(steps) and max(steps) == total      # continued, not restarted from 0
        assert json.loads((sweep / name / "summary.json").read_text())["train/steps"] == total
    done = {f: f.read_bytes() for f in sweep.glob("*/*") if f.name in ("summary.json", "metrics.jsonl")}
    p = run_cli(*args, "resume=auto", cwd=tmp_path)   # everything finished: nothing runs again
    assert p.returncode == 0 and len(done) == 4
    assert all(f.read_bytes() == b for f, b in done.items())


def test_sweep_folder_names_cannot_leave_the_sweep(tmp_path):
    sweep = tmp_path / "out" / "s"
    p = run_cli("-m", *FW, "seed=0,1", "train.steps=4", f"data.root={tmp_path}/data", "+note=../../../escaped/x",
                f"hydra.sweep.dir={sweep}")
    assert p.returncode == 0, p.stderr
    assert not (tmp_path / "escaped").exists() and not list(tmp_path.glob("**/escaped"))
    jobs = [d for d in sweep.iterdir() if d.is_dir() and not d.name.startswith(".")]
    assert len(jobs) == 2 and all((d / "summary.json").exists() for d in jobs)
    assert all(".." not in d.name and "note" not in d.name for d in jobs)
    line = one_error_line(run_cli("-m", *FW, "+note=a/b,c/d", f"hydra.sweep.dir={sweep}2"))
    assert "cannot contain '/'" in line


# --------------------------------------------------------------------------- every runner kind
@pytest.mark.parametrize("exp,extra,total_key,exact", [
    ("acktr_hopper_cpu", ["train.total_timesteps=3000", "algo.batch_steps=200", "checkpoint.every=3"], "timesteps", True),
    ("a2c_pong_cpu", ["train.total_timesteps=600", "checkpoint.every=10"], "timesteps", False),
    ("grevnet_cora_cpu", ["train.epochs=30", "checkpoint.every=5", "train.eval_every=5"], "train/epochs", True),
])
def test_sigterm_mid_run_then_resume_matches_uninterrupted(tmp_path, exp, extra, total_key, exact):
    """The runner kinds not covered by their own modules' SIGTERM tests (retrieval: test_cli; language model,
    classification, translation, graph generation: their test modules). Continuous control reseeds its
    environment every batch, so its resumed run is exact; Atari environments are not checkpointed (a resumed run
    starts new games), so there the run only has to finish its budget from the checkpoint."""
    write_all(tmp_path / "data")
    args = [f"experiment={exp}", "smoke=true", "threads=1", f"data.root={tmp_path}/data", *extra, *QUIET]
    full, resumed, stopped = sigterm_then_resume(tmp_path, args, total_key=total_key, min_lines=2)
    assert resumed[total_key] == full[total_key]
    keys = [k for k in full if k.startswith(("test/", "val/", "score/", "timesteps", "train/epochs"))]
    assert keys
    for k in keys if exact else ():
        assert resumed[k] == full[k], k


# --------------------------------------------------------------------------- W&B
def test_wandb_online_without_a_key_falls_back_to_offline(tmp_path):
    env = {"HOME": str(tmp_path), "WANDB_API_KEY": "", "WANDB_CONFIG_DIR": str(tmp_path / "wb")}
    t0 = time.time()
    p = run_cli("experiment=fastweights_retrieval", "smoke=true", "logger.mode=online", "logger.progress=false",
                f"data.root={tmp_path}/data", f"hydra.run.dir={tmp_path}/run", env=env)
    assert p.returncode == 0, p.stderr
    # no login prompt waiting on stdin: a smoke run takes ~10 s idle; 60 s leaves room for a loaded 2-core machine
    assert time.time() - t0 < 60 and "Traceback" not in p.stderr
    warnings = [ln for ln in p.stderr.splitlines() if ln.startswith("warning: ")]
    assert len(warnings) == 1 and "no W&B API key" in warnings[0]
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*"))


def test_wandb_online_without_network_falls_back_at_the_init_timeout(tmp_path):
    env = {"HOME": str(tmp_path), "WANDB_API_KEY": "0" * 40, "WANDB_BASE_URL": "http://127.0.0.1:9",
           "WANDB_CONFIG_DIR": str(tmp_path / "wb")}
    t0 = time.time()
    p = run_cli("experiment=fastweights_retrieval", "smoke=true", "logger.mode=online", "logger.progress=false",
                "logger.init_timeout=8", f"data.root={tmp_path}/data", f"hydra.run.dir={tmp_path}/run", env=env)
    assert p.returncode == 0, p.stderr
    # the 8 s init timeout, not W&B's own (90 s and retries): a smoke run takes ~20 s idle; 60 s leaves room for load
    assert time.time() - t0 < 60 and "Traceback" not in p.stderr
    warnings = [ln for ln in p.stderr.splitlines() if ln.startswith("warning: ")]
    assert len(warnings) == 1 and "W&B online failed" in warnings[0] and "logging offline" in warnings[0]
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*"))


# --------------------------------------------------------------------------- a first run that tells the truth
def test_list_shows_every_experiment_with_paper_scale_and_cost():
    p = run_cli("--list")
    assert p.returncode == 0, p.stderr
    names = sorted(f.stem for f in (ROOT / "conf" / "experiment").glob("*.yaml"))
    for name in names:
        line = next((ln for ln in p.stdout.splitlines() if ln.startswith(f"  {name} ")), None)
        assert line is not None, name
        assert ("cpu-small" in line) != ("paper-full" in line), line
    from omegaconf import OmegaConf

    for name in names:
        about = OmegaConf.load(ROOT / "conf" / "experiment" / f"{name}.yaml").about
        assert about.paper and about.what and about.cost and about.scale in ("cpu-small", "paper-full"), name
        assert "measured" in about.cost or "estimate" in about.cost, name
        if about.scale == "paper-full":
            assert (ROOT / "conf" / "experiment" / f"{about.small}.yaml").exists(), name
    for paper in ("Fast weights", "ACKTR", "Reversible RNNs", "Lookahead", "Graph normalizing flows"):
        assert paper in p.stdout


def test_a_paper_full_run_on_a_cpu_says_so_prints_its_folder_and_projects_its_time(tmp_path):
    p = run_cli("experiment=a2c_hopper", "train.total_timesteps=3000", "algo.batch_steps=1000", "threads=1",
                f"hydra.run.dir={tmp_path}/run", *QUIET)
    assert p.returncode == 0, p.stderr
    lines = p.stderr.splitlines()
    assert lines[0] == f"run folder: {tmp_path}/run"
    note = next(ln for ln in lines if ln.startswith("note: "))
    assert "paper-full" in note and "experiment=a2c_hopper_cpu" in note
    assert any(ln.startswith("projected wall time: ") for ln in lines)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any("loss/total" in r for r in rows)     # a metric row after every batch


def test_provenance_names_the_cpu_model_and_torchs_kernels(tmp_path, monkeypatch):
    """Two machines both called "AMD EPYC" can round differently: the provenance names vendor, family, model and the
    vector kernels torch chose, read from /proc/cpuinfo as written (the first processor's lines)."""
    import runners.core as core

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n"
                       "model name\t: AMD EPYC\n\nprocessor\t: 1\nvendor_id\t: GenuineIntel\ncpu family\t: 6\n"
                       "model\t\t: 143\n")
    real_open = open
    monkeypatch.setattr("builtins.open", lambda f, *a, **k: real_open(cpuinfo if f == "/proc/cpuinfo" else f, *a, **k))
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert core.cpu_id() == "AuthenticAMD cpu family 25 model 17, torch kernels AVX512"
    assert core.provenance()["cpu"] == core.cpu_id()
    monkeypatch.setattr("builtins.open", lambda *a, **k: (_ for _ in ()).throw(OSError("no /proc")))
    assert core.cpu_id() == "unknown vendor, torch kernels AVX512"

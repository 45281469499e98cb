import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# pytest -n 2 on 2 cores: one torch thread in each worker and in each run it starts (BA_TEST_THREADS to change);
# two threads per worker beside the other worker's oversubscribe the cores, and OpenMP's spinning makes that slow.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", os.environ.get("BA_TEST_THREADS", "1"))
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


_SERVER = None   # this process's fork server (tests/forkserver.py), started on first use


def _fork_run(args, cwd, env, timeout):
    """``python run.py ARGS`` forked from a server that has already imported torch and Hydra (see
    tests/forkserver.py); None when the server is off (BA_TEST_FORK=0) or cannot be used."""
    global _SERVER
    import json
    import tempfile

    if os.environ.get("BA_TEST_FORK", "1") == "0" or not hasattr(os, "fork"):
        return None
    startup = ("PYTHON", "LD_", "OMP_", "MKL_", "KMP_", "TORCH", "CUDA", "MALLOC")   # read when Python/torch start
    if any(env.get(k) != os.environ.get(k) for k in set(env) | set(os.environ) if k.startswith(startup)):
        return None   # e.g. a sitecustomize on PYTHONPATH: only a fresh interpreter honours it
    if _SERVER is None or _SERVER.poll() is not None:
        _SERVER = subprocess.Popen([sys.executable, str(ROOT / "tests" / "forkserver.py")], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, text=True, cwd=ROOT, env=dict(os.environ))
    with tempfile.TemporaryDirectory() as d:
        out, err = Path(d) / "out", Path(d) / "err"
        req = {"args": [str(a) for a in args], "cwd": str(cwd), "env": env, "out": str(out), "err": str(err),
               "timeout": timeout}
        try:
            _SERVER.stdin.write(json.dumps(req) + "\n")
            _SERVER.stdin.flush()
            reply = _SERVER.stdout.readline()
        except (BrokenPipeError, OSError):
            reply = ""
        if not reply:
            _SERVER = None
            return None
        rc = json.loads(reply)["rc"]
        stdout, stderr = out.read_text(errors="replace"), err.read_text(errors="replace")
    argv = [sys.executable, str(ROOT / "run.py"), *args]
    if rc is None:
        raise subprocess.TimeoutExpired(argv, timeout, output=stdout, stderr=stderr)
    return subprocess.CompletedProcess(argv, rc, stdout, stderr)


def run_cli(*args, cwd=ROOT, timeout=600, env=None, check=False):
    """Run ``python run.py ARGS`` as a user would (forked from a warm server unless BA_TEST_FORK=0: the same
    entry point, arguments, working directory, environment and exit code, without a fresh torch import);
    return the CompletedProcess."""
    e = dict(os.environ, WANDB_SILENT="true", HYDRA_FULL_ERROR="0")
    e.update(env or {})
    p = _fork_run(args, cwd, e, timeout)
    if p is None:
        p = subprocess.run([sys.executable, str(ROOT / "run.py"), *args], cwd=cwd, env=e,
                           capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"run.py {' '.join(args)} failed ({p.returncode}):\n{p.stderr[-4000:]}")
    return p


@pytest.fixture
def cli():
    return run_cli


_open = open   # bound at import: a test that monkeypatches builtins.open must not break this hook


def pytest_runtest_logreport(report):
    """BA_TEST_TIMES=<file>: append "seconds outcome nodeid" for every test phase as it finishes (a record that
    survives an interrupted run, to find the slow tests)."""
    path = os.environ.get("BA_TEST_TIMES")
    if "PYTEST_XDIST_WORKER" in os.environ:   # xdist replays each report on the controller: write it once, there
        return
    if path and (report.when == "call" or report.outcome != "passed"):
        with _open(path, "a") as f:
            f.write(f"{report.duration:.2f} {report.when}:{report.outcome} {report.nodeid}\n")


# the longest tests (15-85 s each on 2 cores), by name, longest first
LONG_FIRST = ("test_reproduce_small_then_results", "test_resume_auto_on_a_rerun_sweep", "sigterm", "test_torchrun",
              "test_cifar_run_learns", "test_sweep_job_resumes", "test_capture_video", "test_every_code_path_smoke_runs")


def pytest_collection_modifyitems(config, items):
    """Start the longest tests first: under pytest-xdist's worksteal a long test that starts last keeps one core
    busy alone at the end (every worker collects the same order: the sort is stable and depends on names only)."""
    rank = lambda item: next((i for i, k in enumerate(LONG_FIRST) if k in item.nodeid), len(LONG_FIRST))  # noqa: E731
    items.sort(key=rank)

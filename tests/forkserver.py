"""A fork server for the test suite: ``python run.py ARGS`` without paying for a fresh interpreter and a torch
import (~3 s) on every call.

One server process per pytest worker imports what every run needs (numpy, torch and torch._dynamo, which the
first optimizer imports, omegaconf, hydra, runners.core)
and never runs anything itself: it has no torch thread pool, no Hydra instance and no signal handlers of its
own, so each forked child starts from the state a fresh ``python run.py`` reaches after its imports. The child
sets the requested working directory, environment and argv, runs run.py as ``__main__`` with stdout and stderr in
files, and exits through the normal interpreter shutdown with run.py's exit code (an uncaught exception: its
traceback and exit 1, as Python does). Modules whose import reads the environment (wandb, mujoco, gymnasium,
torch-geometric) are not preloaded.

``conftest.run_cli`` starts a fresh interpreter instead when the environment changes what Python or torch read at
start-up (PYTHON*, LD_*, OMP_*, ...: a sitecustomize on PYTHONPATH, say), since only a new process honours that.

Protocol (stdin/stdout, one JSON object per line): {"args", "cwd", "env", "out", "err", "timeout"} ->
{"rc": exit code or null on timeout}. Tests use it through ``conftest.run_cli``; ``BA_TEST_FORK=0`` turns it off.
"""
import json
import os
import runpy
import signal
import sys
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_PY = os.path.join(ROOT, "run.py")


def child(req: dict) -> int:
    out = os.open(req["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    err = os.open(req["err"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(err, 2)
    for fd in (out, err, null):
        os.close(fd)
    sys.stdin = open(0, closefd=False)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    os.chdir(req["cwd"])
    os.environ.clear()
    os.environ.update(req["env"])
    sys.argv = [RUN_PY, *req["args"]]
    sys.path[0] = ROOT
    try:
        runpy.run_path(RUN_PY, run_name="__main__")
        return 0
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            return e.code or 0
        print(e.code, file=sys.stderr)
        return 1
    except BaseException:   # as the interpreter reports an uncaught exception
        traceback.print_exc()
        return 1


def wait(pid: int, timeout: float):
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return None
        time.sleep(0.01)


def main() -> None:
    sys.path.insert(0, ROOT)
    import hydra  # noqa: F401  (preloaded: what every run imports)
    import numpy  # noqa: F401
    import omegaconf  # noqa: F401
    import torch  # noqa: F401
    import torch._dynamo  # noqa: F401  (imported by the first optimizer a run builds: ~2.5 s)
    from hydra._internal import utils  # noqa: F401

    import runners.core  # noqa: F401

    reply = sys.stdout
    for line in sys.stdin:
        req = json.loads(line)
        pid = os.fork()
        if pid == 0:
            os.setpgid(0, 0)   # its own process group: a timeout kills the run and anything it started
            code = child(req)
            sys.stdout.flush()
            sys.stderr.flush()
            raise SystemExit(code)   # the normal shutdown (atexit handlers, joins) with run.py's exit code
        reply.write(json.dumps({"rc": wait(pid, req["timeout"])}) + "\n")
        reply.flush()


if __name__ == "__main__":
    main()

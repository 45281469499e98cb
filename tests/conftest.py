import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run_cli(*args, cwd=ROOT, timeout=600, env=None, check=False):
    """Run ``python run.py ARGS`` as a user would; return the CompletedProcess."""
    e = dict(os.environ, WANDB_SILENT="true", HYDRA_FULL_ERROR="0")
    e.update(env or {})
    p = subprocess.run([sys.executable, str(ROOT / "run.py"), *args], cwd=cwd, env=e,
                       capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"run.py {' '.join(args)} failed ({p.returncode}):\n{p.stderr[-4000:]}")
    return p


@pytest.fixture
def cli():
    return run_cli

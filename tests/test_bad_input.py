"""Every case of scripts/probe_bad_input.py (bad input a user would hit) as its own test: one error line and
exit 2 (W&B online without a key: one warning line and a finished run), no traceback, no hang, nothing accepted
silently."""
import sys

import pytest

from conftest import ROOT, _fork_run

sys.path.insert(0, str(ROOT / "scripts"))
from probe_bad_input import CASES, run_case  # noqa: E402


@pytest.fixture(scope="module")
def ptb(tmp_path_factory):
    from fixtures import write_ptb

    root = tmp_path_factory.mktemp("ptb")
    write_ptb(root)
    return root


def test_the_probe_has_at_least_30_cases():
    assert len(CASES) >= 30 and len({c.what for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.what for c in CASES])
def test_bad_input(case, ptb):
    result = run_case(case, ptb, runner=_fork_run)
    assert result["ok"], f"{result['problems']}: {result['line']}"

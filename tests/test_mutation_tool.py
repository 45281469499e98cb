"""scripts/mutation.py --recheck: re-testing only a file's gaps updates its committed record exactly (counts moved,
equivalent mutants left alone, a renumbered mutant refused), and the report keeps reading that record."""
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import mutation  # noqa: E402

FILE = "algorithms/rollout.py"
REC = {"file": FILE, "mutmut": "3.8.1", "hardware": "h", "commit": "c0", "minutes": 1.0, "mutants": 10,
       "counts": {"killed": 7, "survived": 2, "no tests": 1},
       "not_killed": {"m_gap": {"status": "survived", "mutation": "- a / + b"},
                      "m_eq": {"status": "survived", "mutation": "- c / + d"},
                      "m_none": {"status": "no tests", "mutation": "- e / + f"}}}


@pytest.fixture
def tool(tmp_path, monkeypatch):
    report, ws = tmp_path / "report", tmp_path / "algorithms__rollout"
    (report / "runs").mkdir(parents=True)
    ws.mkdir()
    (report / "runs" / "algorithms__rollout.json").write_text(json.dumps(REC))
    (report / "equivalent.yaml").write_text("m_eq: {why: w, mutation: '- c / + d'}\n")
    monkeypatch.setattr(mutation, "REPORT", report)
    monkeypatch.setattr(mutation, "RECORDS", report / "runs")
    monkeypatch.setattr(mutation, "WORK", tmp_path)
    monkeypatch.setattr(mutation, "workspace", lambda f: ws)
    monkeypatch.setattr(mutation, "_git", lambda *a: "abc12345" if a[0] == "rev-parse" else "")
    ran = []
    monkeypatch.setattr(mutation.subprocess, "run", lambda cmd, **kw: ran.append(cmd) or SimpleNamespace(returncode=0))
    diffs = {"m_gap": "- a / + b", "m_none": "- e / + f"}
    monkeypatch.setattr(mutation, "diff", lambda f, m: diffs[m])
    return report / "runs" / "algorithms__rollout.json", ran, diffs, monkeypatch


def test_recheck_moves_killed_gaps_into_the_counts_and_leaves_equivalents_alone(tool):
    path, ran, _, mp = tool
    mp.setattr(mutation, "results", lambda f: {"m_gap": "killed", "m_none": "no tests", "other": "not checked"})
    assert mutation.recheck(FILE, 1) == 0
    assert ran[0][-2:] == ["m_gap", "m_none"]            # only the gaps: the equivalent mutant is not re-tested
    rec = json.loads(path.read_text())
    assert rec["counts"] == {"killed": 8, "survived": 1, "no tests": 1} and rec["mutants"] == 10
    assert set(rec["not_killed"]) == {"m_eq", "m_none"}
    assert {m: r["status"] for m, r in rec["rechecked"].items()} == {"m_gap": "killed", "m_none": "no tests"}
    assert rec["rechecked"]["m_gap"]["commit"] == "abc12345" and rec["commit"] == "c0"
    # the workspace now holds only the recheck: the report reads the committed record, not the partial workspace
    (mutation.WORK / "algorithms__rollout" / "mutants").mkdir()
    assert mutation.record(FILE) == rec


def test_recheck_refuses_a_renumbered_mutant_and_keeps_the_record(tool):
    path, _, diffs, mp = tool
    diffs["m_gap"] = "- a / + zzz"
    mp.setattr(mutation, "results", lambda f: {"m_gap": "killed", "m_none": "killed"})
    assert mutation.recheck(FILE, 1) == 2
    assert json.loads(path.read_text()) == REC


def test_recheck_needs_a_file_and_a_record(tool, capsys):
    path, *_ = tool
    assert mutation.main(["--recheck"]) == 2
    path.unlink()
    assert mutation.recheck(FILE, 1) == 2
    assert capsys.readouterr().err.count("error:") == 2

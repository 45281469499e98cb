"""Shared check: SIGTERM a run mid-way, resume it, and return both summaries."""
import json
import signal
import subprocess
import sys
import time

import torch

from conftest import ROOT, run_cli


def sigterm_then_resume(tmp_path, args, total_key, min_lines=3):
    run_cli(*args, f"hydra.run.dir={tmp_path}/full", check=True)
    full = json.loads((tmp_path / "full" / "summary.json").read_text())
    run = tmp_path / "cut"
    proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), *args, f"hydra.run.dir={run}"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        m = run / "metrics.jsonl"
        if m.exists() and m.read_text().count("\n") >= min_lines:
            proc.send_signal(signal.SIGTERM)
            break
        time.sleep(0.01)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "SIGTERM" in err and f"resume={run}" in err and not (run / "summary.json").exists()
    stopped = torch.load(run / "checkpoint.pt", weights_only=True)
    assert 0 < stopped["step"] < full[total_key]
    run_cli(f"resume={run}", check=True)
    resumed = json.loads((run / "summary.json").read_text())
    # wall time counts every session: the stopped one (recorded in its checkpoint) plus the resumed one
    assert full["sessions"] == 1 and resumed["sessions"] == 2 and stopped["sessions"] == 1
    assert stopped["wall_s"] > 0
    assert abs(resumed["wall_s"] - resumed["wall_s_last_session"] - stopped["wall_s"]) < 0.05
    # the code each session ran: the stopped session's commit travels in its checkpoint to the resumed summary
    # (compared run with run, not with HEAD now: a commit made while the test runs must not fail it)
    own = resumed["provenance/git_commit"][:12] + (" +changes" if resumed["provenance/git_dirty"] else "")
    assert len(full["provenance/git_commits_by_session"]) == 1 and len(stopped["commits"]) == 1
    assert resumed["provenance/git_commits_by_session"] == [stopped["commits"][0], own]
    p = run_cli(f"resume={run}", check=True)          # resuming a finished run skips it
    assert "already finished" in p.stderr
    return full, resumed, stopped

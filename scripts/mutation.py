"""Mutation testing of each paper's core with mutmut 3: would the tests notice if the method were wrong?

Each source file gets its own workspace, ``.mutation/<file>/`` (ignored by git): a copy of the project whose
pyproject names only that file to mutate and only the test modules that exercise it (``TESTS`` below), so a mutant
runs just those tests (mutmut further narrows them to the tests that reach the mutated function). Re-running
resumes: mutmut keeps its results in the workspace and re-tests only what changed.

    python scripts/mutation.py                                  # every file in TESTS, then the report
    python scripts/mutation.py --file algorithms/kfac.py        # one file (make mutation FILE=...)
    python scripts/mutation.py --report                         # only rebuild results/mutation/README.md
    python scripts/mutation.py --file algorithms/kfac.py --recheck   # only the committed record's gaps, again

``--recheck`` is for after adding tests for a file's gaps: it re-tests only the mutants its committed record lists as
not killed and not equivalent (minutes instead of the whole file), checks each is still the same mutation, and moves
the ones now killed into the record's counts with the commit that killed them (``rechecked`` in the record).

The report counts, per file, mutants killed / survived / timed out / not reached by any test, and lists every
survivor either as equivalent (``results/mutation/equivalent.yaml``: mutant name -> why it changes nothing
observable and the mutation it was written for, so an entry left stale by renumbering is caught) or as a gap (not
killed; ``results/mutation/gaps.yaml`` says why where it is known). Device placement is tested on the CPU: the tests
run entry points again with PyTorch's default device set to 'meta', so a tensor made without the input's device
fails there. Score = killed / (all - equivalent): gaps count against it.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from runners.core import hardware  # noqa: E402  (torch; the machine a run's minutes were measured on)

WORK = ROOT / ".mutation"
REPORT = ROOT / "results" / "mutation"
RECORDS = REPORT / "runs"   # one committed record per file's last run (the report is built from these)
# the test modules that exercise each core file in-process (mutmut records which tests reach which function)
TESTS = {
    "algorithms/kfac.py": ["tests/test_kfac.py", "tests/test_acktr_reference.py", "tests/test_actor_critic_exact.py"],
    "algorithms/acktr.py": ["tests/test_actor_critic_exact.py", "tests/test_acktr_reference.py",
                            "tests/test_onpolicy.py"],
    "algorithms/acktr_cont.py": ["tests/test_actor_critic_exact.py", "tests/test_acktr_reference.py",
                                 "tests/test_onpolicy.py"],
    "algorithms/a2c.py": ["tests/test_actor_critic_exact.py", "tests/test_onpolicy.py", "tests/test_acktr_reference.py"],
    "algorithms/rollout.py": ["tests/test_rollout.py"],
    "algorithms/lookahead.py": ["tests/test_lookahead.py"],
    "algorithms/reversible_bptt.py": ["tests/test_revrnn.py", "tests/test_translate.py"],
    "models/revrnn.py": ["tests/test_revrnn.py", "tests/test_translate.py", "tests/test_seq2seq.py"],
    "models/fast_weights.py": ["tests/test_fast_weights.py"],
    "models/gnf.py": ["tests/test_gnf.py"],
    "models/seq2seq.py": ["tests/test_seq2seq.py", "tests/test_translate.py"],
    "runners/graph_mmd.py": ["tests/test_graph_mmd.py"],
}
# tests left out of mutation runs, with why (they are in `make test`; the report lists them): a mutant that reaches
# one of these functions would rerun it, and at this cost the file's run would take many hours on 2 cores
DESELECT = {
    "tests/test_revrnn.py::test_reversal_keeps_nothing_per_step_and_its_peak_memory_is_flat_in_T":
        "8 s (the torch profiler's memory records over four training steps); it checks memory, not values",
    "tests/test_translate.py::test_sigterm_mid_epoch_then_resume_matches_uninterrupted":
        "10 s (two end-to-end runs of run.py); it checks the runner's resume, not the translation model",
    "tests/test_translate.py::test_unknown_token_policy_is_one_line":
        "5 s (an end-to-end run of run.py); it checks the data loader's error line",
    "tests/test_translate.py::test_resume_with_a_different_vocabulary_is_one_line":
        "3 s (two end-to-end runs of run.py); it checks the runner's error line",
}
COPY = ["algorithms", "models", "runners", "tests", "conf", "scripts", "run.py"]
STATUSES = ("killed", "survived", "timeout", "no tests", "suspicious", "skipped", "not checked", "segfault")


def slug(path: str) -> str:
    return path.replace("/", "__").removesuffix(".py")


def workspace(file: str) -> Path:
    """Copy the project into the file's workspace (only changed files are rewritten) with its own pyproject."""
    ws = WORK / slug(file)
    ws.mkdir(parents=True, exist_ok=True)
    for item in COPY:
        src, dst = ROOT / item, ws / item
        if src.is_dir():
            shutil.copytree(src, dst, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, dst)
    tests = TESTS[file]
    deselect = [a for t in DESELECT if t.split("::")[0] in tests for a in ("--deselect", t)]
    (ws / "pyproject.toml").write_text(
        "[tool.mutmut]\n"
        f'source_paths = ["{file.split("/")[0]}"]\n'
        f'only_mutate = ["{file}"]\n'
        'also_copy = ["run.py", "conf", "scripts"]\n'
        f"pytest_add_cli_args = {json.dumps(['-p', 'no:xdist', '-p', 'no:cacheprovider', '-q', *deselect])}\n"
        f"pytest_add_cli_args_test_selection = {json.dumps(tests)}\n"
        'process_isolation = "forkserver"\n'
        'on_dependency_change = "rerun"\n'   # a changed test or config re-tests the mutants (no stale results)
        "timeout_multiplier = 5.0\n"
        "timeout_constant = 10.0\n")
    return ws


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def _source_commit() -> str:
    """HEAD, marked "+changes" for uncommitted changes in what the workspace copies (not the report this script
    itself rewrites)."""
    dirty = _git("status", "--porcelain", "--untracked-files=no", "--", *COPY)
    return _git("rev-parse", "--short=8", "HEAD") + (" +changes" if dirty else "")


def _mutmut_run(ws: Path, children: int, names: list[str] = ()) -> int:
    """``mutmut run`` in the workspace (only ``names`` when given), one torch thread per child."""
    env = dict(os.environ, PYTHONPATH=str(ws), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "mutmut", "run", "--max-children", str(children), *names], cwd=ws,
                          env=env).returncode


def _equivalents() -> dict:
    import yaml

    eq_file = REPORT / "equivalent.yaml"
    return (yaml.safe_load(eq_file.read_text()) or {}) if eq_file.exists() else {}


def run(file: str, children: int) -> None:
    ws = workspace(file)
    commit, t0 = _source_commit(), time.time()
    rc = _mutmut_run(ws, children)
    (ws / "last_run.json").write_text(json.dumps({"seconds": time.time() - t0, "returncode": rc,
                                                  "commit": commit, "hardware": hardware(1)}))


def recheck(file: str, children: int) -> int:
    """Re-test the committed record's gaps (not killed, not equivalent) in the file's workspace and update the record:
    a mutant now killed leaves ``not_killed`` and its status moves in ``counts``; every rechecked mutant is listed in
    ``rechecked`` with its new status and the commit. A mutant whose number now names another mutation (an edit to
    its function renumbers them) is refused: the whole file needs a run then."""
    path = RECORDS / f"{slug(file)}.json"
    if not path.exists():
        print(f"error: {file} has no committed mutation record to recheck; run it whole first", file=sys.stderr)
        return 2
    rec = json.loads(path.read_text())
    equivalent = _equivalents()
    names = [m for m in rec["not_killed"] if m not in equivalent]
    if not names:
        print(f"{file}: the record lists no gaps; nothing to recheck")
        return 0
    ws = workspace(file)
    commit, t0 = _source_commit(), time.time()
    _mutmut_run(ws, children, names)
    # the workspace now holds results for these mutants only: the committed record stays the file's record
    (ws / "last_run.json").write_text(json.dumps({"recheck": True, "seconds": time.time() - t0, "commit": commit}))
    res = results(file)
    for m in names:
        mutation = diff(file, m)
        if mutation != rec["not_killed"][m]["mutation"]:
            print(f"error: {m} is now another mutation ({mutation!r}, recorded {rec['not_killed'][m]['mutation']!r}):"
                  f" the file changed since its run; run it whole (make mutation FILE={file})", file=sys.stderr)
            return 2
        status = res.get(m, "not checked")
        rec.setdefault("rechecked", {})[m] = {"status": status, "commit": commit,
                                               "date": time.strftime("%Y-%m-%d", time.gmtime())}
        if status in ("killed", "timeout"):
            old = rec["not_killed"].pop(m)["status"]
            rec["counts"][old] -= 1
            rec["counts"] = {k: v for k, v in rec["counts"].items() if v}
            rec["counts"][status] = rec["counts"].get(status, 0) + 1
        print(f"{m}: {status}")
    path.write_text(json.dumps(rec, indent=1, ensure_ascii=False) + "\n")
    return 0


def results(file: str) -> dict[str, str]:
    """mutant name -> status, from the file's workspace."""
    ws = WORK / slug(file)
    if not (ws / "mutants").exists():
        return {}
    p = subprocess.run([sys.executable, "-m", "mutmut", "results", "--all", "true"], cwd=ws, capture_output=True,
                       text=True, env=dict(os.environ, PYTHONPATH=str(ws)))
    out = {}
    for line in p.stdout.splitlines():
        m = re.match(r"\s*([\w.]+__mutmut_\d+): (.+)$", line)
        if m:
            out[m.group(1)] = m.group(2).strip()
    return out


def diff(file: str, mutant: str) -> str:
    """The mutation as ``mutmut show`` prints it, cached per workspace until its mutated copy of the file changes."""
    ws = WORK / slug(file)
    cache_file = ws / "diffs.json"
    stamp = (ws / "mutants" / file).stat().st_mtime_ns
    cache = json.loads(cache_file.read_text()) if cache_file.exists() else {}
    if cache.get("stamp") != stamp:
        cache = {"stamp": stamp, "diffs": {}}
    if mutant not in cache["diffs"]:
        p = subprocess.run([sys.executable, "-m", "mutmut", "show", mutant], cwd=ws, capture_output=True, text=True,
                           env=dict(os.environ, PYTHONPATH=str(ws)))
        lines = [ln for ln in p.stdout.splitlines() if ln.startswith(("+", "-")) and not ln.startswith(("+++", "---"))]
        cache["diffs"][mutant] = " / ".join(ln.strip() for ln in lines)[:300]
        cache_file.write_text(json.dumps(cache))
    return cache["diffs"][mutant]


def record(file: str) -> dict | None:
    """The file's last run as ``results/mutation/runs/<file>.json`` (committed): counts, minutes, the commit it ran
    on and every mutant not killed with its mutation, so the report is rebuilt without the (ignored) workspace.
    Refreshed from the workspace when there is one; otherwise the committed record is read."""
    res, path = results(file), RECORDS / f"{slug(file)}.json"
    if not res:
        return json.loads(path.read_text()) if path.exists() else None
    last = WORK / slug(file) / "last_run.json"
    last = json.loads(last.read_text()) if last.exists() else {}
    if last.get("recheck"):   # the workspace holds a recheck of the gaps only: recheck() updated the record itself
        return json.loads(path.read_text()) if path.exists() else None
    rec = {"file": file, "mutmut": _mutmut_version(), "hardware": last.get("hardware", "not recorded"),
           "commit": last.get("commit", "not recorded"),   # the commit the mutants were made from (+changes)
           "minutes": round(last["seconds"] / 60, 1) if "seconds" in last else None,
           "mutants": len(res), "counts": {st: n for st in STATUSES if (n := sum(v == st for v in res.values()))},
           "not_killed": {m: {"status": v, "mutation": diff(file, m)} for m, v in sorted(res.items())
                          if v in ("survived", "no tests", "suspicious")}}
    RECORDS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rec, indent=1, ensure_ascii=False) + "\n")
    return rec


def report() -> str:
    import yaml

    equivalent = _equivalents()
    gap_file = REPORT / "gaps.yaml"
    gaps = (yaml.safe_load(gap_file.read_text()) or {}) if gap_file.exists() else {}
    rows, details, machines = [], [], set()
    for file in TESTS:
        rec = record(file)
        if not rec:
            rows.append(f"| `{file}` | not run | | | | | | | |")
            continue
        machines.add(rec["hardware"])
        count = {st: rec["counts"].get(st, 0) for st in STATUSES}
        surv = rec["not_killed"]
        # an entry names its mutation too: mutmut numbers mutants per function, so an edit to the function can give
        # the number to a different mutation, whose entry is then stale (shown, not counted as equivalent)
        stale = {m for m in surv if isinstance(equivalent.get(m), dict)
                 and equivalent[m].get("mutation") != surv[m]["mutation"]}
        eq = [m for m in surv if m in equivalent and m not in stale]
        pending = count["not checked"]   # an interrupted run: the score covers the mutants checked so far
        denom = rec["mutants"] - len(eq) - pending
        score = count["killed"] + count["timeout"]
        n = f"{rec['mutants']} ({pending} not checked yet: partial)" if pending else f"{rec['mutants']}"
        minutes = "?" if rec["minutes"] is None else f"{rec['minutes']:.0f}"
        rows.append(f"| `{file}` | {n} | {count['killed']} | {count['survived']} | {count['timeout']} | "
                    f"{count['no tests']} | {len(eq)} | **{100 * score / max(denom, 1):.1f}%** | {minutes} | "
                    f"{rec['commit']} |")
        rechecked = rec.get("rechecked", {})
        if surv or rechecked:
            details.append(f"\n### `{file}`\n")
            for m, r in sorted(rechecked.items()):
                details.append(f"- `{m}`: a gap of the run above, re-tested alone (`--recheck`) at {r['commit']} "
                               f"({r['date']}): **{r['status']}**")
            for m, info in sorted(surv.items()):
                why = equivalent.get(m)
                why = why.get("why") if isinstance(why, dict) else why
                label = (f"**stale equivalent entry** (it was written for another mutation: {why})" if m in stale else
                         f"equivalent: {why}" if why else
                         f"**not killed** ({info['status']}" + (f": {gaps[m]})" if m in gaps else ")"))
                details.append(f"- `{m}`: {label}. Mutation: `{info['mutation']}`")
    text = "\n".join([
        "# Mutation testing: would the tests notice a wrong method?", "",
        "Generated by `python scripts/mutation.py --report` (`make mutation` runs it after the mutants). mutmut "
        f"{_mutmut_version()} mutates one function of a core file at a time (operators, constants, arguments, "
        "returned values) and runs the tests that reach it; a mutant is killed when a test fails or times out. "
        "Score = (killed + timed out) / (all - equivalent). Goal: 85% in every file.", "",
        "| file | mutants | killed | survived | timed out | no test reaches it | equivalent | score | minutes "
        "| commit |",
        "|---|---|---|---|---|---|---|---|---|---|", *rows, "",
        f"Minutes: wall time of the file's last run, one mutant at a time, on {'; '.join(sorted(machines))} "
        "(often beside other jobs). Records of each run: `results/mutation/runs/`.", "",
        "Tests left out of mutation runs (they run in `make test`):", "",
        *[f"- `{t}`: {why}" for t, why in DESELECT.items()], "",
        "Every mutant that was not killed, with the mutation (as `mutmut show` prints it) and, where it changes "
        "nothing observable, why (`results/mutation/equivalent.yaml`); for gaps, why they are not killed where it is "
        "known (`results/mutation/gaps.yaml`):", *details, ""])
    REPORT.mkdir(parents=True, exist_ok=True)
    (REPORT / "README.md").write_text(text)
    return text


def _mutmut_version() -> str:
    from importlib.metadata import version

    return version("mutmut")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--file", default=None, help=f"one of: {', '.join(TESTS)}")
    ap.add_argument("--children", type=int, default=2, help="mutants tested in parallel")
    ap.add_argument("--report", action="store_true", help="only rebuild the report")
    ap.add_argument("--recheck", action="store_true", help="with --file: re-test only the committed record's gaps")
    a = ap.parse_args(argv)
    if a.file and a.file not in TESTS:
        print(f"error: FILE={a.file} is not a core file; available: {', '.join(TESTS)}", file=sys.stderr)
        return 2
    if a.recheck:
        if not a.file:
            print("error: --recheck needs --file (one core file)", file=sys.stderr)
            return 2
        rc = recheck(a.file, a.children)
        if rc:
            return rc
        a.report = True
    if not a.report:
        for file in [a.file] if a.file else list(TESTS):
            run(file, a.children)
    print(report())
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``make results``: the claims ledgers (results/claims/<paper>.yaml) checked against the committed runs, one page.

    python scripts/results.py                        # rebuild results/README.md, results/<paper>/README.md, CSVs, figures
    python scripts/results.py --collect runs/acktr_mujoco --paper acktr   # copy finished runs in first
    python scripts/results.py --wandb ENTITY/PROJECT # also pull W&B run summaries (online, on request)

A ledger lists each claim of a paper in its own words with its source (table / figure; confirmed or recalled), the
metric and the runs that answer it (globs over ``results/<paper>/runs/<run>/``), and a comparison rule. A claim's
status is computed, never typed:

* ``holds``: the rule is met by the whole 95% interval (t-interval over seeds; a difference: Welch's; at least 2 seeds;
  a claim marked ``deterministic`` is an exact count, such as the bytes a step keeps, with no interval to draw);
* ``direction only``: the point estimate meets it, the interval does not (or there is one seed);
* ``does not hold``: the point estimate fails it;
* ``not run``: no run answers it.

Rules: ``at_most`` / ``at_least`` a value (the paper's, or a goal), ``within`` a relative band around it,
``less_than`` / ``greater_than`` another group of runs, ``count`` (at least k of the listed claims hold). Atari
aggregates (human-normalised IQM and mean) come from rliable's stratified bootstrap when 3 or more games have runs.
Every run row shows its provenance (commit, uncommitted changes, hardware) and its command with relative paths.
"""
from __future__ import annotations

import argparse
import csv
import fnmatch
import json
import math
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import warnings

import numpy as np
import yaml
from scipy import stats as st

os.environ.setdefault("SOURCE_DATE_EPOCH", "0")   # PDFs without a creation date: unchanged figures, unchanged files
ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
PAPERS = ("fastweights", "acktr", "revrnn", "lookahead", "gnf")
STATUS_ORDER = ("holds", "direction only", "does not hold", "not run")
# Atari random / human scores (Mnih et al. 2015, as used by rliable) for human-normalised aggregates
ATARI_REF = {"Pong": (-20.7, 14.6), "Breakout": (1.7, 30.5), "BeamRider": (363.9, 16926.5), "Qbert": (163.9, 13455.0),
             "Seaquest": (68.4, 42054.7), "SpaceInvaders": (148.0, 1668.7)}


# ----------------------------------------------------------------------------------------- runs
@dataclass
class Run:
    name: str                   # the run folder's name
    group: str                  # the folder holding it, relative to results/<paper>/ ("runs", "runs_earlier", ...)
    paper: str
    summary: dict
    dir: Path

    def get(self, key: str, default=None):
        return self.summary.get(key, default)


def load_runs(results: Path) -> dict[str, list[Run]]:
    out = {}
    for paper in PAPERS:
        runs = []
        for summ in sorted((results / paper).glob("**/summary.json")):
            try:
                s = json.loads(summ.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            runs.append(Run(summ.parent.name, str(summ.parent.parent.relative_to(results / paper)), paper, s, summ.parent))
        out[paper] = runs
    return out


def select(runs: list[Run], patterns, group: str = "runs") -> list[Run]:
    """Runs of ``group`` (the folder under results/<paper>/) whose names match any of the glob ``patterns``."""
    if isinstance(patterns, str):
        patterns = [patterns]
    return [r for r in runs if r.group == group and any(fnmatch.fnmatch(r.name, p) for p in patterns)]


def run_name(summary: dict) -> str:
    """A run folder's name from its command: the experiment, then its other overrides, then the seed."""
    skip = ("threads", "resume", "device", "data.root", "launcher", "logger.", "hydra.", "seed", "experiment",
            "env.num_threads")
    toks = summary.get("command", "").split()[2:]
    kv = dict(t.split("=", 1) for t in toks if "=" in t)
    kv = {k: (Path(v).stem if k == "data.path" else v) for k, v in kv.items()}
    rest = [f"{k.split('.')[-1]}{v}" for k, v in sorted(kv.items()) if not k.startswith(skip)]
    name = "_".join([kv.get("experiment", "run"), *rest, f"seed{summary.get('seed', kv.get('seed', 0))}"])
    return "".join(c if c.isalnum() or c in "_-.+" else "_" for c in name)


def clean_command(cmd: str) -> str:
    """A run's command as a user would type it: no launcher/logger/resume plumbing, no machine paths
    (``data.root=DATA``; a data file as ``DATA/<path below the data folder>``)."""
    out = []
    for t in cmd.split():
        if t.startswith(("hydra.", "logger.", "resume=", "launcher=")):
            continue
        k, _, v = t.partition("=")
        if k == "data.root" and v:
            t = "data.root=DATA"
        elif k == "data.path" and "/data/" in v:
            t = "data.path=DATA/" + v.split("/data/", 1)[1]
        elif "/" in t:
            t = t.replace(str(ROOT) + "/", "")
        out.append(t)
    return " ".join(out)


def clean_text(text: str) -> str:
    """A copied file's text without machine paths (the repository's, the data folder's)."""
    text = text.replace(str(ROOT) + "/", "").replace(str(ROOT), ".")
    return text.replace(str(ROOT.parent / "shared" / "data"), "DATA").replace("../shared/data", "DATA")


def collect(src: Path, paper: str, results: Path) -> int:
    """Copy finished runs (summary.json, metrics.jsonl, resolved_config.yaml, samples, videos) into
    results/<paper>/runs/<name>/, machine paths removed from their commands."""
    n = 0
    for summ in sorted(src.rglob("summary.json")):
        s = json.loads(summ.read_text())
        s["command"] = clean_command(s.get("command", ""))
        s = {k: (clean_text(v) if isinstance(v, str) and k != "command" else v) for k, v in s.items()}   # data_path...
        dst = results / paper / "runs" / run_name(s)
        dst.mkdir(parents=True, exist_ok=True)
        (dst / "summary.json").write_text(json.dumps(s, indent=2, sort_keys=True) + "\n")
        for f in ("metrics.jsonl", "samples_seed0.jsonl", "eval_episode.mp4"):
            if (summ.parent / f).exists():
                shutil.copy2(summ.parent / f, dst / f)
        if (summ.parent / "resolved_config.yaml").exists():
            (dst / "resolved_config.yaml").write_text(clean_text((summ.parent / "resolved_config.yaml").read_text()))
        n += 1
    return n


# ----------------------------------------------------------------------------------------- statistics
def interval(values: list[float]) -> tuple[float, float, float]:
    """(mean, low, high): t-interval at 95%; a single value has no interval (nan)."""
    v = np.asarray(values, dtype=float)
    m = float(v.mean())
    if len(v) < 2:
        return m, math.nan, math.nan
    h = float(st.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return m, m - h, m + h


def diff_interval(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """mean(a) - mean(b) with Welch's 95% interval."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    d = float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        return d, math.nan, math.nan
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return d, d, d
    dof = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    h = float(st.t.ppf(0.975, dof) * se)
    return d, d - h, d + h


def metric(runs: list[Run], key: str, scale: float = 1.0, missing: str | None = None) -> list[float]:
    """The runs' values of ``key``; where a run has none (say, a threshold never reached), ``missing`` names the
    summary key whose value + 1 stands in for it (a censored value: at least that many)."""
    vals = []
    for r in runs:
        v = r.get(key)
        if v is None and missing and isinstance(r.get(missing), (int, float)):
            v = r.get(missing) + 1
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v)):
            vals.append(float(v) * scale)
    return vals


def atari_aggregates(runs: list[Run], algo: str, key: str = "score/mean100") -> dict | None:
    """rliable's IQM and mean of human-normalised scores with stratified-bootstrap 95% intervals, if >= 3 games."""
    from rliable import library as rly
    from rliable import metrics as rm

    by_game: dict[str, list[float]] = {}
    for r in runs:
        g = str(r.get("env", "")).split("/")[-1].split("-")[0]
        if g in ATARI_REF and r.get("algo") == algo and r.get(key) is not None:
            lo, hi = ATARI_REF[g]
            by_game.setdefault(g, []).append((float(r.get(key)) - lo) / (hi - lo))
    if len(by_game) < 3:
        return None
    n = min(len(v) for v in by_game.values())
    scores = np.array([v[:n] for v in by_game.values()]).T          # (runs, games)
    fn = lambda x: np.array([rm.aggregate_iqm(x), rm.aggregate_mean(x)])  # noqa: E731
    point, ci = rly.get_interval_estimates({algo: scores}, fn, reps=2000)
    return {"games": sorted(by_game), "seeds": n, "iqm": (point[algo][0], *ci[algo][:, 0]),
            "mean": (point[algo][1], *ci[algo][:, 1])}


# ----------------------------------------------------------------------------------------- claims
def evaluate_claim(c: dict, runs: list[Run], done: dict) -> dict:
    rule = c["rule"]
    kind = rule["kind"]
    if kind == "count":
        sts = [done[i]["status"] for i in rule["of"] if i in done]
        k = rule["at_least"]
        n_hold = sum(s == "holds" for s in sts)
        n_dir = sum(s in ("holds", "direction only") for s in sts)
        if sum(s != "not run" for s in sts) < k:       # too few of them run to tell
            status = "not run"
        else:
            status = "holds" if n_hold >= k else "direction only" if n_dir >= k else "does not hold"
        return {"status": status, "ours": f"{n_hold} hold, {n_dir - n_hold} direction only, of {len(rule['of'])}",
                "n": len(sts)}
    scale = c.get("scale", 1.0)
    ours = select(runs, c["runs"], c.get("group", "runs"))
    vals = metric(ours, c["metric"], scale, c.get("missing"))
    if not vals:
        return {"status": "not run", "ours": "", "n": 0}
    if kind == "spread_less_than":   # robustness: the range of the metric over a grid, ours vs the other's
        other_runs = select(runs, c["other"]["runs"], c["other"].get("group", "runs"))
        key = rule.get("match", "lr")
        shared = {r.get(key) for r in ours} & {r.get(key) for r in other_runs}
        a = metric([r for r in ours if r.get(key) in shared], c["metric"], scale)
        b = metric([r for r in other_runs if r.get(key) in shared], c["metric"], scale)
        if len(a) < 2 or len(b) < 2:
            return {"status": "not run", "ours": "", "n": min(len(a), len(b))}
        ra, rb = max(a) - min(a), max(b) - min(b)
        missing = {r.get(key) for r in other_runs} - shared   # the range is over the other's whole grid, or not yet
        if missing:
            return {"status": "not run", "n": 0,
                    "ours": f"{len(shared)} of {len(shared) + len(missing)} {key} values run (range so far: "
                            f"{fmt(ra)} vs {c['other'].get('label', 'other')} {fmt(rb)})"}
        text = (f"range over {len(shared)} shared {key} values: {fmt(ra)} vs {c['other'].get('label', 'other')} "
                f"{fmt(rb)} (one seed per cell: no interval)")
        return {"status": status_of(ra < rb, False), "ours": text, "n": 1, "values": (ra, rb)}
    if kind in ("less_than", "greater_than"):
        other_runs = select(runs, c["other"]["runs"], c["other"].get("group", c.get("group", "runs")))
        other = metric(other_runs, c.get("other_metric", c["metric"]), scale, c.get("missing"))
        if not other:
            return {"status": "not run", "ours": "", "n": len(vals)}
        raw = float(np.mean(other))
        # "within 5% of the other": compare with other x other_scale + other_offset
        adjusted = c["other"].get("scale", 1.0) != 1.0 or c["other"].get("offset", 0.0) != 0.0
        other = [o * c["other"].get("scale", 1.0) + c["other"].get("offset", 0.0) for o in other]
        d, lo, hi = diff_interval(vals, other)
        want = (lambda x: x < 0) if kind == "less_than" else (lambda x: x > 0)
        m1, m2 = float(np.mean(vals)), float(np.mean(other))
        text = (f"{fmt(m1)} vs {c['other'].get('label', 'other')} {fmt(raw)}: difference "
                + (f"to the threshold ({fmt(m2)}) " if adjusted else "") + f"{fmt(d)} {ci_text(lo, hi)}")
        cens = [0, 0]
        if c.get("missing"):    # censored values: runs that never reached it count as their budget + 1
            cens = [sum(r.get(c["metric"]) is None for r in rs) for rs in (ours, other_runs)]
            if any(cens):
                text += (f"; never reached (counted as the run's length + 1): ours {cens[0]} of {len(vals)}, "
                         f"{c['other'].get('label', 'other')} {cens[1]} of {len(other)}")
        status = status_of(want(d), not math.isnan(lo) and want(lo) and want(hi))
        # A censored value is only a lower bound, so it can never be the smaller side: with less_than a run of ours
        # that never reached the threshold fails the claim (with greater_than, one of the other side's). Counting
        # it as its length made a policy whose episodes last longer look faster when neither reached it.
        side = 0 if kind == "less_than" else 1
        if cens[side]:
            status = "does not hold"
            text += f"; {'ours' if side == 0 else c['other'].get('label', 'other')} never reached it in {cens[side]} run(s)"
        return {"status": status, "ours": text, "n": min(len(vals), len(other)), "values": (m1, m2, d, lo, hi)}
    m, lo, hi = interval(vals)
    if c.get("deterministic"):   # an exact count (bits, bytes): the same on every repeat, no interval to draw
        lo = hi = m
    if c.get("range") and not math.isnan(lo):   # an interval cannot leave what the metric can take (0-100%)
        lo, hi = max(lo, c["range"][0]), min(hi, c["range"][1])
    v = rule["value"]
    if kind == "at_most":
        ok = lambda x: x <= v * (1 + rule.get("tolerance", 0.0)) if v >= 0 else x <= v  # noqa: E731
        status = status_of(ok(m), not math.isnan(hi) and ok(hi))
    elif kind == "at_least":
        ok = lambda x: x >= v * (1 - rule.get("tolerance", 0.0)) if v >= 0 else x >= v  # noqa: E731
        status = status_of(ok(m), not math.isnan(lo) and ok(lo))
    elif kind == "within":
        band = rule["tolerance"] * abs(v)
        ok = lambda x: abs(x - v) <= band  # noqa: E731
        status = status_of(ok(m), not math.isnan(lo) and ok(lo) and ok(hi))
    else:
        raise ValueError(f"unknown rule kind {kind!r} in claim {c['id']}")
    text = f"{fmt(m)} (an exact count)" if c.get("deterministic") else f"{fmt(m)} {ci_text(lo, hi)}"
    return {"status": status, "ours": text, "n": len(vals), "values": (m, lo, hi)}


def status_of(point_ok: bool, interval_ok: bool) -> str:
    return "holds" if point_ok and interval_ok else "direction only" if point_ok else "does not hold"


def fmt(x: float) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    a = abs(x)
    return f"{x:.0f}" if a >= 1000 else f"{x:.1f}" if a >= 10 else f"{x:.2f}" if a >= 0.1 else f"{x:.3g}"


def ci_text(lo: float, hi: float) -> str:
    return "(one seed: no interval)" if math.isnan(lo) else f"[{fmt(lo)}, {fmt(hi)}]"


def rule_text(c: dict) -> str:
    r = c["rule"]
    k = r["kind"]
    if k == "count":
        return f"at least {r['at_least']} of {len(r['of'])} hold"
    if k in ("less_than", "greater_than"):
        o = c["other"]
        adj = (f" x {o['scale']:g}" if o.get("scale", 1.0) != 1.0 else "") + \
              (f" {'+' if o['offset'] > 0 else '-'} {abs(o['offset']):g}" if o.get("offset") else "")
        return f"{'below' if k == 'less_than' else 'above'} {o.get('label', 'the other')}{adj}"
    if k == "spread_less_than":
        return f"a smaller range than {c['other'].get('label', 'the other')} over the same grid"
    tol = r.get("tolerance", 0.0)
    word = {"at_most": "at most", "at_least": "at least", "within": "within"}[k]
    band = f"{100 * tol:.0f}% of " if k == "within" else (f" (+{100 * tol:.0f}%)" if tol else "")
    return f"{word} {band}{fmt(r['value'])}" if k == "within" else f"{word} {fmt(r['value'])}{band}"


# ----------------------------------------------------------------------------------------- pages
def md_escape(s) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def claims_table(ledger: dict, results_of: dict) -> list[str]:
    rows = ["| claim | source | ours (mean [95% CI]) | seeds | paper | rule | status |", "|---|---|---|---|---|---|---|"]
    for c in ledger["claims"]:
        r = results_of[c["id"]]
        paper = c.get("paper_value", "")
        rows.append(f"| {md_escape(c['claim'])} | {md_escape(c['source'])} | {md_escape(r['ours'])} | {r['n']} | "
                    f"{md_escape(paper)} | {md_escape(rule_text(c))} | **{r['status']}** |")
    return rows


def runs_table(runs: list[Run], spec: dict) -> list[str]:
    keys = spec["metrics"]
    head = "| run | " + " | ".join(k for k in keys) + " | commit | hardware | command |"
    rows = [head, "|" + "---|" * (len(keys) + 4)]
    for r in sorted(select(runs, spec["runs"], spec.get("group", "runs")), key=lambda r: r.name):
        vals = [fmt(float(r.get(k))) if isinstance(r.get(k), (int, float)) else md_escape(r.get(k, "")) for k in keys]
        commit = r.get("provenance/git_commit")
        commit = (commit[:8] + (" +changes" if r.get("provenance/git_dirty") else "")) if commit else "not recorded"
        sessions = r.get("provenance/git_commits_by_session") or []
        short = [" ".join([c.split()[0][:8], *c.split()[1:]]) for c in sessions]   # "abc12345 +changes"
        if len(set(short)) > 1:   # resumed on other code: every session's commit, in order
            commit = ", then ".join(short)
        hw = str(r.get("hardware", "")).split(",")[0]
        rows.append(f"| `{r.name}` | " + " | ".join(vals) + f" | {commit} | {md_escape(hw)} | `{md_escape(clean_command(r.get('command', '')))}` |")
    return rows


def deviations_table(ledger: dict) -> list[str]:
    rows = ["| difference | paper / reference code | ours (default) | option that switches it | measured effect |",
            "|---|---|---|---|---|"]
    for d in ledger.get("deviations", []):
        rows.append(f"| {md_escape(d['difference'])} | {md_escape(d['reference'])} | {md_escape(d['ours'])} | "
                    f"{md_escape(d.get('option', '-'))} | {md_escape(d.get('effect', 'not measured'))} |")
    return rows


def paper_page(paper: str, ledger: dict, runs: list[Run], results_of: dict, figures: list[str]) -> str:
    lines = [f"# {ledger['title']}", "", "Generated by `make results` (`scripts/results.py`) from "
             f"`results/claims/{paper}.yaml` and the runs under `results/{paper}/`; do not edit by hand.", "",
             ledger.get("scale_note", "").strip(), "", "## Claims", "", *claims_table(ledger, results_of), ""]
    for note in ledger.get("claim_notes", []):
        lines.append(f"- {note.strip()}")
    extra = ledger.get("_extra", [])
    if extra:
        lines += ["", *extra]
    for f in figures:
        lines += ["", f"![{Path(f).stem}]({f})"]
    for t in ledger.get("tables", []):
        lines += ["", f"## {t['title']}", "", *([t["note"].strip(), ""] if t.get("note") else []), *runs_table(runs, t)]
    if ledger.get("reproduce"):
        lines += ["", "## Commands", "", "The runs above come from these commands (`DATA` = your data folder: PTB, Planetoid, "
                  "the GraphRNN graph sets); re-running one finishes what is missing (`resume=auto`). Then "
                  f"`python scripts/results.py --collect <sweep folder> --paper {paper}` and `make results`.", "",
                  "```", *[c.strip() for c in ledger["reproduce"]], "```"]
    lines += ["", "## Deviations from the paper and its reference code", "", *deviations_table(ledger), ""]
    for title, key in (("What was easy", "easy"), ("What was hard", "hard"), ("What would change the verdict", "would_change")):
        items = ledger.get(key, [])
        if items:
            lines += [f"## {title}", "", *[f"- {i.strip()}" for i in items], ""]
    return "\n".join(lines).rstrip() + "\n"


def summary_page(all_results: dict, ledgers: dict) -> str:
    lines = ["# Results: which of each paper's claims hold here", "",
             "Generated by `make results` (`scripts/results.py`) from the claims ledgers in `results/claims/` and the "
             "committed runs; do not edit by hand. Status: **holds** (the whole 95% interval meets the claim's rule, "
             "2+ seeds), **direction only** (the point estimate does; the interval does not, or one seed), **does not "
             "hold**, **not run**. Paper numbers marked *recalled* could not be checked against the paper's text here.",
             "", "| paper | claim | status | ours | paper |", "|---|---|---|---|---|"]
    counts = {s: 0 for s in STATUS_ORDER}
    for paper in PAPERS:
        if paper not in ledgers:
            continue
        for c in ledgers[paper]["claims"]:
            r = all_results[paper][c["id"]]
            counts[r["status"]] += 1
            lines.append(f"| [{ledgers[paper]['short']}]({paper}/README.md) | {md_escape(c['claim'])} | **{r['status']}** | "
                         f"{md_escape(r['ours'])} | {md_escape(c.get('paper_value', ''))} |")
    lines += ["", "Totals: " + ", ".join(f"{v} {k}" for k, v in counts.items()), ""]
    return "\n".join(lines)


def write_csv(runs: dict[str, list[Run]], path: Path) -> None:
    keys = ["paper", "run", "experiment", "seed", "wall_s", "commit", "dirty", "hardware", "command"]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(keys)
        for paper in PAPERS:
            for r in runs[paper]:
                exp = r.get("command", "").split("experiment=")[-1].split()[0] if "experiment=" in r.get("command", "") else ""
                w.writerow([paper, r.name, exp, r.get("seed", ""), r.get("wall_s", ""), r.get("provenance/git_commit", ""),
                            r.get("provenance/git_dirty", ""), r.get("hardware", ""), clean_command(r.get("command", ""))])
    with open(path.with_name("summary_metrics.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["paper", "run", "metric", "value"])
        for paper in PAPERS:
            for r in runs[paper]:
                for k, v in sorted(r.summary.items()):
                    if isinstance(v, (int, float)) and not isinstance(v, bool):
                        w.writerow([paper, r.name, k, v])


def pull_wandb(project: str, results: Path) -> int:
    """One CSV row per W&B run of ``project`` (entity/project): its name, group, state and scalar summary values."""
    import wandb

    rows = []
    for r in wandb.Api().runs(project):
        vals = {k: v for k, v in dict(r.summary).items() if not k.startswith("_") and isinstance(v, (int, float, str))}
        rows.append({"name": r.name, "group": r.group, "state": r.state, **vals})
    keys = ["name", "group", "state"] + sorted({k for r in rows for k in r} - {"name", "group", "state"})
    with open(results / "wandb_runs.csv", "w", newline="") as f:
        w = csv.DictWriter(f, keys)
        w.writeheader()
        w.writerows(rows)
    return len(rows)


def build(results: Path = RESULTS) -> dict:
    import figures

    warnings.filterwarnings("ignore", message="Degrees of freedom")   # one-seed curves: no band
    ledgers = {p: yaml.safe_load((results / "claims" / f"{p}.yaml").read_text()) for p in PAPERS
               if (results / "claims" / f"{p}.yaml").exists()}
    runs = load_runs(results)
    all_results = {}
    for paper, ledger in ledgers.items():
        done: dict = {}
        for c in ledger["claims"]:
            done[c["id"]] = evaluate_claim(c, runs[paper], done)
        all_results[paper] = done
        extra = []
        if paper == "acktr":
            for algo in ("acktr", "a2c"):
                agg = atari_aggregates(select(runs[paper], ["*pong*", "*breakout*", "*spaceinvaders*", "*beamrider*",
                                                          "*qbert*", "*seaquest*"]), algo)
                if agg:
                    extra.append(f"- Atari aggregate ({algo.upper()}, {len(agg['games'])} games, {agg['seeds']} seed(s); "
                                 f"rliable stratified bootstrap): human-normalised IQM {fmt(agg['iqm'][0])} "
                                 f"[{fmt(agg['iqm'][1])}, {fmt(agg['iqm'][2])}], mean {fmt(agg['mean'][0])} "
                                 f"[{fmt(agg['mean'][1])}, {fmt(agg['mean'][2])}].")
            if not extra:
                extra.append("- Atari aggregates across games (rliable IQM) are shown once 3 or more games have runs.")
        ledger["_extra"] = extra
        figs = figures.draw(paper, runs[paper], results / paper)
        (results / paper / "README.md").write_text(paper_page(paper, ledger, runs[paper], done, figs))
    (results / "README.md").write_text(summary_page(all_results, ledgers))
    write_csv(runs, results / "runs.csv")
    return all_results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", default=str(RESULTS))
    ap.add_argument("--collect", default=None, help="a folder of finished runs to copy in first")
    ap.add_argument("--paper", default=None, help="the paper the collected runs belong to")
    ap.add_argument("--wandb", default=None, help="ENTITY/PROJECT: also pull W&B run summaries (online)")
    a = ap.parse_args(argv)
    results = Path(a.results)
    if a.collect:
        if a.paper not in PAPERS:
            print(f"error: --collect needs --paper, one of {', '.join(PAPERS)}", file=sys.stderr)
            return 2
        print(f"collected {collect(Path(a.collect), a.paper, results)} runs into {a.paper}")
    if a.wandb:
        print(f"pulled {pull_wandb(a.wandb, results)} W&B runs into wandb_runs.csv")
    out = build(results)
    for paper, res in out.items():
        print(paper + ": " + ", ".join(f"{c}: {r['status']}" for c, r in res.items()))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())

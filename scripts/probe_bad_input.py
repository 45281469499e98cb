"""Bad input a user would hit, run as a user would (``python run.py ...`` in a fresh process), with the outcome
each must have: one ``error:`` line and exit code 2 (or, for W&B online without a key, one ``warning:`` line and a
finished run), never a traceback, a hang or a silently accepted value.

    python scripts/probe_bad_input.py              # every case; prints a markdown table, exit 1 if any case fails
    python scripts/probe_bad_input.py --jobs 2     # two at a time

``tests/test_bad_input.py`` runs the same cases. README.md ("What happens when...") shows the table.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUIET = ["logger.mode=disabled", "logger.progress=false"]
FW = ["experiment=fastweights_retrieval", "smoke=true"]
LM = ["experiment=lookahead_ptb_small", "smoke=true", "data.root={data}"]


@dataclass
class Case:
    what: str                       # "what happens when ..."
    args: list[str]
    expect: str = "error"           # error: one error line, exit 2 | warning: one warning line, exit 0
    says: str = ""                  # a piece of the line that must be there
    env: dict = field(default_factory=dict)
    setup: str = ""                 # a prepared run folder: "corrupt" | "crafted" | "file"


CASES = [
    Case("no experiment is given", [], says="experiment=<name>"),
    Case("the experiment name is misspelt", ["experiment=fastweight_retrieval"], says="unknown experiment"),
    Case("a config-group option does not exist", [*LM, "optimizer=lion"], says="unknown optimizer 'lion'"),
    Case("a launcher does not exist", [*FW, "-m", "launcher=ray"], says="unknown launcher"),
    Case("a key is misspelt", [*FW, "model.hiden_size=5"], says="model.hiden_size"),
    Case("a number is given as text", [*FW, "model.hidden_size=abc"], says="integer"),
    Case("a size is zero", [*FW, "model.hidden_size=0"], says="model.hidden_size=0: must be an integer >= 1"),
    Case("the step count is zero", [*FW, "train.steps=0"], says="train.steps=0"),
    Case("the step count is negative", [*FW, "train.steps=-5"], says="train.steps=-5"),
    Case("the learning rate is negative", [*FW, "train.lr=-1e-3"], says="must be a number > 0"),
    Case("the learning rate is zero", [*FW, "train.lr=0"], says="train.lr=0"),
    Case("the learning rate is NaN", [*FW, "train.lr=nan"], says="train.lr=nan"),
    Case("the batch size is zero", [*FW, "train.batch_size=0"], says="train.batch_size=0"),
    Case("a thread count is negative", [*FW, "threads=-3"], says="threads=-3"),
    Case("a seed is negative", [*FW, "seed=-1"], says="seed=-1"),
    Case("Lookahead's k is zero", [*LM, "optimizer.lookahead.k=0"], says="optimizer.lookahead.k=0"),
    Case("Lookahead's alpha is above 1", [*LM, "optimizer.lookahead.alpha=1.5"], says="optimizer.lookahead.alpha"),
    Case("a dropout rate is 1", [*LM, "model.dropout=1.0"], says="model.dropout=1.0"),
    Case("a discount is above 1", ["experiment=acktr_hopper_cpu", "smoke=true", "algo.gamma=1.5"], says="algo.gamma"),
    Case("K-FAC damping is negative", ["experiment=acktr_pong_cpu", "smoke=true", "algo.kfac.damping=-0.1"],
         says="algo.kfac.damping"),
    Case("an Atari game does not exist", ["experiment=a2c_pong_cpu", "smoke=true", "env.id=ALE/Pongg-v5"],
         says="Pongg"),
    Case("a MuJoCo task does not exist", ["experiment=a2c_hopper_cpu", "smoke=true", "env.id=Hopperr-v5"],
         says="unknown environment id"),
    Case("the budget is less than one rollout", ["experiment=a2c_pong_cpu", "train.total_timesteps=10"],
         says="less than one rollout"),
    Case("the budget is less than one batch of episodes", ["experiment=acktr_hopper_cpu", "train.total_timesteps=10"],
         says="less than one batch"),
    Case("CUDA is asked for on a machine without it", [*FW, "device=cuda"], says="CUDA is not available"),
    Case("the device name is wrong", [*FW, "device=tpu"], says="device"),
    Case("a SLURM launcher is chosen without -m", [*FW, "launcher=slurm"], says="add -m"),
    Case("a SLURM sweep is started where there is no SLURM", [*FW, "-m", "launcher=slurm"], says="sbatch"),
    Case("a swept value is a path", [*FW, "-m", "+note=a/b,c/d"], says="cannot contain '/'"),
    Case("resume names a folder that does not exist", ["resume=/nonexistent/run"], says="not found"),
    Case("resume meets a corrupt checkpoint", ["resume={run}"], setup="corrupt", says="corrupt or truncated"),
    Case("resume meets a checkpoint that would run code", ["resume={run}"], setup="crafted",
         says="refusing to load"),
    Case("resume changes the experiment", ["resume={run}", "experiment=lstm_retrieval"], setup="ok",
         says="keeps its experiment"),
    Case("resume changes the model's size", ["resume={run}", "model.hidden_size=24"], setup="ok",
         says="does not fit"),
    Case("the data folder is missing", ["experiment=lookahead_ptb_small", "smoke=true", "data.root=/nonexistent"],
         says="/nonexistent"),
    Case("a graph file is missing", ["experiment=gnf_community_small_cpu", "smoke=true",
                                     "data.path=/nonexistent/graphs.jsonl"], says="graphs.jsonl"),
    Case("the W&B mode is misspelt", ["experiment=fastweights_retrieval", "smoke=true", "logger.mode=onine",
                                      "logger.progress=false"], says="logger.mode"),
    Case("the run folder cannot be written", [*FW, "hydra.run.dir={file}/run"], setup="file",
         says="cannot write the run folder"),
    Case("the lr schedule is misspelt", [*LM, "train.lr_schedule=cosine"], says="lr_schedule"),
    Case("reversal is asked of a non-reversible cell", ["experiment=lstm_ptb_small", "smoke=true", "data.root={data}",
                                                        "train.reversal=true"], says="reversible cells"),
    Case("the max-forget setting is not one the paper has", ["experiment=revlstm_ptb_small", "smoke=true",
                                                             "data.root={data}", "model.max_forget_bits=4"],
         says="max_forget_bits"),
    Case("a step count is null", [*FW, "train.steps=null"], says="train.steps=null: null is not a value here"),
    Case("a seed does not fit in 32 bits", [*FW, "seed=4294967296"], says="seed=4294967296"),
    Case("the value function gets no steps", ["experiment=acktr_hopper_cpu", "smoke=true", "algo.vf_iters=0"],
         says="algo.vf_iters=0"),
    Case("K-FAC's cold-phase clip is negative", ["experiment=acktr_pong_cpu", "smoke=true",
                                                "algo.kfac.cold_max_grad_norm=-1"],
         says="algo.kfac.cold_max_grad_norm=-1"),
    Case("the critic's activation does not exist", ["experiment=acktr_hopper_cpu", "smoke=true",
                                                    "model.vf_activation=relu"], says="one of elu, tanh"),
    Case("the shortest sentence is longer than the longest", ["experiment=revlstm_synthetic", "smoke=true",
                                                               "data.min_len=13"], says="is above data.max_len"),
    Case("the authors' baseline cells are asked of a reversible model", ["experiment=revlstm_synthetic", "smoke=true",
                                                                        "model.baseline_cell=authors"],
         says="cell=revlstm is reversible"),
    Case("the initialisation range is zero", ["experiment=lstm_synthetic", "smoke=true", "model.init_range=0"],
         says="model.init_range=0"),
    Case("the retrieval task has too few distinct sequences", [*FW, "data.n_pairs=1"], says="260 distinct"),
    Case("a GRevNet coupling width is odd", ["experiment=gnf_community_small_cpu", "smoke=true", "model.dim=5"],
         says="even feature size"),
    Case("Polyak's non-monotone window is negative", [*LM, "optimizer=polyak", "train.polyak_nonmono=-1"],
         says="train.polyak_nonmono=-1"),
    Case("Adam's betas are a number, not a pair", [*LM, "optimizer=adam", "optimizer.betas=0.9"],
         says="must be a list of 2 numbers"),
    Case("W&B online is asked for without an API key",
         ["experiment=fastweights_retrieval", "smoke=true", "logger.mode=online", "logger.progress=false"],
         expect="warning", says="no W&B API key", env={"WANDB_API_KEY": "", "HOME": "{tmp}"}),
]


def run_py(args: list[str], cwd: Path, env: dict, timeout: float, runner=None) -> subprocess.CompletedProcess:
    """``python run.py ARGS`` in ``cwd``: through ``runner(args, cwd, env, timeout)`` when given (the test suite's
    fork server; it returns None when off), else a new process."""
    p = runner(args, cwd, env, timeout) if runner else None
    if p is None:
        p = subprocess.run([sys.executable, str(ROOT / "run.py"), *args], cwd=cwd, env=env, capture_output=True,
                           text=True, timeout=timeout)
    return p


def prepare(case: Case, tmp: Path, data: Path, runner=None) -> dict:
    """Fill the case's placeholders; build its run folder when it needs one (through ``runner`` when given)."""
    import torch

    subs = {"data": str(data), "tmp": str(tmp)}
    if case.setup:
        run = tmp / "run"
        if case.setup == "file":
            (tmp / "file").write_text("a file, not a folder")
            subs["file"] = str(tmp / "file")
        else:
            args = [*FW, "train.steps=6", "checkpoint.every=3", f"data.root={tmp}/fwdata", f"hydra.run.dir={run}", *QUIET]
            p = run_py(args, tmp, dict(os.environ, WANDB_SILENT="true"), 300, runner)
            assert p.returncode == 0, p.stderr
            (run / "summary.json").unlink()   # as if it had been interrupted
            if case.setup == "corrupt":
                raw = (run / "checkpoint.pt").read_bytes()
                (run / "checkpoint.pt").write_bytes(raw[: len(raw) // 3])
            elif case.setup == "crafted":
                class Payload:
                    def __reduce__(self):
                        return (os.system, (f"touch {tmp}/pwned",))
                torch.save({"model": Payload(), "step": 1}, run / "checkpoint.pt")
        subs["run"] = str(run)
    return subs


def run_case(case: Case, data: Path, runner=None) -> dict:
    """One case as a user would meet it; ``runner(args, cwd, env, timeout)`` may stand in for the subprocess (the
    test suite's fork server: the same run.py, arguments, folder and environment; it returns None when off)."""
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        subs = prepare(case, tmp, data, runner)
        args = [a.format(**subs) for a in case.args]
        if not any(a.startswith("hydra.run.dir") for a in args) and "-m" not in args:
            args.append(f"hydra.run.dir={tmp}/out")
        if "-m" in args:
            args.append(f"hydra.sweep.dir={tmp}/sweep")
        if not any(a.startswith("logger.") for a in args):
            args += QUIET
        env = dict(os.environ, WANDB_SILENT="true", **{k: v.format(**subs) for k, v in case.env.items()})
        t0 = time.time()
        try:
            p = run_py(args, tmp, env, 120, runner)
            out, code = p.stderr + p.stdout, p.returncode
        except subprocess.TimeoutExpired:
            out, code = "hang (no answer in 120 s)", None
        seconds = time.time() - t0
        out = out.replace(str(tmp.resolve()), "<tmp>").replace(str(tmp), "<tmp>")
        prefix = "error: " if case.expect == "error" else "warning: "
        lines = [ln for ln in out.splitlines() if ln.startswith(prefix)]
        problems = []
        if code != (2 if case.expect == "error" else 0):
            problems.append(f"exit {code}")
        if "Traceback" in out:
            problems.append("traceback")
        if len(lines) != 1:
            problems.append(f"{len(lines)} {prefix.strip(': ')} lines")
        elif case.says not in lines[0]:
            problems.append(f"line lacks '{case.says}'")
        if case.setup == "crafted" and (tmp / "pwned").exists():
            problems.append("the crafted checkpoint ran code")
        return {"what": case.what, "command": "python run.py " + " ".join(case.args), "code": code,
                "line": lines[0] if len(lines) == 1 else out.strip().splitlines()[-1:] and out.strip().splitlines()[-1],
                "seconds": seconds, "ok": not problems, "problems": problems}


def table(results: list[dict]) -> str:
    rows = ["| what happens when... | command | exit | the line | s |", "|---|---|---|---|---|"]
    for r in results:
        line = str(r["line"]).replace("|", "\\|")
        cmd = r["command"].replace("|", "\\|")
        rows.append(f"| {r['what']} | `{cmd}` | {r['code']} | {line[:160]} | {r['seconds']:.1f} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=1)
    a = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT / "tests"))
    from fixtures import write_ptb

    with tempfile.TemporaryDirectory() as d:
        data = Path(d)
        write_ptb(data)
        with ThreadPoolExecutor(max(a.jobs, 1)) as pool:
            results = list(pool.map(lambda c: run_case(c, data), CASES))
    print(table(results))
    bad = [r for r in results if not r["ok"]]
    print(f"\n{len(results)} cases: {len(results) - len(bad)} as expected, {len(bad)} not"
          + "".join(f"\n  {r['what']}: {', '.join(r['problems'])}" for r in bad))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

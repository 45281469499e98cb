"""The single entry point: ``python run.py experiment=<name> [overrides] [-m for sweeps]``.

Seeds everything, picks the device (``device=auto``: CUDA when present, else CPU), dispatches to the
runner the config names and returns the objective metric so sweepers can use it. Bad input (unknown
experiment, an unknown key, a value of the wrong type, missing data, a NaN loss) ends with one line
on stderr and exit code 2, not a traceback.

``resume=<run dir>`` continues an interrupted run in its own directory with its own overrides
(later overrides on the command line still apply); ``resume=auto`` resumes from the run directory's
checkpoint when there is one and skips a run that already wrote ``summary.json``.
"""
from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
CONF = ROOT / "conf"
HYDRA_FLAGS_WITH_ARG = {"--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd",
                        "--cfg", "-c", "--package", "-p", "--experimental-rerun", "--info", "-i"}
INFO_FLAGS = {"--help", "-h", "--hydra-help", "--info", "-i", "--cfg", "-c", "--version", "--shell-completion", "-sc"}


def fail(msg: str, code: int = 2):
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(code)


def config_groups() -> set[str]:
    return {p.name for p in CONF.iterdir() if p.is_dir()}


def is_group(key: str) -> bool:
    return key.split("@")[0] in config_groups()


def available_experiments() -> list[str]:
    return sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


def split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """Separate Hydra's flags from overrides (``key=value``, ``+key=value``, ``~key``)."""
    flags, overrides, i = [], [], 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("-"):
            flags.append(a)
            if a in HYDRA_FLAGS_WITH_ARG and i + 1 < len(argv) and "=" not in argv[i + 1]:
                flags.append(argv[i + 1])
                i += 1
        else:
            overrides.append(a)
        i += 1
    return flags, overrides


def key_of(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def hydra_quote(value: str) -> str:
    """A path as one Hydra override value, whatever it holds (``=``, ``,``, spaces, quotes)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


ROLLBACK: dict = {}   # resume=<dir>: the run directory's files before this attempt (restored if it fails)


def snapshot_dir(run_dir: Path, max_bytes: int = 64 << 20) -> dict:
    """Every file under ``run_dir`` with its stat and (when small enough) its bytes."""
    files = {}
    for f in run_dir.rglob("*"):
        if f.is_file() and not f.is_symlink():
            st = f.stat()
            data = f.read_bytes() if st.st_size <= max_bytes and f.name != "checkpoint.pt" else None
            files[f.relative_to(run_dir)] = (st.st_size, st.st_mtime_ns, data)
    return {"dir": run_dir, "files": files, "dirs": {d.relative_to(run_dir) for d in run_dir.rglob("*") if d.is_dir()}}


def rollback() -> None:
    """Put a run directory back as it was before a resume that failed before writing a checkpoint."""
    if not ROLLBACK:
        return
    run_dir, files, dirs = ROLLBACK["dir"], ROLLBACK["files"], ROLLBACK["dirs"]
    for f in sorted(run_dir.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        rel = f.relative_to(run_dir)
        if f.is_file() or f.is_symlink():
            old = files.get(rel)
            if old is None:
                f.unlink()
            else:
                st = f.stat()
                if (st.st_size, st.st_mtime_ns) != old[:2] and old[2] is not None:
                    f.write_bytes(old[2])
                    os.utime(f, ns=(old[1], old[1]))
        elif f.is_dir() and rel not in dirs:
            shutil.rmtree(f, ignore_errors=True)
    ROLLBACK.clear()


def expand_resume(overrides: list[str], multirun: bool) -> list[str]:
    """``resume=<dir>``: replay the saved overrides of that run, continue inside that directory. Checked before
    anything is written: the directory must be a run of the same experiment with a readable checkpoint."""
    res = [o for o in overrides if key_of(o) == "resume"]
    if not res:
        return overrides
    value = res[-1].split("=", 1)[1]
    if len(value) > 1 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1]
    if value in ("", "null", "auto", "none", "None"):
        return overrides
    if multirun:
        fail(f"resume={value} continues one run; for a sweep re-run the sweep's command with resume=auto")
    run_dir = Path(value).expanduser().resolve()
    saved = run_dir / ".hydra" / "overrides.yaml"
    if not saved.exists():
        fail(f"resume={value}: {saved} not found (expected a run directory written by run.py)")
    from omegaconf import OmegaConf

    try:
        old = [str(o) for o in OmegaConf.load(saved)]
    except Exception as e:
        fail(f"resume={value}: cannot read {saved} ({str(e).splitlines()[0][:120]})")
    old = [o for o in old if key_of(o) not in ("resume", "hydra.run.dir")]
    new = [o for o in overrides if key_of(o) not in ("resume", "hydra.run.dir")]
    was = {o.split("=", 1)[1] for o in old if key_of(o) == "experiment"}
    for o in new:
        if key_of(o) == "experiment" and o.split("=", 1)[1] not in was:
            fail(f"resume={value} is a run of experiment={', '.join(sorted(was)) or '?'}; a resumed run keeps its "
                 f"experiment (drop {o})")
    if (run_dir / "checkpoint.pt").exists():
        from runners.core import UserError, load_checkpoint

        try:
            load_checkpoint(run_dir / "checkpoint.pt", map_location="cpu")
        except UserError as e:
            fail(str(e))
    elif not (run_dir / "summary.json").exists():
        fail(f"resume={value}: no checkpoint.pt in that run directory (it stopped before its first checkpoint); "
             f"start it again")
    ROLLBACK.update(snapshot_dir(run_dir))
    given = {key_of(o) for o in new}   # a key given again takes its new value (once, so the run's command reads right)
    old = [o for o in old if key_of(o) not in given]
    return old + new + [f"resume={hydra_quote(str(run_dir))}", f"hydra.run.dir={hydra_quote(str(run_dir))}"]


def check_experiments(overrides: list[str], flags: list[str]) -> None:
    names = [o.split("=", 1)[1] for o in overrides if key_of(o) == "experiment" and "=" in o]
    avail = available_experiments()
    if not names and not (set(flags) & INFO_FLAGS):
        fail(f"no experiment selected: add experiment=<name>; available: {', '.join(avail)}")
    for value in names:
        value = value.strip()
        if value.startswith("choice(") and value.endswith(")"):
            value = value[len("choice("):-1]
        for name in value.split(","):
            name = name.strip()
            if name and name not in avail:
                fail(f"unknown experiment '{name}'; available: {', '.join(avail)}")
    check_group_choices(overrides)


def check_group_choices(overrides: list[str]) -> None:
    """``optimizer=lion``, ``launcher=foo``...: one line naming the options of that config group."""
    for o in overrides:
        key = key_of(o)
        if "=" not in o or key == "experiment" or not is_group(key) or "/" in key:
            continue
        group = key.split("@")[0]
        avail = sorted(p.stem for p in (CONF / group).glob("*.yaml"))
        value = o.split("=", 1)[1].strip()
        if value.startswith("choice(") and value.endswith(")"):
            value = value[len("choice("):-1]
        for name in value.split(","):
            name = name.strip()
            if name and name != "null" and name not in avail:
                fail(f"unknown {group} '{name}'; available: {', '.join(avail)}")


def _compatible(ref, new) -> bool:
    if ref is None or new is None or isinstance(ref, str):
        return True
    if isinstance(ref, bool):
        return isinstance(new, bool)
    if isinstance(ref, int):
        return isinstance(new, int) and not isinstance(new, bool)
    if isinstance(ref, float):
        return isinstance(new, (int, float)) and not isinstance(new, bool)
    if isinstance(ref, (list, tuple)):
        return isinstance(new, (list, tuple))
    return True


def _kind(v) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", list: "a list"}.get(type(v), type(v).__name__)


def validate(overrides: list[str]) -> None:
    """Compose the config once up front so a bad override is one line, not Hydra's multi-line report.
    Sweeps are checked value by value; a value whose type differs from the default's is refused."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    user = [o for o in overrides if not key_of(o).startswith("hydra")]
    try:
        parsed = OverridesParser.create().parse_overrides(user)
    except Exception as e:  # syntax errors
        fail(str(e).strip().splitlines()[0])
    first, group_first, values = [], [], []
    for o in parsed:
        key = o.key_or_group
        vals = list(o.sweep_iterator()) if o.is_sweep_override() else [o.value()]
        sval = o.sweep_string_iterator() if o.is_sweep_override() else [o.get_value_element_as_str()]
        prefix = "+" if o.is_add() else "++" if o.is_force_add() else "~" if o.is_delete() else ""
        text = f"{prefix}{key}" if o.is_delete() and o.value() is None else f"{prefix}{key}={next(iter(sval), '')}"
        first.append(text)
        if is_group(key):
            group_first.append(text)
        elif not o.is_delete():
            values.append((key, vals, o.input_line))
    from runners.errors import UserError, check_config, null_refused, value_error

    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            composed = compose("config", overrides=first)
            ref = compose("config", overrides=group_first)
    except SystemExit:
        raise
    except Exception as e:
        msg = " ".join(line.strip() for line in str(e).strip().splitlines()[:3] if line.strip())
        fail(msg)
    for key, vals, line in values:
        default = OmegaConf.select(ref, key, default=None, throw_on_missing=False)
        if OmegaConf.is_config(default):
            continue
        for v in vals:
            if v is None and default is not None and null_refused(key):
                fail(f"{line}: null is not a value here (default {default!r})")
            if not _compatible(default, v):
                fail(f"{line}: expected {_kind(default)} like the default {default!r}, got {v!r}")
            err = value_error(key, v)
            if err:
                fail(err)
    try:
        check_config(composed)
    except UserError as e:
        fail(str(e))


def apply_smoke(cfg, task_overrides) -> None:
    """Shrink the run with ``smoke_overrides``, then re-apply the command line's own values so that
    ``smoke=true train.steps=100`` means 100 steps."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf, open_dict

    with open_dict(cfg):
        cfg.merge_with(cfg.smoke_overrides)
        for o in OverridesParser.create().parse_overrides(list(task_overrides)):
            key = o.key_or_group
            if is_group(key) or key.startswith("hydra") or o.is_delete():
                continue
            OmegaConf.update(cfg, key, o.value(), merge=False)


def sweep_values_per_job(overrides: list[str]) -> list[str]:
    """Hydra composes a sweep's base config *without* the swept overrides, so when a config group
    such as ``experiment`` is swept, ``model.hidden_size=20`` fails there (the model group is not
    chosen yet). Turning each plain value into a one-element sweep, ``model.hidden_size=choice(20)``,
    applies it per job, after the experiment has been selected."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    if not any(o.is_sweep_override() and is_group(o.key_or_group) for o in parsed):
        return overrides
    out = []
    for text, o in zip(overrides, parsed):
        plain = (not o.is_sweep_override() and not o.is_delete() and not is_group(o.key_or_group)
                 and not o.key_or_group.startswith("hydra"))
        out.append(f"{text.split('=', 1)[0]}=choice({text.split('=', 1)[1]})" if plain else text)
    return out


def _hydra_app():
    import hydra
    from omegaconf import DictConfig

    @hydra.main(config_path=str(CONF), config_name="config", version_base="1.3")
    def app(cfg: DictConfig):
        return execute(cfg)

    return app


def execute(cfg):
    """Run one job. Separate from the Hydra decorator so tests and launchers can call it."""
    import torch
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf, open_dict

    import runners
    from runners.core import Checkpointer, Interrupted, UserError, check_config, pick_device, seed_everything

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        try:
            if cfg.smoke:
                apply_smoke(cfg, HydraConfig.get().overrides.task)
            check_config(cfg)
            with open_dict(cfg):
                cfg.run_dir = str(run_dir)
                cfg.command = "python run.py " + " ".join(HydraConfig.get().overrides.task)
                if cfg.logger.get("group") is None:  # W&B group: the sweep, else the experiment
                    hc = HydraConfig.get()
                    cfg.logger.group = (f"{cfg.experiment_name}/{Path(hc.sweep.dir).name}"
                                        if multirun else cfg.experiment_name)
            summary_path = run_dir / "summary.json"
            if cfg.resume and summary_path.exists():
                summary = json.loads(summary_path.read_text())
                print(f"{run_dir}: already finished (summary.json present); skipping", file=sys.stderr)
                ROLLBACK.clear()
                return float(summary[cfg.objective])
            print(f"run folder: {run_dir}", file=sys.stderr, flush=True)
            from runners.catalog import start_notes

            for line in start_notes(cfg, CONF):
                print(line, file=sys.stderr, flush=True)
            OmegaConf.save(cfg, run_dir / "resolved_config.yaml", resolve=True)
            if cfg.threads > 0:
                torch.set_num_threads(cfg.threads)
            seed_everything(cfg.seed)
            device = pick_device(cfg.device)
            summary = runners.get(cfg.runner)(cfg, run_dir, device, ROOT)
            if cfg.objective not in summary:
                raise UserError(f"objective '{cfg.objective}' is not among the summary keys {sorted(summary)}")
        except OSError as e:   # disk full, a read-only or vanished folder: the checkpoint on disk is kept
            where = f" ({e.filename})" if getattr(e, "filename", None) else ""
            raise UserError(f"{e.strerror or e}{where}") from None
        except (RuntimeError, ValueError, KeyError) as e:
            if not (cfg.resume and _state_mismatch(e)):
                raise
            raise UserError(f"the checkpoint in {run_dir} does not fit this configuration "
                            f"({str(e).strip().splitlines()[0][:160]})") from None
        value = summary[cfg.objective]
        print(f"{cfg.experiment_name}: {cfg.objective}={value}  ({run_dir})", file=sys.stderr)
        return float(value)
    except UserError as e:
        if not Checkpointer.saved_in_process:
            rollback()   # a resume that failed before writing a checkpoint leaves the run folder as it was
        if multirun:
            # one bad job (say a diverging learning rate) must not abort the rest of a sweep
            print(f"error: {e}", file=sys.stderr)
            (run_dir / "error.txt").write_text(f"{e}\n")
            return float("nan")
        fail(str(e))
    except Interrupted as e:
        fail(f"interrupted: {e}", code=130)
    except BaseException:
        if not Checkpointer.saved_in_process:
            rollback()
        raise


def _state_mismatch(e: BaseException) -> bool:
    """A checkpoint whose tensors or keys do not fit the model/optimizer built from this configuration."""
    msg = str(e)
    return any(t in msg for t in (
        "state_dict", "state dict", "size mismatch", "parameter group", "Missing key", "Unexpected key"))


SWEEP_KEY_IGNORES = ("resume", "launcher", "threads", "device", "logger.", "hydra.", "data.root")


def sweep_dir(overrides: list[str]) -> list[str]:
    """A sweep's folder, derived from its command (not the date) unless ``hydra.sweep.dir`` is given:
    ``multirun/<experiments>/<hash of the overrides>``, so re-running the same command with ``resume=auto``
    finds the same folder and does only what is left, with every launcher. A fresh sweep into a folder that
    already holds runs of that command is refused (add resume=auto, or pick another hydra.sweep.dir)."""
    given = [o for o in overrides if key_of(o) == "hydra.sweep.dir"]
    if given:
        path = Path(given[-1].split("=", 1)[1].strip("'\""))
    else:
        key = sorted(o for o in overrides if not key_of(o).startswith(SWEEP_KEY_IGNORES))
        exps = [o.split("=", 1)[1] for o in overrides if key_of(o) == "experiment"]
        name = (exps[-1] if exps else "sweep").replace("choice(", "").replace(")", "").replace(",", "+")
        name = "".join(c if c.isalnum() or c in "_+-." else "_" for c in name)[:80]
        digest = hashlib.sha1("\n".join(key).encode()).hexdigest()[:10]
        path = Path("multirun") / name / digest
        overrides = overrides + [f"hydra.sweep.dir={hydra_quote(str(path))}"]
    resume = [o.split("=", 1)[1] for o in overrides if key_of(o) == "resume"]
    if not (resume and resume[-1] not in ("null", "none", "None", "")) and path.is_dir() and (
            any(path.glob("*/summary.json")) or any(path.glob("*/checkpoint.pt"))):
        fail(f"{path} already holds runs of this sweep: add resume=auto to finish it (finished runs are skipped, "
             f"interrupted ones resume), or set hydra.sweep.dir to start a new one")
    return overrides


def safe_sweep_names(overrides: list[str]) -> list[str]:
    """Sweep job folders are named from the overrides (``key=value,...``); a value with a ``/`` would nest
    folders and ``..`` would leave the sweep folder. A constant value such as a data path does not tell the
    jobs apart, so it is left out of the names; a swept one is refused."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    excluded = []
    for text, o in zip(overrides, OverridesParser.create().parse_overrides(overrides)):
        key = o.key_or_group
        if key.startswith("hydra") or o.is_delete():
            continue
        values = o.sweep_string_iterator() if o.is_sweep_override() else [o.get_value_element_as_str()]
        if any("/" in v or "\\" in v or v.strip("'\"") in (".", "..") for v in values):
            if o.is_sweep_override():
                fail(f"{text}: a swept value cannot contain '/' (it names the job's folder); sweep over names, "
                     f"not paths")
            excluded.append(key)
    if excluded:
        keys = ",".join(["launcher", "logger.mode", "logger.progress", "threads", "resume", "device", "data.root",
                         "hydra.sweep.dir", *excluded])
        overrides = overrides + [f"hydra.job.config.override_dirname.exclude_keys=[{keys}]"]
    return overrides


def check_launcher(overrides: list[str], multirun: bool) -> None:
    chosen = [o.split("=", 1)[1] for o in overrides if key_of(o) == "launcher"]
    if not chosen or chosen[-1] == "basic":
        return
    if not multirun:
        fail(f"launcher={chosen[-1]} runs sweeps: add -m (a single run always runs here)")
    if chosen[-1] == "slurm" and shutil.which("sbatch") is None:
        fail("launcher=slurm: SLURM's sbatch is not on this machine's PATH (run on the cluster's login node, "
             "or use launcher=submitit_local to try the same sweep here)")


def check_writable(overrides: list[str], multirun: bool) -> None:
    """The output folder (or its nearest existing parent) must be writable: one line, not Hydra's traceback."""
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    given = [o.split("=", 1)[1].strip("'\"") for o in overrides if key_of(o) == key]
    target = Path(given[-1] if given else ("multirun" if multirun else "outputs")).expanduser().resolve()
    probe = target
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not os.access(probe, os.W_OK | os.X_OK) or (probe.exists() and not probe.is_dir()):
        fail(f"cannot write the run folder {target}: {probe} is not a writable folder (set hydra.run.dir / "
             f"hydra.sweep.dir elsewhere)")


def main(argv: list[str] | None = None):
    argv = list(sys.argv[1:] if argv is None else argv)
    flags, overrides = split_argv(argv)
    if "--list" in flags:
        from runners.catalog import print_list

        print_list(CONF)
        return
    multirun = "-m" in flags or "--multirun" in flags
    overrides = expand_resume(overrides, multirun)
    check_experiments(overrides, flags)
    if not (set(flags) & INFO_FLAGS):
        validate(overrides)
        check_launcher(overrides, multirun)
        if multirun:
            overrides = safe_sweep_names(sweep_dir(overrides))
        check_writable(overrides, multirun)
    if multirun:
        overrides = sweep_values_per_job(overrides)
        signal.signal(signal.SIGTERM, _raise_interrupt)   # the launcher's process too (its jobs save their own)
    os.environ.setdefault("HYDRA_FULL_ERROR", "0")
    sys.argv = [sys.argv[0]] + flags + overrides
    try:
        _hydra_app()()
    except (KeyboardInterrupt, SystemExit) as e:
        if not multirun or not (isinstance(e, KeyboardInterrupt) or e.code == 130):
            raise
        swept = [o.split("=", 1)[1].strip("'\"") for o in overrides if key_of(o) == "hydra.sweep.dir"]
        for tmp in Path(swept[-1]).rglob("checkpoint.pt.tmp") if swept else ():
            tmp.unlink(missing_ok=True)   # a job stopped by its launcher inside a write; its checkpoint.pt is intact
        again = [a for a in argv if key_of(a) != "resume"] + ["resume=auto"]
        print(f"sweep interrupted; finish it (finished runs are skipped, interrupted ones resume) with: "
              f"python run.py {shlex.join(again)}", file=sys.stderr, flush=True)
        sys.exit(130)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    main()

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

import json
import os
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


def expand_resume(overrides: list[str]) -> list[str]:
    """``resume=<dir>``: replay the saved overrides of that run, continue inside that directory."""
    res = [o for o in overrides if key_of(o) == "resume"]
    if not res:
        return overrides
    value = res[-1].split("=", 1)[1]
    if value in ("", "null", "auto", "none", "None"):
        return overrides
    run_dir = Path(value).expanduser().resolve()
    saved = run_dir / ".hydra" / "overrides.yaml"
    if not saved.exists():
        fail(f"resume={value}: {saved} not found (expected a run directory written by run.py)")
    from omegaconf import OmegaConf

    old = [o for o in OmegaConf.load(saved) if key_of(o) not in ("resume", "hydra.run.dir")]
    new = [o for o in overrides if key_of(o) not in ("resume", "hydra.run.dir")]
    return old + new + [f"resume={run_dir}", f"hydra.run.dir={run_dir}"]


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
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            compose("config", overrides=first)
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
            if not _compatible(default, v):
                fail(f"{line}: expected {_kind(default)} like the default {default!r}, got {v!r}")


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
    from runners.core import Interrupted, UserError, pick_device, seed_everything

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        if cfg.smoke:
            apply_smoke(cfg, HydraConfig.get().overrides.task)
        with open_dict(cfg):
            cfg.run_dir = str(run_dir)
            cfg.command = "python run.py " + " ".join(HydraConfig.get().overrides.task)
            if cfg.logger.get("group") is None:  # W&B group: the sweep, else the experiment
                hc = HydraConfig.get()
                cfg.logger.group = (f"{cfg.experiment_name}/{Path(hc.sweep.dir).name}"
                                    if hc.mode == RunMode.MULTIRUN else cfg.experiment_name)
        summary_path = run_dir / "summary.json"
        if cfg.resume and summary_path.exists():
            summary = json.loads(summary_path.read_text())
            print(f"{run_dir}: already finished (summary.json present); skipping", file=sys.stderr)
            return float(summary[cfg.objective])
        OmegaConf.save(cfg, run_dir / "resolved_config.yaml", resolve=True)
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        seed_everything(cfg.seed)
        device = pick_device(cfg.device)
        summary = runners.get(cfg.runner)(cfg, run_dir, device, ROOT)
        if cfg.objective not in summary:
            raise UserError(f"objective '{cfg.objective}' is not among the summary keys {sorted(summary)}")
        value = summary[cfg.objective]
        print(f"{cfg.experiment_name}: {cfg.objective}={value}  ({run_dir})", file=sys.stderr)
        return float(value)
    except UserError as e:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            # one bad job (say a diverging learning rate) must not abort the rest of a sweep
            print(f"error: {e}", file=sys.stderr)
            (run_dir / "error.txt").write_text(f"{e}\n")
            return float("nan")
        fail(str(e))
    except Interrupted as e:
        fail(f"interrupted: {e}", code=130)


def main(argv: list[str] | None = None):
    argv = list(sys.argv[1:] if argv is None else argv)
    flags, overrides = split_argv(argv)
    overrides = expand_resume(overrides)
    check_experiments(overrides, flags)
    if not (set(flags) & INFO_FLAGS):
        validate(overrides)
    if "-m" in flags or "--multirun" in flags:
        overrides = sweep_values_per_job(overrides)
    os.environ.setdefault("HYDRA_FULL_ERROR", "0")
    sys.argv = [sys.argv[0]] + flags + overrides
    _hydra_app()()


if __name__ == "__main__":
    main()

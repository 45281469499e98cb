"""What every runner shares: user-facing errors, seeding, devices, the metrics tracker
(W&B + metrics.jsonl + progress bar + summary.json) and checkpoints with signal handling.

Runners own their training loops; this module only provides the plumbing they call.
"""
from __future__ import annotations

import json
import math
import os
import random
import secrets
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf


# --------------------------------------------------------------------------- errors
class UserError(Exception):
    """An error caused by the user's input; run.py prints it as one line, no traceback."""


class DataMissingError(UserError):
    pass


class NonFiniteLossError(UserError):
    pass


class Interrupted(Exception):
    """Raised inside a training loop after SIGTERM/SIGINT, once a checkpoint is written."""


# --------------------------------------------------------------------------- seeding / device
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device={name} requested but CUDA is not available (use device=auto or device=cpu)")
    try:
        return torch.device(name)
    except RuntimeError as e:
        raise UserError(f"bad device '{name}': {e}") from None


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def file_digest(path, algorithm: str = "md5") -> str:
    """Hex digest of a file, read in chunks (archives and datasets can be large)."""
    import hashlib

    with open(path, "rb") as f:
        return hashlib.file_digest(f, algorithm).hexdigest()


def check_finite(loss: torch.Tensor, step: int, ckpt: "Checkpointer | None" = None) -> None:
    """Stop with a one-line error at the first non-finite loss; the last good checkpoint is kept."""
    if not bool(torch.isfinite(loss).all()):
        where = f"; {ckpt.describe()}" if ckpt else ""
        raise NonFiniteLossError(f"non-finite loss ({loss.detach().float().mean().item()}) at step {step}{where}")


# --------------------------------------------------------------------------- tracker
class Tracker:
    """One logging interface for every runner.

    - Weights & Biases: offline by default (no network, no account), ``logger.mode=online`` streams,
      ``disabled`` skips it. One W&B run per job, grouped by experiment/sweep, resolved config logged,
      ``finish()`` always called, exit code 1 (failed) when the job raised.
    - ``metrics.jsonl`` in the run directory: one JSON object per ``log`` call.
    - a tqdm progress bar with ETA and the key metric.
    - ``summary.json``: flat final metrics, written by ``write_summary``.
    """

    def __init__(self, cfg: DictConfig, run_dir: Path, total_steps: int, start_step: int = 0,
                 wandb_id: str | None = None):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.key_metric = cfg.logger.get("key_metric", None)
        self.command = cfg.get("command")
        self.t_start = time.time()
        self._jsonl = open(self.run_dir / "metrics.jsonl", "a", buffering=1)
        self._last: dict[str, float] = {}
        self.wandb_run = None
        self.wandb_id = wandb_id
        mode = cfg.logger.mode
        if mode not in ("offline", "online", "disabled"):
            raise UserError(f"logger.mode must be offline, online or disabled, got '{mode}'")
        if mode != "disabled":
            import wandb

            os.environ.setdefault("WANDB_SILENT", "true")
            self.wandb_id = wandb_id or secrets.token_hex(4)
            self.wandb_run = wandb.init(
                project=cfg.logger.project, entity=cfg.logger.get("entity"), mode=mode,
                group=cfg.logger.get("group") or cfg.get("experiment_name"),
                job_type=cfg.get("experiment_name"), name=cfg.logger.get("name"),
                dir=str(self.run_dir), id=self.wandb_id, resume="allow",
                config=OmegaConf.to_container(cfg, resolve=True), tags=list(cfg.logger.get("tags") or []),
            )
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total_steps, initial=start_step, disable=not cfg.logger.get("progress", True),
                        dynamic_ncols=True, desc=cfg.get("experiment_name", "run"), file=sys.stderr,
                        mininterval=1.0)

    def log(self, metrics: dict[str, Any], step: int) -> None:
        row = {"step": int(step), "time": time.time()}
        row.update({k: _py(v) for k, v in metrics.items()})
        self._jsonl.write(json.dumps(row) + "\n")
        self._last.update(row)
        if self.wandb_run is not None:
            self.wandb_run.log({k: v for k, v in row.items() if k != "step"}, step=int(step))
        if self.key_metric and self.key_metric in row:
            self.bar.set_postfix({self.key_metric: f"{row[self.key_metric]:.4g}"}, refresh=False)

    def advance(self, step: int) -> None:
        self.bar.update(step - self.bar.n)

    def write_summary(self, summary: dict[str, Any]) -> dict[str, Any]:
        flat = {k: _py(v) for k, v in _flatten(summary).items()}
        flat.update({"hardware": hardware(), "command": self.command, "wall_s": time.time() - self.t_start})
        (self.run_dir / "summary.json").write_text(json.dumps(flat, indent=2, sort_keys=True) + "\n")
        if self.wandb_run is not None:
            for k, v in flat.items():
                self.wandb_run.summary[k] = v
        return flat

    def close(self, failed: bool = False) -> None:
        self.bar.close()
        self._jsonl.close()
        if self.wandb_run is not None:
            self.wandb_run.finish(exit_code=1 if failed else 0)
            self.wandb_run = None


def hardware(threads: int | None = None) -> str:
    """A one-line description of where this ran, for results tables (``threads``: the run's torch
    thread count when it differs from this process's)."""
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda})"
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} with {threads or torch.get_num_threads()} threads"


def peak_memory_bytes(fn, device: torch.device) -> int:
    """Peak of the bytes allocated while ``fn()`` runs, beyond what was allocated before it:
    ``torch.cuda.max_memory_allocated`` on GPU; on CPU the running sum of the torch profiler's
    allocation/free events in time order."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e for e in prof.events() if e.cpu_memory_usage != 0 or e.self_cpu_memory_usage != 0),
                    key=lambda e: e.time_range.start)
    cur = peak = 0
    for e in events:
        cur += e.self_cpu_memory_usage
        peak = max(peak, cur)
    return peak


def make_optimizer(params, cfg: DictConfig):
    """The ``optimizer`` config group (with the experiment's ``optim_presets``) as a torch optimizer;
    a bad combination is a UserError."""
    from algorithms.lookahead import build_optimizer

    try:
        return build_optimizer(params, OmegaConf.to_container(cfg.optimizer, resolve=True),
                               OmegaConf.to_container(cfg.get("optim_presets") or {}, resolve=True))
    except ValueError as e:
        raise UserError(str(e)) from None


def _py(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        v = v.item()
    if isinstance(v, (np.floating, np.integer)):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "/"))
        else:
            out[key] = v
    return out


# --------------------------------------------------------------------------- checkpoints
class Checkpointer:
    """Saves ``checkpoint.pt`` into the run directory periodically and when SIGTERM/SIGINT arrive.

    Writes go to a temporary file then ``os.replace``, so a crash mid-write never destroys the last
    good checkpoint. The signal handler only sets a flag; the training loop calls ``should_stop()``
    at a safe point, saves and raises ``Interrupted``.
    """

    def __init__(self, run_dir: Path, every: int):
        self.path = Path(run_dir) / "checkpoint.pt"
        self.every = int(every)
        self.last_step: int | None = None
        self._signal: int | None = None
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not in the main thread (e.g. some launchers): periodic saves only
                pass
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False

    def _handler(self, signum, frame):
        if self._signal is not None:  # second signal: give up immediately
            raise KeyboardInterrupt
        self._signal = signum

    def describe(self) -> str:
        if self.last_step is None:
            return "no checkpoint written yet"
        return f"last good checkpoint: {self.path} (step {self.last_step})"

    def should_stop(self) -> bool:
        return self._signal is not None

    def due(self, step: int) -> bool:
        return self.every > 0 and step % self.every == 0

    def save(self, state: dict, step: int) -> None:
        state = dict(state, step=step, rng=rng_state())
        tmp = self.path.with_suffix(".pt.tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.path)
        self.last_step = step

    def load(self, map_location=None) -> dict | None:
        if not self.path.exists():
            return None
        state = torch.load(self.path, map_location=map_location, weights_only=False)
        self.last_step = state["step"]
        return state

    def resume_state(self, resume, map_location=None) -> dict | None:
        """The checkpoint to continue from (RNG state already restored), or None for a fresh start;
        ``resume`` is the run's ``resume`` setting (a run dir or ``auto``; ``auto`` tolerates no checkpoint)."""
        if not resume:
            return None
        state = self.load(map_location=map_location)
        if state is None:
            if resume != "auto":
                raise UserError(f"resume: no checkpoint at {self.path}")
            return None
        set_rng_state(state["rng"])
        return state

    def after_step(self, snapshot, step: int) -> None:
        """End of a training step: the periodic checkpoint, then the SIGTERM/SIGINT stop (raises
        Interrupted). ``snapshot`` is called only when a checkpoint is written."""
        if self.due(step):
            self.save(snapshot(), step)
        if self.should_stop():
            self.interrupt(snapshot(), step)

    def interrupt(self, state: dict, step: int) -> None:
        self.save(state, step)
        name = signal.Signals(self._signal).name
        raise Interrupted(f"{name} at step {step}: checkpoint saved to {self.path}; "
                          f"continue with: python run.py resume={self.path.parent}")

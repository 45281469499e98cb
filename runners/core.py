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


# errors and config value ranges live in runners/errors.py (no torch: run.py checks the command line first)
from runners.errors import (DataMissingError, Interrupted, NonFiniteLossError, UserError, check_config,  # noqa: F401
                            value_error)


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
    name, key, *rest = state["numpy"]   # the key array may come back from a checkpoint as a tensor
    np.random.set_state((name, np.asarray(key, dtype=np.uint32), *rest))
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
                 wandb_id: str | None = None, ckpt: "Checkpointer | None" = None):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.key_metric = cfg.logger.get("key_metric", None)
        self.command = cfg.get("command")
        self.t_start = time.time()
        self.threads = torch.get_num_threads()   # the run's thread count (a library may change it later, e.g. in evaluation)
        # wall time and sessions of the run so far: a resumed run adds this session to what its checkpoint recorded
        # (None: resumed from a checkpoint that did not record it, so the total is unknown, not this session's)
        resumed = ckpt is not None and ckpt.last_step is not None
        self.wall_before = ckpt.wall_s if resumed else 0.0
        self.sessions_before = ckpt.sessions if resumed else 0
        # provenance as the code was when this session started (a commit made while it runs is not its code); the
        # commit of every session of a resumed run travels in its checkpoints (older checkpoints: not recorded)
        self.provenance = provenance()
        tag = f"{self.provenance['git_commit'][:12]}{' +changes' if self.provenance['git_dirty'] else ''}"
        self.commits = (list(ckpt.commits) if ckpt.commits is not None else ["not recorded"]) if resumed else []
        self.commits.append(tag)
        path = self.run_dir / "metrics.jsonl"
        if ckpt is not None:
            ckpt.tracker = self   # each checkpoint records how much of metrics.jsonl it covers
            if ckpt.metrics_bytes is not None and path.exists() and path.stat().st_size > ckpt.metrics_bytes:
                with open(path, "r+b") as f:   # rows logged after the checkpoint are logged again by the resumed run
                    f.truncate(ckpt.metrics_bytes)
        self._jsonl = open(path, "a", buffering=1)
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
            kwargs = dict(
                project=cfg.logger.project, entity=cfg.logger.get("entity"),
                group=cfg.logger.get("group") or cfg.get("experiment_name"),
                job_type=cfg.get("experiment_name"), name=cfg.logger.get("name"),
                dir=str(self.run_dir), id=self.wandb_id, resume="allow",
                config=OmegaConf.to_container(cfg, resolve=True), tags=list(cfg.logger.get("tags") or []),
            )
            if mode == "online" and not wandb.login(prompt=False, verify=False):
                _warn("logger.mode=online but no W&B API key (wandb login, or WANDB_API_KEY): logging offline; "
                      f"upload later with: wandb sync {self.run_dir}/wandb")
                mode = "offline"
            try:
                settings = wandb.Settings(init_timeout=cfg.logger.get("init_timeout", 20))
                self.wandb_run = wandb.init(mode=mode, settings=settings, **kwargs)
            except Exception as e:   # no network, a refused key, a server error: keep the run, log offline
                if mode != "online":
                    raise UserError(f"W&B could not start ({str(e).splitlines()[0][:160]}); "
                                    f"logger.mode=disabled runs without it") from None
                _warn(f"W&B online failed ({str(e).splitlines()[0][:120]}): logging offline; "
                      f"upload later with: wandb sync {self.run_dir}/wandb")
                wandb.teardown()   # the failed attempt still holds the run id in W&B's service process
                self.wandb_run = wandb.init(mode="offline", **kwargs)
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total_steps, initial=start_step, disable=not cfg.logger.get("progress", True),
                        dynamic_ncols=True, desc=cfg.get("experiment_name", "run"), file=sys.stderr,
                        mininterval=1.0)
        self.total_steps, self.start_step, self.projected = total_steps, start_step, False

    def log(self, metrics: dict[str, Any], step: int) -> None:
        row = {"step": int(step), "time": time.time()}
        row.update({k: _py(v) for k, v in metrics.items()})
        self._jsonl.write(json.dumps(row) + "\n")
        self._last.update(row)
        if self.wandb_run is not None:
            self.wandb_run.log({k: v for k, v in row.items() if k != "step"}, step=int(step))
        if self.key_metric and self.key_metric in row:
            self.bar.set_postfix({self.key_metric: f"{row[self.key_metric]:.4g}"}, refresh=False)

    def wall_s(self) -> float | None:
        """Seconds of training this run has had, over every session that contributed to it (None: unknown)."""
        return None if self.wall_before is None else self.wall_before + time.time() - self.t_start

    def metrics_bytes(self) -> int:
        self._jsonl.flush()
        return self._jsonl.tell()

    def advance(self, step: int) -> None:
        self.bar.update(step - self.bar.n)
        if not self.projected:
            self._project(step)

    def _project(self, step: int) -> None:
        """Once, after the first updates (10 s or 2% of the run): the projected wall time of the rest."""
        elapsed, done = time.time() - self.t_start, step - self.start_step
        if done < 1 or not self.total_steps or (elapsed < 10 and done < 0.02 * self.total_steps):
            return
        self.projected = True
        left = max(self.total_steps - step, 0) * elapsed / done
        print(f"projected wall time: {_duration(left)} for the remaining {self.total_steps - step} of "
              f"{self.total_steps} steps ({done / elapsed:.3g} steps/s so far)", file=sys.stderr, flush=True)

    def write_summary(self, summary: dict[str, Any]) -> dict[str, Any]:
        flat = {k: _py(v) for k, v in _flatten(summary).items()}
        flat.update({"hardware": hardware(self.threads), "command": self.command, "wall_s": self.wall_s(),
                     "wall_s_last_session": time.time() - self.t_start,
                     "sessions": None if self.sessions_before is None else self.sessions_before + 1,
                     **{f"provenance/{k}": v for k, v in self.provenance.items()},
                     "provenance/git_commits_by_session": self.commits})
        (self.run_dir / "summary.json").write_text(json.dumps(flat, indent=2, sort_keys=True) + "\n")
        if self.wandb_run is not None:
            for k, v in flat.items():
                self.wandb_run.summary[k] = v
        return flat

    def log_video(self, path: Path, key: str = "video/eval_episode") -> None:
        """An MP4 in the run folder, also to W&B (as CleanRL's capture_video)."""
        if self.wandb_run is not None:
            import wandb

            self.wandb_run.log({key: wandb.Video(str(path), format="mp4")})

    def close(self, failed: bool = False) -> None:
        self.bar.close()
        self._jsonl.close()
        if self.wandb_run is not None:
            self.wandb_run.finish(exit_code=1 if failed else 0)
            self.wandb_run = None


KEY_PACKAGES = ("torch", "numpy", "hydra-core", "omegaconf", "gymnasium", "ale-py", "mujoco", "torch-geometric",
                "wandb", "scipy")


def provenance() -> dict:
    """Where a result came from: the git commit of the code, whether the tree differed from it (uncommitted
    changes to tracked files), the key packages' versions (the hardware and the resolved config are recorded
    beside it: ``hardware`` in the summary, ``resolved_config.yaml`` in the run folder)."""
    import subprocess
    from importlib.metadata import PackageNotFoundError, version

    root = Path(__file__).resolve().parents[1]
    out = {}
    try:
        out["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                           timeout=10).stdout.strip() or "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        out["git_dirty"] = bool(dirty)
    except (OSError, subprocess.SubprocessError):
        out["git_commit"], out["git_dirty"] = "unknown", None
    for pkg in KEY_PACKAGES:
        try:
            out[f"version/{pkg}"] = version(pkg)
        except PackageNotFoundError:
            pass
    out["python"] = sys.version.split()[0]
    out["cpu"] = cpu_id()
    return out


def cpu_id() -> str:
    """The CPU's vendor, family and model and the vector kernels torch picks on it: two machines both called
    "AMD EPYC" can differ here, and with them the float rounding of a run (a chaotic training run then follows
    another trajectory from the same seed)."""
    info = {}
    try:
        for line in open("/proc/cpuinfo"):
            k, _, v = line.partition(":")
            k = k.strip()
            if k in ("vendor_id", "cpu family", "model") and k not in info:
                info[k] = v.strip()
            if len(info) == 3:
                break
    except OSError:
        pass
    cap = torch.backends.cpu.get_cpu_capability()
    parts = [info.get("vendor_id", "unknown vendor")] + [f"{k} {info[k]}" for k in ("cpu family", "model") if k in info]
    return f"{' '.join(parts)}, torch kernels {cap}"


def record_bench(folder, metrics: dict, argv: list[str], script: str) -> None:
    """A benchmark's figures as a run-like ``summary.json`` (what results/claims ledgers read), with its command,
    hardware and provenance."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    root = str(Path(__file__).resolve().parents[1]) + "/"
    args = []
    for a in argv:                       # the command as a user would type it, without machine paths
        args.append("DATA" if args and args[-1] == "--data-root" else a.replace(root, ""))
    out = {**{k: _py(v) for k, v in metrics.items()}, "command": f"python scripts/{script} {' '.join(args)}".strip(),
           "hardware": hardware(), "load_avg_1min": os.getloadavg()[0],   # other work on the machine inflates times
           **{f"provenance/{k}": v for k, v in provenance().items()}}
    (folder / "summary.json").write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")


def _warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr, flush=True)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


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
    ``torch.cuda.max_memory_allocated`` on GPU; on CPU the running sum of the profiler's allocation and free
    records (``[memory]`` events, one per allocation or free, bytes negative for a free) in time order.

    The records are read from the profiler's raw results: ``prof.events()`` would first build Python's event
    tree (35 s for one T=140 RevLSTM step), and its per-operator memory lumps each operator's allocations and
    frees together at the operator's start, which misplaces the peak."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    cpu = torch.autograd.DeviceType.CPU
    records = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                     if e.name() == "[memory]" and e.device_type() == cpu)
    cur = peak = 0
    for _, nbytes in records:
        cur += nbytes
        peak = max(peak, cur)
    return peak


def write_mp4(frames: list, path: Path, fps: int = 30) -> Path:
    """RGB frames (H, W, 3 uint8) to an MP4 file (OpenCV's writer; no ffmpeg binary needed)."""
    import cv2

    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    if not writer.isOpened():
        raise UserError(f"cannot write the video {path} (OpenCV has no MP4 writer here)")
    for f in frames:
        writer.write(cv2.cvtColor(np.asarray(f, dtype=np.uint8), cv2.COLOR_RGB2BGR))
    writer.release()
    return path


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
CHECKPOINT_FORMAT = 2   # bumped when what the runners store changes; an older checkpoint is refused in one line


def plain(obj):
    """What a checkpoint may hold: tensors, numbers, strings, None and dicts / lists / tuples of them, so that it
    loads with ``torch.load(weights_only=True)`` (no code runs on load). NumPy arrays become tensors."""
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj.copy())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return type(obj)((k, plain(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(plain(v) for v in obj)
    if obj is None or isinstance(obj, (torch.Tensor, bool, int, float, str)):
        return obj
    raise TypeError(f"checkpoint value of type {type(obj).__name__} is not a tensor, number, string or container")


def load_checkpoint(path: Path, map_location=None) -> dict:
    """``torch.load(weights_only=True)`` with one-line errors: a file that would run code (a pickled object) is
    refused, a corrupt or truncated one named as such, one from an older format refused."""
    import pickle
    import struct
    import warnings
    import zipfile

    path = Path(path)
    try:
        with warnings.catch_warnings():   # garbage can look like an unknown pickle protocol: the error says enough
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        if "GLOBAL" in msg or "global" in msg:
            import re

            found = re.search(r"GLOBAL ([\w.]+)", msg)
            bad = found.group(1) if found else "an object"
            raise UserError(f"{path}: refusing to load: it holds Python objects ({bad}), not only tensors, numbers "
                            f"and strings; a checkpoint written by run.py never does") from None
        raise UserError(f"{path} is corrupt or truncated ({msg.splitlines()[0][:120]}); "
                        f"delete it to start afresh") from None
    # random bytes read as a legacy pickle also end in IndexError / KeyError (measured: 6% of 20 kB garbage files)
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, IndexError, KeyError, TypeError,
            struct.error, OverflowError, MemoryError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise UserError(f"{path} is corrupt or truncated ({first}); delete it to start afresh") from None
    if not isinstance(state, dict) or "step" not in state or "rng" not in state:
        raise UserError(f"{path} is not a run.py checkpoint (no step / rng state)")
    if state.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path} was written by an older version of this code (checkpoint format "
                        f"{state.get('format', 1)}, this code reads {CHECKPOINT_FORMAT}); it cannot be resumed")
    return state


class Checkpointer:
    """Saves ``checkpoint.pt`` into the run directory periodically and when SIGTERM/SIGINT arrive.

    Writes go to a temporary file, fsync, then ``os.replace``: a crash, a kill -9 or a full disk mid-write never
    destroys the last good checkpoint (a failed write is one line saying so; the temporary file is removed).
    Checkpoints hold only tensors, numbers, strings and containers (``plain``) and load with ``weights_only=True``.
    The first signal is acknowledged at once and only sets a flag; the training loop calls ``should_stop()`` at a
    safe point, saves and raises ``Interrupted``. A second signal stops at once, without saving, still naming the
    resume command (the previous checkpoint is intact).
    """

    saved_in_process = False   # any checkpoint written by this process (run.py: a failed resume is rolled back otherwise)

    def __init__(self, run_dir: Path, every: int):
        self.path = Path(run_dir) / "checkpoint.pt"
        self.tmp = self.path.with_suffix(".pt.tmp")
        self.every = int(every)
        self.last_step: int | None = None
        self.tracker: Tracker | None = None   # set by Tracker(ckpt=...): its metrics.jsonl offset goes in each checkpoint
        self.metrics_bytes: int | None = None  # the loaded checkpoint's metrics.jsonl offset
        self.wall_s: float | None = None       # the loaded checkpoint's wall time so far (older checkpoints: None)
        self.sessions: int | None = None       # ... and how many sessions (start + resumes) made it
        self.commits: list[str] | None = None  # ... and the code each session ran (commit, "+changes" if dirty)
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
        name = signal.Signals(signum).name
        if self._signal is not None:  # second signal: stop now, without saving
            self._signal = signum
            raise Interrupted(f"second {name}: stopped without saving; {self.describe()}; "
                              f"continue with: {self.resume_command()}")
        self._signal = signum
        print(f"\n{name}: stopping after this step with a checkpoint (send it again to stop at once)",
              file=sys.stderr, flush=True)

    def resume_command(self) -> str:
        import shlex

        return f"python run.py resume={shlex.quote(str(self.path.parent))}"

    def describe(self) -> str:
        if self.last_step is None:
            if self.path.exists():
                return f"last good checkpoint: {self.path}"
            return "no checkpoint written yet"
        return f"last good checkpoint: {self.path} (step {self.last_step})"

    def should_stop(self) -> bool:
        return self._signal is not None

    def due(self, step: int) -> bool:
        return self.every > 0 and step % self.every == 0

    def save(self, state: dict, step: int) -> None:
        extra = {}
        if self.tracker is not None:
            extra = {"metrics_bytes": self.tracker.metrics_bytes(), "commits": list(self.tracker.commits)}
            if self.tracker.wall_before is not None:
                extra.update(wall_s=self.tracker.wall_s(), sessions=self.tracker.sessions_before + 1)
        state = plain(dict(state, step=step, rng=rng_state(), format=CHECKPOINT_FORMAT, **extra))
        try:
            with open(self.tmp, "wb") as f:
                torch.save(state, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(self.tmp, self.path)
        except (OSError, RuntimeError) as e:
            self.tmp.unlink(missing_ok=True)
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e).strip().splitlines()[-1][:160]
            raise UserError(f"cannot write the checkpoint {self.path} at step {step} ({reason}: disk full or "
                            f"folder not writable?); {self.describe()} is intact") from None
        except BaseException:   # a second Ctrl-C inside the write: no temporary file is left behind
            self.tmp.unlink(missing_ok=True)
            raise
        self.last_step = step
        Checkpointer.saved_in_process = True

    def load(self, map_location=None) -> dict | None:
        self.tmp.unlink(missing_ok=True)   # the remains of a write that was killed
        if not self.path.exists():
            return None
        state = load_checkpoint(self.path, map_location=map_location)
        self.last_step = state["step"]
        self.metrics_bytes = state.get("metrics_bytes")
        self.wall_s, self.sessions = state.get("wall_s"), state.get("sessions")
        self.commits = state.get("commits")
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
                          f"continue with: {self.resume_command()}")

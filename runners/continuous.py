"""Continuous control (MuJoCo, gymnasium v5) as OpenAI baselines' ``old_acktr_cont``: batches of whole episodes
from one environment, a policy on [obs, previous obs], a value function on hand-made features, Monte-Carlo
targets, GAE advantages. Used by ACKTR and its first-order counterpart (``algorithms/acktr_cont.py``).

Per step: the observation goes through a running z-filter (``ZFilter``: Welford mean / std of every observation
seen, (x - mean) / (std + 1e-8), clipped to +-10), the policy sees [obs, previous obs] (zeros at the start of an
episode), samples an action, which is mapped from [-1, 1] to the action bounds and clipped (the unscaled sample
is what the policy is trained on). Episodes are collected until the batch holds more than ``algo.batch_steps``
(2500) steps. A time-limit end counts as terminal (``algo.bootstrap_truncation=false``, as the reference).
Value features: [obs, previous obs, action mean, action std, t / 10, 1] (``algo.vf_features=reference``; ``obs``:
the observation alone, a deviation). Targets: discounted returns within each episode (``algo.vf_targets=mc``;
``gae``: advantages + values, a deviation). Advantages: GAE(0.99, 0.97) with the value function's predictions
before it is fitted on the batch, standardised over the batch.

Reported: every episode's undiscounted return with the timestep it ended at (``episode/return``); the summary
has the last-10 mean and the best 10-episode moving average, and the episodes needed for the moving average to
reach ``algo.threshold``.
"""
from __future__ import annotations

import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from algorithms.acktr_cont import ContinuousA2C, ContinuousACKTR
from algorithms.kfac import EigendecompositionError
from models.actor_critic import GaussianMlpPolicy, ValueMlp
from runners.core import Checkpointer, Tracker, UserError, check_finite, set_rng_state


class ZFilter:
    """baselines' ``ZFilter`` + ``RunningStat``: per-observation Welford statistics (for one sample the variance
    is mean^2, as the reference), output (x - mean) / (std + 1e-8) clipped to +-clip."""

    def __init__(self, shape, clip: float = 10.0):
        self.n, self.M, self.S, self.clip = 0, np.zeros(shape), np.zeros(shape), clip

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        self.n += 1
        if self.n == 1:
            self.M = x.copy()
        else:
            old = self.M.copy()
            self.M = old + (x - old) / self.n
            self.S = self.S + (x - old) * (x - self.M)
        var = self.S / (self.n - 1) if self.n > 1 else np.square(self.M)
        return np.clip((x - self.M) / (np.sqrt(var) + 1e-8), -self.clip, self.clip)

    def state_dict(self):
        return {"n": self.n, "M": self.M, "S": self.S}

    def load_state_dict(self, d):
        self.n, self.M, self.S = int(d["n"]), np.asarray(d["M"]), np.asarray(d["S"])


def discount(x: np.ndarray, gamma: float) -> np.ndarray:
    """y_t = sum_k gamma^k x_{t+k} (baselines' ``common.discount``)."""
    out = np.zeros(len(x))
    run = 0.0
    for t in range(len(x) - 1, -1, -1):
        run = x[t] + gamma * run
        out[t] = run
    return out


def make_env(ec, seed: int):
    try:
        import mujoco  # noqa: F401
    except ImportError:
        raise UserError(f"{ec.id} needs MuJoCo: pip install 'gymnasium[mujoco]'") from None
    if ec.id not in gym.registry:
        close = [k for k in gym.registry if ec.id.split("-")[0].lower() in k.lower()][:5]
        raise UserError(f"unknown environment id '{ec.id}'" + (f"; did you mean {', '.join(close)}?" if close else ""))
    env = gym.make(ec.id)
    if not isinstance(env.action_space, gym.spaces.Box):
        raise UserError(f"{ec.id} has no continuous (Box) action space")
    env.reset(seed=seed)
    env.action_space.seed(seed)
    return env


def build(cfg, obs_dim: int, act_dim: int, device):
    ac, mc = cfg.algo, cfg.model
    pin = obs_dim * (2 if ac.prev_obs else 1)
    vin = {"reference": pin + 2 * act_dim + 2, "obs": obs_dim}.get(ac.vf_features)
    if vin is None:
        raise UserError(f"algo.vf_features must be reference or obs, got '{ac.vf_features}'")
    if ac.vf_targets not in ("mc", "gae"):
        raise UserError(f"algo.vf_targets must be mc or gae, got '{ac.vf_targets}'")
    policy = GaussianMlpPolicy(pin, act_dim, mc.hidden, mc.log_std_init).to(device)
    vf = ValueMlp(vin, mc.hidden, mc.vf_activation).to(device)
    try:
        if ac.name == "acktr":
            algo = ContinuousACKTR(policy, vf, lr=ac.lr, target_kl=ac.target_kl, logstd_kfac=ac.logstd_kfac,
                                   vf_iters=ac.vf_iters, vf_l2=ac.vf_l2, vf_fisher_coef=ac.vf_fisher_coef,
                                   policy_kfac=dict(ac.kfac), vf_kfac=dict(ac.vf_kfac))
        elif ac.name == "a2c":
            algo = ContinuousA2C(policy, vf, lr=ac.lr, target_kl=ac.target_kl, vf_lr=ac.vf_lr, vf_iters=ac.vf_iters,
                                 vf_l2=ac.vf_l2)
        else:
            raise UserError(f"algo.name must be acktr or a2c, got '{ac.name}'")
    except (ValueError, TypeError) as e:
        raise UserError(str(e)) from None
    return policy, vf, algo


@torch.no_grad()
def record_episode(policy, ec, zf: ZFilter, prev_obs: bool, path: Path, seed: int, device) -> dict:
    """One evaluation episode (the policy's mean action, the training z-filter frozen) rendered to MP4 through
    MuJoCo's EGL backend (headless)."""
    import copy
    import os

    from runners.core import write_mp4

    os.environ.setdefault("MUJOCO_GL", "egl")
    try:
        env = gym.make(ec.id, render_mode="rgb_array")
        env.reset(seed=seed + 999)
        env.render()
    except Exception as e:   # no OpenGL context on this machine
        raise UserError(f"algo.capture_video: MuJoCo cannot render here ({str(e).splitlines()[0][:120]}); "
                        f"set MUJOCO_GL=egl or osmesa, or leave capture_video off") from None
    zf = copy.deepcopy(zf)
    ob, _ = env.reset(seed=seed + 999)
    ob = zf(ob)
    prev = np.zeros_like(ob)
    low, high = env.action_space.low, env.action_space.high
    frames, ret, done = [], 0.0, False
    while not done:
        frames.append(env.render())
        x = np.concatenate([ob, prev]) if prev_obs else ob
        a = policy(torch.as_tensor(x, dtype=torch.float32, device=device)).mean.cpu().numpy()
        prev = ob
        ob, r, term, trunc, _ = env.step(np.clip(low + (a + 1.0) * 0.5 * (high - low), low, high))
        ob, ret, done = zf(ob), ret + float(r), term or trunc
    env.close()
    write_mp4(frames, path)
    return {"video/return": ret, "video/frames": len(frames), "video/path": path.name}


def summarise(returns: list[tuple[int, float]], threshold: float | None) -> dict:
    """Last-10 mean, the best 10-episode moving average, and episodes until that average reaches the threshold."""
    r = np.array([x for _, x in returns], dtype=np.float64)
    out = {"episodes": len(r), "score/last10": float(r[-10:].mean()) if len(r) else float("nan")}
    if len(r) >= 10:
        mov = np.convolve(r, np.ones(10) / 10, mode="valid")
        out["score/best_avg10"] = float(mov.max())
        hit = np.nonzero(mov >= threshold)[0] if threshold is not None else []
        out["episodes_to_threshold"] = int(hit[0] + 10) if len(hit) else None
    else:
        out["score/best_avg10"], out["episodes_to_threshold"] = float("nan"), None
    return out


def train(cfg, run_dir: Path, device: torch.device, project_root: Path) -> dict:
    ec, ac, tc = cfg.env, cfg.algo, cfg.train
    if tc.total_timesteps < ac.batch_steps:
        raise UserError(f"train.total_timesteps={tc.total_timesteps} is less than one batch "
                        f"(algo.batch_steps={ac.batch_steps})")
    env = make_env(ec, cfg.seed)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    low, high = env.action_space.low, env.action_space.high
    policy, vf, algo = build(cfg, obs_dim, act_dim, device)
    zf = ZFilter(env.observation_space.shape)

    ckpt = Checkpointer(run_dir, cfg.checkpoint.every)
    steps, batches, wandb_id = 0, 0, None
    returns: list[tuple[int, float]] = []   # (timestep the episode ended at, undiscounted return)
    if cfg.resume:
        st = ckpt.load(map_location=device)
        if st is not None:
            policy.load_state_dict(st["policy"])
            vf.load_state_dict(st["vf"])
            algo.load_state_dict(st["algo"])
            zf.load_state_dict(st["zfilter"])
            steps, batches, wandb_id = st["steps"], st["batches"], st["wandb_id"]
            returns = [tuple(x) for x in st["returns"]]
            set_rng_state(st["rng"])
        elif cfg.resume != "auto":
            raise UserError(f"resume: no checkpoint at {ckpt.path}")
    tracker = Tracker(cfg, run_dir, total_steps=tc.total_timesteps, start_step=steps, wandb_id=wandb_id, ckpt=ckpt)
    t = lambda x: torch.as_tensor(np.asarray(x), dtype=torch.float32, device=device)  # noqa: E731

    def snapshot():
        return {"policy": policy.state_dict(), "vf": vf.state_dict(), "algo": algo.state_dict(),
                "zfilter": zf.state_dict(), "steps": steps, "batches": batches, "returns": returns,
                "wandb_id": tracker.wandb_id}

    def episode(seed: int | None):
        """One whole episode: inputs, actions, action means and stds, rewards, terminal flag."""
        ob, _ = env.reset(seed=seed)
        ob = zf(ob)
        prev = np.zeros_like(ob)
        xs, acts, means, stds, rews = [], [], [], [], []
        while True:
            x = np.concatenate([ob, prev]) if ac.prev_obs else ob
            with torch.no_grad():
                dist = policy(t(x))
                a = dist.sample()
            xs.append(x)
            acts.append(a.cpu().numpy())
            means.append(dist.mean.cpu().numpy())
            stds.append(dist.stddev.cpu().numpy())
            prev = ob
            scaled = np.clip(low + (acts[-1] + 1.0) * 0.5 * (high - low), low, high)
            ob, r, term, trunc, _ = env.step(scaled)
            ob = zf(ob)
            rews.append(float(r))
            if term or trunc:
                return {"x": np.array(xs), "a": np.array(acts), "mean": np.array(means), "std": np.array(stds),
                        "r": np.array(rews), "terminal": bool(term) or not ac.bootstrap_truncation,
                        "last_x": np.concatenate([ob, prev]) if ac.prev_obs else ob}

    def features(p):
        T = len(p["r"])
        if ac.vf_features == "obs":
            return p["x"][:, :obs_dim]
        return np.concatenate([p["x"], p["mean"], p["std"], np.arange(T)[:, None] / 10.0, np.ones((T, 1))], 1)

    failed = True
    t0, s0 = time.perf_counter(), steps
    try:
        with ckpt:
            while steps < tc.total_timesteps:
                paths, n = [], 0
                first_seed = cfg.seed * 100_003 + batches   # each batch reseeds the environment: exact resumes
                while n <= ac.batch_steps:
                    p = episode(first_seed)
                    first_seed = None
                    paths.append(p)
                    n += len(p["r"])
                    steps += len(p["r"])
                    returns.append((steps, float(p["r"].sum())))
                    tracker.log({"episode/return": returns[-1][1], "episode/length": len(p["r"]),
                                 "timesteps": steps}, steps)
                advs, vtargs, feats = [], [], []
                for p in paths:
                    X = features(p)
                    with torch.no_grad():
                        v = vf(t(X)).cpu().numpy().astype(np.float64)
                    last = 0.0 if p["terminal"] else float(v[-1])   # the reference: V of the last visited state
                    delta = p["r"] + ac.gamma * np.append(v[1:], last) - v
                    adv = discount(delta, ac.gamma * ac.gae_lambda)
                    advs.append(adv)
                    vtargs.append(discount(p["r"], ac.gamma) if ac.vf_targets == "mc" else adv + v)
                    feats.append(X)
                adv = np.concatenate(advs)
                adv = (adv - adv.mean()) / (adv.std() + 1e-8)
                obs_b = t(np.concatenate([p["x"] for p in paths]))
                act_b = t(np.concatenate([p["a"] for p in paths]))
                try:
                    info = algo.update(obs_b, act_b, t(adv), t(np.concatenate(feats)), t(np.concatenate(vtargs)))
                except EigendecompositionError as e:
                    raise UserError(f"{e}; {ckpt.describe()}") from None
                batches += 1
                check_finite(info["loss/total"], steps, ckpt)
                row = {k: float(v) for k, v in info.items()}
                el = time.perf_counter() - t0
                row.update({"timesteps": steps, "batch_episodes": len(paths), "perf/steps_per_s": (steps - s0) / max(el, 1e-9),
                            "score/last10": float(np.mean([r for _, r in returns[-10:]]))})
                tracker.log(row, steps)
                if ckpt.due(batches) or steps >= tc.total_timesteps:
                    ckpt.save(snapshot(), batches)
                if ckpt.should_stop():
                    ckpt.interrupt(snapshot(), batches)
                tracker.advance(min(steps, tc.total_timesteps))
        video = {}
        if ac.get("capture_video"):
            video = record_episode(policy, ec, zf, ac.prev_obs, run_dir / "eval_episode.mp4", cfg.seed, device)
            tracker.log_video(run_dir / "eval_episode.mp4")
        summary = tracker.write_summary({**video, **summarise(returns, ac.threshold), "timesteps": steps, "batches": batches,
                                         "algo": ac.name, "env": ec.id, "seed": cfg.seed})
        failed = False
        return summary
    finally:
        tracker.close(failed=failed)
        env.close()

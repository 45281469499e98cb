"""On-policy actor-critic loop (A2C and ACKTR) on Atari and MuJoCo, gymnasium 1.x.

Atari follows the DeepMind protocol: no-op starts (up to 30), frame skip 4 with max-pooling over the
last two frames, 84x84 grayscale, 4 stacked frames, fire on reset, no sticky actions
(repeat_action_probability 0), at most 108k frames per game; episodic life and reward clipping
(sign) for training only. Two back ends:
- ``env.backend=ale_vector``: ale-py's native, multi-threaded ``AtariVectorEnv``;
- ``env.backend=gymnasium``: any ``ALE/*`` id through gymnasium's ``AtariPreprocessing`` and
  ``FrameStackObservation`` in a ``SyncVectorEnv``.
Episodic life is applied here, not in the environments: ale-py 0.12's vector env and gymnasium's
``AtariPreprocessing(terminal_on_life_loss=True)`` both *restart the game* at a life loss (checked:
lives stay at 5 and the frame counter restarts), whereas the protocol ends only the learning episode
and lets the game go on. So the environments run whole games and a life loss is marked as a
terminal transition for the returns. The score we report is the real, unclipped game score of each
whole game.

MuJoCo (gymnasium v5): running observation normalisation (saved with the checkpoint), actions
clipped to the bounds only when stepping, time-limit truncations bootstrapped with the value of the
true final observation.
"""
from __future__ import annotations

import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from algorithms.a2c import A2C
from algorithms.acktr import ACKTR
from algorithms.kfac import EigendecompositionError
from algorithms.rollout import Rollout, gae, nstep_returns
from models.actor_critic import AtariActorCritic, MujocoActorCritic
from runners.core import Checkpointer, Tracker, UserError, check_finite, set_rng_state


# --------------------------------------------------------------------------- environments
class RunningMeanStd:
    def __init__(self, shape):
        self.mean, self.var, self.count = np.zeros(shape), np.ones(shape), 1e-4

    def update(self, x: np.ndarray):
        bm, bv, bc = x.mean(0), x.var(0), x.shape[0]
        delta, tot = bm - self.mean, self.count + bc
        self.mean = self.mean + delta * bc / tot
        self.var = (self.var * self.count + bv * bc + delta ** 2 * self.count * bc / tot) / tot
        self.count = tot

    def normalize(self, x: np.ndarray, clip: float = 10.0) -> np.ndarray:
        return np.clip((x - self.mean) / np.sqrt(self.var + 1e-8), -clip, clip).astype(np.float32)

    def state_dict(self):
        return {"mean": self.mean, "var": self.var, "count": self.count}

    def load_state_dict(self, d):
        self.mean, self.var, self.count = d["mean"], d["var"], d["count"]


class FireOnReset(gym.Wrapper):
    """Press FIRE after a reset in games that need it (gymnasium has no such wrapper)."""

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        if "FIRE" in self.env.unwrapped.get_action_meanings():
            obs, _, term, trunc, info = self.env.step(1)
            if term or trunc:
                obs, info = self.env.reset(**kwargs)
        return obs, info


def _gym_atari(env_id: str):
    import ale_py

    gym.register_envs(ale_py)
    env = gym.make(env_id, frameskip=1, repeat_action_probability=0.0, full_action_space=False,
                   max_num_frames_per_episode=108_000)
    env = gym.wrappers.AtariPreprocessing(env, noop_max=30, frame_skip=4, screen_size=84,
                                          terminal_on_life_loss=False, grayscale_obs=True)
    env = FireOnReset(env)
    return gym.wrappers.FrameStackObservation(env, 4)


def make_env(ec, n_envs: int, seed: int):
    """Return (vector env, kind) with kind 'atari' or 'mujoco'."""
    if ec.kind == "atari":
        if ec.backend == "ale_vector":
            from ale_py.vector_env import AtariVectorEnv

            try:
                env = AtariVectorEnv(game=ec.game, num_envs=n_envs, num_threads=ec.num_threads, noop_max=30,
                                     frameskip=4, maxpool=True, stack_num=4, img_height=84, img_width=84,
                                     grayscale=True, episodic_life=False, reward_clipping=False,
                                     use_fire_reset=True, repeat_action_probability=0.0,
                                     max_num_frames_per_episode=108_000, autoreset_mode="SameStep")
            except Exception as e:  # ale-py raises a bare RuntimeError for unknown ROMs
                raise UserError(f"unknown Atari game '{ec.game}' for ale-py's AtariVectorEnv ({e})") from None
        else:
            _check_id(ec.id)
            env = gym.vector.SyncVectorEnv([lambda: _gym_atari(ec.id) for _ in range(n_envs)],
                                           autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    elif ec.kind == "mujoco":
        try:
            import mujoco  # noqa: F401
        except ImportError:
            raise UserError(f"{ec.id} needs MuJoCo: pip install 'gymnasium[mujoco]'") from None
        _check_id(ec.id)
        env = gym.vector.SyncVectorEnv([lambda: gym.make(ec.id) for _ in range(n_envs)],
                                       autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    else:
        raise UserError(f"env.kind must be atari or mujoco, got '{ec.kind}'")
    env.reset(seed=seed)
    return env


def _check_id(env_id: str):
    if env_id.startswith("ALE/"):
        import ale_py

        gym.register_envs(ale_py)
    if env_id not in gym.registry:
        close = [k for k in gym.registry if env_id.split("-")[0].split("/")[-1].lower() in k.lower()][:5]
        raise UserError(f"unknown environment id '{env_id}'" + (f"; did you mean {', '.join(close)}?" if close else ""))


# --------------------------------------------------------------------------- training
def build(cfg, env, device):
    ec = cfg.env
    if ec.kind == "atari":
        model = AtariActorCritic(env.single_action_space.n, conv3_channels=cfg.model.conv3_channels,
                                 hidden=cfg.model.hidden, channels_last=cfg.model.channels_last)
    else:
        model = MujocoActorCritic(env.single_observation_space.shape[0], env.single_action_space.shape[0],
                                  hidden=cfg.model.hidden, log_std_init=cfg.model.log_std_init)
    model = model.to(device)
    ac = cfg.algo
    updates = cfg.train.total_timesteps // (ac.n_envs * ac.n_steps)
    common = dict(vf_coef=ac.vf_coef, ent_coef=ac.ent_coef, lr_decay=ac.lr_decay)
    if ac.name == "a2c":
        algo = A2C(model, updates, lr=ac.lr, alpha=ac.alpha, eps=ac.eps, max_grad_norm=ac.max_grad_norm, **common)
    elif ac.name == "acktr":
        k = ac.kfac
        algo = ACKTR(model, updates, lr=ac.lr, vf_fisher_coef=ac.vf_fisher_coef, max_grad_norm=ac.max_grad_norm,
                     momentum=k.momentum, stat_decay=k.stat_decay, damping=k.damping, kl_clip=k.kl_clip,
                     eig_every=k.eig_every, stats_every=k.stats_every, cold_iters=k.cold_iters,
                     eig_eps=k.eig_eps, target_kl=ac.target_kl, critic_lr=ac.critic_lr,
                     critic_kl_clip=ac.critic_kl_clip, critic_iters=ac.critic_iters, **common)
    else:
        raise UserError(f"algo.name must be a2c or acktr, got '{ac.name}'")
    return model, algo, updates


def train(cfg, run_dir: Path, device: torch.device, project_root: Path) -> dict:
    ec, ac, tc = cfg.env, cfg.algo, cfg.train
    N, T = ac.n_envs, ac.n_steps
    env = make_env(ec, N, cfg.seed)
    atari = ec.kind == "atari"
    model, algo, n_updates = build(cfg, env, device)
    if n_updates < 1:
        raise UserError(f"train.total_timesteps={tc.total_timesteps} is less than one rollout ({N}x{T})")
    obs_rms = None if atari else RunningMeanStd(env.single_observation_space.shape)

    ckpt = Checkpointer(run_dir, cfg.checkpoint.every)
    update, wandb_id = 0, None
    all_scores: list[tuple[int, float]] = []  # (frames, unclipped game score) of every finished game
    if cfg.resume:
        st = ckpt.load(map_location=device)
        if st is not None:
            model.load_state_dict(st["model"])
            algo.load_state_dict(st["algo"])
            update, wandb_id, all_scores = st["update"], st.get("wandb_id"), st["scores"]
            if obs_rms is not None:
                obs_rms.load_state_dict(st["obs_rms"])
            set_rng_state(st["rng"])
        elif cfg.resume != "auto":
            raise UserError(f"resume: no checkpoint at {ckpt.path}")
    # environments are not checkpointed: a resumed run starts fresh games (documented)
    obs_np, info = env.reset(seed=cfg.seed + 1000 * update)
    lives = np.asarray(info.get("lives", np.zeros(N)))
    game_return, game_len = np.zeros(N), np.zeros(N, dtype=np.int64)

    def prep(o):
        if atari:
            return torch.from_numpy(np.asarray(o)).to(device)
        obs_rms.update(o)
        return torch.from_numpy(obs_rms.normalize(o)).to(device)

    tracker = Tracker(cfg, run_dir, total_steps=n_updates, start_step=update, wandb_id=wandb_id)
    steps_per_update = N * T
    frame_mult = 4 if atari else 1
    roll = Rollout.allocate(T, N, env.single_observation_space.shape,
                            () if atari else env.single_action_space.shape,
                            torch.uint8 if atari else torch.float32, device)
    obs = prep(obs_np)
    low, high = (None, None) if atari else (env.single_action_space.low, env.single_action_space.high)

    def snapshot():
        return {"model": model.state_dict(), "algo": algo.state_dict(), "update": update, "scores": all_scores,
                "obs_rms": obs_rms.state_dict() if obs_rms else None, "wandb_id": tracker.wandb_id}

    failed = True
    t0, u0 = time.perf_counter(), update
    try:
        with ckpt:
            while update < n_updates:
                for t in range(T):
                    with torch.no_grad():
                        dist, value = model(obs)
                        action = dist.sample()
                    a_np = action.cpu().numpy()
                    if not atari:
                        a_np = np.clip(a_np, low, high)
                    next_np, raw_r, term, trunc, info = env.step(a_np)
                    raw_r = np.asarray(raw_r, dtype=np.float64)
                    game_return += raw_r
                    game_len += 1
                    ended = np.logical_or(term, trunc)
                    done = ended.copy()
                    r = np.sign(raw_r) if (atari and ec.clip_rewards) else raw_r
                    if atari:
                        new_lives = np.asarray(info["lives"])
                        if ec.episodic_life:  # a life loss ends the learning episode, not the game
                            done |= (new_lives < lives) & ~ended
                        lives = new_lives
                    elif trunc.any():  # bootstrap time-limit truncations from the true final obs
                        idx = np.nonzero(trunc & ~np.asarray(term))[0]
                        if len(idx):
                            fin = np.stack([info["final_obs"][i] for i in idx])
                            with torch.no_grad():
                                fv = model(torch.from_numpy(obs_rms.normalize(fin)).to(device))[1].cpu().numpy()
                            r = r.copy()
                            r[idx] += ac.gamma * fv
                    for i in np.nonzero(ended)[0]:
                        all_scores.append((int((update * steps_per_update + (t + 1) * N) * frame_mult), float(game_return[i])))
                        tracker.log({"episode/score": game_return[i], "episode/length": int(game_len[i]),
                                     "frames": all_scores[-1][0]}, update)
                        game_return[i], game_len[i] = 0.0, 0
                    roll.obs[t] = obs
                    roll.actions[t] = action
                    roll.values[t] = value
                    roll.rewards[t] = torch.as_tensor(r, dtype=torch.float32, device=device)
                    roll.dones[t] = torch.as_tensor(done, dtype=torch.float32, device=device)
                    obs = prep(next_np)
                with torch.no_grad():
                    roll.last_value = model(obs)[1]
                if ac.advantage == "gae":
                    adv, ret = gae(roll.rewards, roll.dones, roll.values, roll.last_value, ac.gamma, ac.gae_lambda)
                else:
                    ret = nstep_returns(roll.rewards, roll.dones, roll.last_value, ac.gamma)
                    adv = ret - roll.values
                if ac.normalize_advantages:
                    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
                flat = lambda x: x.reshape(T * N, *x.shape[2:])  # noqa: E731
                try:
                    stats = algo.update(flat(roll.obs), flat(roll.actions), flat(ret), flat(adv))
                except EigendecompositionError as e:
                    raise UserError(f"{e}; {ckpt.describe()}") from None
                update += 1
                check_finite(stats["loss/total"], update, ckpt)
                if update % tc.log_every == 0 or update == n_updates:
                    el = time.perf_counter() - t0
                    row = {k: float(v) for k, v in stats.items()}
                    row.update({"timesteps": update * steps_per_update, "frames": update * steps_per_update * frame_mult,
                                "perf/steps_per_s": (update - u0) * steps_per_update / max(el, 1e-9)})
                    if all_scores:
                        row["score/mean100"] = float(np.mean([sc for _, sc in all_scores[-100:]]))
                    tracker.log(row, update)
                if ckpt.due(update) or update == n_updates:
                    ckpt.save(snapshot(), update)
                if ckpt.should_stop():
                    ckpt.interrupt(snapshot(), update)
                tracker.advance(update)
        last = [s for _, s in all_scores]
        summary = tracker.write_summary({
            "score/mean100": float(np.mean(last[-100:])) if last else float("nan"),
            "score/mean10": float(np.mean(last[-10:])) if last else float("nan"),
            "score/top10": float(np.mean(sorted(last)[-10:])) if last else float("nan"),
            "episodes": len(last), "timesteps": update * steps_per_update,
            "frames": update * steps_per_update * frame_mult, "algo": ac.name, "env": ec.id, "seed": cfg.seed,
        })
        failed = False
        return summary
    finally:
        tracker.close(failed=failed)
        env.close()

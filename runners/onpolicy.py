"""On-policy actor-critic loop (A2C and ACKTR) on Atari, gymnasium 1.x: the reference's n-step batches from many
environments. (Continuous control, batches of whole episodes: ``runners/continuous.py``.)

Two back ends (``env.backend``):
- ``baselines`` (default): OpenAI baselines' wrappers (``runners/atari_env.py``): no-op starts, frame skip 4 with
  max-pooling, a lost life ends the learning episode and is followed by FIRE, 84x84 grayscale, rewards clipped
  for training, whole-game unclipped scores; the 4-frame stack is kept here and zeroed on every done, as
  baselines' ``VecFrameStack``. A ``SyncVectorEnv`` of ``algo.n_envs`` environments.
- ``ale_vector`` (a deviation, faster): ale-py's native, multi-threaded ``AtariVectorEnv``. It restarts the game
  at a life loss when asked for episodic life, so it runs whole games and a life loss is marked here as a
  terminal transition for the returns: no FIRE after a lost life, and the frame stack runs across it.
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
from algorithms.rollout import Rollout, nstep_returns
from models.actor_critic import AtariActorCritic
from runners.core import Checkpointer, Tracker, UserError, check_finite, set_rng_state


# --------------------------------------------------------------------------- environments
BACKENDS = ("baselines", "ale_vector")


def ale_game(env_id: str) -> str:
    """ale-py's ROM name for a gymnasium id: ``ALE/SpaceInvaders-v5`` -> ``space_invaders``."""
    import re

    name = env_id.split("/", 1)[-1].split("-", 1)[0]
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def _check_id(env_id: str):
    import ale_py

    gym.register_envs(ale_py)
    if not env_id.startswith("ALE/") or env_id not in gym.registry:
        close = [k for k in gym.registry if env_id.split("-")[0].split("/")[-1].lower() in k.lower()][:5]
        raise UserError(f"unknown Atari game '{ale_game(env_id)}' (env.id={env_id})" +
                        (f"; did you mean {', '.join(close)}?" if close else "; ids look like ALE/Pong-v5"))


def make_env(ec, n_envs: int, seed: int):
    """The vector environment of ``env.backend``."""
    if ec.kind != "atari":
        raise UserError(f"the onpolicy runner is for Atari (env.kind=atari); MuJoCo tasks use task=continuous, "
                        f"got env.kind={ec.kind}")
    if ec.backend not in BACKENDS:
        raise UserError(f"env.backend must be one of {', '.join(BACKENDS)}, got '{ec.backend}'")
    _check_id(ec.id)
    if ec.backend == "ale_vector":
        from ale_py.vector_env import AtariVectorEnv

        env = AtariVectorEnv(game=ale_game(ec.id), num_envs=n_envs, num_threads=ec.num_threads, noop_max=30,
                             frameskip=4, maxpool=True, stack_num=4, img_height=84, img_width=84,
                             grayscale=True, episodic_life=False, reward_clipping=False,
                             use_fire_reset=True, repeat_action_probability=0.0,
                             max_num_frames_per_episode=108_000, autoreset_mode="SameStep")
    else:
        from runners.atari_env import make_baselines_atari

        env = gym.vector.SyncVectorEnv(
            [lambda: make_baselines_atari(ec.id, ec.episodic_life, ec.clip_rewards) for _ in range(n_envs)],
            autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    env.reset(seed=seed)
    return env


def ended_games(info: dict) -> list[tuple[int, float, int]]:
    """(environment, unclipped score, length) of every whole game that ended at this vector step (baselines backend).
    With SAME_STEP autoreset an ended environment is reset within the step, so the step's top-level info is the
    reset's: the GameScore wrapper's report is in ``info["final_info"]`` (gymnasium 1.x)."""
    fin = info.get("final_info", {})
    return [(int(i), float(fin["game_score"][i]), int(fin["game_length"][i]))
            for i in np.nonzero(fin.get("_game_score", ()))[0]]


@torch.no_grad()
def record_episode(model, ec, path: Path, seed: int, device) -> dict:
    """One whole evaluation game (all lives, unclipped score, actions sampled from the policy) rendered to MP4."""
    from runners.atari_env import make_baselines_atari
    from runners.core import write_mp4

    env = make_baselines_atari(ec.id, episodic_life=False, clip_rewards=False, render_mode="rgb_array")
    obs, _ = env.reset(seed=seed + 999)
    stack = torch.zeros((1, 4, 84, 84), dtype=torch.uint8, device=device)
    frames, score, done = [], 0.0, False
    while not done:
        stack[0, :-1] = stack[0, 1:].clone()
        stack[0, -1] = torch.from_numpy(np.asarray(obs)).to(device)
        frames.append(env.unwrapped.render())
        obs, r, term, trunc, _ = env.step(int(model(stack)[0].sample()))
        score, done = score + float(r), term or trunc
    env.close()
    write_mp4(frames, path)
    return {"video/score": score, "video/frames": len(frames), "video/path": path.name}


# --------------------------------------------------------------------------- training
def kfac_kwargs(k) -> dict:
    """The ``algo.kfac`` config as ``algorithms.kfac.KFAC`` arguments."""
    return dict(momentum=k.momentum, stat_decay=k.stat_decay, damping=k.damping, kl_clip=k.kl_clip,
                eig_every=k.eig_every, eig_async=k.eig_async, stats_every=k.stats_every, stats_accum=k.stats_accum,
                cold_iters=k.cold_iters, cold_lr_scale=k.cold_lr_scale, cold_max_grad_norm=k.cold_max_grad_norm,
                eig_eps=k.eig_eps, bias_mode=k.bias_mode)


def build(cfg, env, device):
    model = AtariActorCritic(env.single_action_space.n, conv3_channels=cfg.model.conv3_channels,
                             hidden=cfg.model.hidden, channels_last=cfg.model.channels_last).to(device)
    ac = cfg.algo
    batch = ac.n_envs * ac.n_steps
    updates = cfg.train.total_timesteps // batch
    common = dict(steps_per_update=batch, vf_coef=ac.vf_coef, ent_coef=ac.ent_coef, lr_decay=ac.lr_decay,
                  vf_loss_scale=ac.vf_loss_scale)
    try:
        if ac.name == "a2c":
            algo = A2C(model, updates, lr=ac.lr, alpha=ac.alpha, eps=ac.eps, max_grad_norm=ac.max_grad_norm,
                       rmsprop=ac.rmsprop, **common)
        elif ac.name == "acktr":
            algo = ACKTR(model, updates, lr=ac.lr, vf_fisher_coef=ac.vf_fisher_coef, fisher_actions=ac.fisher_actions,
                         **kfac_kwargs(ac.kfac), **common)
        else:
            raise UserError(f"algo.name must be a2c or acktr for Atari, got '{ac.name}'")
    except ValueError as e:
        raise UserError(str(e)) from None
    return model, algo, updates


def train(cfg, run_dir: Path, device: torch.device, project_root: Path) -> dict:
    ec, ac, tc = cfg.env, cfg.algo, cfg.train
    N, T = ac.n_envs, ac.n_steps
    if tc.total_timesteps < N * T:
        raise UserError(f"train.total_timesteps={tc.total_timesteps} is less than one rollout ({N}x{T})")
    env = make_env(ec, N, cfg.seed)
    model, algo, n_updates = build(cfg, env, device)
    stack = ec.backend == "baselines"   # single frames from the env, stacked here (zeroed on done)

    ckpt = Checkpointer(run_dir, cfg.checkpoint.every)
    update, wandb_id = 0, None
    all_scores: list[tuple[int, float]] = []  # (frames, unclipped game score) of every finished game
    if cfg.resume:
        st = ckpt.load(map_location=device)
        if st is not None:
            model.load_state_dict(st["model"])
            algo.load_state_dict(st["algo"])
            update, wandb_id, all_scores = st["update"], st.get("wandb_id"), [tuple(x) for x in st["scores"]]
            set_rng_state(st["rng"])
        elif cfg.resume != "auto":
            raise UserError(f"resume: no checkpoint at {ckpt.path}")
    # environments are not checkpointed: a resumed run starts fresh games (documented)
    obs_np, info = env.reset(seed=cfg.seed + 1000 * update)
    lives = np.asarray(info.get("lives", np.zeros(N)))
    game_return, game_len = np.zeros(N), np.zeros(N, dtype=np.int64)
    frames = torch.zeros((N, 4, 84, 84), dtype=torch.uint8, device=device)

    def observe(o, done=None):
        o = torch.from_numpy(np.asarray(o)).to(device)
        if not stack:
            return o
        if done is not None and done.any():
            frames[torch.from_numpy(done).to(device)] = 0
        frames[:, :-1] = frames[:, 1:].clone()
        frames[:, -1] = o
        return frames.clone()

    # train.stop_at: end early (timesteps) while the lr schedule still runs over train.total_timesteps
    end = n_updates if tc.stop_at is None else min(n_updates, max(1, tc.stop_at // (N * T)))
    tracker = Tracker(cfg, run_dir, total_steps=end, start_step=update, wandb_id=wandb_id, ckpt=ckpt)
    steps_per_update = N * T
    roll = Rollout.allocate(T, N, (4, 84, 84), (), torch.uint8, device)
    obs = observe(obs_np)

    def snapshot():
        return {"model": model.state_dict(), "algo": algo.state_dict(), "update": update, "scores": all_scores,
                "wandb_id": tracker.wandb_id}

    def game_over(i: int, score: float, length: int, t: int):
        all_scores.append((int((update * steps_per_update + (t + 1) * N) * 4), float(score)))
        tracker.log({"episode/score": score, "episode/length": int(length), "frames": all_scores[-1][0]}, update)

    failed = True
    t0, u0 = time.perf_counter(), update
    try:
        with ckpt:
            while update < end:
                for t in range(T):
                    with torch.no_grad():
                        dist, value = model(obs)
                        action = dist.sample()
                    next_np, r, term, trunc, info = env.step(action.cpu().numpy())
                    done = np.logical_or(term, trunc)
                    if stack:   # the wrappers clip rewards, end episodes at a lost life and report whole games
                        for i, score, length in ended_games(info):
                            game_over(i, score, length, t)
                    else:
                        raw_r = np.asarray(r, dtype=np.float64)
                        game_return += raw_r
                        game_len += 1
                        r = np.sign(raw_r) if ec.clip_rewards else raw_r
                        new_lives = np.asarray(info["lives"])
                        for i in np.nonzero(done)[0]:
                            game_over(i, game_return[i], game_len[i], t)
                            game_return[i], game_len[i] = 0.0, 0
                        if ec.episodic_life:  # a life loss ends the learning episode, not the game
                            done = done | ((new_lives < lives) & ~done)
                        lives = new_lives
                    roll.obs[t] = obs
                    roll.actions[t] = action
                    roll.values[t] = value
                    roll.rewards[t] = torch.as_tensor(np.asarray(r), dtype=torch.float32, device=device)
                    roll.dones[t] = torch.as_tensor(done, dtype=torch.float32, device=device)
                    obs = observe(next_np, done)
                with torch.no_grad():
                    roll.last_value = model(obs)[1]
                ret = nstep_returns(roll.rewards, roll.dones, roll.last_value, ac.gamma)
                adv = ret - roll.values
                flat = lambda x: x.reshape(T * N, *x.shape[2:])  # noqa: E731
                try:
                    stats = algo.update(flat(roll.obs), flat(roll.actions), flat(ret), flat(adv))
                except EigendecompositionError as e:
                    raise UserError(f"{e}; {ckpt.describe()}") from None
                update += 1
                check_finite(stats["loss/total"], update, ckpt)
                if update % tc.log_every == 0 or update == end or update == u0 + 1:   # a first row at once
                    el = time.perf_counter() - t0
                    row = {k: float(v) for k, v in stats.items()}
                    row.update({"timesteps": update * steps_per_update, "frames": update * steps_per_update * 4,
                                "perf/steps_per_s": (update - u0) * steps_per_update / max(el, 1e-9)})
                    if all_scores:
                        row["score/mean100"] = float(np.mean([sc for _, sc in all_scores[-100:]]))
                    tracker.log(row, update)
                if ckpt.due(update) or update == end:
                    ckpt.save(snapshot(), update)
                if ckpt.should_stop():
                    ckpt.interrupt(snapshot(), update)
                tracker.advance(update)
        video = {}
        if ac.get("capture_video"):
            video = record_episode(model, ec, run_dir / "eval_episode.mp4", cfg.seed, device)
            tracker.log_video(run_dir / "eval_episode.mp4")
        last = [s for _, s in all_scores]
        summary = tracker.write_summary({**video,
            "score/mean100": float(np.mean(last[-100:])) if last else float("nan"),
            "score/mean10": float(np.mean(last[-10:])) if last else float("nan"),
            "score/best10_single": float(np.mean(sorted(last)[-10:])) if last else float("nan"),
            "episodes": len(last), "timesteps": update * steps_per_update,
            "frames": update * steps_per_update * 4, "algo": ac.name, "env": ec.id, "seed": cfg.seed,
            "lr_schedule_timesteps": n_updates * steps_per_update,
        })
        failed = False
        return summary
    finally:
        tracker.close(failed=failed)
        env.close()

"""Atari environments as OpenAI baselines' ``atari_wrappers.make_atari`` + ``wrap_deepmind`` build them (the
ACKTR / A2C reference), on gymnasium's ALE (``ALE/<Game>-v5`` with frame skip 1 and no sticky actions, i.e.
``NoFrameskip-v4``). Per environment, inner to outer:

    NoopReset(30) -> MaxAndSkip(4) -> GameScore -> EpisodicLife -> FireReset -> WarpFrame(84x84) -> ClipReward

- ``NoopReset``: 1..30 no-op steps after every real reset;
- ``MaxAndSkip``: each action repeated 4 frames, rewards summed, the max of the last two frames;
- ``GameScore`` (baselines' ``Monitor`` at the same place): the unclipped score and length of every whole game,
  in ``info["game_score"]`` / ``info["game_length"]`` when the game ends;
- ``EpisodicLife``: a lost life ends the learning episode; the "reset" that follows is one no-op step, not a
  reset of the game;
- ``FireReset``: on every reset, including the one after a lost life, FIRE then action 2 (games with FIRE);
- ``WarpFrame``: 84x84 grayscale with ``cv2.INTER_AREA`` (from ALE's grayscale screen; baselines converts its
  RGB screen with ``cv2.cvtColor``: the same luminance weights up to rounding);
- ``ClipReward``: sign of the reward (training only: scores come from ``GameScore``).

The 4-frame stack is kept by the runner and zeroed on every done (baselines' ``VecFrameStack``). Episodes are
capped at 108k frames (gymnasium ALE's default; baselines relied on gym's ``TimeLimit`` of its v4 ids).
"""
from __future__ import annotations

import cv2
import gymnasium as gym
import numpy as np


class NoopReset(gym.Wrapper):
    def __init__(self, env, noop_max: int = 30):
        super().__init__(env)
        self.noop_max = noop_max

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        for _ in range(int(self.np_random.integers(1, self.noop_max + 1))):
            obs, _, term, trunc, info = self.env.step(0)
            if term or trunc:
                obs, info = self.env.reset()
        return obs, info


class MaxAndSkip(gym.Wrapper):
    def __init__(self, env, skip: int = 4):
        super().__init__(env)
        self.skip = skip
        self.frames = np.zeros((2, *env.observation_space.shape), dtype=env.observation_space.dtype)

    def step(self, action):
        total, term, trunc, info = 0.0, False, False, {}
        for i in range(self.skip):
            obs, r, term, trunc, info = self.env.step(action)
            if i >= self.skip - 2:
                self.frames[i - (self.skip - 2)] = obs
            total += float(r)
            if term or trunc:
                break
        return self.frames.max(axis=0), total, term, trunc, info


class GameScore(gym.Wrapper):
    """Whole-game score and length (unclipped), reported when the game really ends."""

    def __init__(self, env):
        super().__init__(env)
        self.score, self.length = 0.0, 0

    def reset(self, **kwargs):
        self.score, self.length = 0.0, 0
        return self.env.reset(**kwargs)

    def step(self, action):
        obs, r, term, trunc, info = self.env.step(action)
        self.score += float(r)
        self.length += 1
        if term or trunc:
            info = dict(info, game_score=self.score, game_length=self.length)
        return obs, r, term, trunc, info


class EpisodicLife(gym.Wrapper):
    def __init__(self, env):
        super().__init__(env)
        self.lives, self.real_done = 0, True

    def step(self, action):
        obs, r, term, trunc, info = self.env.step(action)
        self.real_done = term or trunc
        lives = self.env.unwrapped.ale.lives()
        if 0 < lives < self.lives:
            term = True
        self.lives = lives
        return obs, r, term, trunc, info

    def reset(self, **kwargs):
        if self.real_done:
            obs, info = self.env.reset(**kwargs)
        else:   # after a lost life: one no-op step, the game goes on
            obs, _, term, trunc, info = self.env.step(0)
            if term or trunc:   # the no-op ended the game
                obs, info = self.env.reset(**kwargs)
        self.lives = self.env.unwrapped.ale.lives()
        return obs, info


class FireReset(gym.Wrapper):
    def reset(self, **kwargs):
        self.env.reset(**kwargs)
        obs, _, term, trunc, info = self.env.step(1)
        if term or trunc:
            self.env.reset(**kwargs)
        obs, _, term, trunc, info = self.env.step(2)
        if term or trunc:
            obs, info = self.env.reset(**kwargs)
        return obs, info


class WarpFrame(gym.ObservationWrapper):
    def __init__(self, env, size: int = 84):
        super().__init__(env)
        self.size = size
        self.observation_space = gym.spaces.Box(0, 255, (size, size), np.uint8)

    def observation(self, obs):
        return cv2.resize(obs, (self.size, self.size), interpolation=cv2.INTER_AREA)


class ClipReward(gym.RewardWrapper):
    def reward(self, r):
        return float(np.sign(r))


def make_baselines_atari(env_id: str, episodic_life: bool = True, clip_rewards: bool = True,
                         max_frames: int = 108_000, render_mode: str | None = None) -> gym.Env:
    import ale_py

    gym.register_envs(ale_py)
    env = gym.make(env_id, frameskip=1, repeat_action_probability=0.0, full_action_space=False,
                   obs_type="grayscale", max_num_frames_per_episode=max_frames, render_mode=render_mode)
    env = GameScore(MaxAndSkip(NoopReset(env, 30), 4))
    if episodic_life:
        env = EpisodicLife(env)
    if "FIRE" in env.unwrapped.get_action_meanings():
        env = FireReset(env)
    env = WarpFrame(env, 84)
    return ClipReward(env) if clip_rewards else env

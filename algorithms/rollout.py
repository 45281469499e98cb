"""Rollout storage and n-step returns shared by A2C and ACKTR (Atari).

A rollout holds ``n_steps`` transitions from ``n_envs`` environments, tensors shaped (T, N, ...).
``dones[t]`` marks that the (learning) episode ended *at* step t, so the value of ``obs[t + 1]`` is not
bootstrapped into step t (baselines: a lost life or a game's end, time limits included).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Rollout:
    obs: torch.Tensor        # (T, N, *obs_shape)
    actions: torch.Tensor    # (T, N) or (T, N, act_dim)
    rewards: torch.Tensor    # (T, N), clipped for training
    dones: torch.Tensor      # (T, N) float: 1 where the episode ended at this step
    values: torch.Tensor     # (T, N) value estimates at obs[t]
    last_value: torch.Tensor  # (N,) value of the observation after the last step

    @staticmethod
    def allocate(n_steps: int, n_envs: int, obs_shape, action_shape, obs_dtype, device) -> "Rollout":
        z = dict(device=device)
        return Rollout(
            obs=torch.zeros((n_steps, n_envs, *obs_shape), dtype=obs_dtype, **z),
            actions=torch.zeros((n_steps, n_envs, *action_shape),
                                dtype=torch.long if not action_shape else torch.float32, **z),
            rewards=torch.zeros((n_steps, n_envs), **z),
            dones=torch.zeros((n_steps, n_envs), **z),
            values=torch.zeros((n_steps, n_envs), **z),
            last_value=torch.zeros(n_envs, **z),
        )


def nstep_returns(rewards, dones, last_value, gamma: float) -> torch.Tensor:
    """R_t = r_t + gamma * (1 - d_t) * R_{t+1}, with R_T = V(s_T): A2C's n-step returns."""
    T = rewards.shape[0]
    out = torch.empty_like(rewards)
    ret = last_value
    for t in range(T - 1, -1, -1):
        ret = rewards[t] + gamma * (1.0 - dones[t]) * ret
        out[t] = ret
    return out

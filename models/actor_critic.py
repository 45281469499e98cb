"""Actor-critic networks of the ACKTR paper (Wu et al. 2017) and its A2C baseline.

- ``AtariActorCritic``: the Nature DQN torso (conv 32-8x8/4, 64-4x4/2, 64-3x3/1, fc 512) shared by a
  categorical policy head and a value head; ``conv3_channels=32`` gives the smaller 32-64-32-512
  variant of baselines' 2017 ACKTR release (acktr/policies.py; master uses the Nature CNN). Inputs are uint8
  frames (N, 4, 84, 84).
  ``channels_last=True`` keeps weights and activations in NHWC, which oneDNN (CPU) and cuDNN run
  faster (measured 1.7x for forward + backward at batch 320 on a 2-core Xeon); the math is the same.
  Orthogonal initialisation as OpenAI baselines master (gain sqrt(2) for hidden layers, 0.01 for the policy output,
  1 for the value output; the 2017 ACKTR release used gain 1 for the policy output too).
- ``GaussianMlpPolicy`` and ``ValueMlp``: baselines' acktr_cont (continuous control) policy and value function,
  separate networks with normc initialisation.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.distributions import Categorical, Independent, Normal


def ortho(layer: nn.Module, gain: float) -> nn.Module:
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


class AtariActorCritic(nn.Module):
    def __init__(self, n_actions: int, in_channels: int = 4, conv3_channels: int = 64, hidden: int = 512,
                 channels_last: bool = False):
        super().__init__()
        self.channels_last = channels_last
        g = math.sqrt(2)
        self.torso = nn.Sequential(
            ortho(nn.Conv2d(in_channels, 32, 8, stride=4), g), nn.ReLU(),
            ortho(nn.Conv2d(32, 64, 4, stride=2), g), nn.ReLU(),
            ortho(nn.Conv2d(64, conv3_channels, 3, stride=1), g), nn.ReLU(),
            nn.Flatten(),
            ortho(nn.Linear(conv3_channels * 7 * 7, hidden), g), nn.ReLU(),
        )
        self.pi = ortho(nn.Linear(hidden, n_actions), 0.01)
        self.v = ortho(nn.Linear(hidden, 1), 1.0)
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def forward(self, obs: torch.Tensor):
        if self.channels_last:
            obs = obs.contiguous(memory_format=torch.channels_last)
        h = self.torso(obs.float() / 255.0)
        return Categorical(logits=self.pi(h)), self.v(h).squeeze(-1)


def normc(layer: nn.Linear, std: float) -> nn.Linear:
    """baselines' ``normc_initializer``: Gaussian weights, each output unit's incoming weights scaled to norm
    ``std``; zero bias."""
    with torch.no_grad():
        w = torch.randn_like(layer.weight)
        layer.weight.copy_(w * std / w.norm(dim=1, keepdim=True))
        layer.bias.zero_()
    return layer


class GaussianMlpPolicy(nn.Module):
    """baselines' acktr_cont policy: tanh 64-64 on the input (there [obs, previous obs]) -> the action mean
    (normc 1.0, 1.0, 0.1), and a state-independent log standard deviation starting at ``log_std_init``."""

    def __init__(self, in_dim: int, act_dim: int, hidden: int = 64, log_std_init: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(normc(nn.Linear(in_dim, hidden), 1.0), nn.Tanh(),
                                 normc(nn.Linear(hidden, hidden), 1.0), nn.Tanh(),
                                 normc(nn.Linear(hidden, act_dim), 0.1))
        self.log_std = nn.Parameter(torch.full((act_dim,), float(log_std_init)))

    def forward(self, x: torch.Tensor) -> Independent:
        mean = self.net(x)
        return Independent(Normal(mean, self.log_std.exp().expand_as(mean)), 1)


class ValueMlp(nn.Module):
    """baselines' acktr_cont value function: ELU 64-64 -> 1, normc 1.0 everywhere (``activation="tanh"`` is an
    option). Its input is a feature vector built by the runner (there [obs, previous obs, action mean, action std,
    t/10, 1])."""

    def __init__(self, in_dim: int, hidden: int = 64, activation: str = "elu"):
        super().__init__()
        act = {"elu": nn.ELU, "tanh": nn.Tanh}[activation]
        self.net = nn.Sequential(normc(nn.Linear(in_dim, hidden), 1.0), act(),
                                 normc(nn.Linear(hidden, hidden), 1.0), act(),
                                 normc(nn.Linear(hidden, 1), 1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)

"""ACKTR: actor-critic with K-FAC natural gradients and a KL trust region (Wu et al. 2017), Atari.

The loss is A2C's (``algorithms.a2c.actor_critic_loss``); the step is K-FAC's (``algorithms.kfac``). Factor
statistics come from a separate backward pass of the *true* Fisher loss, as OpenAI baselines' ``acktr.py``:

    pg_fisher = mean(log p(a))                         (a: the rollout's actions, sampled from this policy;
                                                        ``fisher_actions="sample"`` draws fresh ones instead)
    vf_fisher = -vf_fisher_coef * mean((v - stop_grad(v + N(0, 1)))^2)   (unit noise, no 1/2)
    fisher    = pg_fisher + vf_fisher                  (vf_coef is not applied)

For a categorical head the expected G of the logits is diag(p) - p p^T; the value head's G is 4 E[dv dv^T]
(per example 2 n with n ~ N(0, 1)). Learning rate 0.25 decayed linearly in agent steps, KL clip 0.001, a cold
phase of momentum SGD (see ``algorithms.kfac``). Continuous control lives in ``algorithms.acktr_cont``.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from algorithms.a2c import OnPolicyAlgo, actor_critic_loss
from algorithms.kfac import KFAC

FISHER_ACTIONS = ("rollout", "sample")


def policy_fisher_loss(dist, actions: torch.Tensor | None = None) -> torch.Tensor:
    """mean log p(a) of actions drawn from the policy itself (the rollout's, or fresh samples when None)."""
    a = dist.sample() if actions is None else actions
    return dist.log_prob(a).mean()


def value_fisher_loss(values, coef: float) -> torch.Tensor:
    target = (values + torch.randn_like(values)).detach()
    return -coef * (values - target).pow(2).mean()


def fisher_loss(dist, values, vf_fisher_coef: float, actions: torch.Tensor | None = None) -> torch.Tensor:
    return policy_fisher_loss(dist, actions) + value_fisher_loss(values, vf_fisher_coef)


class ACKTR(OnPolicyAlgo):
    def __init__(self, model: nn.Module, total_updates: int, steps_per_update: int = 1, lr: float = 0.25,
                 vf_coef: float = 0.5, ent_coef: float = 0.01, vf_fisher_coef: float = 1.0, vf_loss_scale: float = 1.0,
                 lr_decay: bool = True, fisher_actions: str = "rollout", **kfac_kwargs):
        if fisher_actions not in FISHER_ACTIONS:
            raise ValueError(f"fisher_actions must be one of {FISHER_ACTIONS}, got {fisher_actions!r}")
        self.model, self.total_updates, self.steps_per_update = model, total_updates, steps_per_update
        self.lr0, self.lr_decay = lr, lr_decay
        self.vf_coef, self.ent_coef, self.vf_fisher_coef, self.vf_loss_scale = vf_coef, ent_coef, vf_fisher_coef, vf_loss_scale
        self.fisher_actions = fisher_actions
        self.opt = KFAC(model, lr=lr, **kfac_kwargs)
        self.updates = 0

    def update(self, obs, actions, returns, advantages) -> dict:
        lr = self.set_lr()
        stats = self.opt.wants_stats()
        with self.opt.capture() if stats else contextlib.nullcontext():
            dist, values = self.model(obs)
            if stats:
                a = actions if self.fisher_actions == "rollout" else None
                self.opt.fisher_backward(fisher_loss(dist, values, self.vf_fisher_coef, a))
        loss, info = actor_critic_loss(dist, values, actions, returns, advantages, self.vf_coef, self.ent_coef,
                                       self.vf_loss_scale)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.updates += 1
        info.update(lr=lr, **{"kfac/kl_quadratic": self.opt.last["kl_predicted"],
                              "kfac/trust_scale": self.opt.last["trust_scale"], "kfac/cold": self.opt.last["cold"]})
        info["loss/total"] = loss.detach()
        return info

"""A2C (synchronous advantage actor-critic), the ACKTR paper's baseline.

Loss as OpenAI baselines: policy gradient with advantages, 0.5 * squared value error weighted by
``vf_coef`` (0.5), minus ``ent_coef`` (0.01) times the entropy. RMSprop (lr 7e-4, alpha 0.99,
eps 1e-5), global gradient-norm clipping 0.5, learning rate decayed linearly to 0.
"""
from __future__ import annotations

import torch
from torch import nn


def actor_critic_loss(dist, values, actions, returns, advantages, vf_coef: float, ent_coef: float):
    logp = dist.log_prob(actions)
    pg_loss = -(advantages.detach() * logp).mean()
    vf_loss = 0.5 * (returns - values).pow(2).mean()
    entropy = dist.entropy().mean()
    loss = pg_loss + vf_coef * vf_loss - ent_coef * entropy
    return loss, {"loss/policy": pg_loss.detach(), "loss/value": vf_loss.detach(), "entropy": entropy.detach()}


class OnPolicyAlgo:
    """What A2C and ACKTR share: a learning rate decayed linearly to 0 and the checkpoint state."""

    opt: torch.optim.Optimizer
    lr0: float
    lr_decay: bool
    total_updates: int
    updates: int

    def set_lr(self) -> float:
        frac = 1.0 - self.updates / self.total_updates if self.lr_decay else 1.0
        lr = self.lr0 * max(frac, 0.0)
        for g in self.opt.param_groups:
            g["lr"] = lr
        return lr

    def state_dict(self):
        return {"opt": self.opt.state_dict(), "updates": self.updates}

    def load_state_dict(self, sd):
        self.opt.load_state_dict(sd["opt"])
        self.updates = sd["updates"]


class A2C(OnPolicyAlgo):
    def __init__(self, model: nn.Module, total_updates: int, lr: float = 7e-4, alpha: float = 0.99,
                 eps: float = 1e-5, vf_coef: float = 0.5, ent_coef: float = 0.01, max_grad_norm: float = 0.5,
                 lr_decay: bool = True):
        self.model, self.total_updates, self.lr0, self.lr_decay = model, total_updates, lr, lr_decay
        self.vf_coef, self.ent_coef, self.max_grad_norm = vf_coef, ent_coef, max_grad_norm
        self.opt = torch.optim.RMSprop(model.parameters(), lr=lr, alpha=alpha, eps=eps)
        self.updates = 0

    def update(self, obs, actions, returns, advantages) -> dict:
        lr = self.set_lr()
        dist, values = self.model(obs)
        loss, info = actor_critic_loss(dist, values, actions, returns, advantages, self.vf_coef, self.ent_coef)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        info["grad_norm"] = nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
        self.opt.step()
        self.updates += 1
        info["lr"] = lr
        info["loss/total"] = loss.detach()
        return info

"""A2C (synchronous advantage actor-critic), the ACKTR paper's baseline, as OpenAI baselines' ``a2c.py``.

Loss: policy gradient with advantages, ``vf_coef`` (0.5) times the squared value error (baselines master: mean
squared error, no 1/2; ``vf_loss_scale=0.5`` gives the 2017 release's 1/2), minus ``ent_coef`` (0.01) times the
entropy. TensorFlow's RMSprop (lr 7e-4, decay 0.99, eps 1e-5 inside the square root, accumulator starting at 1:
``RMSpropTF``; ``rmsprop="torch"`` uses torch's, eps outside, accumulator from 0), global gradient-norm clipping
0.5, learning rate decayed linearly in agent steps to 0.
"""
from __future__ import annotations

import torch
from torch import nn


def actor_critic_loss(dist, values, actions, returns, advantages, vf_coef: float, ent_coef: float,
                      vf_loss_scale: float = 1.0):
    logp = dist.log_prob(actions)
    pg_loss = -(advantages.detach() * logp).mean()
    vf_loss = vf_loss_scale * (returns - values).pow(2).mean()
    entropy = dist.entropy().mean()
    loss = pg_loss + vf_coef * vf_loss - ent_coef * entropy
    return loss, {"loss/policy": pg_loss.detach(), "loss/value": vf_loss.detach(), "entropy": entropy.detach()}


class RMSpropTF(torch.optim.Optimizer):
    """TensorFlow 1's RMSProp (what baselines' A2C ran): ms <- rho ms + (1 - rho) g^2 with ms starting at 1,
    p <- p - lr g / sqrt(ms + eps). torch's RMSprop starts ms at 0 and divides by sqrt(ms) + eps, which makes
    its first steps ~10x larger. (stable-baselines3 ships the same fix as ``RMSpropTFLike``.)"""

    def __init__(self, params, lr: float = 7e-4, alpha: float = 0.99, eps: float = 1e-5):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        for g in self.param_groups:
            params = [p for p in g["params"] if p.grad is not None]
            for p in params:
                if "square_avg" not in self.state[p]:
                    self.state[p]["square_avg"] = torch.ones_like(p)
            sq = [self.state[p]["square_avg"] for p in params]
            grads = [p.grad for p in params]
            torch._foreach_mul_(sq, g["alpha"])
            torch._foreach_addcmul_(sq, grads, grads, value=1 - g["alpha"])
            denom = torch._foreach_sqrt(torch._foreach_add(sq, g["eps"]))
            torch._foreach_addcdiv_(params, grads, denom, value=-g["lr"])


class OnPolicyAlgo:
    """What A2C and ACKTR share: the learning rate decayed linearly in agent steps, and the checkpoint state.

    baselines' Scheduler advances once per agent step and is read after each advance, so update k (1-based) of
    a run of T agent steps in batches of n uses lr0 * (1 - (k n - 1) / T)."""

    opt: torch.optim.Optimizer
    lr0: float
    lr_decay: bool
    total_updates: int
    steps_per_update: int
    updates: int

    def lr_now(self) -> float:
        if not self.lr_decay:
            return self.lr0
        total = self.total_updates * self.steps_per_update
        return self.lr0 * max(1.0 - ((self.updates + 1) * self.steps_per_update - 1) / total, 0.0)

    def set_lr(self) -> float:
        lr = self.lr_now()
        for g in self.opt.param_groups:
            g["lr"] = lr
        return lr

    def state_dict(self):
        return {"opt": self.opt.state_dict(), "updates": self.updates}

    def load_state_dict(self, sd):
        self.opt.load_state_dict(sd["opt"])
        self.updates = sd["updates"]


RMSPROPS = ("tf", "torch")


class A2C(OnPolicyAlgo):
    def __init__(self, model: nn.Module, total_updates: int, steps_per_update: int = 1, lr: float = 7e-4,
                 alpha: float = 0.99, eps: float = 1e-5, vf_coef: float = 0.5, ent_coef: float = 0.01,
                 max_grad_norm: float = 0.5, lr_decay: bool = True, vf_loss_scale: float = 1.0, rmsprop: str = "tf"):
        if rmsprop not in RMSPROPS:
            raise ValueError(f"rmsprop must be one of {RMSPROPS}, got {rmsprop!r}")
        self.model, self.total_updates, self.steps_per_update = model, total_updates, steps_per_update
        self.lr0, self.lr_decay = lr, lr_decay
        self.vf_coef, self.ent_coef, self.max_grad_norm, self.vf_loss_scale = vf_coef, ent_coef, max_grad_norm, vf_loss_scale
        opt = RMSpropTF if rmsprop == "tf" else torch.optim.RMSprop
        self.opt = opt(model.parameters(), lr=lr, alpha=alpha, eps=eps)
        self.updates = 0

    def update(self, obs, actions, returns, advantages) -> dict:
        lr = self.set_lr()
        dist, values = self.model(obs)
        loss, info = actor_critic_loss(dist, values, actions, returns, advantages, self.vf_coef, self.ent_coef,
                                       self.vf_loss_scale)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        info["grad_norm"] = nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
        self.opt.step()
        self.updates += 1
        info["lr"] = lr
        info["loss/total"] = loss.detach()
        return info

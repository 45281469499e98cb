"""ACKTR: actor-critic with K-FAC natural gradients and a KL trust region (Wu et al. 2017).

Same loss as A2C (``algorithms.a2c.actor_critic_loss``); the step is K-FAC's. Factor statistics
come from a separate backward pass of the *true* Fisher loss: the log-probability of actions freshly
sampled from the current policy, plus (``vf_fisher_coef``) the squared error of the value output
against a Gaussian sample around it (value + unit noise), i.e. the Fisher of a unit-variance
Gaussian value model. Learning rate 0.25 decayed linearly to 0, KL clip 0.001 (Atari).

Continuous control (as the paper): ``critic_lr`` gives the critic (``model.value``) its own K-FAC
and trust region and the actor (``model.policy`` + log-std) another. With one joint K-FAC the value
term dominates g.F^-1 g and the trust region starves the policy (measured on Hopper).
``target_kl`` (as baselines' acktr_cont) adapts the actor's step size to the measured KL between
the old and new policy after each update: /1.5 above twice the target, x1.5 below half of it.
``critic_iters`` > 1 fits the separate critic with that many K-FAC steps on each batch (baselines'
value function takes 25), reusing the factor statistics of the batch.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from algorithms.a2c import OnPolicyAlgo, actor_critic_loss
from algorithms.kfac import KFAC


def policy_fisher_loss(dist) -> torch.Tensor:
    return -dist.log_prob(dist.sample()).mean()


def value_fisher_loss(values, coef: float) -> torch.Tensor:
    target = (values + torch.randn_like(values)).detach()
    return -coef * (values - target).pow(2).mean()


def fisher_loss(dist, values, vf_fisher_coef: float) -> torch.Tensor:
    return policy_fisher_loss(dist) + value_fisher_loss(values, vf_fisher_coef)


class ACKTR(OnPolicyAlgo):
    def __init__(self, model: nn.Module, total_updates: int, lr: float = 0.25, vf_coef: float = 0.5,
                 ent_coef: float = 0.01, vf_fisher_coef: float = 1.0, max_grad_norm: float | None = None,
                 lr_decay: bool = True, target_kl: float | None = None, critic_lr: float | None = None,
                 critic_kl_clip: float | None = None, critic_iters: int = 1, **kfac_kwargs):
        self.model, self.total_updates, self.lr0, self.lr_decay = model, total_updates, lr, lr_decay
        self.vf_coef, self.ent_coef, self.vf_fisher_coef = vf_coef, ent_coef, vf_fisher_coef
        self.max_grad_norm = max_grad_norm
        self.critic_opt, self.critic_iters = None, critic_iters
        if critic_iters < 1:
            raise ValueError(f"critic_iters must be >= 1, got {critic_iters}")
        if critic_lr is not None:
            if not (hasattr(model, "policy") and hasattr(model, "value")):
                raise ValueError("a separate critic needs a model with .policy and .value networks")
            extra = [model.log_std] if hasattr(model, "log_std") else []
            self.opt = KFAC(model.policy, lr=lr, extra_params=extra, **kfac_kwargs)
            critic_kwargs = dict(kfac_kwargs)
            if critic_kl_clip is not None:
                critic_kwargs["kl_clip"] = critic_kl_clip
            self.critic_opt = KFAC(model.value, lr=critic_lr, **critic_kwargs)
        else:
            self.opt = KFAC(model, lr=lr, **kfac_kwargs)
        self.updates = 0
        self.target_kl, self.lr_scale = target_kl, 1.0

    def optimizers(self) -> list[KFAC]:
        return [self.opt] + ([self.critic_opt] if self.critic_opt is not None else [])

    def set_lr(self) -> float:
        lr = super().set_lr() * self.lr_scale
        for g in self.opt.param_groups:
            g["lr"] = lr
        return lr

    def update(self, obs, actions, returns, advantages) -> dict:
        lr = self.set_lr()
        stats = self.opt.wants_stats()
        with contextlib.ExitStack() as stack:
            if stats:
                for o in self.optimizers():
                    stack.enter_context(o.capture())
            dist, values = self.model(obs)
            if stats and self.critic_opt is None:
                self.opt.fisher_backward(fisher_loss(dist, values, self.vf_fisher_coef))
            elif stats:
                self.opt.fisher_backward(policy_fisher_loss(dist))
                self.critic_opt.fisher_backward(value_fisher_loss(values, self.vf_fisher_coef))
        loss, info = actor_critic_loss(dist, values, actions, returns, advantages, self.vf_coef, self.ent_coef)
        for o in self.optimizers():
            o.zero_grad(set_to_none=True)
        loss.backward()
        if self.max_grad_norm:
            info["grad_norm"] = nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
        for o in self.optimizers():
            o.step()
        if self.critic_opt is not None and self.critic_iters > 1:
            for _ in range(self.critic_iters - 1):
                self.critic_opt.zero_grad(set_to_none=True)
                vf = 0.5 * (returns - self.model.value(obs).squeeze(-1)).pow(2).mean()
                (self.vf_coef * vf).backward()
                self.critic_opt.step()
            info["loss/value_last_iter"] = vf.detach()    # the critic's loss before its last step
        self.updates += 1
        if self.target_kl:
            with torch.no_grad():
                kl = torch.distributions.kl_divergence(dist, self.model(obs)[0]).mean().item()
            if kl > 2 * self.target_kl:
                self.lr_scale = max(self.lr_scale / 1.5, 1e-3)
            elif kl < 0.5 * self.target_kl:
                self.lr_scale = min(self.lr_scale * 1.5, 1e3)
            info["kl_measured"] = kl
        info.update(lr=lr, **{"kfac/kl": self.opt.last["kl_predicted"],
                              "kfac/trust_scale": self.opt.last["trust_scale"]})
        if self.critic_opt is not None:
            info["kfac/critic_trust_scale"] = self.critic_opt.last["trust_scale"]
        info["loss/total"] = loss.detach()
        return info

    def state_dict(self):
        sd = {**super().state_dict(), "lr_scale": self.lr_scale}
        if self.critic_opt is not None:
            sd["critic_opt"] = self.critic_opt.state_dict()
        return sd

    def load_state_dict(self, sd):
        super().load_state_dict(sd)
        self.lr_scale = sd.get("lr_scale", 1.0)
        if self.critic_opt is not None:
            self.critic_opt.load_state_dict(sd["critic_opt"])

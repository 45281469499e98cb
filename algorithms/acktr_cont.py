"""ACKTR for continuous control as OpenAI baselines' ``old_acktr_cont`` branch (``acktr_cont.py``,
``value_functions.py``, ``policies.py``): a Gaussian policy and a separate value function, each with its own K-FAC.

Policy (one update per batch of whole episodes): loss -mean(A * log pi(a|s)) with standardised GAE advantages, no
entropy bonus; K-FAC with biases as homogeneous coordinates, the log-std as a G-only block of its batch gradient
(``algorithms.kfac``), damping 0.01 (+3e-4 on the weight blocks), statistics decay 0.99, eigendecompositions every 2
updates in the background, a trust region of 0.01, 2 cold momentum-SGD steps at 0.1 x the step size; the step size
(0.03 at first) is adapted after each update to the measured KL(old || new) on the batch: /1.5 above twice the
target 0.002, x1.5 below half of it, within [1e-8, 1].

Value function (fitted first, 25 full-batch K-FAC steps per batch): loss mean((V - R)^2) + 3e-4 sum 1/2 |W|^2 on
Monte-Carlo returns; its Fisher loss mean((V - stop_grad(V + N(0,1)))^2); K-FAC lr 0.001, damping 0.1 (+3e-4),
statistics decay 0.95 (plain average of the first 50), eigendecompositions every 2, 51 cold steps at 1e-4, trust
region 0.3.

``ContinuousA2C`` is the same pipeline with every K-FAC step replaced by a first-order one (Adam), keeping the same
KL-adaptive step size for the policy and the same 25 value-function steps: the first-order counterpart ACKTR is
compared against. (The paper's continuous-control A2C settings are not in its code or text that we could read;
this construction is ours and is labelled so in the results.)
"""
from __future__ import annotations

import torch
from torch import nn

from algorithms.kfac import KFAC


def std_from_log_std(grad: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """dL/dstd from dL/dlog_std: baselines' K-FAC takes the log-std block's statistics from the gradient w.r.t.
    the std (the op after ``exp``)."""
    return grad / log_std.exp()


class _Base:
    policy: nn.Module
    vf: nn.Module

    def __init__(self, policy: nn.Module, vf: nn.Module, target_kl: float, min_stepsize: float, max_stepsize: float,
                 vf_iters: int, vf_l2: float):
        self.policy, self.vf = policy, vf
        self.target_kl, self.min_stepsize, self.max_stepsize = target_kl, min_stepsize, max_stepsize
        self.vf_iters, self.vf_l2 = vf_iters, vf_l2

    def vf_loss(self, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        mse = (self.vf(X) - y).pow(2).mean()
        l2 = sum(0.5 * m.weight.pow(2).sum() for m in self.vf.modules() if isinstance(m, nn.Linear))
        return mse + self.vf_l2 * l2

    def adapt_stepsize(self, old_dist, obs: torch.Tensor) -> float:
        """baselines' acktr_cont: KL(old || new) on the batch after the update sets the next step size."""
        with torch.no_grad():
            kl = torch.distributions.kl_divergence(old_dist, self.policy(obs)).mean().item()
        if kl > 2 * self.target_kl:
            self.stepsize = max(self.min_stepsize, self.stepsize / 1.5)
        elif kl < 0.5 * self.target_kl:
            self.stepsize = min(self.max_stepsize, self.stepsize * 1.5)
        return kl

    def update(self, obs, actions, advantages, vf_x, vf_targets) -> dict:
        """One batch: fit the value function (25 steps), then one policy step with the KL-adapted step size."""
        info = self.fit_value(vf_x, vf_targets)
        with torch.no_grad():
            d = self.policy(obs)
            old = torch.distributions.Independent(torch.distributions.Normal(d.mean.clone(), d.stddev.clone()), 1)
        info.update(self.policy_step(obs, actions, advantages))
        info["kl_measured"] = self.adapt_stepsize(old, obs)
        info["stepsize"] = self.stepsize
        return info


class ContinuousACKTR(_Base):
    def __init__(self, policy: nn.Module, vf: nn.Module, lr: float = 0.03, target_kl: float = 0.002,
                 min_stepsize: float = 1e-8, max_stepsize: float = 1.0, logstd_kfac: bool = True,
                 vf_iters: int = 25, vf_l2: float = 3e-4, vf_fisher_coef: float = 1.0,
                 policy_kfac: dict | None = None, vf_kfac: dict | None = None):
        super().__init__(policy, vf, target_kl, min_stepsize, max_stepsize, vf_iters, vf_l2)
        self.stepsize, self.vf_fisher_coef = lr, vf_fisher_coef
        pk = dict(bias_mode="homogeneous", **(policy_kfac or {}))
        g_blocks = [(policy.log_std, std_from_log_std)] if logstd_kfac else []
        extra = [] if logstd_kfac else [policy.log_std]   # the deviation: a plain momentum step for the log-std
        self.popt = KFAC(policy.net, lr=lr, g_blocks=g_blocks, extra_params=extra, **pk)
        vk = dict(bias_mode="homogeneous", **(vf_kfac or {}))
        self.vf_lr = vk.pop("lr", 0.001)
        self.vopt = KFAC(vf, lr=self.vf_lr, **vk)

    def fit_value(self, X, y) -> dict:
        for _ in range(self.vf_iters):
            with self.vopt.capture():
                v = self.vf(X)
                self.vopt.fisher_backward(self.vf_fisher_coef * (v - (v + torch.randn_like(v)).detach()).pow(2).mean())
            self.vopt.zero_grad(set_to_none=True)
            loss = self.vf_loss(X, y)
            loss.backward()
            self.vopt.step()
        return {"loss/value": loss.detach(), "kfac/vf_trust_scale": self.vopt.last["trust_scale"]}

    def policy_step(self, obs, actions, advantages) -> dict:
        for g in self.popt.param_groups:
            g["lr"] = self.stepsize
        with self.popt.capture():
            dist = self.policy(obs)
            self.popt.fisher_backward(-dist.log_prob(actions).mean())
        loss = -(advantages * dist.log_prob(actions)).mean()
        self.popt.zero_grad(set_to_none=True)
        loss.backward()
        self.popt.step()
        return {"loss/policy": loss.detach(), "loss/total": loss.detach(), "entropy": dist.entropy().mean().detach(),
                "kfac/kl_quadratic": self.popt.last["kl_predicted"], "kfac/trust_scale": self.popt.last["trust_scale"],
                "policy/std_mean": self.policy.log_std.exp().mean().detach()}

    def state_dict(self):
        return {"popt": self.popt.state_dict(), "vopt": self.vopt.state_dict(), "stepsize": self.stepsize}

    def load_state_dict(self, sd):
        self.popt.load_state_dict(sd["popt"])
        self.vopt.load_state_dict(sd["vopt"])
        self.stepsize = sd["stepsize"]


class ContinuousA2C(_Base):
    def __init__(self, policy: nn.Module, vf: nn.Module, lr: float = 3e-4, target_kl: float = 0.002,
                 min_stepsize: float = 1e-8, max_stepsize: float = 1.0, vf_lr: float = 1e-3, vf_iters: int = 25,
                 vf_l2: float = 3e-4):
        super().__init__(policy, vf, target_kl, min_stepsize, max_stepsize, vf_iters, vf_l2)
        self.stepsize = lr
        self.popt = torch.optim.Adam(policy.parameters(), lr=lr)
        self.vopt = torch.optim.Adam(vf.parameters(), lr=vf_lr)

    def fit_value(self, X, y) -> dict:
        for _ in range(self.vf_iters):
            self.vopt.zero_grad(set_to_none=True)
            loss = self.vf_loss(X, y)
            loss.backward()
            self.vopt.step()
        return {"loss/value": loss.detach()}

    def policy_step(self, obs, actions, advantages) -> dict:
        for g in self.popt.param_groups:
            g["lr"] = self.stepsize
        dist = self.policy(obs)
        loss = -(advantages * dist.log_prob(actions)).mean()
        self.popt.zero_grad(set_to_none=True)
        loss.backward()
        self.popt.step()
        return {"loss/policy": loss.detach(), "loss/total": loss.detach(), "entropy": dist.entropy().mean().detach(),
                "policy/std_mean": self.policy.log_std.exp().mean().detach()}

    def state_dict(self):
        return {"popt": self.popt.state_dict(), "vopt": self.vopt.state_dict(), "stepsize": self.stepsize}

    def load_state_dict(self, sd):
        self.popt.load_state_dict(sd["popt"])
        self.vopt.load_state_dict(sd["vopt"])
        self.stepsize = sd["stepsize"]

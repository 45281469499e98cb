"""ACKTR's and A2C's updates written out by hand, in float64: the Fisher losses' per-example gradients (seeded, so
the noise and the sampled actions are known), one whole ACKTR update against K-FAC driven by hand, one whole A2C
update against a written-out loss, clipping and TensorFlow RMSProp step, and the defaults pinned to the reference
(OpenAI baselines' run_atari / a2c.py / acktr.py / kfac.py, as read in results/acktr/README.md)."""
import inspect

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Categorical

from algorithms.a2c import A2C, RMSpropTF, actor_critic_loss
from algorithms.acktr import ACKTR, fisher_loss, policy_fisher_loss, value_fisher_loss
from algorithms.kfac import KFAC

D = torch.float64


class TinyActorCritic(nn.Module):
    def __init__(self):
        super().__init__()
        self.torso, self.pi, self.v = nn.Linear(3, 5), nn.Linear(5, 4), nn.Linear(5, 1)

    def forward(self, obs):
        h = torch.tanh(self.torso(obs))
        return Categorical(logits=self.pi(h)), self.v(h).squeeze(-1)


def _through_checkpoint(state):
    """state as a resumed run reads it: written with torch.save, loaded with weights_only=True."""
    import io

    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def _batch(B=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, 3, dtype=D, generator=g), torch.randint(0, 4, (B,), generator=g),
            torch.randn(B, dtype=D, generator=g), torch.randn(B, dtype=D, generator=g))


def _model(seed=1):
    torch.manual_seed(seed)
    return TinyActorCritic().to(D)


def test_fisher_loss_gradients_per_example():
    """value: d/dv of -c mean((v - stop_grad(v + n))^2) = 2 c n / B; policy: d/dlogits of mean log p(a) =
    (onehot(a) - p) / B, with the rollout's actions or fresh samples; the total is their sum (sample, then noise)."""
    B = 7
    v = torch.randn(B, dtype=D, requires_grad=True)
    torch.manual_seed(11)
    loss = value_fisher_loss(v, 0.7)
    torch.manual_seed(11)
    n = torch.randn(B, dtype=D)
    torch.testing.assert_close(torch.autograd.grad(loss, v)[0], 2 * 0.7 * n / B, rtol=1e-13, atol=0)
    torch.testing.assert_close(loss.detach(), -0.7 * (n * n).mean(), rtol=1e-13, atol=0)

    logits = torch.randn(B, 4, dtype=D, requires_grad=True)
    p = logits.detach().softmax(-1)
    a = torch.randint(0, 4, (B,))
    g = torch.autograd.grad(policy_fisher_loss(Categorical(logits=logits), a), logits)[0]
    torch.testing.assert_close(g, (F.one_hot(a, 4).to(D) - p) / B, rtol=1e-12, atol=1e-15)
    torch.manual_seed(12)
    g = torch.autograd.grad(policy_fisher_loss(Categorical(logits=logits)), logits)[0]
    torch.manual_seed(12)
    a_new = Categorical(logits=logits.detach()).sample()
    torch.testing.assert_close(g, (F.one_hot(a_new, 4).to(D) - p) / B, rtol=1e-12, atol=1e-15)

    for actions in (a, None):
        torch.manual_seed(13)
        gl, gv = torch.autograd.grad(fisher_loss(Categorical(logits=logits), v, 0.3, actions), (logits, v))
        torch.manual_seed(13)
        drawn = Categorical(logits=logits.detach()).sample() if actions is None else a
        n = torch.randn(B, dtype=D)
        torch.testing.assert_close(gl, (F.one_hot(drawn, 4).to(D) - p) / B, rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(gv, 2 * 0.3 * n / B, rtol=1e-13, atol=0)


def _a2c_loss_by_hand(model, obs, actions, returns, adv, vf_coef, ent_coef, vf_loss_scale):
    logits = model.pi(torch.tanh(model.torso(obs)))
    v = model.v(torch.tanh(model.torso(obs))).squeeze(-1)
    logp_all = logits.log_softmax(-1)
    logp = logp_all.gather(1, actions[:, None]).squeeze(1)
    ent = -(logp_all.exp() * logp_all).sum(-1).mean()
    pg, vf = -(adv * logp).mean(), vf_loss_scale * ((returns - v) ** 2).mean()
    return pg + vf_coef * vf - ent_coef * ent, pg, vf, ent


ACKTR_SET = dict(lr=0.3, vf_coef=0.4, ent_coef=0.05, vf_fisher_coef=0.6, vf_loss_scale=0.5)
ACKTR_REF = dict(lr=0.25, vf_coef=0.5, ent_coef=0.01, vf_fisher_coef=1.0, vf_loss_scale=1.0)   # baselines'


@pytest.mark.parametrize("fisher_actions,defaults", [("rollout", False), ("sample", False), ("rollout", True)])
def test_acktr_update_is_kfac_driven_by_hand(fisher_actions, defaults):
    """Two ACKTR updates equal: lr set from the schedule, the Fisher backward of the written-out Fisher loss inside
    capture(), the A2C loss written out with vf_coef, ent_coef and vf_loss_scale, then K-FAC's step; the same
    factors; and the info. With every default, the written-out side uses baselines' values."""
    c = ACKTR_REF if defaults else ACKTR_SET
    kfac_kw = {} if defaults else dict(cold_iters=1, eig_async=False, kl_clip=0.01, momentum=0.5)
    m1, m2 = _model(), _model()
    algo = ACKTR(m1, total_updates=4, steps_per_update=6, **({} if defaults else dict(ACKTR_SET, **kfac_kw)),
                 **({} if fisher_actions == "rollout" and defaults else {"fisher_actions": fisher_actions}))
    opt = KFAC(m2, lr=c["lr"], **kfac_kw)
    for k in range(2):
        obs, actions, returns, adv = _batch(seed=k)
        torch.manual_seed(100 + k)
        info = algo.update(obs, actions, returns, adv)

        lr = c["lr"] * (1 - ((k + 1) * 6 - 1) / 24)
        for g in opt.param_groups:
            g["lr"] = lr
        torch.manual_seed(100 + k)
        with opt.capture():
            h = torch.tanh(m2.torso(obs))
            logits, v = m2.pi(h), m2.v(h).squeeze(-1)
            a = actions if fisher_actions == "rollout" else Categorical(logits=logits).sample()
            n = torch.randn_like(v)
            opt.fisher_backward(logits.log_softmax(-1).gather(1, a[:, None]).mean()
                                - c["vf_fisher_coef"] * ((v - (v + n).detach()) ** 2).mean())
        loss, pg, vf, ent = _a2c_loss_by_hand(m2, obs, actions, returns, adv, c["vf_coef"], c["ent_coef"],
                                              c["vf_loss_scale"])
        opt.zero_grad()
        loss.backward()
        opt.step()

        for p1, p2 in zip(m1.parameters(), m2.parameters()):
            torch.testing.assert_close(p1, p2, rtol=1e-12, atol=1e-14)
        for l1, l2 in zip(algo.opt.layers, opt.layers):
            for name in ("A", "G", "Gb"):
                torch.testing.assert_close(getattr(l1, name), getattr(l2, name), rtol=1e-12, atol=1e-15)
        assert algo.updates == k + 1
        assert info["lr"] == pytest.approx(lr, rel=1e-12)
        assert float(info["loss/total"]) == pytest.approx(loss.item(), rel=1e-12)
        assert float(info["loss/policy"]) == pytest.approx(pg.item(), rel=1e-12)
        assert float(info["loss/value"]) == pytest.approx(vf.item(), rel=1e-12)
        assert float(info["entropy"]) == pytest.approx(ent.item(), rel=1e-12)
        assert info["kfac/cold"] == float(k < opt.cold_iters)
        if k >= opt.cold_iters:
            assert info["kfac/kl_quadratic"] == pytest.approx(opt.last["kl_predicted"], rel=1e-9)
            assert info["kfac/trust_scale"] == pytest.approx(opt.last["trust_scale"], rel=1e-9)
    with pytest.raises(ValueError, match=r"^fisher_actions must be one of \('rollout', 'sample'\), got 'x'$"):
        ACKTR(_model(), total_updates=1, fisher_actions="x")


A2C_SET = dict(lr=0.01, alpha=0.9, eps=1e-3, vf_coef=0.3, ent_coef=0.02, max_grad_norm=0.05, vf_loss_scale=0.5)
A2C_REF = dict(lr=7e-4, alpha=0.99, eps=1e-5, vf_coef=0.5, ent_coef=0.01, max_grad_norm=0.5, vf_loss_scale=1.0)


@pytest.mark.parametrize("rmsprop", ["tf", "torch", "defaults"])
def test_a2c_update_written_out(rmsprop):
    """Two A2C updates equal the loss written out, its gradient clipped to global norm max_grad_norm, then
    TensorFlow's RMSProp (accumulator from 1, eps inside the root) or torch's (from 0, eps outside); with every
    default, baselines' values. A third update after a checkpoint round trip equals the uninterrupted one."""
    import copy

    c = A2C_REF if rmsprop == "defaults" else A2C_SET
    kind = "tf" if rmsprop == "defaults" else rmsprop
    m1, m2 = _model(), _model()
    algo = A2C(m1, total_updates=5, steps_per_update=6, **({} if rmsprop == "defaults" else dict(A2C_SET, rmsprop=kind)))
    ms = [torch.full_like(p, 1.0 if kind == "tf" else 0.0) for p in m2.parameters()]
    for k in range(3):
        obs, actions, returns, adv = _batch(seed=k)
        if k == 2:      # resume from a checkpoint written through torch.save, loaded with weights_only=True
            state, m1 = _through_checkpoint(algo.state_dict()), copy.deepcopy(m1)
            algo = A2C(m1, total_updates=5, steps_per_update=6,
                       **({} if rmsprop == "defaults" else dict(A2C_SET, rmsprop=kind)))
            algo.load_state_dict(state)
        info = algo.update(obs, actions, returns, adv)
        lr = c["lr"] * (1 - ((k + 1) * 6 - 1) / 30)
        loss, pg, vf, ent = _a2c_loss_by_hand(m2, obs, actions, returns, adv, c["vf_coef"], c["ent_coef"],
                                              c["vf_loss_scale"])
        grads = torch.autograd.grad(loss, list(m2.parameters()))
        norm = torch.sqrt(sum((g * g).sum() for g in grads))
        grads = [g * min(1.0, c["max_grad_norm"] / (norm.item() + 1e-6)) for g in grads]
        with torch.no_grad():
            for p, g, s in zip(m2.parameters(), grads, ms):
                s.mul_(c["alpha"]).add_((1 - c["alpha"]) * g * g)
                p -= lr * g / (torch.sqrt(s + c["eps"]) if kind == "tf" else torch.sqrt(s) + c["eps"])
        for p1, p2 in zip(m1.parameters(), m2.parameters()):
            torch.testing.assert_close(p1, p2, rtol=1e-10, atol=1e-13)
        assert algo.updates == k + 1 and norm.item() > c["max_grad_norm"]      # clipping was active
        assert float(info["grad_norm"]) == pytest.approx(norm.item(), rel=1e-10)
        assert info["lr"] == pytest.approx(lr, rel=1e-12)
        assert float(info["loss/total"]) == pytest.approx(loss.item(), rel=1e-12)
        assert [float(info[k]) for k in ("loss/policy", "loss/value", "entropy")] == pytest.approx(
            [pg.item(), vf.item(), ent.item()], rel=1e-12)
    with pytest.raises(ValueError, match=r"^rmsprop must be one of \('tf', 'torch'\), got 'adam'$"):
        A2C(_model(), total_updates=1, rmsprop="adam")


def _defaults(f):
    return {k: p.default for k, p in inspect.signature(f).parameters.items() if p.default is not inspect._empty}


def test_defaults_are_the_references():
    """baselines' Atari ACKTR (acktr.py, kfac.py): lr 0.25, vf_coef 0.5, ent_coef 0.01, vf_fisher_coef 1.0, momentum
    0.9, stats_decay 0.99, epsilon (damping) 0.01, clip_kl 0.001, kfac_update 1, async eigendecompositions, cold_iter
    10 (11 cold steps), stats_accum_iter = cold_iter, cold_lr = lr, max_grad_norm 0.5 in the cold phase only; A2C
    (a2c.py): lr 7e-4, alpha 0.99, epsilon 1e-5, vf_coef 0.5, ent_coef 0.01, max_grad_norm 0.5, linear decay."""
    assert _defaults(ACKTR) == dict(steps_per_update=1, lr=0.25, vf_coef=0.5, ent_coef=0.01, vf_fisher_coef=1.0,
                                    vf_loss_scale=1.0, lr_decay=True, fisher_actions="rollout")
    assert _defaults(KFAC) == dict(lr=0.25, momentum=0.9, stat_decay=0.99, damping=0.01, kl_clip=0.001,
                                   eig_every=1, eig_async=True, stats_every=1, stats_accum=10, cold_iters=11,
                                   cold_lr_scale=1.0, cold_max_grad_norm=0.5, eig_eps=1e-6, weight_damping=0.0,
                                   bias_mode="separate", g_blocks=None, extra_params=None)
    assert _defaults(A2C) == dict(steps_per_update=1, lr=7e-4, alpha=0.99, eps=1e-5, vf_coef=0.5, ent_coef=0.01,
                                  max_grad_norm=0.5, lr_decay=True, vf_loss_scale=1.0, rmsprop="tf")
    assert _defaults(RMSpropTF) == dict(lr=7e-4, alpha=0.99, eps=1e-5)
    assert _defaults(actor_critic_loss) == dict(vf_loss_scale=1.0)
    # defaults in use (mutation tests replace a function's body, not its signature: check behaviour too)
    assert ACKTR(_model(), total_updates=4).lr_now() == 0.25 and A2C(_model(), total_updates=4).lr_now() == 7e-4
    dist, v = Categorical(logits=torch.randn(5, 3, dtype=D)), torch.randn(5, dtype=D)
    a, r, adv = torch.tensor([0, 1, 2, 1, 0]), torch.randn(5, dtype=D), torch.randn(5, dtype=D)
    torch.testing.assert_close(actor_critic_loss(dist, v, a, r, adv, 0.5, 0.01)[0],
                               actor_critic_loss(dist, v, a, r, adv, 0.5, 0.01, vf_loss_scale=1.0)[0], rtol=0, atol=0)
    assert actor_critic_loss(dist, v, a, r, adv, 0.5, 0.01)[0] != actor_critic_loss(dist, v, a, r, adv, 0.5, 0.01,
                                                                                     vf_loss_scale=2.0)[0]
    p = nn.Parameter(torch.tensor([0.5, -1.0], dtype=D))
    p.grad = torch.tensor([0.2, 3.0], dtype=D)
    RMSpropTF([p]).step()
    ms = 0.99 + 0.01 * torch.tensor([0.2, 3.0], dtype=D) ** 2
    torch.testing.assert_close(p.detach(), torch.tensor([0.5, -1.0], dtype=D)
                               - 7e-4 * torch.tensor([0.2, 3.0], dtype=D) / torch.sqrt(ms + 1e-5), rtol=1e-14, atol=0)
    # what the constructors pass on
    algo = ACKTR(_model(), total_updates=3)
    assert (algo.opt.param_groups[0]["lr"], algo.opt.param_groups[0]["momentum"]) == (0.25, 0.9)
    a2c = A2C(_model(), total_updates=3)
    assert isinstance(a2c.opt, RMSpropTF) and a2c.opt.defaults == dict(lr=7e-4, alpha=0.99, eps=1e-5)
    assert isinstance(A2C(_model(), total_updates=3, rmsprop="torch").opt, torch.optim.RMSprop)


# --------------------------------------------------------------------------- continuous control (old_acktr_cont)
def _cont_nets(seed=2):
    from models.actor_critic import GaussianMlpPolicy, ValueMlp

    torch.manual_seed(seed)
    return GaussianMlpPolicy(4, 2, hidden=8).to(D), ValueMlp(6, hidden=8).to(D)


def _cont_batch(k):
    g = torch.Generator().manual_seed(50 + k)
    return (torch.randn(20, 4, dtype=D, generator=g), torch.randn(20, 2, dtype=D, generator=g),
            torch.randn(20, dtype=D, generator=g), torch.randn(20, 6, dtype=D, generator=g),
            torch.randn(20, dtype=D, generator=g))


def _vf_loss(vf, X, y, l2):
    return ((vf(X) - y) ** 2).mean() + l2 * sum(0.5 * (m.weight ** 2).sum() for m in vf.modules()
                                                 if isinstance(m, nn.Linear))


def _kl_and_next(policy, old_mean, old_std, obs, stepsize, target, lo, hi):
    from torch.distributions import Independent, Normal, kl_divergence

    with torch.no_grad():
        kl = kl_divergence(Independent(Normal(old_mean, old_std), 1), policy(obs)).mean().item()
    nxt = max(lo, stepsize / 1.5) if kl > 2 * target else min(hi, stepsize * 1.5) if kl < 0.5 * target else stepsize
    return kl, nxt


@pytest.mark.parametrize("target_kl", [1e-9, 1e3, "defaults"])
def test_continuous_a2c_update_written_out(target_kl):
    """ContinuousA2C: vf_iters Adam steps on MSE + vf_l2 * sum |W|^2 / 2, then one Adam policy step on
    -mean(A log pi) at the current step size, then the step size adapted to KL(old || new) (/1.5 above twice the
    target, x1.5 below half, clipped); a checkpoint round trip in the middle changes nothing."""
    import copy

    from algorithms.acktr_cont import ContinuousA2C

    c = (dict(lr=3e-4, target_kl=0.002, min_stepsize=1e-8, max_stepsize=1.0, vf_lr=1e-3, vf_iters=25, vf_l2=3e-4)
         if target_kl == "defaults" else
         dict(lr=0.01, target_kl=target_kl, min_stepsize=0.004, max_stepsize=0.02, vf_lr=0.02, vf_iters=3, vf_l2=0.1))
    (p1, v1), (p2, v2) = _cont_nets(), _cont_nets()
    args = {} if target_kl == "defaults" else c
    algo = ContinuousA2C(p1, v1, **args)
    popt, vopt = torch.optim.Adam(p2.parameters(), lr=c["lr"]), torch.optim.Adam(v2.parameters(), lr=c["vf_lr"])
    stepsize, sizes = c["lr"], []
    for k in range(3):
        obs, act, adv, X, y = _cont_batch(k)
        if k == 2:
            state, (p1, v1) = _through_checkpoint(algo.state_dict()), copy.deepcopy((p1, v1))
            algo = ContinuousA2C(p1, v1, **args)
            algo.load_state_dict(state)
        info = algo.update(obs, act, adv, X, y)
        for _ in range(c["vf_iters"]):
            vopt.zero_grad()
            vl = _vf_loss(v2, X, y, c["vf_l2"])
            vl.backward()
            vopt.step()
        with torch.no_grad():
            d = p2(obs)
            old_mean, old_std = d.mean.clone(), d.stddev.clone()
        for g in popt.param_groups:
            g["lr"] = stepsize
        d = p2(obs)
        pl = -(adv * d.log_prob(act)).mean()
        popt.zero_grad()
        pl.backward()
        popt.step()
        kl, stepsize = _kl_and_next(p2, old_mean, old_std, obs, stepsize, c["target_kl"], c["min_stepsize"],
                                    c["max_stepsize"])
        sizes.append(stepsize)
        for a, b in zip(list(p1.parameters()) + list(v1.parameters()), list(p2.parameters()) + list(v2.parameters())):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-13)
        assert info["stepsize"] == pytest.approx(stepsize, rel=1e-12)
        assert info["kl_measured"] == pytest.approx(kl, rel=1e-9)
        assert float(info["loss/value"]) == pytest.approx(vl.item(), rel=1e-12)
        assert float(info["loss/policy"]) == float(info["loss/total"]) == pytest.approx(pl.item(), rel=1e-12)
        assert float(info["entropy"]) == pytest.approx(d.entropy().mean().item(), rel=1e-12)
        assert float(info["policy/std_mean"]) == pytest.approx(p2.log_std.exp().mean().item(), rel=1e-12)
    if target_kl == 1e-9:
        assert sizes == pytest.approx([0.01 / 1.5, 0.01 / 1.5 ** 2, 0.004])
    if target_kl == 1e3:
        assert sizes == pytest.approx([0.015, 0.02, 0.02])


def test_continuous_acktr_update_is_kfac_driven_by_hand():
    """ContinuousACKTR: the value function's K-FAC (homogeneous biases, its own lr, Fisher loss
    vf_fisher_coef * mean((V - stop_grad(V + n))^2)) for vf_iters steps, then the policy's K-FAC (homogeneous
    biases, the log-std a G-only block of dL/dstd = dL/dlog_std / std, Fisher loss -mean(log pi(a))) at the current
    step size; the same parameters and factors; a checkpoint round trip in the middle changes nothing."""
    import copy

    from algorithms.acktr_cont import ContinuousACKTR, std_from_log_std

    pk, vk = dict(cold_iters=1, eig_async=False, kl_clip=0.01), dict(cold_iters=1, eig_async=False, damping=0.1)
    kw = dict(lr=0.05, target_kl=1e-3, vf_iters=3, vf_l2=0.01, vf_fisher_coef=0.7, policy_kfac=pk,
              vf_kfac=dict(vk, lr=0.02))
    (p1, v1), (p2, v2) = _cont_nets(), _cont_nets()
    algo = ContinuousACKTR(p1, v1, **kw)
    popt = KFAC(p2.net, lr=0.05, bias_mode="homogeneous", g_blocks=[(p2.log_std, lambda g, q: g / q.exp())], **pk)
    vopt = KFAC(v2, lr=0.02, bias_mode="homogeneous", **vk)
    stepsize = 0.05
    for k in range(3):
        obs, act, adv, X, y = _cont_batch(k)
        if k == 2:
            state, (p1, v1) = _through_checkpoint(algo.state_dict()), copy.deepcopy((p1, v1))
            algo = ContinuousACKTR(p1, v1, **kw)
            algo.load_state_dict(state)
        torch.manual_seed(200 + k)
        info = algo.update(obs, act, adv, X, y)
        torch.manual_seed(200 + k)
        for _ in range(3):
            with vopt.capture():
                v = v2(X)
                vopt.fisher_backward(0.7 * ((v - (v + torch.randn_like(v)).detach()) ** 2).mean())
            vopt.zero_grad()
            vl = _vf_loss(v2, X, y, 0.01)
            vl.backward()
            vopt.step()
        with torch.no_grad():
            d = p2(obs)
            old_mean, old_std = d.mean.clone(), d.stddev.clone()
        for g in popt.param_groups:
            g["lr"] = stepsize
        with popt.capture():
            d = p2(obs)
            popt.fisher_backward(-d.log_prob(act).mean())
        pl = -(adv * d.log_prob(act)).mean()
        popt.zero_grad()
        pl.backward()
        popt.step()
        kl, stepsize = _kl_and_next(p2, old_mean, old_std, obs, stepsize, 1e-3, 1e-8, 1.0)
        for a, b in zip(list(p1.parameters()) + list(v1.parameters()), list(p2.parameters()) + list(v2.parameters())):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(algo.popt.gblocks[0].G, popt.gblocks[0].G, rtol=1e-10, atol=1e-14)
        assert all(l.homogeneous for l in algo.popt.layers + algo.vopt.layers)
        assert info["stepsize"] == pytest.approx(stepsize, rel=1e-12) and info["kl_measured"] == pytest.approx(kl)
        assert float(info["loss/value"]) == pytest.approx(vl.item(), rel=1e-10)
        assert info["kfac/trust_scale"] == pytest.approx(popt.last["trust_scale"], rel=1e-9, nan_ok=True)
        assert info["kfac/vf_trust_scale"] == pytest.approx(vopt.last["trust_scale"], rel=1e-9, nan_ok=True)
    g, q = torch.tensor([0.3, -1.2], dtype=D), torch.tensor([0.5, -0.25], dtype=D)
    torch.testing.assert_close(std_from_log_std(g, q), g / q.exp())
    assert _defaults(ContinuousACKTR) == dict(lr=0.03, target_kl=0.002, min_stepsize=1e-8, max_stepsize=1.0,
                                              logstd_kfac=True, vf_iters=25, vf_l2=3e-4, vf_fisher_coef=1.0,
                                              policy_kfac=None, vf_kfac=None)
    assert ContinuousACKTR(*_cont_nets()).vf_lr == 0.001


def test_continuous_defaults_in_use_and_the_logstd_deviation_option():
    """What the continuous-control constructors hold when given nothing (old_acktr_cont's settings; the A2C
    counterpart's are ours), the step-size rule at its exact boundaries, the info keys, and ``logstd_kfac=False``
    (the named deviation: the log-std outside K-FAC, a plain momentum step)."""
    from algorithms.acktr_cont import ContinuousA2C, ContinuousACKTR, std_from_log_std

    acktr = ContinuousACKTR(*_cont_nets())
    assert (acktr.stepsize, acktr.target_kl, acktr.min_stepsize, acktr.max_stepsize, acktr.vf_iters, acktr.vf_l2,
            acktr.vf_fisher_coef, acktr.vf_lr) == (0.03, 0.002, 1e-8, 1.0, 25, 3e-4, 1.0, 0.001)
    assert [b.param is acktr.policy.log_std and b.transform is std_from_log_std for b in acktr.popt.gblocks] == [True]
    assert len(acktr.popt.param_groups) == 1 and all(l.homogeneous for l in acktr.popt.layers + acktr.vopt.layers)
    a2c = ContinuousA2C(*_cont_nets())
    assert (a2c.stepsize, a2c.target_kl, a2c.min_stepsize, a2c.max_stepsize, a2c.vf_iters, a2c.vf_l2,
            a2c.vopt.param_groups[0]["lr"]) == (3e-4, 0.002, 1e-8, 1.0, 25, 3e-4, 1e-3)
    # info keys of one update each
    obs, act, adv, X, y = _cont_batch(0)
    common = {"loss/value", "loss/policy", "loss/total", "entropy", "policy/std_mean", "kl_measured", "stepsize"}
    assert set(ContinuousACKTR(*_cont_nets(), vf_iters=1).update(obs, act, adv, X, y)) == common | {
        "kfac/vf_trust_scale", "kfac/kl_quadratic", "kfac/trust_scale"}
    assert set(ContinuousA2C(*_cont_nets(), vf_iters=1).update(obs, act, adv, X, y)) == common
    # logstd_kfac=False: no G-only block; the log-std is a plain parameter of the policy's K-FAC
    policy, vf = _cont_nets()
    dev = ContinuousACKTR(policy, vf, logstd_kfac=False, vf_iters=1, policy_kfac=dict(cold_iters=0))
    assert dev.popt.gblocks == [] and [len(g["params"]) for g in dev.popt.param_groups] == [6, 1]
    assert dev.popt.param_groups[1]["params"][0] is policy.log_std
    before = policy.log_std.detach().clone()
    dev.update(obs, act, adv, X, y)
    assert not torch.equal(policy.log_std.detach(), before)


@pytest.mark.parametrize("ratio,after", [(2.5, 0.01 / 1.5), (2.0, 0.01), (1.0, 0.01), (0.5, 0.01), (0.49, 0.01 * 1.5)])
def test_continuous_stepsize_rule_at_its_boundaries(monkeypatch, ratio, after):
    """/1.5 when the measured KL is above twice the target, x1.5 below half of it, unchanged in [0.5, 2] x target."""
    from algorithms import acktr_cont

    algo = acktr_cont.ContinuousA2C(*_cont_nets(), lr=0.01, target_kl=0.002)
    monkeypatch.setattr(acktr_cont.torch.distributions, "kl_divergence",
                        lambda p, q: torch.tensor([ratio * 0.002], dtype=D))
    assert algo.adapt_stepsize(None, torch.zeros(1, 4, dtype=D)) == ratio * 0.002
    assert algo.stepsize == after

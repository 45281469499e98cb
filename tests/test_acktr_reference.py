"""ACKTR's Fisher and K-FAC pinned to the reference (OpenAI baselines) and to independent computations:
the expected G of a categorical head (diag(p) - p p^T), of the value head (4: unit noise, no 1/2), of a shared
torso (both together, with their scales), the log-std's G-only block, separate bias blocks, the cold phase, the
one-update-stale background eigendecomposition, and the factors against curvlinops-for-pytorch as an oracle."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Categorical

from algorithms.acktr import ACKTR
from algorithms.kfac import KFAC, _eigendecompose

D = torch.float64


class TinyActorCritic(nn.Module):
    """A shared tanh torso, a categorical policy head and a value head (the Atari network's structure)."""

    def __init__(self, n_in=3, hidden=4, n_actions=3):
        super().__init__()
        self.torso = nn.Linear(n_in, hidden)
        self.pi = nn.Linear(hidden, n_actions)
        self.v = nn.Linear(hidden, 1)

    def forward(self, obs):
        h = torch.tanh(self.torso(obs))
        return Categorical(logits=self.pi(h)), self.v(h).squeeze(-1)


def _factors_after_one_batch(B=200_000, seed=0):
    """G of every layer after one ACKTR update on B copies of one input, rollout actions from the policy."""
    torch.manual_seed(seed)
    model = TinyActorCritic().to(D)
    algo = ACKTR(model, total_updates=10, steps_per_update=B)
    x = torch.randn(1, 3, dtype=D).expand(B, 3).contiguous()
    with torch.no_grad():
        dist, _ = model(x[:1])
        p = dist.probs[0]
        z = model.torso(x[:1])[0]
        actions = dist.sample((B,)).reshape(B)
    ret = torch.zeros(B, dtype=D)
    Wpi, Wv = model.pi.weight.detach().clone(), model.v.weight.detach().clone()
    algo.update(x, actions, ret, ret.clone())
    layers = {id(l.module): l for l in algo.opt.layers}
    return layers, model, p, z, Wpi, Wv


@pytest.fixture(scope="module")
def one_batch():
    return _factors_after_one_batch()


def test_categorical_head_G_is_diag_p_minus_ppT(one_batch):
    layers, model, p, *_ = one_batch
    expect = torch.diag(p) - torch.outer(p, p)
    G = layers[id(model.pi)].G
    torch.testing.assert_close(G, expect, atol=0.01, rtol=0)
    torch.testing.assert_close(layers[id(model.pi)].Gb, expect, atol=0.01, rtol=0)   # the bias block: the same G


def test_value_head_G_is_four_unit_noise_no_half(one_batch):
    layers, model, *_ = one_batch
    # per example d/dv of -(v - stop_grad(v + n))^2 is 2n: E[(2n)^2] = 4
    assert layers[id(model.v)].G.item() == pytest.approx(4.0, abs=0.05)


def test_shared_torso_G_sums_both_heads_with_their_scales(one_batch):
    layers, model, p, z, Wpi, Wv = one_batch
    d = 1 - torch.tanh(z) ** 2
    inner = Wpi.t() @ (torch.diag(p) - torch.outer(p, p)) @ Wpi + 4.0 * Wv.t() @ Wv
    expect = d[:, None] * inner * d[None, :]
    torch.testing.assert_close(layers[id(model.torso)].G, expect, atol=0.02 * expect.abs().max().item(), rtol=0)


def test_fisher_actions_sample_draws_fresh_actions():
    torch.manual_seed(0)
    model = TinyActorCritic().to(D)
    algo = ACKTR(model, total_updates=2, steps_per_update=5000, fisher_actions="sample")
    x = torch.randn(1, 3, dtype=D).expand(5000, 3).contiguous()
    zeros = torch.zeros(5000, dtype=torch.long)          # the rollout's actions: all 0, not from the policy
    algo.update(x, zeros, torch.zeros(5000, dtype=D), torch.zeros(5000, dtype=D))
    with torch.no_grad():
        p = model(x[:1])[0].probs[0]
    G = next(l for l in algo.opt.layers if l.module is model.pi).G
    torch.testing.assert_close(G, torch.diag(p) - torch.outer(p, p), atol=0.03, rtol=0)


# --------------------------------------------------------------------------- blocks
def test_separate_bias_blocks_match_per_example_sums():
    """Conv bias: G_b = (1/B) sum_n (sum_s g)(sum_s g)^T of per-example output gradients; Linear bias: G."""
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, stride=2, padding=1).to(D)
    model = nn.Sequential(conv, nn.Tanh(), nn.Flatten(), nn.Linear(27, 2)).to(D)
    kfac = KFAC(model)          # separate biases: the Atari default
    B = 5
    x, w = torch.randn(B, 2, 5, 5, dtype=D), torch.randn(B, 2, dtype=D)
    with kfac.capture():
        kfac.fisher_backward((model(x) * w).sum(1).mean())
    Gb = torch.zeros(3, 3, dtype=D)
    for b in range(B):
        zc = conv(x[b:b + 1]); zc.retain_grad()
        (model[1:](zc) * w[b:b + 1]).sum().backward()
        s = zc.grad[0].sum((1, 2))
        Gb += torch.outer(s, s) / B
    torch.testing.assert_close(kfac.layers[0].Gb, Gb)
    torch.testing.assert_close(kfac.layers[1].Gb, kfac.layers[1].G)
    assert kfac.layers[0].A.shape == (18, 18)             # no homogeneous column


def test_log_std_block_is_a_rank_one_G_of_the_batch_gradient_inside_the_trust_region():
    from algorithms.acktr_cont import std_from_log_std
    from models.actor_critic import GaussianMlpPolicy

    torch.manual_seed(0)
    pol = GaussianMlpPolicy(4, 2).to(D)
    kfac = KFAC(pol.net, lr=0.5, momentum=0.0, kl_clip=1e9, cold_iters=0, eig_async=False, eig_eps=0.0,
                bias_mode="homogeneous", g_blocks=[(pol.log_std, std_from_log_std)])
    x, a = torch.randn(64, 4, dtype=D), torch.randn(64, 2, dtype=D)
    with kfac.capture():
        dist = pol(x)
        kfac.fisher_backward(-dist.log_prob(a).mean())
    std = pol.log_std.detach().exp().requires_grad_()
    from torch.distributions import Independent, Normal
    mean = pol.net(x).detach()
    loss = -Independent(Normal(mean, std.expand_as(mean)), 1).log_prob(a).mean()
    v = torch.autograd.grad(loss, std)[0]                  # the batch gradient w.r.t. the std
    torch.testing.assert_close(kfac.gblocks[0].G, torch.outer(v, v))
    adv = torch.randn(64, dtype=D)
    pol.zero_grad()
    (-(adv * pol(x).log_prob(a)).mean()).backward()
    g = pol.log_std.grad.clone()
    before = pol.log_std.detach().clone()
    kfac.step()
    nat = torch.linalg.solve(torch.outer(v, v) + 0.01 * torch.eye(2, dtype=D), g)
    torch.testing.assert_close(pol.log_std.detach() - before, -0.5 * nat)   # momentum 0, trust region off
    assert (nat.norm() / g.norm()).item() > 10                             # ~1/damping off the v direction


def test_trust_region_covers_every_block():
    torch.manual_seed(0)
    model = TinyActorCritic().to(D)
    kfac = KFAC(model, lr=0.25, kl_clip=1e-4, cold_iters=0, eig_async=False)
    x = torch.randn(30, 3, dtype=D)
    with kfac.capture():
        dist, v = model(x)
        kfac.fisher_backward(dist.log_prob(dist.sample()).mean() - (v - (v + torch.randn_like(v)).detach()).pow(2).mean())
    model.zero_grad()
    dist, v = model(x)
    (dist.log_prob(torch.zeros(30, dtype=torch.long)).mean() + v.pow(2).mean()).backward()
    grads = {id(p): p.grad.clone() for p in model.parameters()}
    kfac.step()
    vg = 0.0
    for layer in kfac.layers:      # dense solves: (A kron G + damping)^-1 for weights, (G_b + damping)^-1 for biases
        W = grads[id(layer.module.weight)]
        dense = torch.kron(layer.G, layer.A) + 0.01 * torch.eye(W.numel(), dtype=D)
        vg += float(W.reshape(-1) @ torch.linalg.solve(dense, W.reshape(-1)))
        b = grads[id(layer.module.bias)]
        vg += float(b @ torch.linalg.solve(layer.Gb + 0.01 * torch.eye(b.numel(), dtype=D), b))
    nu = min(1.0, math.sqrt(1e-4 / (0.25 ** 2 * vg)))
    assert kfac.last["trust_scale"] == pytest.approx(nu, rel=1e-9) and nu < 1


# --------------------------------------------------------------------------- schedule
def test_cold_phase_is_clipped_momentum_sgd_then_kfac():
    torch.manual_seed(0)
    model = nn.Linear(3, 2).to(D)
    kfac = KFAC(model, lr=0.3, momentum=0.9, cold_iters=3, cold_lr_scale=0.5, cold_max_grad_norm=0.1,
                eig_async=False)
    ref = [p.detach().clone() for p in model.parameters()]
    bufs = [torch.zeros_like(p) for p in ref]
    for step in range(4):
        x = torch.randn(8, 3, dtype=D)
        with kfac.capture():
            kfac.fisher_backward(model(x).pow(2).sum(1).mean())
        model.zero_grad()
        model(x).sum().backward()
        g = [p.grad.clone() for p in model.parameters()]
        kfac.step()
        if step < 3:       # TF momentum (acc = 0.9 acc + g; p -= lr acc) on norm-clipped gradients, lr 0.3 x 0.5
            norm = torch.sqrt(sum((gi ** 2).sum() for gi in g))
            g = [gi * min(1.0, 0.1 / (norm.item() + 1e-6)) for gi in g]
            for i in range(2):
                bufs[i] = 0.9 * bufs[i] + g[i]
                ref[i] = ref[i] - 0.15 * bufs[i]
            for r, p in zip(ref, model.parameters()):
                torch.testing.assert_close(p.detach(), r)
            assert kfac.last["cold"] == 1.0
        else:
            assert kfac.last["cold"] == 0.0 and math.isfinite(kfac.last["trust_scale"])
            assert any(not torch.allclose(p.detach(), r) for r, p in zip(ref, model.parameters()))


def test_background_eigendecomposition_is_one_update_stale():
    """eig_async: update t preconditions with the eigendecomposition of the factors as they were after update
    t-1 (baselines' queue runner), not with the factors that include update t's statistics."""
    torch.manual_seed(0)
    model = nn.Linear(3, 2).to(D)
    kfac = KFAC(model, lr=0.1, momentum=0.0, kl_clip=1e9, cold_iters=0, eig_async=True, eig_eps=0.0)
    snapshots = []
    for step in range(3):
        x = torch.randn(16, 3, dtype=D) * (step + 1)
        with kfac.capture():
            kfac.fisher_backward(model(x).pow(2).sum(1).mean())
        model.zero_grad()
        model(x).sum().backward()
        W = model.weight.grad.clone()
        before = model.weight.detach().clone()
        kfac.step()
        snapshots.append({"A": kfac.layers[0].A.clone(), "G": kfac.layers[0].G.clone()})
        if step >= 1:
            (eA, eG), = [(e["A"], e["G"]) for e in _eigendecompose([snapshots[step - 1]], 0.0, 0)]
            dA, QA = eA
            dG, QG = eG
            v = QG.t() @ W @ QA / (dG[:, None] * dA[None, :] + 0.01)
            torch.testing.assert_close(model.weight.detach() - before, -0.1 * (QG @ v @ QA.t()))


# --------------------------------------------------------------------------- an independent oracle
@pytest.mark.parametrize("homogeneous", [False, True])
def test_factors_equal_curvlinops_kfac(homogeneous):
    """curvlinops-for-pytorch (KFACLinearOperator, empirical Fisher of a mean cross-entropy) computes the same
    Kronecker factors: Linear A and G equal ours; for Conv2d (KFAC-expand) A_cl = L A and G_cl = G / L (the same
    product: baselines splits the spatial size L differently); a separate conv bias equals KFAC-reduce's G."""
    from curvlinops import KFACLinearOperator

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, stride=1, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(75, 4)).to(D)
    X, y = torch.randn(6, 2, 5, 5, dtype=D), torch.randint(0, 4, (6,))
    kfac = KFAC(model, bias_mode="homogeneous" if homogeneous else "separate")
    with kfac.capture():
        kfac.fisher_backward(F.cross_entropy(model(X), y))
    params = [p for p in model.parameters()]

    def oracle(approx, separate):
        op = KFACLinearOperator(model, nn.CrossEntropyLoss(), params, [(X, y)], fisher_type="empirical",
                                kfac_approx=approx, separate_weight_and_bias=separate, check_deterministic=False)
        op.compute_kronecker_factors()
        return op._input_covariances, op._gradient_covariances

    A_cl, G_cl = oracle("expand", not homogeneous)
    conv, lin = kfac.layers
    L = 25
    if homogeneous:   # curvlinops appends the ones column for Linear and Conv2d alike
        torch.testing.assert_close(lin.A, A_cl["3"])
        torch.testing.assert_close(conv.A * L, A_cl["0"])
    else:
        torch.testing.assert_close(lin.A, A_cl["3"])
        torch.testing.assert_close(conv.A * L, A_cl["0"])
        _, G_reduce = oracle("reduce", True)
        torch.testing.assert_close(conv.Gb, G_reduce["0"])
    torch.testing.assert_close(lin.G, G_cl["3"])
    torch.testing.assert_close(conv.G / L, G_cl["0"])

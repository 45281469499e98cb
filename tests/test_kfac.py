"""K-FAC exactness: factors against per-sample loops, preconditioning against a dense solve, the
trust region against its definition."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from algorithms.kfac import KFAC, _eigendecompose, _eigh

torch.manual_seed(0)
D = torch.float64


def per_sample_loss(out, w):
    return (out * w).sum(1)  # l_b


def run_stats(model, kfac, x, w, full_backward=False):
    with kfac.capture():
        out = model(x)
        loss = per_sample_loss(out, w).mean()
        loss.backward() if full_backward else kfac.fisher_backward(loss)


def test_linear_factors_match_per_sample_loops():
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).to(D)
    kfac = KFAC(model, bias_mode="homogeneous")
    B = 6
    x, w = torch.randn(B, 3, dtype=D), torch.randn(B, 2, dtype=D)
    run_stats(model, kfac, x, w)
    l1, l2 = kfac.layers
    A1 = sum(torch.outer(torch.cat([x[b], torch.ones(1, dtype=D)]), torch.cat([x[b], torch.ones(1, dtype=D)]))
             for b in range(B)) / B
    torch.testing.assert_close(l1.A, A1)
    # per-sample gradients of l_b w.r.t. each layer's output, one example at a time
    G1 = torch.zeros(4, 4, dtype=D); G2 = torch.zeros(2, 2, dtype=D); A2 = torch.zeros(5, 5, dtype=D)
    for b in range(B):
        z1 = model[0](x[b:b + 1]); z1.retain_grad()
        h = model[1](z1)
        z2 = model[2](h); z2.retain_grad()
        per_sample_loss(z2, w[b:b + 1]).sum().backward()
        G1 += torch.outer(z1.grad[0], z1.grad[0]) / B
        G2 += torch.outer(z2.grad[0], z2.grad[0]) / B
        ha = torch.cat([h[0].detach(), torch.ones(1, dtype=D)])
        A2 += torch.outer(ha, ha) / B
    torch.testing.assert_close(l1.G, G1)
    torch.testing.assert_close(l2.A, A2)
    torch.testing.assert_close(l2.G, G2)


def test_conv_factors_match_naive_patches_with_spatial_scaling():
    conv = nn.Conv2d(2, 3, kernel_size=3, stride=2, padding=1).to(D)
    model = nn.Sequential(conv, nn.ReLU(), nn.Flatten(), nn.Linear(3 * 3 * 3, 2)).to(D)
    kfac = KFAC(model, bias_mode="homogeneous")
    B = 4
    x, w = torch.randn(B, 2, 5, 5, dtype=D), torch.randn(B, 2, dtype=D)
    run_stats(model, kfac, x, w)
    lc = kfac.layers[0]
    xp = F.pad(x, (1, 1, 1, 1))
    oh = ow = 3
    L = oh * ow
    A = torch.zeros(2 * 9 + 1, 2 * 9 + 1, dtype=D)
    for b in range(B):
        for i in range(oh):
            for j in range(ow):
                patch = xp[b, :, 2 * i:2 * i + 3, 2 * j:2 * j + 3].reshape(-1)  # (C, kh, kw) order
                a = torch.cat([patch, torch.ones(1, dtype=D)])
                A += torch.outer(a, a)
    torch.testing.assert_close(lc.A, A / (B * L * L))
    G = torch.zeros(3, 3, dtype=D)
    for b in range(B):
        z = conv(x[b:b + 1]); z.retain_grad()
        per_sample_loss(model[1:](z), w[b:b + 1]).sum().backward()
        for i in range(oh):
            for j in range(ow):
                G += torch.outer(z.grad[0, :, i, j], z.grad[0, :, i, j])
    torch.testing.assert_close(lc.G, G * L / B)


def _fitted(eig_eps=0.0, **kw):
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3)).to(D)
    kfac = KFAC(model, eig_eps=eig_eps, **{"bias_mode": "homogeneous", "cold_iters": 0, "eig_async": False, **kw})
    x, w = torch.randn(40, 1, 6, 6, dtype=D), torch.randn(40, 3, dtype=D)
    run_stats(model, kfac, x, w)
    kfac._install(_eigendecompose(kfac._factors(), eig_eps, 0))
    return model, kfac


def test_preconditioned_gradient_equals_dense_damped_solve():
    model, kfac = _fitted(damping=0.03)
    for layer in kfac.layers:
        assert layer.eig["A"][0].min() > 0 and layer.eig["G"][0].min() > 0  # nothing clamped: the identity is exact
        g = torch.randn(layer.G.shape[0], layer.A.shape[0], dtype=D)
        dense = torch.kron(layer.G, layer.A) + 0.03 * torch.eye(g.numel(), dtype=D)
        expect = torch.linalg.solve(dense, g.reshape(-1)).reshape(g.shape)
        torch.testing.assert_close(kfac.precondition(layer, g), expect, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("kl_clip", [1e-6, 1e-3, 10.0])
def test_trust_region_caps_predicted_kl(kl_clip):
    model, kfac = _fitted(kl_clip=kl_clip, lr=0.25, momentum=0.0)
    x, w = torch.randn(8, 1, 6, 6, dtype=D), torch.randn(8, 3, dtype=D)
    model.zero_grad()
    per_sample_loss(model(x), w).mean().backward()
    grads = [l.grad_matrix().clone() for l in kfac.layers]
    before = [p.detach().clone() for p in model.parameters()]
    kfac.step()
    # independent: natural gradient by dense solves, then the reference's KL estimate of the step
    vg = 0.0
    for l, g in zip(kfac.layers, grads):
        dense = torch.kron(l.G, l.A) + kfac.damping * torch.eye(g.numel(), dtype=D)
        vg += float(g.reshape(-1) @ torch.linalg.solve(dense, g.reshape(-1)))
    nu = min(1.0, math.sqrt(kl_clip / (0.25 ** 2 * vg)))
    assert kfac.last["trust_scale"] == pytest.approx(nu, rel=1e-9)
    assert kfac.last["kl_predicted"] <= kl_clip * (1 + 1e-9)
    if nu < 1:
        assert kfac.last["kl_predicted"] == pytest.approx(kl_clip, rel=1e-9)
    # with momentum 0 the applied step is exactly -lr * nu * F^-1 g
    step = [p.detach() - b for p, b in zip(model.parameters(), before)]
    l0 = kfac.layers[0]
    nat = torch.linalg.solve(torch.kron(l0.G, l0.A) + kfac.damping * torch.eye(grads[0].numel(), dtype=D),
                             grads[0].reshape(-1)).reshape(grads[0].shape)
    torch.testing.assert_close(step[0].reshape(2, -1), -0.25 * nu * nat[:, :-1])
    torch.testing.assert_close(step[1], -0.25 * nu * nat[:, -1])


def test_first_statistics_plain_average_then_running_average():
    model = nn.Linear(2, 2).to(D)
    kfac = KFAC(model, stats_accum=2, stat_decay=0.9, bias_mode="homogeneous")
    xs = [torch.randn(5, 2, dtype=D) for _ in range(3)]
    As = []
    for x in xs:
        with kfac.capture():
            model(x).sum().backward()
        xa = torch.cat([x, torch.ones(5, 1, dtype=D)], 1)
        As.append(xa.t() @ xa / 5)
    expect = 0.9 * (As[0] + As[1]) / 2 + 0.1 * As[2]
    torch.testing.assert_close(kfac.layers[0].A, expect)


def test_fisher_backward_equals_full_backward_statistics_and_leaves_no_grads():
    def fresh():
        torch.manual_seed(3)
        m = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(32, 3)).to(D)
        return m, KFAC(m)
    x, w = torch.randn(7, 1, 6, 6, dtype=D), torch.randn(7, 3, dtype=D)  # (separate biases: Gb checked too)
    m1, k1 = fresh(); run_stats(m1, k1, x, w, full_backward=True)
    m2, k2 = fresh(); run_stats(m2, k2, x, w)
    for a, b in zip(k1.layers, k2.layers):
        torch.testing.assert_close(a.A, b.A); torch.testing.assert_close(a.G, b.G); torch.testing.assert_close(a.Gb, b.Gb)
    assert all(p.grad is None for p in m2.parameters())


def test_no_stats_outside_capture_and_state_roundtrip():
    model, kfac = _fitted()
    A = kfac.layers[0].A.clone()
    model(torch.randn(3, 1, 6, 6, dtype=D)).sum().backward()  # outside capture: no statistics
    torch.testing.assert_close(kfac.layers[0].A, A)
    sd = kfac.state_dict()
    model2 = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(32, 3)).to(D)
    model2.load_state_dict(model.state_dict())
    k2 = KFAC(model2, eig_eps=0.0, bias_mode="homogeneous", cold_iters=0, eig_async=False)
    k2.load_state_dict(sd)
    for a, b in zip(kfac.layers, k2.layers):
        torch.testing.assert_close(a.A, b.A); torch.testing.assert_close(a.eig["G"][1], b.eig["G"][1])
    assert k2.steps == kfac.steps


@pytest.mark.parametrize("C,H,k,s,p", [(4, 84, 8, 4, 0), (3, 20, 4, 2, 0), (5, 9, 3, 1, 0), (2, 11, 3, 1, 1),
                                       (2, 13, 4, 2, 1), (3, 10, 2, 2, 0)])
def test_cell_factor_equals_unfold_factor(C, H, k, s, p):
    from algorithms.kfac import _Layer, conv_input_factor_cells, conv_patches
    conv = nn.Conv2d(C, 3, k, stride=s, padding=p).to(D)
    x = torch.randn(3, C, H, H, dtype=D)
    patches = conv_patches(x, conv).reshape(-1, C * k * k)
    a = torch.cat([patches, torch.ones(patches.shape[0], 1, dtype=D)], 1)
    torch.testing.assert_close(conv_input_factor_cells(x, conv), a.t() @ a, rtol=1e-10, atol=1e-9)
    L = conv_patches(x, conv).shape[1]
    from algorithms.kfac import input_factor
    torch.testing.assert_close(input_factor(_Layer(conv, "homogeneous"), x), a.t() @ a / (3 * L * L), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(input_factor(_Layer(conv, "separate"), x), (a.t() @ a)[:-1, :-1] / (3 * L * L),
                               rtol=1e-10, atol=1e-12)


def test_eigh_falls_back_to_float64(monkeypatch):
    real = torch.linalg.eigh

    def flaky(M):
        if M.dtype == torch.float32:
            raise RuntimeError("linalg.eigh: The algorithm failed to converge")
        return real(M)

    monkeypatch.setattr(torch.linalg, "eigh", flaky)
    M = torch.randn(6, 6)
    M = M @ M.t()
    d, Q = _eigh(M)
    assert d.dtype == torch.float32
    torch.testing.assert_close(Q @ torch.diag(d) @ Q.t(), M, rtol=1e-4, atol=1e-4)

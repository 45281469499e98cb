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
                                       (2, 9, 3, 1, (1, 0)),
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


# --------------------------------------------------------------------------- contract edges (mutation-found)
def _resume_net():
    torch.manual_seed(5)
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(32, 3)).to(D)
    scale = nn.Parameter(torch.zeros(3, dtype=D))          # a G-only block (as the Gaussian policy's log-std)
    return net, scale


def _resume_kfac(net, scale):
    return KFAC(net, lr=0.2, kl_clip=1e-2, cold_iters=2, stats_accum=3, eig_async=True, weight_damping=1e-3,
                g_blocks=[(scale, lambda g, p: g)], extra_params=[])


def _resume_update(net, scale, kfac, t):
    g = torch.Generator().manual_seed(100 + t)
    x, w = torch.randn(8, 1, 6, 6, dtype=D, generator=g), torch.randn(8, 3, dtype=D, generator=g)
    with kfac.capture():
        kfac.fisher_backward(per_sample_loss(net(x) * scale.exp(), w).mean())
    net.zero_grad()
    scale.grad = None
    per_sample_loss(net(x) * scale.exp(), w).pow(2).mean().backward()
    kfac.step()


def test_checkpoint_resume_continues_exactly_as_the_uninterrupted_run():
    """Save mid-run (with a background eigendecomposition in flight), load into a fresh network and optimizer
    through torch.save / torch.load(weights_only=True), continue: parameters, factors, statistics counts and
    eigendecompositions equal the run that was never interrupted, for conv, linear, separate-bias (Gb) and
    G-only blocks."""
    import io

    ref_net, ref_scale = _resume_net()
    ref = _resume_kfac(ref_net, ref_scale)
    net, scale = _resume_net()
    kfac = _resume_kfac(net, scale)
    for t in range(5):
        _resume_update(ref_net, ref_scale, ref, t)
        _resume_update(net, scale, kfac, t)
    buf = io.BytesIO()
    torch.save({"net": net.state_dict(), "scale": scale.detach(), "opt": kfac.state_dict()}, buf)
    buf.seek(0)
    ck = torch.load(buf, weights_only=True)
    net2, scale2 = _resume_net()
    net2.load_state_dict(ck["net"])
    with torch.no_grad():
        scale2.copy_(ck["scale"])
    k2 = _resume_kfac(net2, scale2)
    k2.load_state_dict(ck["opt"])
    for t in range(5, 9):
        _resume_update(ref_net, ref_scale, ref, t)
        _resume_update(net2, scale2, k2, t)
        _resume_update(net, scale, kfac, t)     # the run that saved goes on too, unchanged by saving
    for a, b, c in zip(list(ref_net.parameters()) + [ref_scale], list(net2.parameters()) + [scale2],
                       list(net.parameters()) + [scale]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        torch.testing.assert_close(a, c, rtol=0, atol=0)
    assert k2.steps == ref.steps == 9
    for a, b in zip(ref._blocks(), k2._blocks()):
        assert a.n_stats == b.n_stats == 9
        for name in ("A", "G", "Gb"):
            if getattr(a, name, None) is not None:
                torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=0, atol=0)
        for name, (d, Q) in a.eig.items():
            torch.testing.assert_close(b.eig[name][0], d, rtol=0, atol=0)
    assert ref.layers[0].Gb is not None and ref.gblocks[0].G is not None


def test_g_only_block_statistics_average_plainly_from_the_first_batch():
    model = nn.Linear(2, 2).to(D)
    p = nn.Parameter(torch.tensor([0.3, -0.2], dtype=D))
    kfac = KFAC(model, stats_accum=5, g_blocks=[(p, lambda g, q: g)])
    vs = []
    for t in range(3):
        x = torch.randn(4, 2, dtype=D)
        with kfac.capture():
            loss = (model(x) * p).pow(2).sum(1).mean() * (t + 1)
            kfac.fisher_backward(loss)
        vs.append(torch.autograd.grad((model(x) * p).pow(2).sum(1).mean() * (t + 1), p)[0].detach())
    torch.testing.assert_close(kfac.gblocks[0].G, sum(torch.outer(v, v) for v in vs) / 3)
    assert kfac.gblocks[0].n_stats == 3


def test_stats_every_and_unsupported_convolutions():
    from algorithms.kfac import conv_patches

    kfac = KFAC(nn.Linear(2, 2), stats_every=3)
    seen = []
    for s in range(7):
        kfac.steps = s
        seen.append(kfac.wants_stats())
    assert seen == [True, False, False, True, False, False, True]
    x = torch.randn(1, 2, 5, 5)
    for conv in (nn.Conv2d(2, 3, 3, padding="same"), nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect")):
        with pytest.raises(NotImplementedError, match="^K-FAC supports Conv2d with explicit zero padding$"):
            conv_patches(x, conv)


def test_rank_deficient_factors_clamp_to_zero_and_weight_damping_adds_to_weight_blocks_only():
    """Fewer samples than inputs: A has (numerically) zero eigenvalues, clamped to 0 below eig_eps, so the
    preconditioned gradient is the dense solve with (A kron G + (damping + weight_damping) I) on the weight block,
    and (G_b + damping I) on the separate bias block."""
    torch.manual_seed(1)
    model = nn.Linear(6, 3).to(D)
    kfac = KFAC(model, eig_eps=1e-6, weight_damping=0.02, damping=0.01, cold_iters=0, eig_async=False)
    x = torch.randn(2, 6, dtype=D)
    with kfac.capture():
        kfac.fisher_backward((model(x) * torch.randn(2, 3, dtype=D)).sum(1).mean())
    layer = kfac.layers[0]
    kfac._install(_eigendecompose(kfac._factors(), kfac.eig_eps, 0))
    dA = layer.eig["A"][0]
    assert (dA == 0).sum() == 4 and torch.linalg.eigvalsh(layer.A).abs()[:4].max() < 1e-6
    (d, _), = [e["A"] for e in _eigendecompose([{"A": torch.diag(torch.tensor([1e-6, 1.0, 5e-7], dtype=D))}], 1e-6, 0)]
    assert d.tolist() == [0.0, 1e-6, 1.0]            # below eig_eps clamped; eig_eps itself kept
    g = torch.randn(3, 6, dtype=D)
    dense = torch.kron(layer.G, layer.A) + 0.03 * torch.eye(18, dtype=D)
    torch.testing.assert_close(kfac.precondition(layer, g), torch.linalg.solve(dense, g.reshape(-1)).reshape(3, 6),
                               rtol=1e-7, atol=1e-9)
    gb = torch.randn(3, dtype=D)
    torch.testing.assert_close(kfac.precondition_g(layer.eig["Gb"], gb),
                               torch.linalg.solve(layer.Gb + 0.01 * torch.eye(3, dtype=D), gb), rtol=1e-8, atol=1e-10)


def test_eigendecomposition_failures_name_the_update(monkeypatch):
    from algorithms.kfac import EigendecompositionError

    real = torch.linalg.eigh
    M = torch.eye(3, dtype=D)

    def nan_vectors(A):                  # finite eigenvalues, non-finite vectors in float32: retried in float64
        d, Q = real(A)
        return (d, Q * float("nan")) if A.dtype == torch.float32 else (d, Q)

    monkeypatch.setattr(torch.linalg, "eigh", nan_vectors)
    d, Q = _eigh(M.float())
    assert torch.isfinite(Q).all() and Q.dtype == torch.float32

    monkeypatch.setattr(torch.linalg, "eigh", lambda A: (torch.full((3,), float("nan"), dtype=A.dtype), A))
    with pytest.raises(EigendecompositionError, match="^non-finite K-FAC factor eigenvalues at update 7$"):
        _eigendecompose([{"A": M}], 1e-6, 7)

    def broken(A):
        raise RuntimeError("did not converge")

    monkeypatch.setattr(torch.linalg, "eigh", broken)
    with pytest.raises(EigendecompositionError,
                       match="^eigendecomposition of a K-FAC factor failed at update 7: did not converge$"):
        _eigendecompose([{"A": M}], 1e-6, 7)
    # in the background thread: the error names the update whose factors were decomposed
    model = nn.Linear(2, 2).to(D)
    kfac = KFAC(model, cold_iters=2, eig_async=True)
    for _ in range(3):
        with kfac.capture():
            kfac.fisher_backward(model(torch.randn(4, 2, dtype=D)).pow(2).sum())
        model.zero_grad()
        model(torch.randn(4, 2, dtype=D)).sum().backward()
        if kfac.steps < 2:
            kfac.step()
    with pytest.raises(EigendecompositionError, match="failed at update 2: did not converge$"):
        kfac.step()


def test_cell_path_taken_exactly_where_it_is_exact():
    """The cell-grid A factor (a speed-up) is used only for a zero-padded, undilated, ungrouped conv with a bias
    whose stride divides its kernel in each direction: the Atari convolutions take it; every other conv takes the
    unfold path, and both paths give the naive patch factor."""
    from algorithms.kfac import _cells_apply, _Layer, conv_patches, input_factor

    fast = [nn.Conv2d(4, 8, 8, 4), nn.Conv2d(4, 8, 4, 2), nn.Conv2d(4, 8, 3, 1), nn.Conv2d(2, 3, (4, 2), (2, 1))]
    slow = [nn.Conv2d(4, 8, 3, 2), nn.Conv2d(4, 8, (3, 4), 2), nn.Conv2d(4, 8, (3, 2), (2, 1)),
            nn.Conv2d(4, 8, (2, 3), (1, 2)), nn.Conv2d(4, 8, (4, 3), (3, 2)), nn.Conv2d(4, 8, 3, dilation=2),
            nn.Conv2d(4, 8, 3, dilation=(2, 1)), nn.Conv2d(4, 8, 3, dilation=(1, 2)), nn.Conv2d(4, 8, 3, groups=2),
            nn.Conv2d(4, 8, 3, bias=False), nn.Conv2d(4, 8, 3, padding=1, padding_mode="circular")]
    assert [_cells_apply(c) for c in fast] == [True] * len(fast)
    assert [_cells_apply(c) for c in slow] == [False] * len(slow)
    x = torch.randn(2, 4, 12, 12, dtype=D)
    for conv in [nn.Conv2d(4, 3, (3, 4), 2), nn.Conv2d(4, 3, (3, 2), (2, 1)), nn.Conv2d(4, 3, (4, 2), (2, 1))]:
        conv = conv.to(D)
        p = conv_patches(x, conv)
        a = torch.cat([p.reshape(-1, p.shape[-1]), torch.ones(p.shape[0] * p.shape[1], 1, dtype=D)], 1)
        torch.testing.assert_close(input_factor(_Layer(conv, "homogeneous"), x), a.t() @ a / (2 * p.shape[1] ** 2),
                                   rtol=1e-10, atol=1e-12)


def test_reference_defaults_in_use_over_the_cold_phase_and_the_first_kfac_steps():
    """A K-FAC built with no options, written out update by update (baselines' kfac.py defaults): 11 cold
    momentum-SGD steps (lr 0.25, momentum 0.9, gradients clipped to global norm 0.5) while the factors average
    plainly over the first 10 batches and then decay at 0.99; separate bias blocks; the first K-FAC step uses the
    eigendecompositions launched after the last cold step (factors of 11 batches, one update stale), the next
    those of 12; damping 0.01; trust region 0.001; step lr * (1 - momentum) with its own momentum buffer."""
    torch.manual_seed(0)
    model = nn.Linear(3, 2).to(D)
    kfac = KFAC(model)
    assert len(kfac.param_groups) == 1 and kfac.last == {} and kfac.steps == 0
    A = G = None
    snaps, cold_buf, buf = [], [torch.zeros_like(p) for p in model.parameters()], None
    for t in range(13):
        x, w = torch.randn(4, 3, dtype=D), torch.randn(4, 2, dtype=D)
        with kfac.capture():
            kfac.fisher_backward((model(x) * w).sum(1).mean())
        A_t, G_t = x.t() @ x / 4, w.t() @ w / 4     # G of the batch-mean loss: (B g)(B g)^T / B, g = w / B
        if t == 0:
            A, G = A_t.clone(), G_t.clone()
        elif t < 10:
            A, G = A + (A_t - A) / (t + 1), G + (G_t - G) / (t + 1)
        else:
            A, G = 0.99 * A + 0.01 * A_t, 0.99 * G + 0.01 * G_t
        torch.testing.assert_close(kfac.layers[0].A, A, rtol=1e-12, atol=0)
        torch.testing.assert_close(kfac.layers[0].G, G, rtol=1e-12, atol=0)
        torch.testing.assert_close(kfac.layers[0].Gb, G, rtol=1e-12, atol=0)   # a Linear's bias block: G itself
        snaps.append((A.clone(), G.clone()))
        model.zero_grad()
        (model(x).pow(2).sum() * 10).backward()           # large: the cold phase's clip is active
        g = [p.grad.clone() for p in model.parameters()]
        before = [p.detach().clone() for p in model.parameters()]
        kfac.step()
        if t < 11:
            norm = torch.sqrt(sum((q * q).sum() for q in g))
            assert norm > 0.5 and kfac.last["cold"] == 1.0
            cold_buf = [0.9 * b + q * (0.5 / (norm + 1e-6)) for b, q in zip(cold_buf, g)]
            expect = [b0 - 0.25 * b for b0, b in zip(before, cold_buf)]
        else:
            Au, Gu = snaps[t - 1]                          # the factors of t batches
            nat_w = torch.linalg.solve(torch.kron(Gu, Au) + 0.01 * torch.eye(6, dtype=D), g[0].reshape(-1))
            nat_b = torch.linalg.solve(Gu + 0.01 * torch.eye(2, dtype=D), g[1])
            vg = (nat_w @ g[0].reshape(-1) + nat_b @ g[1]) * 0.25 ** 2
            nu = min(1.0, math.sqrt(0.001 / vg.item()))
            assert nu < 1 and kfac.last["cold"] == 0.0 and kfac.last["trust_scale"] == pytest.approx(nu, rel=1e-9)
            nat = [nat_w.reshape(2, 3) * nu, nat_b * nu]
            buf = nat if buf is None else [0.9 * b + n for b, n in zip(buf, nat)]
            expect = [b0 - 0.25 * 0.1 * b for b0, b in zip(before, buf)]
        for p, e in zip(model.parameters(), expect):
            torch.testing.assert_close(p.detach(), e, rtol=1e-9, atol=1e-12)
    assert kfac.steps == 13


def test_constructor_messages_and_nothing_recorded_outside_capture():
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    kfac = KFAC(model)
    assert kfac.state_dict()["kfac"]["pending"] is None  # nothing launched yet: a fresh checkpoint holds no result
    model(torch.randn(5, 3)).sum().backward()           # outside capture(): no statistics, no outputs kept
    assert all(l.A is None and l.G is None and l.Gb is None and l.n_stats == 0 for l in kfac.layers)
    with pytest.raises(RuntimeError, match=r"^fisher_backward\(\) needs a forward pass inside capture\(\)$"):
        kfac.fisher_backward(model(torch.randn(5, 3)).sum())
    with torch.no_grad(), kfac.capture():
        model(torch.randn(5, 3))
        assert kfac._outputs == []                     # no graph: nothing to backpropagate
    with pytest.raises(ValueError, match=r"^bias_mode must be one of \('separate', 'homogeneous'\), got 'both'$"):
        KFAC(model, bias_mode="both")
    with pytest.raises(ValueError, match="^K-FAC found no nn.Linear or nn.Conv2d layer in the model$"):
        KFAC(nn.Sequential(nn.Tanh(), nn.BatchNorm1d(3)))
    with kfac.capture(), pytest.raises(
            ValueError, match=r"^K-FAC supports nn.Linear on \(batch, features\) inputs, got shape \(2, 5, 3\)$"):
        model(torch.randn(2, 5, 3))
    homog = nn.Linear(3, 2)                           # homogeneous biases: no separate bias factor is made
    k2 = KFAC(homog, bias_mode="homogeneous")
    with k2.capture():
        k2.fisher_backward(homog(torch.randn(4, 3)).pow(2).sum())
    assert k2.layers[0].A.shape == (4, 4) and k2.layers[0].Gb is None and set(k2.layers[0].factors()) == {"A", "G"}


def test_parameter_groups_and_plain_steps_for_parameters_outside_every_block():
    """Group 0 holds the K-FAC blocks (layers, then G-only blocks); parameters outside every block (in the model or
    passed as extra) form group 1 and take a plain momentum step of their own gradient, outside the trust region; a
    G-only block the Fisher loss does not reach gets zero statistics."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin, self.scale, self.free = nn.Linear(3, 2), nn.Parameter(torch.ones(2)), nn.Parameter(torch.zeros(2))

        def forward(self, x):
            return self.lin(x) * self.scale + self.free

    torch.manual_seed(0)
    net = Net().to(D)
    extra, unused = nn.Parameter(torch.zeros(2, dtype=D)), nn.Parameter(torch.ones(2, dtype=D))
    kfac = KFAC(net, g_blocks=[(net.scale, lambda g, p: g), (unused, lambda g, p: g)], extra_params=[extra],
                cold_iters=0, eig_async=False, kl_clip=1e-8)
    assert [[id(p) for p in g["params"]] for g in kfac.param_groups] == [
        [id(net.lin.weight), id(net.lin.bias), id(net.scale), id(unused)], [id(net.free), id(extra)]]
    x = torch.randn(6, 3, dtype=D)
    with kfac.capture():
        kfac.fisher_backward(net(x).pow(2).sum(1).mean())
    torch.testing.assert_close(kfac.gblocks[1].G, torch.zeros(2, 2, dtype=D), rtol=0, atol=0)
    assert kfac.gblocks[1].n_stats == 1
    net.zero_grad()
    (net(x) * torch.randn(6, 2, dtype=D)).sum().backward()
    unused.grad = torch.zeros(2, dtype=D)
    g_free, before = net.free.grad.clone(), net.free.detach().clone()
    kfac.step()
    assert kfac.last["trust_scale"] < 1e-2                    # the trust region scales the K-FAC blocks only
    torch.testing.assert_close(net.free.detach(), before - 0.25 * 0.1 * g_free, rtol=1e-12, atol=0)
    assert extra.grad is None and torch.equal(extra.detach(), torch.zeros(2, dtype=D))


def test_conv_cell_path_is_taken_and_exact_on_non_square_inputs_and_on_any_device(monkeypatch):
    """The cell-grid A factor is used where it applies (a call counter) and equals the patch factor on a
    non-square input; with PyTorch's default device set to 'meta' it gives the same factor (every index tensor
    made on the input's device)."""
    import algorithms.kfac as kf

    calls = []
    real = kf.conv_input_factor_cells
    monkeypatch.setattr(kf, "conv_input_factor_cells", lambda x, c: calls.append(1) or real(x, c))
    x = torch.randn(2, 3, 10, 14, dtype=D)
    for conv in (nn.Conv2d(3, 4, 4, 2), nn.Conv2d(3, 4, (4, 2), (2, 1), padding=(1, 2))):
        conv = conv.to(D)
        layer = kf._Layer(conv, "homogeneous")
        p = kf.conv_patches(x, conv)
        a = torch.cat([p.reshape(-1, p.shape[-1]), torch.ones(p.shape[0] * p.shape[1], 1, dtype=D)], 1)
        n = len(calls)
        got = kf.input_factor(layer, x)
        assert len(calls) == n + 1
        torch.testing.assert_close(got, a.t() @ a / (2 * p.shape[1] ** 2), rtol=1e-10, atol=1e-12)
        with torch.device("meta"):
            on_meta_default = kf.input_factor(layer, x)
        assert on_meta_default.device == x.device and torch.equal(on_meta_default, got)
    kf.input_factor(kf._Layer(nn.Conv2d(3, 4, 3, 2).to(D), "homogeneous"), x)
    assert len(calls) == 4                                 # stride 2 does not divide kernel 3: the unfold path

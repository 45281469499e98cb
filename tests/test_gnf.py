"""Graph Normalizing Flows: exact inverse, log-determinant against the brute-force Jacobian,
permutation equivariance, reversible backprop against autograd, and clear errors."""
import math

import numpy as np
import pytest
import torch

from models.gnf import (ActNorm, FlowNumericalError, GraphEncoder, GraphFlow, GRevCoupling, NodeClassifier,
                        decoder_logits)
from runners.graph_data import Graph, community_small, complete_edges, to_batch, adjacency_targets


def tiny_graph(n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    ei = torch.combinations(torch.arange(n)).T
    ei = ei[:, torch.rand(ei.shape[1], generator=g) < 0.6]
    return torch.cat([ei, ei.flip(0)], 1)


def trained_like(module, seed=0, scale=0.3):
    """Non-trivial weights (the couplings start as the identity by design)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=g))
        for m in module.modules():
            if isinstance(m, ActNorm):
                m.initialized.fill_(True)
    return module.double()


@pytest.mark.parametrize("actnorm", [True, False])
def test_flow_inverse_recovers_input(actnorm):
    torch.manual_seed(0)
    flow = trained_like(GraphFlow(8, n_blocks=4, hidden=16, heads=2, actnorm=actnorm))
    batch = torch.repeat_interleave(torch.arange(3), torch.tensor([4, 6, 5]))
    ei = complete_edges(batch)
    x = torch.randn(15, 8, dtype=torch.float64)
    z, _ = flow(x, ei)
    assert (z - x).abs().max() > 0.1                       # the map is not the identity
    assert torch.allclose(flow.inverse(z, ei), x, atol=1e-10)
    # float32 at the scale of a trained flow's weights: inverse(forward(x)) == x to 1e-5
    flow32 = trained_like(GraphFlow(8, n_blocks=4, hidden=16, heads=2, actnorm=actnorm), scale=0.1).float()
    z32 = flow32(x.float(), ei)[0]
    assert (z32 - x.float()).abs().max() > 0.1
    assert (flow32.inverse(z32, ei) - x.float()).abs().max() < 1e-5


def test_logdet_equals_bruteforce_jacobian():
    flow = trained_like(GraphFlow(4, n_blocks=3, hidden=8, heads=2))
    ei = tiny_graph(4)
    x = torch.randn(4, 4, dtype=torch.float64)
    _, logdet = flow(x, ei)
    jac = torch.autograd.functional.jacobian(lambda v: flow(v.view(4, 4), ei)[0].reshape(-1), x.reshape(-1))
    sign, logabs = torch.linalg.slogdet(jac)
    assert sign.item() == 1.0
    assert torch.allclose(logdet.sum(), logabs, atol=1e-9)


def test_log_prob_is_prior_plus_logdet_per_graph():
    flow = trained_like(GraphFlow(4, n_blocks=2, hidden=8, heads=2))
    batch = torch.tensor([0, 0, 0, 1, 1])
    ei = complete_edges(batch)
    x = torch.randn(5, 4, dtype=torch.float64)
    z, ld = flow(x, ei)
    lp = flow.log_prob(x, ei, batch, 2)
    node = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1) + ld
    assert torch.allclose(lp, torch.stack([node[:3].sum(), node[3:].sum()]))
    # one value per graph of the batch, also for a trailing graph without nodes
    assert torch.allclose(flow.log_prob(x, ei, batch, 3), torch.stack([node[:3].sum(), node[3:].sum(), node[:0].sum()]))


def test_flow_and_encoder_are_permutation_equivariant():
    torch.manual_seed(1)
    flow = trained_like(GraphFlow(6, n_blocks=3, hidden=12, heads=3))
    enc = trained_like(GraphEncoder(6, steps=3, hidden=12, heads=3))
    n = 7
    ei = tiny_graph(n, seed=3)
    x = torch.randn(n, 6, dtype=torch.float64)
    perm = torch.randperm(n)
    inv = torch.argsort(perm)
    ei_p = inv[ei]                                       # node perm[k] becomes node k
    z, ld = flow(x, ei)
    zp, ldp = flow(x[perm], ei_p)
    assert torch.allclose(zp, z[perm], atol=1e-10) and torch.allclose(ldp, ld[perm], atol=1e-10)
    h = enc(ei, n, x0=x)
    assert torch.allclose(enc(ei_p, n, x0=x[perm]), h[perm], atol=1e-10)


def test_complete_edges_match_dense_loop():
    batch = torch.tensor([0, 0, 1, 1, 1, 2])
    got = set(map(tuple, complete_edges(batch).T.tolist()))
    want = {(i, j) for i in range(6) for j in range(6) if i != j and batch[i] == batch[j]}
    assert got == want
    got = complete_edges(batch, self_edges=True).T.tolist()
    assert len(got) == 2 * 2 + 3 * 3 + 1 and set(map(tuple, got)) == want | {(i, i) for i in range(6)}


def test_decoder_and_targets_by_hand():
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]])
    pairs = torch.tensor([[0, 0, 1], [1, 2, 2]])
    want = 10 * (1 - torch.tensor([1.0, 9.0, 4.0]) / math.sqrt(2))
    assert torch.allclose(decoder_logits(x, pairs), want)
    b = to_batch([Graph.make(3, [[0, 1], [1, 1]])])           # self-loop dropped from the targets
    assert adjacency_targets(b, torch.tensor([[0, 1, 0, 1], [1, 0, 2, 1]])).tolist() == [1.0, 1.0, 0.0, 0.0]


def test_reversible_backprop_matches_autograd():
    torch.manual_seed(0)
    model = trained_like(NodeClassifier(5, 3, dim=8, steps=4, hidden=16, heads=2, dropout=0.0))
    ei = tiny_graph(9, seed=2)
    x, y = torch.randn(9, 5, dtype=torch.float64), torch.randint(0, 3, (9,))

    def grads(reversible):
        model.reversible = reversible
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(x, ei), y).backward()
        return [p.grad.clone() for p in model.parameters()]

    def graph_has_reversible_stack(reversible):
        model.reversible = reversible
        seen, todo = set(), [model(x, ei).grad_fn]
        while todo:
            fn = todo.pop()
            if fn is not None and fn not in seen:
                seen.add(fn)
                todo += [f for f, _ in fn.next_functions]
        return any("_ReversibleStack" in type(fn).__name__ for fn in seen)

    assert graph_has_reversible_stack(True) and not graph_has_reversible_stack(False)
    plain, rev = grads(False), grads(True)
    assert any(g.abs().max() > 1e-3 for g in plain[2:-2])   # the couplings do get gradient
    for a, b in zip(plain, rev):
        assert torch.allclose(a, b, atol=1e-10)


def test_nan_flow_state_is_a_clear_error():
    flow = GraphFlow(4, n_blocks=1, hidden=8, heads=2)
    x = torch.randn(3, 4)
    x[1, 2] = float("nan")
    with pytest.raises(FlowNumericalError, match="forward pass produced a non-finite state"):
        flow(x, complete_edges(torch.zeros(3, dtype=torch.long)))


def test_odd_feature_size_rejected():
    with pytest.raises(ValueError, match="even feature size"):
        GRevCoupling(5)


def test_community_small_recipe():
    gs = community_small(100, seed=0)
    assert len(gs) == 100
    for g in gs:
        a = g.adjacency()
        assert 7 <= g.num_nodes <= 20 and not a.diagonal().any()
        # connected (largest component kept)
        seen, todo = {0}, [0]
        while todo:
            for j in np.flatnonzero(a[todo.pop()]):
                if j not in seen:
                    seen.add(int(j))
                    todo.append(int(j))
        assert len(seen) == g.num_nodes


# ----------------------------------------------------------------------------- each piece against a hand computation
def dense_attention(att, x, ei):
    """TransformerConv without root weight, by a loop over target nodes: per head, softmax over the incoming edges
    of q_i . k_j / sqrt(d_head), sum of alpha_ij v_j; a node without incoming edges gets zeros."""
    H, C = att.heads, att.out_channels
    q = att.lin_query(x).view(-1, H, C)
    k = att.lin_key(x).view(-1, H, C)
    v = att.lin_value(x).view(-1, H, C)
    out = torch.zeros(x.shape[0], H, C, dtype=x.dtype)
    for i in range(x.shape[0]):
        src = ei[0][ei[1] == i]
        if len(src):
            a = torch.softmax((q[i][None] * k[src]).sum(-1) / math.sqrt(C), 0)      # (edges, H)
            out[i] = (a[..., None] * v[src]).sum(0)
    return out.reshape(x.shape[0], H * C)


def test_attention_message_passing_matches_a_dense_loop():
    from models.gnf import AttentionMP

    mp = trained_like(AttentionMP(3, 2, hidden=4, heads=2, mlp_layers=3, mlp_hidden=5))
    assert [type(m).__name__ for m in mp.mlp] == ["Linear", "ReLU", "Linear", "ReLU", "Linear"]
    assert [m.weight.shape for m in mp.mlp[::2]] == [(5, 7), (5, 5), (2, 5)]
    ei = torch.tensor([[0, 1, 2, 3, 1], [1, 0, 1, 1, 3]])                # node 2 has no incoming edge
    x = torch.randn(4, 3, dtype=torch.float64)
    att = dense_attention(mp.att, x, ei)
    assert att[2].abs().max() == 0 and att[1].abs().max() > 0
    want = torch.cat([x, att], -1)
    for m in mp.mlp:
        want = m(want)
    assert torch.allclose(mp(x, ei), want, atol=1e-12)
    # every parameter is used (no dead skip projection) and gets gradient
    mp(x, ei).pow(2).sum().backward()
    assert all(p.grad is not None and p.grad.abs().max() > 0 for p in mp.parameters())
    with pytest.raises(ValueError, match="divisible by heads"):
        AttentionMP(3, 2, hidden=6, heads=4)
    mp.att.reset_parameters()                               # the dropped skip projection still resets (a no-op)


def test_attention_message_passing_defaults_and_zero_init():
    from models.gnf import AttentionMP

    mp = AttentionMP(4, 6)
    assert (mp.att.heads, mp.att.out_channels, mp.att.concat, mp.att.root_weight) == (4, 16, True, False)
    assert [m.weight.shape for m in mp.mlp[::2]] == [(64, 68), (6, 64)]      # 2 layers, hidden wide
    assert mp.mlp[-1].weight.abs().max() > 0 and mp.mlp[-1].bias.abs().max() > 0
    z = AttentionMP(4, 6, zero_init=True)
    assert z.mlp[-1].weight.abs().max() == 0 and z.mlp[-1].bias.abs().max() == 0
    assert z.mlp[0].weight.abs().max() > 0


@pytest.mark.parametrize("separate_st", [True, False])
@pytest.mark.parametrize("bound", [None, 0.7])
def test_coupling_step_by_hand(separate_st, bound):
    """H0 <- H0 exp(F1(H1)) + F2(H1); H1 <- H1 exp(G1(H0)) + G2(H0) with F1, G1 through b tanh(. / b), and the
    log-determinant sum(F1) + sum(G1) per node, computed from the coupling's own sub-networks."""
    c = trained_like(GRevCoupling(6, hidden=4, heads=2, scale_bound=bound, separate_st=separate_st), scale=0.6)
    ei = tiny_graph(5, seed=1)
    x = torch.randn(5, 6, dtype=torch.float64)

    def st(net, h):
        s, t = (net[0](h, ei), net[1](h, ei)) if separate_st else net(h, ei).chunk(2, -1)
        return (s if bound is None else bound * torch.tanh(s / bound)), t

    h0, h1 = x[:, :3], x[:, 3:]
    s0, t0 = st(c.F, h1)
    h0 = h0 * torch.exp(s0) + t0
    s1, t1 = st(c.G, h0)
    h1 = h1 * torch.exp(s1) + t1
    y, ld = c(x, ei)
    assert torch.allclose(y, torch.cat([h0, h1], -1), atol=1e-12)
    assert torch.allclose(ld, s0.sum(-1) + s1.sum(-1), atol=1e-12)
    if bound is not None:
        assert s0.abs().max() < bound and s0.abs().max() > 0.1 * bound
    assert torch.allclose(c.inverse(y, ei), x, atol=1e-10)
    assert isinstance(c.F, torch.nn.ModuleList) == separate_st


def test_sizes_reach_every_sub_network():
    """heads, hidden, mlp_layers, mlp_hidden and identity_init are passed down to every message-passing net."""
    def check(mp, out, heads=2, width=5, layers=3):
        assert mp.att.heads == heads and mp.att.out_channels == 4 // heads
        assert [m.out_features for m in mp.mlp[::2]] == [width] * (layers - 1) + [out]

    c = GRevCoupling(6, hidden=4, heads=2, mlp_layers=3, mlp_hidden=5)
    for net in (*c.F, *c.G):
        check(net, 3)
    c = GRevCoupling(6, hidden=4, heads=2, mlp_layers=3, mlp_hidden=5, separate_st=False)
    check(c.F, 6)
    check(c.G, 6)
    flow = GraphFlow(6, n_blocks=2, hidden=4, heads=2, mlp_layers=3, mlp_hidden=5)
    for block in flow.layers[1::2]:
        for net in (*block.F, *block.G):
            check(net, 3)
            assert net.mlp[-1].weight.abs().max() == 0                       # identity_init by default
    check(GraphEncoder(6, steps=2, hidden=4, heads=2, mlp_layers=3, mlp_hidden=5).mp, 6)
    enc = GraphEncoder(6)
    assert (enc.mp.att.heads, enc.mp.att.out_channels, len(enc.mp.mlp)) == (4, 16, 3)
    assert enc.mp.mlp[0].out_features == 64
    nc = NodeClassifier(5, 3, dim=6, hidden=4, heads=2, identity_init=True)
    assert nc.blocks[0].F.mlp[-1].weight.abs().max() == 0


def test_coupling_and_flow_defaults_start_as_the_identity():
    c = GRevCoupling(8)
    assert c.scale_bound == 2.0 and c.separate_st and len(c.F) == len(c.G) == 2
    assert c.F[0].att.heads == 4 and c.F[0].att.out_channels == 16 and len(c.F[0].mlp) == 3
    x, ei = torch.randn(5, 8), tiny_graph(5)
    y, ld = c(x, ei)
    assert torch.equal(y, x) and torch.equal(ld, torch.zeros(5))           # identity_init: zero last layers
    flow = GraphFlow(8)
    assert [type(m).__name__ for m in flow.layers] == ["ActNorm", "GRevCoupling"] * 10
    block = flow.layers[1]
    assert block.scale_bound == 2.0 and block.separate_st and len(block.F[0].mlp) == 3
    assert (block.F[0].att.heads, block.F[0].att.out_channels, block.F[0].mlp[0].out_features) == (4, 16, 64)
    assert block.F[0].mlp[-1].weight.abs().max() == 0
    assert not any(isinstance(m, ActNorm) for m in GraphFlow(8, n_blocks=2, actnorm=False).layers)
    assert GraphFlow(8, n_blocks=1, identity_init=False).layers[1].F[0].mlp[-1].weight.abs().max() > 0
    assert not GraphFlow(8, n_blocks=1, separate_st=False).layers[1].separate_st


def test_actnorm_initialises_on_the_first_training_batch_only():
    an = ActNorm(3).double()
    x = torch.randn(50, 3, dtype=torch.float64) * torch.tensor([2.0, 0.5, 1.0], dtype=torch.float64) + 3
    an.eval()
    y, _ = an(x)
    assert torch.equal(y, x) and not bool(an.initialized)                  # no initialisation at evaluation
    an.train()
    y, ld = an(x)
    assert torch.allclose(y.mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(y.std(0, unbiased=False), torch.ones(3, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(ld, -torch.log(x.std(0, unbiased=False)).sum().expand(50))
    b, s = an.bias.clone(), an.log_scale.clone()
    y2, _ = an(2 * x + 1)                                                   # later batches do not re-initialise
    assert torch.equal(an.bias, b) and torch.equal(an.log_scale, s)
    assert torch.allclose(y2, (2 * x + 1 + b) * torch.exp(s))
    assert torch.allclose(an.inverse(y, None), x, atol=1e-12)
    const = ActNorm(2).double()
    const(torch.ones(4, 2, dtype=torch.float64))                             # zero spread: std clamped at 1e-6
    assert torch.allclose(const.log_scale, torch.full((2,), -math.log(1e-6), dtype=torch.float64))


def test_non_finite_state_error_counts_nodes_and_names_the_pass():
    flow = GraphFlow(4, n_blocks=1, hidden=8, heads=2, actnorm=False)
    ei = torch.zeros(2, 0, dtype=torch.long)                                # no edges: the NaNs stay in their nodes
    x = torch.randn(4, 4)
    x[1, :2] = float("inf")
    x[3, 3] = float("nan")
    with pytest.raises(FlowNumericalError, match=r"forward pass produced a non-finite state at 2 node\(s\)"):
        flow(x, ei)
    with pytest.raises(FlowNumericalError, match=r"inverse pass produced a non-finite state at 2 node\(s\)"):
        flow.inverse(x, ei)


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("batch_norm", [True, False])
def test_encoder_steps_by_hand(residual, batch_norm):
    """h <- MP(BN(h)) (or h + MP(BN(h))), one shared MP, a BatchNorm with batch statistics per step."""
    enc = trained_like(GraphEncoder(4, steps=3, hidden=4, heads=2, residual=residual, batch_norm=batch_norm))
    ei, x0 = tiny_graph(6, seed=4), torch.randn(6, 4, dtype=torch.float64)
    h = x0
    for i in range(3):
        u = h
        if batch_norm:
            n = enc.norms[i]
            u = (h - h.mean(0)) / torch.sqrt(h.var(0, unbiased=False) + n.eps) * n.weight + n.bias
        h = h + enc.mp(u, ei) if residual else enc.mp(u, ei)
    for mode in (enc.train, enc.eval):                                      # batch statistics also at evaluation
        mode()
        assert torch.allclose(enc(ei, 6, x0=x0), h, atol=1e-10)
    assert (enc.norms is None) == (not batch_norm)


def test_encoder_defaults_random_input_and_centering():
    enc = GraphEncoder(4, hidden=8, heads=2)
    assert (enc.steps, enc.center, enc.residual, len(enc.norms)) == (10, False, False, 10)
    assert enc.mp.att.heads == 2 and len(enc.mp.mlp) == 3
    ei = tiny_graph(5, seed=2)
    torch.manual_seed(7)
    a = enc(ei, 5)
    torch.manual_seed(7)
    x0 = torch.randn(5, 4)
    assert torch.equal(a, enc(ei, 5, x0=x0))                               # N(0, 1) node features by default
    cen = trained_like(GraphEncoder(4, steps=2, hidden=4, heads=2, center=True))
    plain = trained_like(GraphEncoder(4, steps=2, hidden=4, heads=2))
    batch = torch.tensor([0, 0, 0, 1, 1])
    ei2, x = complete_edges(batch), torch.randn(5, 4, dtype=torch.float64)
    h = plain(ei2, 5, x0=x)
    want = h - torch.stack([h[:3].mean(0)] * 3 + [h[3:].mean(0)] * 2)
    assert torch.allclose(cen(ei2, 5, x0=x, batch=batch), want, atol=1e-12)
    assert torch.allclose(cen(ei2, 5, x0=x), h - h.mean(0), atol=1e-12)    # no batch: one graph


def test_node_classifier_forward_by_hand_and_options():
    with pytest.raises(ValueError, match="unknown node classifier kind"):
        NodeClassifier(5, 3, kind="gcn")
    ei, x = tiny_graph(6, seed=5), torch.randn(6, 5, dtype=torch.float64)
    gnn = trained_like(NodeClassifier(5, 3, dim=4, steps=2, kind="gnn", hidden=4, heads=2, dropout=0.0))
    assert len(gnn.blocks) == 2 and gnn.blocks[0].att.heads == 2 and len(gnn.blocks[0].mlp) == 3
    h = gnn.inp(x)
    for b in gnn.blocks:
        h = h + b(h, ei)
    assert torch.allclose(gnn(x, ei), gnn.out(h), atol=1e-12)
    rev = trained_like(NodeClassifier(5, 3, dim=4, steps=2, hidden=4, heads=2, dropout=0.0))
    assert not rev.blocks[0].separate_st and rev.blocks[0].scale_bound == 2.0
    h = rev.inp(x)
    for b in rev.blocks:
        h = b(h, ei)[0]
    for grad in (True, False):
        with torch.set_grad_enabled(grad):
            assert torch.allclose(rev(x, ei), rev.out(h), atol=1e-10)
    d = NodeClassifier(5, 3)
    assert d.drop.p == 0.5 and d.reversible and d.kind == "grevnet" and len(d.blocks) == 4
    assert d.inp.out_features == 64 and d.blocks[0].F.att.heads == 4
    # identity_init=False by default here: the couplings do something from the start
    assert d.blocks[0].F.mlp[-1].weight.abs().max() > 0
    d.eval()
    xs = torch.randn(6, 5)
    assert torch.equal(d(xs, ei), d(xs, ei))                                # no dropout at evaluation
    d.train()
    assert not torch.equal(d(xs, ei), d(xs, ei))


def test_every_tensor_is_made_on_the_inputs_device():
    """Device placement (tests/devices.py): the encoder's random initial features, the flow both ways, its
    log-density and the node classifier."""
    from devices import assert_same_under_meta_default

    torch.manual_seed(1)
    enc = GraphEncoder(6, steps=2, hidden=12, heads=3)
    flow = GraphFlow(6, n_blocks=2, hidden=12, heads=3)
    clf = NodeClassifier(5, 3, dim=8, steps=2, hidden=8, heads=2).eval()
    ei, batch = tiny_graph(7, seed=3), torch.tensor([0, 0, 0, 1, 1, 1, 1])
    x = torch.randn(7, 6)

    def run():
        torch.manual_seed(2)
        h = enc(ei, 7)
        z, ld = flow(h, ei)
        return [h, z, ld, flow.inverse(z, ei), flow.log_prob(h, ei, batch, 2), clf(x[:, :5], ei)]

    assert_same_under_meta_default(run)

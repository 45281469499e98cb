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

import torch
import torch.nn.functional as F

from models.fast_weights import AttentionLSTM, FastWeightsRNN, build_retrieval_model

torch.manual_seed(0)


def naive_fast_weights(m: FastWeightsRNN, x: torch.Tensor) -> torch.Tensor:
    """Per-example loop with the explicit fast-weight matrix, straight from the paper's equations."""
    H = m.hidden_size
    outs = []
    for b in range(x.shape[0]):
        h = torch.zeros(H, dtype=x.dtype)
        A = torch.zeros(H, H, dtype=x.dtype)
        for t in range(x.shape[1]):
            if t > 0 and m.use_fast_weights:
                A = m.lam * A + m.eta * torch.outer(h, h)
            boundary = m.W @ h + m.C.weight @ x[b, t] + m.C.bias
            hs = torch.relu(boundary)
            for _ in range(m.inner_steps):
                z = boundary + A @ hs
                if isinstance(m.ln, torch.nn.LayerNorm):  # normalise over this example's hidden units
                    mu, var = z.mean(), z.var(unbiased=False)
                    z = (z - mu) / torch.sqrt(var + m.ln.eps) * m.ln.weight + m.ln.bias
                hs = torch.relu(z)
            h = hs
        outs.append(h)
    return torch.stack(outs)


def _randomised(scale=0.3, **kw):
    m = FastWeightsRNN(7, 6, lam=0.9, eta=0.7, **kw).double()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(scale * torch.randn_like(p))
    return m


def test_matches_naive_loop_default_and_ablations():
    x = torch.randn(5, 9, 7, dtype=torch.float64)
    for kw in [dict(), dict(inner_steps=3), dict(layer_norm=False), dict(use_fast_weights=False),
               dict(inner_steps=2, layer_norm=False)]:
        ln = kw.get("layer_norm", True)
        m = _randomised(scale=0.3 if ln else 0.05, **kw)
        xs = x if ln else 0.3 * x[:, :5]  # without LN the memory feedback grows cubically: keep it short
        out = m(xs)
        assert torch.isfinite(out).all() and out.abs().max() > 0
        torch.testing.assert_close(out, naive_fast_weights(m, xs), rtol=1e-10, atol=1e-10)


def test_gradients_match_naive_loop():
    x = torch.randn(3, 6, 7, dtype=torch.float64)
    m = _randomised(inner_steps=2)
    g1 = torch.autograd.grad(m(x).square().sum(), list(m.parameters()))
    g2 = torch.autograd.grad(naive_fast_weights(m, x).square().sum(), list(m.parameters()))
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_memory_term_matters():
    x = torch.randn(4, 9, 7, dtype=torch.float64)
    m = _randomised()
    off = _randomised(use_fast_weights=False)
    off.load_state_dict(m.state_dict())
    assert (m(x) - off(x)).abs().max() > 1e-3


def test_initialisation_w_is_005_identity():
    m = FastWeightsRNN(4, 5)
    torch.testing.assert_close(m.W.detach(), 0.05 * torch.eye(5))


def test_layer_norm_is_per_example_over_hidden_units():
    m = FastWeightsRNN(7, 16).double()
    x = torch.randn(6, 5, 7, dtype=torch.float64)
    # batch independence: an example's output does not depend on the other examples in the batch
    full = m(x)
    for b in range(6):
        torch.testing.assert_close(full[b:b + 1], m(x[b:b + 1]))
    # the normalised pre-activation of each example has zero mean, unit variance over hidden units
    captured = []
    m.ln.register_forward_hook(lambda mod, inp, out: captured.append(out))
    m(x * 5 + 3)
    z = captured[-1]
    assert z.shape == (6, 16)
    torch.testing.assert_close(z.mean(1), torch.zeros(6, dtype=z.dtype), atol=1e-6, rtol=0)
    torch.testing.assert_close(z.var(1, unbiased=False), torch.ones(6, dtype=z.dtype), atol=1e-3, rtol=0)


def test_alstm_attends_over_all_states_and_classifier_shapes():
    m = AttentionLSTM(5, 8)
    x = torch.randn(3, 11, 5)
    assert m(x).shape == (3, 8)
    # changing an early input changes the output through attention as well as the recurrence
    x2 = x.clone(); x2[:, 0] += 1
    assert (m(x) - m(x2)).abs().max() > 0
    for name in ["fast_weights", "irnn", "lstm", "alstm"]:
        clf = build_retrieval_model(name, 37, 10, hidden_size=20, embed_dim=12, head_hidden=16)
        logits = clf(torch.randint(0, 37, (4, 11)))
        assert logits.shape == (4, 10)
        F.cross_entropy(logits, torch.zeros(4, dtype=torch.long)).backward()
        assert all(p.grad is not None for p in clf.parameters())


def test_fast_weights_learns_a_tiny_retrieval_batch():
    from runners.retrieval_data import VOCAB, generate
    x, y = (torch.from_numpy(a) for a in generate(0, 256, 1, 1)["train"])
    torch.manual_seed(0)
    m = build_retrieval_model("fast_weights", len(VOCAB), 10, hidden_size=32, embed_dim=32, head_hidden=32)
    opt = torch.optim.Adam(m.parameters(), 3e-3)
    first = None
    for _ in range(150):
        loss = F.cross_entropy(m(x), y)
        first = first if first is not None else loss.item()
        opt.zero_grad(); loss.backward(); opt.step()
    assert loss.item() < 0.5 * first

import torch
import torch.nn.functional as F

from models.fast_weights import AttentionLSTM, FastWeightsRNN, build_retrieval_model

torch.manual_seed(0)


def naive_fast_weights(m: FastWeightsRNN, x: torch.Tensor, layer_norm: bool = True) -> torch.Tensor:
    """Per-example loop with the explicit fast-weight matrix, straight from the paper's equations; ``layer_norm``
    says what the model should do (not read from the model, so a model that normalises anyway is caught)."""
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
                if layer_norm:  # normalise over this example's hidden units (gain and bias: the model's)
                    mu, var = z.mean(), z.var(unbiased=False)
                    z = (z - mu) / torch.sqrt(var + 1e-5) * m.ln.weight + m.ln.bias
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
        torch.testing.assert_close(out, naive_fast_weights(m, xs, layer_norm=ln), rtol=1e-10, atol=1e-10)


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


def test_baselines_and_classifier_against_written_out_equations():
    """IRNN, LSTM, A-LSTM and the classifier head, each against its equations written out (mutation testing found
    these unpinned: the IRNN's ReLU and init, the LSTM returning its cell, the attention's sign and biases)."""
    from models.fast_weights import IRNN, LSTM, RetrievalClassifier

    torch.manual_seed(1)
    B, T, D, H = 3, 5, 4, 6
    x = torch.randn(B, T, D)
    irnn = IRNN(D, H)                                  # Le et al.: W_hh = I, zero biases, W_ih ~ N(0, 0.001^2), ReLU
    assert torch.equal(irnn.rnn.weight_hh_l0, torch.eye(H)) and not irnn.rnn.bias_ih_l0.any()
    w = IRNN(100, 400).rnn.weight_ih_l0
    assert abs(w.std().item() - 1e-3) < 5e-5 and abs(w.mean().item()) < 2e-5
    with torch.no_grad():
        h = torch.zeros(B, H)
        for t in range(T):
            h = torch.relu(x[:, t] @ irnn.rnn.weight_ih_l0.T + h)
        torch.testing.assert_close(irnn(x), h)
        lstm = LSTM(D, H)                              # the final hidden state h(T), not the cell state
        torch.testing.assert_close(lstm(x), lstm.rnn(x)[0][:, -1])
        a = AttentionLSTM(D, H, attn_size=7)           # additive attention: v . tanh(W_k s_j + W_q q + b)
        assert a.key.bias is None and a.v.bias is None and a.query.bias is not None
        states = a.rnn(x)[0]
        q = states[:, -1]
        e = torch.tanh(states @ a.key.weight.T + (q @ a.query.weight.T + a.query.bias)[:, None]) @ a.v.weight[0]
        ctx = (torch.softmax(e, 1)[..., None] * states).sum(1)
        torch.testing.assert_close(a(x), torch.tanh(torch.cat([ctx, q], 1) @ a.combine.weight.T + a.combine.bias))
    # the classifier: embedding N(0, std^2), core, Linear-ReLU-Linear; keyword arguments reach the core
    c = build_retrieval_model("fast_weights", 2000, 9, H, 50, 11, embed_init_std=0.5, lam=0.7, eta=0.3, inner_steps=2)
    assert (c.core.lam, c.core.eta, c.core.inner_steps) == (0.7, 0.3, 2)
    assert abs(c.embed.weight.std().item() - 0.5) < 0.01 and abs(c.embed.weight.mean().item()) < 0.01
    d = RetrievalClassifier(LSTM(50, H), 3000, 50, 11, 9)
    assert abs(d.embed.weight.std().item() - 1.0) < 0.01 and abs(d.embed.weight.mean().item()) < 0.01
    tokens = torch.randint(0, 2000, (B, T))
    with torch.no_grad():
        f = c.core(c.embed(tokens))
        ref = torch.relu(f @ c.head[0].weight.T + c.head[0].bias) @ c.head[2].weight.T + c.head[2].bias
        torch.testing.assert_close(c(tokens), ref)
    e = build_retrieval_model("lstm", 3000, 9, H, 50, 11)            # the default embedding std is 1
    assert abs(e.embed.weight.std().item() - 1.0) < 0.01
    # the paper's fast-weight settings are the defaults: lambda 0.95, eta 0.5, one inner step
    fw = FastWeightsRNN(D, H)
    assert (fw.lam, fw.eta, fw.inner_steps) == (0.95, 0.5, 1)
    for bad, msg in ((lambda: build_retrieval_model("gru", 10, 2, 4, 4, 4), "unknown model 'gru'; choose from ['alstm'"),
                     (lambda: FastWeightsRNN(D, H, inner_steps=0), "inner_steps must be >= 1, got 0")):
        try:
            bad()
            raise AssertionError("no error")
        except ValueError as err:
            assert str(err).startswith(msg), err


def test_fast_weights_run_on_the_inputs_device():
    """Every tensor the forward creates lives on the input's device (the meta device stands in for a GPU)."""
    for steps in (1, 2):
        m = FastWeightsRNN(4, 6, inner_steps=steps).to("meta")
        assert m(torch.randn(2, 5, 4, device="meta")).device.type == "meta"

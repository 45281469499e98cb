"""The attention encoder-decoder (models/seq2seq.py) against hand computations: the position signal, Luong "general"
attention with padded sources masked, each attention memory, locked dropout, the encoder/decoder wiring against one
sentence at a time through the torch RNNs, greedy decoding against teacher forcing, and beam search against
exhaustive search."""
import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from models.revrnn import max_forget
from models.seq2seq import BOS, EOS, AuthorsRNN, Seq2Seq, sinusoid

CELLS = ["gru", "lstm", "revgru", "revlstm"]


def test_sinusoid_by_hand():
    for dim in (6, 7):
        pe = sinusoid(5, dim, "cpu")
        assert pe.shape == (5, 1, dim)
        for pos in range(5):
            for i in range(dim):
                ang = pos / 10000 ** ((i - i % 2) / dim)
                want = math.sin(ang) if i % 2 == 0 else math.cos(ang)
                assert pe[pos, 0, i].item() == pytest.approx(want, abs=1e-6)


def test_attention_by_hand_masks_padded_sources():
    torch.manual_seed(0)
    model = Seq2Seq(9, 7, emb=4, hidden=5, cell="gru", attention="emb+slice", slice_units=2, dropout=0.0).double()
    S, T, B, m = 4, 3, 2, 6
    q, mem = torch.randn(T, B, 5, dtype=torch.float64), torch.randn(S, B, m, dtype=torch.float64)
    src_mask = torch.tensor([[1, 1], [1, 1], [1, 0], [0, 0]], dtype=torch.bool)
    got = model.attend(q, mem, src_mask)
    Wa, Wc = model.attn.weight, model.combine.weight
    for t in range(T):
        for b in range(B):
            n = int(src_mask[:, b].sum())
            scores = torch.stack([q[t, b] @ (Wa @ mem[s, b]) for s in range(n)])
            ctx = (torch.softmax(scores, 0)[:, None] * mem[:n, b]).sum(0)
            want = model.out(torch.tanh(Wc @ torch.cat([ctx, q[t, b]])))
            assert torch.allclose(got[t, b], want, atol=1e-12)
    mem2 = mem.clone()
    mem2[3] = 1e3
    mem2[2, 1] = -1e3
    assert torch.equal(model.attend(q, mem2, src_mask), got)                # padded positions are never read
    assert model.attn.bias is None and model.combine.bias is None and model.out.bias is not None


@pytest.mark.parametrize("attention,size", [("full", 10), ("emb", 4), ("slice", 3), ("emb+slice", 7)])
def test_attention_memory_of_each_kind(attention, size):
    """The memory from the (already dropped) source embeddings and the top encoder outputs: ``full`` drops the
    top outputs with their own mask, the slice (the first k units) is dropped with the slice mask."""
    model = Seq2Seq(9, 7, emb=4, hidden=10, cell="revgru", attention=attention, slice_units=3, dropout=0.5).train()
    assert model.memory_size() == size and model.attn.in_features == size
    assert model.combine.in_features == size + 10
    e, top = torch.randn(5, 2, 4), torch.randn(5, 2, 10)
    masks = model.masks(2, "cpu")
    sl = top[..., :3] * masks["slice"]
    want = {"full": top * masks["enc_top"], "emb": e, "slice": sl, "emb+slice": torch.cat([e, sl], -1)}[attention]
    assert torch.equal(model.memory(e, top, masks), want)
    # the slice is kept out of the top encoder layer's bit buffer
    assert model.enc[-1].unbuffered == (3 if "slice" in attention else 0)


def test_locked_dropout_masks():
    model = Seq2Seq(9, 7, emb=4, hidden=6, cell="lstm", attention="emb+slice", slice_units=2, dropout=0.25, layers=3)
    model.train()
    torch.manual_seed(0)
    m = model.masks(200, "cpu")
    for key, dim in [("src", 4), ("tgt", 4), ("query", 6), ("enc_top", 6), ("slice", 2)]:
        assert m[key].shape == (200, dim)
        assert torch.equal(m[key].unique(), torch.tensor([0.0, 1 / 0.75]))
        assert abs((m[key] == 0).float().mean().item() - 0.25) < 0.08
    assert m["enc"][0] is None and m["dec"][0] is None and len(m["enc"]) == len(m["dec"]) == 3
    assert all(x.shape == (200, 6) for x in m["enc"][1:] + m["dec"][1:])
    assert not torch.equal(m["src"], m["tgt"])
    # one mask per sentence, the same at every time step
    e = model.embed(torch.randint(4, 9, (7, 200)), "src", m)
    assert torch.equal(e == 0, (m["src"] == 0)[None].expand(7, -1, -1) | (e == 0))
    assert ((e == 0).all(0) == (m["src"] == 0)).all()
    model.eval()
    assert all(v is None for k, v in model.masks(3, "cpu").items() if k not in ("enc", "dec"))
    model.train()
    model.p = 0.0
    assert model.masks(3, "cpu")["src"] is None
    assert Seq2Seq(9, 7).p == 0.4


def test_constructor_defaults_and_errors():
    d = Seq2Seq(9, 7)
    assert (d.cell, d.attention, d.k, d.hidden, d.emb_size, d.layers, d.positions) == \
        ("gru", "emb+slice", 20, 300, 300, 1, "none")
    assert isinstance(d.enc[0], torch.nn.GRU) and d.src_emb.padding_idx == 0 and d.tgt_emb.padding_idx == 0
    r = Seq2Seq(9, 7, cell="revlstm", hidden=8, emb=4, slice_units=2, layers=2)
    assert r.reversible and len(r.enc) == len(r.dec) == 2 and r.enc[0].cell.input_size == 4
    assert r.enc[1].cell.input_size == 8 and r.enc[0].unbuffered == 0 and r.enc[1].unbuffered == 2
    assert isinstance(Seq2Seq(9, 7, cell="lstm", layers=2).enc[1], torch.nn.LSTM)
    bad = [(dict(attention="dot"), r"unknown attention memory 'dot' \(full \| emb \| slice \| emb\+slice\)$"),
           (dict(cell="rnn"), r"unknown cell 'rnn' \(gru \| lstm \| revgru \| revlstm\)$"),
           (dict(positions="learned"), r"unknown positions 'learned' \(none \| sinusoidal\)$"),
           (dict(layers=0), "layers must be >= 1, got 0"),
           (dict(cell="revgru", hidden=8, slice_units=5), r"^slice_units must be in 1..4 \(half the hidden state: the "
                                                            r"slice is the first units of a reversible cell's first "
                                                            r"half\), got 5$"),
           (dict(cell="gru", hidden=8, slice_units=9), r"slice_units must be in 1..8, got 9"),
           (dict(cell="gru", hidden=8, slice_units=0), "slice_units must be in 1..8")]
    for kw, msg in bad:
        with pytest.raises(ValueError, match=msg):
            Seq2Seq(9, 7, **kw)
    Seq2Seq(9, 7, cell="revgru", hidden=8, slice_units=4)                    # the limits themselves are allowed
    Seq2Seq(9, 7, cell="revgru", hidden=8, slice_units=1)
    for bits in (1, 5, None):
        m = Seq2Seq(9, 7, cell="revgru", hidden=8, slice_units=2, max_forget_bits=bits, layers=2)
        assert all(layer.cell.m == max_forget(bits) for layer in (*m.enc, *m.dec))
    assert Seq2Seq(9, 7, cell="revlstm", hidden=8, slice_units=2).enc[0].cell.m == max_forget(3)
    Seq2Seq(9, 7, cell="revgru", hidden=8, attention="emb", slice_units=99)  # no slice: not checked


def batch(S=6, T=5, lengths=(6, 3, 1), tlen=(5, 2, 4), V=12, Vt=11, seed=0):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, V, (S, len(lengths)), generator=g)
    sm = torch.arange(S)[:, None] < torch.tensor(lengths)[None]
    tgt = torch.randint(4, Vt, (T, len(tlen)), generator=g)
    tm = torch.arange(T)[:, None] < torch.tensor(tlen)[None]
    return src.masked_fill(~sm, 0), sm, tgt.masked_fill(~tm, 0), tm


@pytest.mark.parametrize("cell,layers,baseline_cell", [("gru", 1, "torch"), ("lstm", 2, "torch"),
                                                        ("gru", 2, "authors"), ("lstm", 2, "authors")])
def test_rnn_model_equals_one_sentence_at_a_time(cell, layers, baseline_cell):
    """Packed padded encoding (the authors' cells: the state held over padding), the decoder starting from each
    encoder layer's state at the last real token, the dropped query and the attention: written out with the
    model's own RNN layers one sentence at a time, no padding (emb 6 != hidden 8: layer 2 reads layer 1's output)."""
    torch.manual_seed(1)
    model = Seq2Seq(12, 11, emb=6, hidden=8, cell=cell, attention="emb+slice", slice_units=3, dropout=0.3,
                    layers=layers, positions="sinusoidal", baseline_cell=baseline_cell).double().train()
    src, sm, tgt, tm = batch(S=7, lengths=(3, 6, 1))        # unsorted, and no sentence fills the padded length
    torch.manual_seed(3)
    got = model(src, sm, tgt, tm)
    torch.manual_seed(3)
    masks = {k: (v.double() if isinstance(v, torch.Tensor) else v) for k, v in model.masks(3, "cpu").items()}
    for j in range(3):
        n = int(sm[:, j].sum())
        drop = lambda x, key, l=None: x * (masks[key][j] if l is None else masks[key][l][j])   # noqa: E731
        e = drop(model.src_emb(src[:n, j]) + sinusoid(n, 6, "cpu")[:, 0].double(), "src")
        x, states = e, []
        for l, rnn in enumerate(model.enc):
            x = x if l == 0 else drop(x, "enc", l)
            x, st = rnn(x[:, None])
            x = x[:, 0]
            states.append(st)
        mem = torch.cat([e, drop(x[:, :3], "slice")], -1)
        d = drop(model.tgt_emb(tgt[:, j]) + sinusoid(5, 6, "cpu")[:, 0].double(), "tgt")
        for l, rnn in enumerate(model.dec):
            d = d if l == 0 else drop(d, "dec", l)
            d = rnn(d[:, None], states[l])[0][:, 0]
        want = model.attend(drop(d, "query")[:, None], mem[:, None], torch.ones(n, 1, dtype=torch.bool))[:, 0]
        assert torch.allclose(got[:, j], want, atol=1e-10)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("attention", ["full", "emb+slice"])
def test_logits_do_not_depend_on_what_the_padding_holds(cell, attention):
    """Padded source steps leave the recurrent state untouched (the decoder starts from the state at the last real
    token) and are masked out of the attention: other tokens in the padding change no logit at a real position,
    bit for bit (the same batch shape, so the same float kernels)."""
    torch.manual_seed(2)
    model = Seq2Seq(12, 11, emb=6, hidden=8, cell=cell, attention=attention, slice_units=2, dropout=0.0,
                    layers=2).eval()
    src, sm, tgt, tm = batch()
    got = model(src, sm, tgt, tm)
    noise = torch.Generator().manual_seed(9)
    src2 = torch.where(sm, src, torch.randint(4, 12, src.shape, generator=noise))
    tgt2 = torch.where(tm, tgt, torch.randint(4, 11, tgt.shape, generator=noise))
    assert not torch.equal(src2, src)
    assert torch.equal(model(src2, sm, tgt2, tm)[tm], got[tm])
    # ... while a real source token does change each sentence's logits
    src3 = src.clone()
    src3[0] = torch.where(src[0] == 5, 6, 5)
    out3 = model(src3, sm, tgt, tm)
    assert all((out3[:, j] - got[:, j]).abs().max() > 1e-6 for j in range(3))   # bit-identical otherwise (above)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("positions", ["none", "sinusoidal"])
def test_greedy_decoding_is_teacher_forced_argmax(cell, positions):
    """Each greedy token is the argmax of the full model fed the greedy prefix (the step-by-step decoder state and
    position signal agree with the one-pass decoder), and decoding stops at </s>."""
    torch.manual_seed(3)
    model = Seq2Seq(12, 11, emb=6, hidden=8, cell=cell, attention="emb+slice", slice_units=2, dropout=0.0,
                    layers=2, positions=positions, init_range=None).eval()   # PyTorch's larger init: untrained
    src, sm, _, _ = batch(seed=4)                                          # greedy outputs differ per sentence
    with torch.no_grad():
        model.out.bias[EOS] -= 20                                           # never </s>: max_len tokens each
    out = model.greedy(src, sm, max_len=6)
    for j, toks in enumerate(out):
        n = int(sm[:, j].sum())
        full = toks + [EOS] if len(toks) < 6 else toks
        tgt_in = torch.tensor([BOS] + full[:-1])[:, None]
        with torch.no_grad():
            logits = model(src[:n, j:j + 1], sm[:n, j:j + 1], tgt_in, torch.ones_like(tgt_in, dtype=torch.bool))
        assert logits[:, 0].argmax(-1).tolist() == full
    assert [len(t) for t in out] == [6, 6, 6] and len({tuple(t) for t in out}) > 1
    with torch.no_grad():
        model.out.bias[EOS] += 40                                           # </s> first: empty translations
    assert model.greedy(src, sm, max_len=6) == [[], [], []]


def exhaustive(model, src, sm, steps):
    """The best of all target sequences of at most ``steps`` tokens (ending at </s>, or cut at ``steps``) by summed
    log-probability, each scored by the full model under teacher forcing."""
    V = model.out.out_features
    best = (None, -math.inf)
    for n in range(1, steps + 1):
        for seq in itertools.product(range(V), repeat=n):
            if EOS in seq[:-1] or (n < steps and seq[-1] != EOS):
                continue
            tgt_in = torch.tensor([BOS, *seq[:-1]])[:, None]
            with torch.no_grad():
                lp = F.log_softmax(model(src, sm, tgt_in, torch.ones_like(tgt_in, dtype=torch.bool))[:, 0], -1)
            score = float(lp[torch.arange(n), torch.tensor(seq)].sum())
            if score > best[1]:
                best = (list(seq[:-1]) if seq[-1] == EOS else list(seq), score)
    return best[0]


@pytest.mark.parametrize("cell,layers", [("gru", 1), ("lstm", 2), ("revgru", 2), ("revlstm", 1)])
def test_beam_as_wide_as_the_vocabulary_is_exhaustive_search(cell, layers):
    """Over two steps a beam of width V keeps every prefix, so it must return the exhaustive optimum (length
    penalty 0): this pins the beams' states, their scores and the </s> handling for each cell."""
    torch.manual_seed(5)
    V = 6
    model = Seq2Seq(10, V, emb=6, hidden=8, cell=cell, attention="emb+slice", slice_units=2, dropout=0.0,
                    layers=layers, positions="sinusoidal").eval()
    with torch.no_grad():
        model.out.weight.mul_(8)                                            # peaked, distinct distributions
        model.out.bias[EOS] += 1.0
    src, sm, _, _ = batch(lengths=(4, 2, 3, 1), V=10, seed=6)
    got = model.beam(src, sm, width=V, max_len=2)
    want = [exhaustive(model, src[:int(sm[:, j].sum()), j:j + 1], sm[:int(sm[:, j].sum()), j:j + 1], 2)
            for j in range(4)]
    assert got == want


def test_beam_length_penalty_divides_by_length_to_the_alpha():
    """One sentence, width V, two steps. Step 1 finishes "</s>" (length 1) and keeps the other V - 1 tokens;
    step 2 ranks the (V - 1) V continuations by summed log-probability, finishes each </s> ranked above the V-th
    kept prefix and keeps V prefixes, which finish at the end. The answer maximises score / length^alpha over the
    finished hypotheses (the length counts the </s>)."""
    torch.manual_seed(7)
    V = 6
    model = Seq2Seq(10, V, emb=6, hidden=8, cell="gru", attention="emb", dropout=0.0).eval()
    with torch.no_grad():
        model.out.weight.mul_(6)
        model.out.bias[EOS] += 2.0
    src, sm = torch.tensor([[5], [6], [7]]), torch.ones(3, 1, dtype=torch.bool)

    def lp(prefix):
        tgt_in = torch.tensor([BOS, *prefix])[:, None]
        with torch.no_grad():
            return F.log_softmax(model(src, sm, tgt_in, torch.ones_like(tgt_in, dtype=torch.bool))[-1, 0], -1)

    first = lp([])
    two = sorted(((float(first[a] + lp([a])[b]), a, b) for a in range(V) if a != EOS for b in range(V)), reverse=True)
    answers = set()
    for alpha in (0.0, 0.5, 1.0, 2.0, 4.0):
        finished, kept = [([], float(first[EOS]))], 0
        for score, a, b in two:
            if b == EOS:
                finished.append(([a], score / 2 ** alpha))
            else:
                finished.append(([a, b], score / 2 ** alpha))
                kept += 1
                if kept == V:
                    break
        want = max(finished, key=lambda h: h[1])[0]
        answers.add(tuple(want))
        assert model.beam(src, sm, width=V, max_len=2, alpha=alpha) == [want], alpha
    assert len(answers) > 1                                                 # the penalty decides here
    assert model.beam(src, sm, width=1, max_len=2, alpha=2.0) == model.greedy(src, sm, max_len=2)


def test_tensors_are_made_on_the_inputs_device():
    """The position signal, the dropout masks, the decoder step and the authors' cells' padding mask build their tensors on the device they are given
    (checked on PyTorch's data-less 'meta' device, where a CPU tensor would not mix)."""
    meta = torch.device("meta")
    assert sinusoid(5, 6, meta).device == meta
    model = Seq2Seq(9, 7, emb=6, hidden=8, cell="gru", positions="sinusoidal", slice_units=2).train().to(meta)
    masks = model.masks(3, meta)
    assert all(masks[k].device == meta for k in ("src", "tgt", "query", "enc_top", "slice"))
    assert model.embed(torch.randint(4, 9, (5, 3)).to(meta), "src", masks).device == meta
    h, _ = model._step(torch.full((1, 3), BOS).to(meta), [torch.zeros(1, 3, 8, device=meta)], masks, 2)
    assert h.device == meta
    for kind in ("gru", "lstm"):   # the authors' cells' padding mask, from CPU lengths (as encode() passes them)
        out, last = AuthorsRNN(kind, 6, 8).to(meta)(torch.zeros(5, 3, 6, device=meta), None, torch.tensor([5, 2, 1]))
        assert out.device == meta and all(s.device == meta for s in (last if kind == "lstm" else (last,)))


def reference_beam(model, src, sm, width, max_len, alpha):
    """The beam search rule written out with every hypothesis rescored by the full model under teacher forcing (no
    decoder states are carried): extend each beam by its top ``width`` tokens, rank all by summed log-probability,
    finish the </s> ones met before ``width`` beams are kept, stop when no beam is left or ``width`` finished."""
    def logp(prefix):
        tgt_in = torch.tensor([BOS, *prefix])[:, None]
        with torch.no_grad():
            return F.log_softmax(model(src, sm, tgt_in, torch.ones_like(tgt_in, dtype=torch.bool))[-1, 0], -1)

    beams, finished = [([], 0.0)], []
    for _ in range(max_len):
        cand = []
        for toks, score in beams:
            top = logp(toks).topk(width)
            cand += [(toks + [int(w)], score + float(v)) for v, w in zip(top.values, top.indices)]
        cand.sort(key=lambda c: -c[1])
        beams = []
        for toks, score in cand:
            if toks[-1] == EOS:
                finished.append((toks[:-1], score / len(toks) ** alpha))
            elif len(beams) < width:
                beams.append((toks, score))
            if len(beams) == width:
                break
        if not beams or len(finished) >= width:
            break
    finished += [(b[0], b[1] / max(len(b[0]), 1) ** alpha) for b in beams]
    return max(finished, key=lambda f: f[1])[0]


@pytest.mark.parametrize("cell,layers", [("gru", 2), ("lstm", 1), ("revgru", 1), ("revlstm", 2)])
def test_beam_search_equals_the_rule_with_teacher_forced_rescoring(cell, layers):
    """Width 3 over 4 steps: the beams' decoder states (stacked, then picked per surviving hypothesis) must give
    the same log-probabilities as rescoring each prefix from scratch."""
    torch.manual_seed(11)
    model = Seq2Seq(10, 8, emb=6, hidden=8, cell=cell, attention="emb+slice", slice_units=2, dropout=0.0,
                    layers=layers, positions="sinusoidal").eval()
    with torch.no_grad():
        model.out.weight.mul_(3)
    src, sm, _, _ = batch(lengths=(4, 2, 3), V=10, seed=12)
    got = model.beam(src, sm, width=3, max_len=4, alpha=0.6)
    for j in range(3):
        n = int(sm[:, j].sum())
        assert got[j] == reference_beam(model, src[:n, j:j + 1], sm[:n, j:j + 1], 3, 4, 0.6), j
    assert any(len(g) >= 3 for g in got)                                   # the beams ran for several steps


@pytest.mark.parametrize("cell", ["lstm", "revlstm"])
def test_every_parameter_starts_uniform_in_init_range_as_the_authors(cell):
    """The authors' OpenNMT (-param_init 0.1): every parameter U(-0.1, 0.1), the padding embedding included;
    init_range=null keeps PyTorch's defaults (the same draws as a model built without the option)."""
    torch.manual_seed(0)
    m = Seq2Seq(50, 40, emb=32, hidden=64, cell=cell, slice_units=8)
    for name, p in m.named_parameters():
        assert p.abs().max() <= 0.1, name
        # U(-r, r): mean 0, variance r^2 / 3 (a 4-sigma band for this many draws)
        assert abs(p.mean().item()) < 4 * 0.1 / math.sqrt(3 * p.numel()), name
        if p.numel() >= 500:
            assert abs(p.var().item() - 0.01 / 3) < 0.25 * 0.01 / 3, name
    assert m.src_emb.weight[0].abs().sum() > 0   # the authors' loop overwrites the padding row too
    torch.manual_seed(0)
    n = Seq2Seq(50, 40, emb=32, hidden=64, cell=cell, slice_units=8, init_range=None)
    assert n.src_emb.weight.std() > 0.5                    # nn.Embedding's N(0, 1)
    assert torch.equal(n.src_emb.weight[0], torch.zeros(32))   # and its zero padding row
    torch.manual_seed(0)
    r = Seq2Seq(50, 40, emb=32, hidden=64, cell=cell, slice_units=8, init_range=0.5)
    assert 0.4 < r.out.weight.abs().max() <= 0.5
    for bad in (0, -0.1):
        with pytest.raises(ValueError, match=r"init_range must be > 0 \(or null: PyTorch's default initialisation\)"):
            Seq2Seq(9, 7, init_range=bad)


def _steps(rnn, x, state=None):
    """Run ``rnn`` one step at a time; every step's state."""
    states = []
    for t in range(x.size(0)):
        _, state = rnn(x[t:t + 1], state)
        states.append(state)
    return states


def test_authors_lstm_is_torchs_cell_with_h_from_the_previous_cell_state():
    """Oracle: torch's LSTMCell from the same (h, c) gives the same new cell state c' and h_torch = o tanh(c');
    the authors' cell outputs o tanh(c) with the previous c, i.e. h_torch * tanh(c) / tanh(c') (float64)."""
    torch.manual_seed(0)
    H = 4
    a = AuthorsRNN("lstm", 3, H).double()
    ref = torch.nn.LSTMCell(3, H).double()
    order = torch.cat([torch.arange(H, 2 * H), torch.arange(0, H),
                       torch.arange(3 * H, 4 * H), torch.arange(2 * H, 3 * H)])
    with torch.no_grad():   # the authors' gate order f, i, o, g -> torch's i, f, g, o
        ref.weight_ih.copy_(a.i2h.weight[order]); ref.bias_ih.copy_(a.i2h.bias[order])
        ref.weight_hh.copy_(a.h2h.weight[order]); ref.bias_hh.copy_(a.h2h.bias[order])
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    h0, c0 = torch.randn(1, 2, H, dtype=torch.float64), torch.randn(1, 2, H, dtype=torch.float64)
    out, _ = a(x, (h0, c0))
    states = _steps(a, x, (h0, c0))
    h, c = h0[0], c0[0]
    for t, (hs, cs) in enumerate(states):
        h_ref, c_ref = ref(x[t], (h, c))
        torch.testing.assert_close(cs[0], c_ref, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(hs[0], h_ref * torch.tanh(c) / torch.tanh(c_ref), rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(out[t], hs[0], rtol=1e-12, atol=1e-12)
        assert (hs[0] - h_ref).abs().max() > 1e-3   # not torch's h
        h, c = hs[0], cs[0]


def test_authors_gru_resets_before_the_recurrent_product():
    """Oracle: when the candidate's recurrent matrix is diagonal and its bias zero, U (r h) = r (U h), so the
    authors' cell equals torch's GRUCell with the update gate negated (theirs weights the candidate, torch's the
    old state); with a full matrix it does not (the reset sits before the product)."""
    torch.manual_seed(1)
    H = 5
    a = AuthorsRNN("gru", 3, H).double()
    with torch.no_grad():
        a.h2h.weight[2 * H:] = torch.diag(torch.randn(H, dtype=torch.float64))
    ref = torch.nn.GRUCell(3, H).double()
    sign = torch.cat([-torch.ones(H), torch.ones(2 * H)]).double()[:, None]
    order = torch.cat([torch.arange(H, 2 * H), torch.arange(0, H), torch.arange(2 * H, 3 * H)])   # (z,r,n)->(r,z,n)
    with torch.no_grad():
        ref.weight_ih.copy_((a.i2h.weight * sign)[order]); ref.bias_ih.copy_((a.i2h.bias * sign[:, 0])[order])
        ref.weight_hh.copy_((a.h2h.weight * sign)[order]); ref.bias_hh.copy_((a.h2h.bias * sign[:, 0])[order])
        ref.bias_ih[2 * H:] += a.h2h.bias[2 * H:]   # the authors' candidate bias sits outside the reset: torch's b_in
        ref.bias_hh[2 * H:] = 0
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    h = torch.randn(2, H, dtype=torch.float64)
    out, last = a(x, h[None])
    for t in range(6):
        h = ref(x[t], h)
        torch.testing.assert_close(out[t], h, rtol=1e-12, atol=1e-12)
    assert torch.equal(last[0], out[-1])
    with torch.no_grad():
        a.h2h.weight[2 * H:] = torch.randn(H, H, dtype=torch.float64)
        ref.weight_hh[2 * H:] = a.h2h.weight[2 * H:]
    assert (a(x, out[-1:].clone())[0][0] - ref(x[0], out[-1])).abs().max() > 1e-3


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_authors_cells_hold_the_state_over_padding_and_run_in_the_model(kind):
    """A padded step leaves the state as it was (the final state is that of the last real token), and a Seq2Seq
    with baseline_cell=authors trains and decodes like the torch cells (the same state shapes)."""
    torch.manual_seed(2)
    a = AuthorsRNN(kind, 3, 4)
    x = torch.randn(5, 3, 3)
    lengths = torch.tensor([5, 2, 1])
    out, last = a(x, None, lengths)
    for j, n in enumerate(lengths.tolist()):
        o1, l1 = a(x[:n, j:j + 1])
        torch.testing.assert_close(out[:n, j], o1[:, 0])
        assert torch.equal(out[n:, j], out[n - 1:n, j].expand(5 - n, -1))
        for s, s1 in zip(last if kind == "lstm" else (last,), l1 if kind == "lstm" else (l1,)):
            torch.testing.assert_close(s[:, j], s1[:, 0])
    m = Seq2Seq(12, 11, emb=6, hidden=8, cell=kind, slice_units=2, dropout=0.0, baseline_cell="authors")
    assert all(isinstance(r, AuthorsRNN) for r in [*m.enc, *m.dec])
    src, sm, tgt, tm = batch()
    logits = m(src, sm, tgt, tm)
    F.cross_entropy(logits[tm], tgt[tm]).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.enc.parameters())
    assert len(m.greedy(src, sm, max_len=4)) == 3 and len(m.beam(src, sm, width=2, max_len=4)) == 3
    with pytest.raises(ValueError, match=r"unknown baseline_cell 'cudnn' \(torch \| authors\)"):
        Seq2Seq(9, 7, baseline_cell="cudnn")
    with pytest.raises(ValueError, match=r"baseline_cell=authors picks the gru / lstm baselines' cells; cell=revgru"):
        Seq2Seq(9, 7, cell="revgru", hidden=8, slice_units=2, baseline_cell="authors")

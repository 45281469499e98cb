"""Reversible RNNs: bit-exact reversal, the bit stack's integer arithmetic, gradients by reversal
against ordinary autograd through the same fixed-point model, memory accounting, and bad input."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import models.revrnn as rv
from algorithms.reversible_bptt import lm_step
from models.awd_lstm import AWDLanguageModel
from models.revrnn import BitStack, FixedPointOverflow, RevGRUCell, RevLSTMCell, to_fixed

CELLS = [RevGRUCell, RevLSTMCell]
BITS = [1, 2, 3, 5, None]


@pytest.mark.parametrize("cell_cls", CELLS)
@pytest.mark.parametrize("bits", BITS)
def test_reverse_of_forward_is_bit_exact_over_200_steps(cell_cls, bits):
    torch.manual_seed(0)
    cell = cell_cls(7, 10, bits)
    for p in cell.parameters():               # large random weights: gates anywhere in (1-m, 1)
        torch.nn.init.normal_(p, std=1.5)
    S0 = tuple(to_fixed(torch.randn(5, 10) * 2) for _ in range(cell.n_states))   # negative values too
    stack = cell.new_stack(5)
    xs = torch.randn(200, 5, 7) * 3
    S = S0
    for t in range(200):
        S = cell.step_fixed(xs[t], S, stack)
    assert not all(torch.equal(a, b) for a, b in zip(S, S0))
    for t in reversed(range(200)):
        S = cell.reverse_fixed(xs[t], S, stack)
    assert all(torch.equal(a, b) for a, b in zip(S, S0))
    assert stack.empty()


def test_overflow_slabs_are_pushed_and_restored():
    torch.manual_seed(1)
    cell = RevLSTMCell(3, 8, None)                  # no limit: up to 10 bits lost per multiplication
    for p in cell.parameters():
        torch.nn.init.normal_(p, std=3.0)
    S0 = tuple(to_fixed(torch.randn(2, 8)) for _ in range(2))
    stack, S, xs = cell.new_stack(2), S0, torch.randn(60, 2, 3)
    for t in range(60):
        S = cell.step_fixed(xs[t], S, stack)
    assert len(stack.slabs) >= 2 and sum(stack.flags) == len(stack.slabs)
    for t in reversed(range(60)):
        S = cell.reverse_fixed(xs[t], S, stack)
    assert all(torch.equal(a, b) for a, b in zip(S, S0)) and stack.empty()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(-2**40, 2**40), st.integers(1, 1024)), min_size=1, max_size=40),
       st.integers(6, 44))
def test_bitstack_push_pop_roundtrip_property(ops, slab_bits):
    """Any values (negative included), any gates, any slab limit: pops undo pushes exactly, and each
    push multiplies by n/1024 to within n units of the last place."""
    old = rv.SLAB_LIMIT
    rv.SLAB_LIMIT = 1 << slab_bits            # small limits force many overflow slabs
    try:
        stack = BitStack((len(ops),))
        H = torch.tensor([h for h, _ in ops], dtype=torch.long)
        n = torch.tensor([k for _, k in ops], dtype=torch.long)
        hist = [H]
        for i in range(12):
            nn_ = torch.roll(n, i)
            H2 = stack.push(H, nn_)
            exact = H.double() * nn_.double() / 1024
            assert ((H2.double() - exact).abs() <= nn_.double()).all()
            H = H2
            hist.append(H)
        for i in reversed(range(12)):
            H = stack.pop(H, torch.roll(n, i))
            assert torch.equal(H, hist[i])
        assert stack.empty()
    finally:
        rv.SLAB_LIMIT = old


def test_overflow_spills_low_bits_of_large_entries_only():
    """At the 2^53 limit, entries >= 2^31 move their low 31 bits into the slab (int32), the rest stay;
    storage = live words + packed mask bytes + 32 bits per piece + flags, and the pop restores all."""
    stack = BitStack((10,))
    start = torch.tensor([2**53 + 12345, 2**40 + 7, 2**31, 2**31 - 1, 5, 0, 0, 0, 0, 1], dtype=torch.long)
    stack.buf = start.clone()
    H = torch.arange(10, dtype=torch.long) * 1000 - 3000
    n = torch.full((10,), 1024)                         # a no-op gate: only the spill changes the buffer
    out = stack.push(H, n)
    assert stack.flags == [True] and len(stack.slabs) == 1
    packed, low = stack.slabs[0]
    assert packed.dtype == torch.uint8 and packed.numel() == 2 and low.dtype == torch.int32
    assert low.tolist() == [(2**53 + 12345) % 2**31, (2**40 + 7) % 2**31, 0]
    assert stack.buf[:4].tolist() == [(2**53 + 12345) >> 31, (2**40 + 7) >> 31, 1, 2**31 - 1]
    assert stack.bits() == 64 * 10 + 8 * 2 + 32 * 3 + 1
    assert torch.equal(stack.pop(out, n), H) and torch.equal(stack.buf, start) and not stack.slabs


def test_slab_storage_is_released_by_the_pop():
    """A spill, its pop, and the same spill again: the peak storage is that of one spill (the slab's bits are
    returned when it is popped), and the stack is empty in between."""
    stack = BitStack((4,))
    start = torch.tensor([2**53 + 3, 2**40, 7, 0])
    stack.buf = start.clone()
    H, n = torch.tensor([10, -20, 30, 40]), torch.full((4,), 1024)
    out = stack.push(H, n)
    once = stack.bits()
    assert once == 64 * 4 + 8 * 1 + 32 * 2 + 1
    stack.pop(out, n)
    assert torch.equal(stack.buf, start) and stack.flags == [] and stack.slabs == []
    stack.push(H, n)
    assert stack.bits() == once
    # a 16-entry stack (two mask bytes): one entry spills, is popped, then three spill; the peak is the
    # second slab's alone, so the pop returned exactly the first slab's bits
    stack = BitStack((16,))
    stack.buf[0] = 2**53
    H16, n16 = torch.arange(16), torch.full((16,), 1024)
    stack.pop(stack.push(H16, n16), n16)
    stack.buf[:3] = torch.tensor([2**53, 2**40, 2**35])
    stack.push(H16, n16)
    assert stack.bits() == 64 * 16 + 8 * 2 + 32 * 3 + 1


def test_empty_needs_no_flags_no_slabs_and_a_zero_buffer():
    stack = BitStack((3,))
    assert stack.empty()
    stack.push(torch.zeros(3, dtype=torch.long), torch.full((3,), 1024))   # a no-op push still leaves its flag
    assert torch.equal(stack.buf, torch.zeros(3, dtype=torch.long)) and not stack.empty()
    other = BitStack((3,))
    other.buf[1] = 5
    assert not other.empty()
    third = BitStack((3,))
    third.slabs.append((torch.zeros(1, dtype=torch.uint8), torch.zeros(0, dtype=torch.int32)))
    assert not third.empty()


def test_out_of_order_slab_pop_is_refused_at_its_bound():
    """Restoring a slab shifts the entry left by 31 bits: an entry of 2^32 or more cannot take it in int64."""
    p = BitStack._piece_bits()
    assert p == 31

    def popped(value):
        stack = BitStack((2,))
        stack.flags.append(True)
        stack.slabs.append((rv._pack_bits(torch.tensor([True, False])), torch.tensor([5], dtype=torch.int32)))
        stack.buf = torch.tensor([value, 0])
        stack.pop(torch.zeros(2, dtype=torch.long), torch.full((2,), 1024))
        return stack.buf

    assert popped(2**32 - 1).tolist() == [((2**32 - 1) << 31) | 5, 0]
    for big in (2**32, 2**40):
        with pytest.raises(RuntimeError, match=r"^BitStack: entry too large to restore an overflow slab \(pops out "
                                               r"of order\)$"):
            popped(big)


def test_packed_masks_round_trip():
    for n in (1, 7, 8, 9, 23):
        m = torch.rand(n) < 0.5
        packed = rv._pack_bits(m)
        assert packed.dtype == torch.uint8 and packed.numel() == (n + 7) // 8
        assert torch.equal(rv._unpack_bits(packed, (n,)), m)
    assert rv._pack_bits(torch.tensor([True, False, True, True, False, False, False, True, True])).tolist() == \
        [1 + 4 + 8 + 128, 1]


def test_masked_entries_are_untouched():
    stack = BitStack((4,))
    H = torch.tensor([-5000, 7, 123456, -1], dtype=torch.long)
    n = torch.tensor([3, 500, 1024, 1], dtype=torch.long)
    mask = torch.tensor([True, False, True, False])
    out = stack.push(H, n, mask)
    assert out[1] == H[1] and out[3] == H[3] and stack.buf[1] == 0 and stack.buf[3] == 0
    assert torch.equal(stack.pop(out, n, mask), H)


def test_info_bits_are_minus_log2_of_the_gates():
    stack = BitStack((3,))
    n = torch.tensor([512, 128, 1024])
    stack.push(torch.tensor([10, -20, 30]), n)
    assert stack.info_bits == pytest.approx(1 + 3 + 0)
    assert stack.bits() == 64 * 3 + 1
    # accumulated in float64: exactly the float64 sum, also for gates whose bits are far from whole numbers
    odd = torch.tensor([1023, 3, 1000])
    for _ in range(3):
        stack.push(torch.tensor([10, -20, 30]), odd)
    want = float((10 - torch.log2(n.double())).sum()) + 3 * float((10 - torch.log2(odd.double())).sum())
    assert stack.info_bits == want


def test_an_entry_at_the_slab_limit_spills():
    for value, spills in ((rv.SLAB_LIMIT - 1, False), (rv.SLAB_LIMIT, True)):
        stack = BitStack((2,))
        stack.buf = torch.tensor([value, 3])
        stack.push(torch.tensor([1, 2]), torch.full((2,), 1024))
        assert stack.flags == [spills] and len(stack.slabs) == int(spills)


def make_lm(cell, bits=3, layers=2, dropout=0.0):
    torch.manual_seed(0)
    return AWDLanguageModel(50, emb_size=12, hidden_size=16, n_layers=layers, cell=cell, dropout=dropout,
                            dropouth=dropout, dropouti=dropout, dropoute=dropout, wdrop=dropout,
                            max_forget_bits=bits)


def grads_ordinary(model, words, targets, state):
    model.zero_grad()
    logits, new, _ = model(words, state)
    loss = torch.nn.functional.cross_entropy(logits.view(-1, 50), targets.reshape(-1))
    loss.backward()
    return loss.detach(), new, [p.grad.clone() for p in model.parameters()]


def grads_reversal(model, words, targets, state):
    model.zero_grad()
    loss, new, stats = lm_step(model, words, targets, state)
    return loss, new, [p.grad.clone() for p in model.parameters()], stats


@pytest.mark.parametrize("cell", ["revlstm", "revgru"])
def test_reversal_gradients_equal_autograd_at_T1(cell):
    model = make_lm(cell).train()
    words, targets = torch.randint(0, 50, (1, 3)), torch.randint(0, 50, (1, 3))
    state = [tuple(to_fixed(torch.randn(3, l.cell.hidden_size) * 0.3) for _ in range(l.cell.n_states))
             for l in model.layers]
    l1, s1, g1 = grads_ordinary(model, words, targets, state)
    l2, s2, g2, _ = grads_reversal(model, words, targets, state)
    torch.testing.assert_close(l1, l2, rtol=1e-6, atol=0)
    assert all(torch.equal(a, b) for x, y in zip(s1, s2) for a, b in zip(x, y))
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("cell", ["revlstm", "revgru"])
def test_reversal_gradients_equal_autograd_at_T70(cell):
    """70 steps, 2 layers: reversal's gradients equal BPTT's through the same fixed-point model to float32
    rounding (measured: 2e-7 relative), not merely in direction."""
    model = make_lm(cell).train()
    torch.manual_seed(1)
    words, targets = torch.randint(0, 50, (70, 4)), torch.randint(0, 50, (70, 4))
    state = [l.init_state(4, "cpu") for l in model.layers]
    l1, s1, g1 = grads_ordinary(model, words, targets, state)
    l2, s2, g2, stats = grads_reversal(model, words, targets, state)
    torch.testing.assert_close(l1, l2, rtol=1e-6, atol=0)
    assert all(torch.equal(a, b) for x, y in zip(s1, s2) for a, b in zip(x, y))
    a, b = torch.cat([x.flatten() for x in g1]), torch.cat([x.flatten() for x in g2])
    assert ((a - b).norm() / a.norm()).item() < 1e-5 and (a - b).abs().max().item() < 1e-6 * 50
    assert stats["mem/saving_actual"] > 1 and stats["mem/saving_info"] > stats["mem/saving_actual"]


def aligned_bernoulli(monkeypatch):
    """Make every Bernoulli mask a fixed function of its size and of how many masks of that size came before, so
    that lm_step (which samples all masks before step 1) and the model's forward (which samples them as it goes)
    draw the same masks: each kind of mask has its own size here (rows 50; batch x 12 for the input and output
    dropout, in the same order on both sides; batch x 16 between the layers; each DropConnect matrix; a size shared
    by two kinds would misalign them)."""
    seen = {}

    def bernoulli_(self, p=0.5, generator=None):
        n = self.numel()
        seen[n] = seen.get(n, 0) + 1
        g = torch.Generator().manual_seed(1000 * n + seen[n])
        return self.copy_((torch.rand(self.shape, generator=g) < p).to(self.dtype))

    monkeypatch.setattr(torch.Tensor, "bernoulli_", bernoulli_)
    return seen


@pytest.mark.parametrize("cell,layers", [("revlstm", 2), ("revgru", 3)])
def test_reversal_gradients_equal_autograd_with_every_dropout(cell, layers, monkeypatch):
    """Word-type, input, between-layer and output dropout and DropConnect, all at 0.3: reversal uses the same masks
    as the model's forward (aligned above) and gives its loss, final state and gradients; in evaluation mode no
    mask is drawn on either side."""
    model = make_lm(cell, dropout=0.3, layers=layers).train()
    torch.manual_seed(1)
    words, targets = torch.randint(0, 50, (12, 5)), torch.randint(0, 50, (12, 5))   # batch 5: no size collides
    state = [l.init_state(5, "cpu") for l in model.layers]
    for mode in ("train", "eval"):
        getattr(model, mode)()
        seen = aligned_bernoulli(monkeypatch)
        l1, s1, g1 = grads_ordinary(model, words, targets, state)
        drawn = dict(seen)
        seen.clear()
        l2, s2, g2, _ = grads_reversal(model, words, targets, state)
        assert dict(seen) == drawn and (len(drawn) == 0) == (mode == "eval")
        torch.testing.assert_close(l1, l2, rtol=1e-6, atol=0)
        assert all(torch.equal(a, b) for x, y in zip(s1, s2) for a, b in zip(x, y))
        a, b = torch.cat([x.flatten() for x in g1]), torch.cat([x.flatten() for x in g2])
        assert ((a - b).norm() / a.norm()).item() < 1e-5
        if mode == "train":   # rows, input, between the layers, output, and every DropConnect matrix
            assert drawn[50] == 1 and drawn[5 * 12] == 2 and drawn.get(5 * 16, 0) == layers - 1
            assert sum(drawn.values()) == 3 + (layers - 1) + sum(len(l.cell.recurrent_linears()) for l in model.layers)


def test_memory_stats_are_the_buffers_of_the_same_forward():
    """lm_step's statistics: BPTT's 32 bits per unit, state tensor and token, the buffers' bits and information
    bits (the same fixed-point forward through the layers leaves the same stacks), and their ratios."""
    model = make_lm("revgru", bits=2).train()
    words = torch.randint(0, 50, (9, 3))
    state = [l.init_state(3, "cpu") for l in model.layers]
    _, _, stats = lm_step(model, words, words, state)
    with torch.no_grad():
        model(words, state)
    bits = sum(l.last_stack.bits() for l in model.layers)
    info = sum(l.last_stack.info_bits for l in model.layers)
    bptt = 32 * 9 * 3 * (16 + 12)
    assert stats == {"mem/bits_bptt": bptt, "mem/bits_buffer": bits, "mem/bits_info": pytest.approx(info),
                     "mem/saving_actual": bptt / bits, "mem/saving_info": pytest.approx(bptt / info)}
    # forget gates saturated at 1 (no limit): nothing is forgotten, no information bits, the ratio guarded
    sat = make_lm("revlstm", bits=None, layers=1)
    with torch.no_grad():
        for lin in sat.layers[0].cell.gates:
            lin.bias[sat.layers[0].cell.half:2 * sat.layers[0].cell.half] = 40.0    # z
            lin.bias[3 * sat.layers[0].cell.half:4 * sat.layers[0].cell.half] = 40.0    # p
    _, _, stats = lm_step(sat.train(), words, words, [sat.layers[0].init_state(3, "cpu")])
    assert stats["mem/bits_info"] == 0 and stats["mem/saving_info"] == stats["mem/bits_bptt"] / 1e-9


def test_reversal_with_dropout_restores_the_state_and_learns():
    """Dropout masks are sampled once per minibatch, so the reverse pass meets the forward pass's
    states exactly (lm_step raises otherwise), and the gradients train the model."""
    model = make_lm("revlstm", dropout=0.3).train()
    opt = torch.optim.Adam(model.parameters(), lr=0.003)
    words = torch.arange(40).remainder(7).view(20, 2)            # a periodic sequence: learnable
    losses = []
    for _ in range(40):
        opt.zero_grad()
        state = [l.init_state(2, "cpu") for l in model.layers]
        loss, _, _ = lm_step(model, words[:-1], words[1:], state)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.5


def test_memory_accounting_by_hand():
    model = make_lm("revlstm", bits=3, layers=1)
    words = torch.randint(0, 50, (70, 4))
    _, _, stats = lm_step(model.train(), words, words, [model.layers[0].init_state(4, "cpu")])
    cell = model.layers[0].cell                                  # 1 layer: hidden = emb = 12
    assert stats["mem/bits_bptt"] == 32 * 70 * 4 * 12 * 2
    assert stats["mem/saving_actual"] >= 10                      # 3 bits: at most 4 pushes x 3 bits a step
    # 4 pushes per buffer entry per step, each at most 3 bits: info bits <= 70 * 4 * 6 * 4 * 3
    assert stats["mem/bits_info"] <= 70 * 4 * cell.half * 4 * 3 + 1e-6


def test_bad_input_errors():
    assert RevGRUCell(3, 8, 1).m == 0.5          # 1 bit, as the authors' NMT grid
    with pytest.raises(ValueError, match="max_forget_bits=4"):
        RevGRUCell(3, 8, 4)
    with pytest.raises(ValueError, match="hidden_size=7 is odd"):
        RevLSTMCell(3, 7, 3)
    with pytest.raises(FixedPointOverflow, match="fixed-point overflow"):
        to_fixed(torch.tensor([3e6]))
    # the cell-state check: |c| < 2^20 in fixed point (2^43 units of 2^-23), the boundary itself refused
    limit = 2**20 * 2**23
    RevLSTMCell._check([torch.tensor([[limit - 1, -(limit - 1)]]), torch.zeros(1, 0, dtype=torch.long)])
    with pytest.raises(FixedPointOverflow, match=r"^fixed-point overflow: \|c\| reached 1.05e\+06, beyond the "
                                                 r"representable range \+-2\^20$"):
        RevLSTMCell._check([torch.tensor([[3, -limit]])])
    for name in (None, "none", "None", "null"):                         # config spellings of "no limit"
        assert rv.max_forget(name) == 1.0
    assert [rv.max_forget(b) for b in (1, 2, 3, 5)] == [0.5, 0.75, 0.875, 0.96875]
    with pytest.raises(ValueError, match=r"^unsupported max_forget_bits='NONE'; use 1, 2, 3, 5 or none$"):
        rv.max_forget("NONE")
    to_fixed(torch.tensor([2.0**20 - 0.5]))                                # |h| < 2^20 fits
    with pytest.raises(FixedPointOverflow, match=r"^fixed-point overflow: \|h\| = 1.05e\+06 is beyond the "
                                                 r"representable range \+-2\^20$"):
        to_fixed(torch.tensor([0.5, -2.0**20]))
    with pytest.raises(FixedPointOverflow, match=r"^fixed-point overflow in c: "):
        to_fixed(torch.tensor([3e6]), " in c")
    # gates: round(1024 z), at least 1024 (1 - m), at most 1024
    z = torch.tensor([0.0, 0.0004, 0.0006, 0.5, 0.99995, 1.0, 1.3])
    assert rv.quantize_gate(z, 1.0).tolist() == [1, 1, 1, 512, 1024, 1024, 1024]
    assert rv.quantize_gate(z, 0.875).tolist() == [128, 128, 128, 512, 1024, 1024, 1024]
    for cls in CELLS:   # the max-forgetting reaches the cell
        assert cls(3, 8, 5).m == rv.MAX_FORGET[5] and cls(3, 8, None).m == 1.0


@pytest.mark.parametrize("cell_cls", CELLS)
def test_straight_through_step_passes_the_float_steps_gradient(cell_cls):
    """Given the fixed-point result, step_float's values are exactly the fixed-point ones (also in float64) and its
    gradient is the float step's (evaluated at the substituted states: equal to ~1e-3, not negated or lost)."""
    import copy

    torch.manual_seed(3)
    cell32 = cell_cls(3, 8, 3)                               # the fixed-point step computes its gates in float32
    S = tuple(to_fixed(torch.randn(5, 8) * 3) for _ in range(cell32.n_states))   # > 2: beyond float32
    x = torch.randn(5, 3)
    fixed = cell32.step_fixed(x, S, cell32.new_stack(5))
    cell, x = copy.deepcopy(cell32).double(), x.double()
    w = [torch.linspace(-1, 1, 40, dtype=torch.float64).view(5, 8) for _ in range(cell.n_states)]

    def grads(fixed_next):
        s = tuple(rv.to_float(q, torch.float64).requires_grad_(True) for q in S)
        out = cell.step_float(x, s, fixed_next=fixed_next)
        loss = sum((o * wi).sum() for o, wi in zip(out, w))
        return out, torch.autograd.grad(loss, [*s, *cell.parameters()])

    out, g_st = grads(fixed)
    assert all(o.dtype == torch.float64 and torch.equal(o, rv.to_float(f, torch.float64)) for o, f in zip(out, fixed))
    _, g_plain = grads(None)
    a, b = torch.cat([g.flatten() for g in g_st]), torch.cat([g.flatten() for g in g_plain])
    assert ((a - b).norm() / b.norm()).item() < 1e-2


@pytest.mark.parametrize("cell_cls", CELLS)
def test_masked_examples_keep_state_and_buffer_untouched(cell_cls):
    """Padded time steps (mask False) leave an example's state and buffer exactly as they were."""
    torch.manual_seed(3)
    cell = cell_cls(4, 6, 3)
    S0 = tuple(to_fixed(torch.randn(3, 6)) for _ in range(cell.n_states))
    stack, S = cell.new_stack(3), S0
    xs = torch.randn(30, 3, 4)
    lengths = torch.tensor([30, 12, 0])
    for t in range(30):
        S = cell.step_fixed(xs[t], S, stack, mask=(t < lengths)[:, None])
    assert all(torch.equal(s[2], s0[2]) for s, s0 in zip(S, S0)) and not stack.buf[2].any()
    assert not all(torch.equal(s[1], s0[1]) for s, s0 in zip(S, S0))
    for t in reversed(range(30)):
        S = cell.reverse_fixed(xs[t], S, stack, mask=(t < lengths)[:, None])
    assert all(torch.equal(a, b) for a, b in zip(S, S0)) and stack.empty()


# --------------------------------------------------------------------------- the cells against independent math
def _q(z, m):
    """round(1024 z) clamped to [max(1, 1024 (1 - m)), 1024], over 1024: the 10-bit gate."""
    lo = max(1, round(1024 * (1 - m)))
    return torch.clamp(torch.round(z * 1024), lo, 1024) / 1024


def reference_revlstm_step(cell, x, h, c, quantize=True):
    """The RevLSTM equations written out again (float64): half 1 from [x, h2], then half 2 from [x, h1_new];
    c_k <- z c_k + f g,  h_k <- p h_k + o tanh(c_k_new), z and p limited by m and quantised."""
    H = cell.half
    h, c = [h[:, :H], h[:, H:]], [c[:, :H], c[:, H:]]
    for k in range(2):
        W, b = cell.gates[k].weight.double(), cell.gates[k].bias.double()
        a = torch.cat([x, h[1 - k]], 1) @ W.t() + b
        f, zs, o, ps = [torch.sigmoid(a[:, i * H:(i + 1) * H]) for i in range(4)]
        g = torch.tanh(a[:, 4 * H:])
        z, p = cell.m * zs + 1 - cell.m, cell.m * ps + 1 - cell.m
        if quantize:
            z, p = _q(z, cell.m), _q(p, cell.m)
        c[k] = z * c[k] + f * g
        h[k] = p * h[k] + o * torch.tanh(c[k])
    return torch.cat(h, 1), torch.cat(c, 1)


def reference_revgru_step(cell, x, h, quantize=True):
    """[z, r] = sigma(W [x, h_other]), g = tanh(U [x, r h_other]), h_k <- zq h_k + (1 - z) g (float z in the sum)."""
    H = cell.half
    h = [h[:, :H], h[:, H:]]
    for k in range(2):
        zr = torch.sigmoid(torch.cat([x, h[1 - k]], 1) @ cell.zr[k].weight.double().t() + cell.zr[k].bias.double())
        zs, r = zr[:, :H], zr[:, H:]
        g = torch.tanh(torch.cat([x, r * h[1 - k]], 1) @ cell.g[k].weight.double().t() + cell.g[k].bias.double())
        z = cell.m * zs + 1 - cell.m
        h[k] = (_q(z, cell.m) if quantize else z) * h[k] + (1 - z) * g
    return (torch.cat(h, 1),)


@pytest.mark.parametrize("cell_cls", CELLS)
@pytest.mark.parametrize("quantize", [True, False])
def test_float_step_equals_the_written_out_equations(cell_cls, quantize):
    torch.manual_seed(0)
    cell = cell_cls(5, 8, 2).double()
    x = torch.randn(4, 5, dtype=torch.float64)
    s = tuple(torch.randn(4, 8, dtype=torch.float64) for _ in range(cell.n_states))
    got = cell.step_float(x, s, quantize=quantize)
    want = reference_revlstm_step(cell, x, *s, quantize) if cell_cls is RevLSTMCell else \
        reference_revgru_step(cell, x, *s, quantize)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cell_cls", CELLS)
def test_float_step_gradients_against_finite_differences(cell_cls):
    """float64 central differences w.r.t. the input, the state and every weight (the plain float cell)."""
    torch.manual_seed(0)
    cell = cell_cls(3, 6, 3).double()
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    s = tuple(torch.randn(2, 6, dtype=torch.float64, requires_grad=True) for _ in range(cell.n_states))
    params = tuple(cell.parameters())

    def f(x, *rest):
        out = cell.step_float(x, rest[:cell.n_states], quantize=False)
        return sum((o * torch.linspace(-1, 1, o.numel(), dtype=o.dtype).view_as(o)).sum() for o in out)

    assert torch.autograd.gradcheck(f, (x, *s), eps=1e-6, atol=1e-7, rtol=1e-5)
    # the weights: perturb each parameter tensor in place
    loss = f(x, *s)
    grads = torch.autograd.grad(loss, params)
    for p, g in zip(params, grads):
        flat = p.data.view(-1)
        for i in range(0, flat.numel(), max(1, flat.numel() // 7)):
            old = flat[i].item()
            flat[i] = old + 1e-6
            up = f(x, *s).item()
            flat[i] = old - 1e-6
            down = f(x, *s).item()
            flat[i] = old
            assert (up - down) / 2e-6 == pytest.approx(g.view(-1)[i].item(), rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("cell_cls", CELLS)
@pytest.mark.parametrize("bits", [1, 3, None])
def test_float_step_equals_the_fixed_point_step(cell_cls, bits):
    """The float step (quantised gates) from the same state gives the fixed-point step's values to within what
    exact forgetting rounds: a push multiplies by n / 1024 to within n units of 2^-23 (<= 1.2e-4), twice a step."""
    torch.manual_seed(2)
    cell = cell_cls(4, 10, bits)
    S = tuple(to_fixed(torch.randn(6, 10)) for _ in range(cell.n_states))
    x = torch.randn(6, 4)
    fixed = cell.step_fixed(x, S, cell.new_stack(6))
    flt = cell.step_float(x, tuple(rv.to_float(q) for q in S))
    for a, b in zip(flt, fixed):   # (where half 2's 10-bit gate rounds the other way, one n / 1024 step more)
        diff = (a - rv.to_float(b)).abs()
        assert (diff > 3e-4).float().mean() <= 0.05 and diff.max() < 1.2e-3, diff.max()
    # given the fixed-point result, every state tensor (h, and c for the RevLSTM) takes its values exactly
    exact = cell.step_float(x, tuple(rv.to_float(q) for q in S), fixed_next=fixed)
    assert len(exact) == cell.n_states
    assert all(torch.equal(a, rv.to_float(b)) for a, b in zip(exact, fixed))


def test_no_dropout_draws_no_mask():
    """p = 0 (or evaluation) samples nothing: no DropConnect masks and no locked masks, so the random stream is
    left as it was."""
    from algorithms.reversible_bptt import _locked_mask

    for cls in CELLS:
        cell = cls(3, 8)
        cell.set_weight_drop(0.0, training=True)
        assert cell.drop == {}
        cell.set_weight_drop(0.5, training=False)
        assert cell.drop == {}
    assert _locked_mask((4, 3), 0.0, True, "cpu") is None and _locked_mask((4, 3), 0.5, False, "cpu") is None
    torch.manual_seed(0)
    m = _locked_mask((400, 3), 0.25, True, "cpu")
    assert torch.equal(m.unique(), torch.tensor([0.0, 1 / 0.75])) and abs((m == 0).float().mean() - 0.25) < 0.05


def test_cell_and_layer_defaults():
    """max-forget 3 bits by default (the authors' default), RevLSTM layers unless told, DropConnect sampled in
    training only."""
    assert RevGRUCell(3, 8).m == RevLSTMCell(3, 8).m == rv.MAX_FORGET[3] == 0.875
    layer = rv.RevLayer(3, 8)
    assert isinstance(layer.cell, RevLSTMCell) and layer.cell.m == 0.875 and layer.unbuffered == 0
    assert isinstance(rv.RevGRULayer(3, 8).cell, RevGRUCell) and isinstance(rv.RevLSTMLayer(3, 8).cell, RevLSTMCell)
    assert isinstance(rv.RevLayer(3, 8, cell="revgru").cell, RevGRUCell)
    assert rv.RevLayer(3, 8, max_forget_bits=5).cell.m == rv.MAX_FORGET[5]
    drop = rv.RevLayer(3, 8, weight_drop=0.5, cell="revgru")
    x, state = torch.randn(4, 2, 3), drop.init_state(2, "cpu")
    drop.train()
    drop(x, state)
    assert len(drop.cell.drop) == 4 and drop.last_stack is not None and drop.last_stack.info_bits > 0
    drop.eval()
    drop(x, state)
    assert drop.cell.drop == {}
    plain = rv.RevLayer(3, 8).train()           # no DropConnect unless asked for, no stack before a forward
    assert plain.weight_drop == 0.0 and plain.last_stack is None
    plain(x, plain.init_state(2, "cpu"))
    assert plain.cell.drop == {}
    with torch.no_grad():                       # without autograd the layer keeps no float twin of its state
        plain(x, plain.init_state(2, "cpu"))
    assert plain.last_float_state is None
    plain(x, plain.init_state(2, "cpu"))
    assert plain.last_float_state is not None and plain.last_float_state[0].requires_grad


@pytest.mark.parametrize("cell_cls", CELLS)
def test_dropconnect_is_per_weight_on_every_matrix_recurrent_columns(cell_cls):
    """The authors' WeightDrop: an independent Bernoulli mask per weight of each cell matrix, on the columns that
    multiply the other half (RevGRU's candidate: r * h) only, sampled once per minibatch."""
    torch.manual_seed(0)
    cell = cell_cls(5, 8, 3)
    cell.set_weight_drop(0.5, training=True)
    lins = cell.recurrent_linears()
    assert len(cell.drop) == len(lins) == (4 if cell_cls is RevGRUCell else 2)
    for lin, n_in in lins:
        m = cell.drop[id(lin)]
        assert m.shape == (lin.out_features, lin.in_features - n_in)
        assert set(m.unique().tolist()) <= {0.0, 2.0} and 0.3 < (m == 0).float().mean() < 0.7
        # not whole columns: rows of one column differ
        assert (m.min(0).values != m.max(0).values).any()
        x, other = torch.randn(3, n_in), torch.randn(3, lin.in_features - n_in)
        W = lin.weight.detach().clone()
        W[:, n_in:] *= m
        torch.testing.assert_close(cell._linear(lin, x, other), torch.nn.functional.linear(torch.cat([x, other], 1), W, lin.bias))
    masks = [cell.drop[id(lin)] for lin, _ in lins]
    assert not torch.equal(masks[0], masks[1])                    # independent per matrix
    cell.set_weight_drop(0.5, training=False)
    assert cell.drop == {}


def test_cpu_peak_memory_follows_each_allocation_and_free_in_order():
    """The CPU profiler peak is the running sum of every allocation and free: 4 MB + 8 MB held together,
    the 4 MB freed, 2 MB more (peak 12 MB, not 14 MB). A temporary freed inside one operator counts too:
    cross_entropy's 40 MB log-softmax (summing each operator's own memory at its start, as an earlier version
    did, gave 4 bytes here)."""
    from runners.core import peak_memory_bytes

    def pattern():
        a = torch.empty(1 << 20)                 # 4 MB
        b = torch.empty(2 << 20)                 # 8 MB
        del a
        c = torch.empty(1 << 19)                 # 2 MB
        return b, c

    assert peak_memory_bytes(pattern, torch.device("cpu")) == (12 << 20)
    logits, target = torch.randn(1000, 10_000), torch.randint(0, 10_000, (1000,))
    peak = peak_memory_bytes(lambda: torch.nn.functional.cross_entropy(logits, target), torch.device("cpu"))
    assert 40_000_000 <= peak < 40_000_000 + 4096, peak


def test_reversal_keeps_nothing_per_step_and_its_peak_memory_is_flat_in_T():
    """Profiled peak of one training step (the same per-step softmax on both sides): reversal's grows by less
    than 10% from T = 35 to 140; BPTT's (autograd through the same cells) grows by more than 2x."""
    from runners.core import peak_memory_bytes

    model = AWDLanguageModel(200, emb_size=64, hidden_size=64, n_layers=1, cell="revlstm", dropout=0.0,
                             dropouth=0.0, dropouti=0.0, dropoute=0.0, wdrop=0.0).train()
    peaks = {}
    for T in (35, 140):
        words = torch.randint(0, 200, (T, 8))
        state = [model.layers[0].init_state(8, "cpu")]
        model.zero_grad()
        peaks[("rev", T)] = peak_memory_bytes(lambda: lm_step(model, words, words, state), torch.device("cpu"))

        def bptt():
            logits, _, _ = model(words, state)
            torch.nn.functional.cross_entropy(logits.view(-1, 200), words.reshape(-1)).backward()

        model.zero_grad()
        peaks[("bptt", T)] = peak_memory_bytes(bptt, torch.device("cpu"))
    assert peaks[("rev", 140)] < 1.1 * peaks[("rev", 35)], peaks
    assert peaks[("bptt", 140)] > 2 * peaks[("bptt", 35)], peaks


@pytest.mark.parametrize("cell_cls", CELLS)
def test_unbuffered_slice_units_are_restored_from_the_stored_slice(cell_cls):
    """An attention slice (the first k units of h1) is stored in full and kept out of the buffer, as the authors'
    slice_dim: forward pushes the other units only, reverse pops them and takes the slice from the stored values;
    over 80 steps every state comes back exactly, and the buffer holds no bits for the slice columns."""
    torch.manual_seed(4)
    cell = cell_cls(5, 12, 3)
    S0 = tuple(to_fixed(torch.randn(4, 12)) for _ in range(cell.n_states))
    xs = torch.randn(80, 4, 5)
    k = 3
    stack, S, slices = cell.new_stack(4), S0, [S0[0][:, :k].clone()]
    lengths = torch.tensor([80, 50, 80, 10])
    for t in range(80):
        S = cell.step_fixed(xs[t], S, stack, (t < lengths)[:, None], unbuffered=k)
        slices.append(S[0][:, :k].clone())
    full = cell.new_stack(4)
    F = S0
    for t in range(80):
        F = cell.step_fixed(xs[t], F, full, (t < lengths)[:, None])
    assert stack.info_bits < full.info_bits            # the slice units' forgotten bits were not pushed
    for t in reversed(range(80)):
        S = cell.reverse_fixed(xs[t], S, stack, (t < lengths)[:, None], unbuffered=k, restore=slices[t])
    assert all(torch.equal(a, b) for a, b in zip(S, S0)) and stack.empty()
    # without a padding mask: the slice's low bits are dropped (floor), the other units round-trip exactly
    stack, S, slices = cell.new_stack(4), S0, [S0[0][:, :k].clone()]
    for t in range(30):
        S = cell.step_fixed(xs[t], S, stack, unbuffered=k)
        slices.append(S[0][:, :k].clone())
    assert not torch.equal(S[0][:, :k], S0[0][:, :k])
    for t in reversed(range(30)):
        S = cell.reverse_fixed(xs[t], S, stack, unbuffered=k, restore=slices[t])
    assert all(torch.equal(a, b) for a, b in zip(S, S0)) and stack.empty()


def test_a_reversal_that_does_not_come_back_is_an_error(monkeypatch):
    """The end-of-reversal check needs both: every state back at its start and every buffer empty. A buffer that
    reports itself non-empty (states exact) is refused, by the language-model step and on both translation sides."""
    from algorithms.reversible_bptt import seq2seq_step
    from models.seq2seq import Seq2Seq

    model = make_lm("revgru", layers=1)
    words = torch.randint(0, 50, (5, 2))
    state = [model.layers[0].init_state(2, "cpu")]
    lm_step(model.train(), words, words, state)                     # fine as it is
    monkeypatch.setattr(rv.BitStack, "empty", lambda self: False)
    with pytest.raises(RuntimeError, match="^reversal did not restore layer 0's initial state exactly$"):
        lm_step(model, words, words, state)
    s2s = Seq2Seq(15, 13, emb=8, hidden=10, cell="revgru", attention="emb+slice", slice_units=3, dropout=0.0)
    src, tgt = torch.randint(4, 15, (4, 2)), torch.randint(4, 13, (5, 2))
    with pytest.raises(RuntimeError, match="^reversal did not restore decoder layer 0's initial state exactly$"):
        seq2seq_step(s2s, src, src != 0, tgt, tgt != 0, 2.0)
    calls = iter([True, False])                                     # the decoder's buffer empties, the encoder's not
    monkeypatch.setattr(rv.BitStack, "empty", lambda self: next(calls))
    with pytest.raises(RuntimeError, match="^reversal did not restore encoder layer 0's initial state exactly$"):
        seq2seq_step(s2s, src, src != 0, tgt, tgt != 0, 2.0)


@pytest.mark.parametrize("cell", ["revlstm", "revgru"])
def test_every_tensor_is_made_on_the_inputs_device(cell):
    """Device placement (tests/devices.py): the same loss, state, gradients and statistics from lm_step and from the
    model's forward, covering the bit stacks, the initial states, every dropout mask and DropConnect, and the
    gradient buffers."""
    from devices import assert_same_under_meta_default

    model = make_lm(cell, dropout=0.3).train()
    words = torch.randint(0, 50, (6, 3))

    def step(state):
        return lm_step(model, words, words, state)

    def forward(state):
        logits, new, _ = model(words, state)
        torch.nn.functional.cross_entropy(logits.view(-1, 50), words.reshape(-1)).backward()
        return logits.detach(), new, [l.last_stack.bits() for l in model.layers]

    for fn in (step, forward):
        def run():
            torch.manual_seed(5)
            model.zero_grad()
            state = [l.init_state(3, words.device) for l in model.layers]
            stacks = [l.cell.new_stack(3, words.device) for l in model.layers]
            return fn(state), [p.grad.clone() for p in model.parameters()], [(s.buf, s._info) for s in stacks]

        assert_same_under_meta_default(run)

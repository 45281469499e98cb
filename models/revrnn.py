"""Reversible RNNs (MacKay, Vicol, Ba, Grosse, NeurIPS 2018): RevGRU and RevLSTM with exact,
bit-buffered forgetting in fixed point.

The hidden state is split in halves h = [h1, h2] (RevLSTM also c = [c1, c2]). Half 1 is updated from
[x; h2], then half 2 from [x; h1_new]:

    RevGRU:  [z, r] = sigma(W [x; h2]),  g = tanh(U [x; r * h2]),   h1 <- z * h1 + (1 - z) * g
             (the additive term with the float gate z, the product with the quantised one, as the authors)
    RevLSTM: [f, z, o, p] = sigma(W [x; h2]),  g = tanh(U [x; h2]), c1 <- z * c1 + f * g,
             h1 <- p * h1 + o * tanh(c1)

The forget gates z (and p) are limited by the max-forgetting m: z = m * sigmoid(.) + (1 - m), and
quantised to 10 bits (z = n / 1024). States are int64 fixed point with 23 fractional bits. The
multiplication by z is exact forgetting (Maclaurin et al. 2015) on ``BitStack``: the bits it
discards are pushed onto an integer buffer, so the reverse pass can restore them. The additive
term is rounded once and added as an integer, so subtracting it undoes it exactly. The whole step
can therefore be run backwards bit for bit (``reverse_fixed``), which is what training by reversal
(``algorithms/reversible_bptt.py``) uses instead of storing the hidden states.

``step_float`` is the same step in floating point with autograd; given the fixed-point result it
substitutes those values straight-through, so its forward values equal the fixed-point model's and
its gradients are those of the float step at exactly the states the reversal recovers.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

FRAC_BITS = 23                   # fixed-point fractional bits of the state
GATE_BITS = 10                   # gates are n / 1024
GATE_ONE = 1 << GATE_BITS
MAX_ABS = 2.0 ** 20              # |state| beyond this is a fixed-point overflow error
SLAB_LIMIT = 1 << 53                 # a buffer entry >= this spills its low bits before the next push (< 2^63)
MAX_FORGET = {1: 0.5, 2: 0.75, 3: 0.875, 5: 0.96875, None: 1.0}


class FixedPointOverflow(ValueError):
    pass


def max_forget(bits) -> float:
    bits = None if bits in (None, "none", "None", "null") else bits
    if bits not in MAX_FORGET:
        raise ValueError(f"unsupported max_forget_bits={bits!r}; use 1, 2, 3, 5 or none")
    return MAX_FORGET[bits]


def to_fixed(h: torch.Tensor, where: str = "") -> torch.Tensor:
    if h.numel() and h.detach().abs().max().item() >= MAX_ABS:
        raise FixedPointOverflow(f"fixed-point overflow{where}: |h| = {h.detach().abs().max().item():.3g} is beyond "
                                 f"the representable range +-2^{int(math.log2(MAX_ABS))}")
    return torch.round(h.detach().double() * (1 << FRAC_BITS)).long()


def to_float(H: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    return (H.double() / (1 << FRAC_BITS)).to(dtype)


def quantize_gate(z: torch.Tensor, m: float) -> torch.Tensor:
    """z in [1-m, 1] -> n = round(1024 z), at least 1 (m = 1) and at least 1024 (1 - m)."""
    lo = max(1, round(GATE_ONE * (1 - m)))
    return torch.round(z.detach().double() * GATE_ONE).long().clamp_(lo, GATE_ONE)


class BitStack:
    """Integer buffer of the bits that exact forgetting discards, one int64 entry per unit.

    ``push(H, n)`` returns H * n / 1024 with the remainder information moved into the buffer;
    ``pop`` inverts it. When an entry would pass 2^63 on the next push (it is >= ``SLAB_LIMIT`` =
    2^53; our buffer is int64, so the float64-mantissa bound 2^53 is where we spill, not where we must
    stop), every entry of at least 2^P (P = max(10, log2(SLAB_LIMIT) - 22) = 31) moves its low P bits into an
    overflow slab and keeps the rest: buf = (buf >> P), and the pop restores (buf << P) | low. The slab is
    a packed bitmask of those entries and their low bits as int32, so spilled storage is nearly all
    information (a whole-buffer slab wastes the unfilled high bits of every word). One flag per push
    records whether it spilled. Pushes from several state tensors of the same width share one stack in
    strict LIFO order. ``mask`` (bool, broadcastable) leaves the masked-out entries and their buffer
    untouched (n = 1024 is an exact no-op).
    """

    def __init__(self, shape, device=None):
        self.buf = torch.zeros(shape, dtype=torch.long, device=device)
        self.slabs: list[tuple[torch.Tensor, torch.Tensor]] = []   # (packed mask, low bits of those entries)
        self.flags: list[bool] = []
        self._info = torch.zeros((), dtype=torch.float64, device=device)   # sum of -log2(n / 1024), on device
        self._slab_bits = 0
        self.peak_bits = 64 * self.buf.numel()

    @staticmethod
    def _piece_bits() -> int:
        return max(GATE_BITS, SLAB_LIMIT.bit_length() - 1 - 22)   # >= 10: a spill undoes a whole push's growth

    def push(self, H: torch.Tensor, n: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is not None:
            n = torch.where(mask, n, torch.full_like(n, GATE_ONE))
        overflow = bool((self.buf >= SLAB_LIMIT).any())
        self.flags.append(overflow)
        if overflow:
            p = self._piece_bits()
            sel = self.buf >= (1 << p)
            low = (self.buf[sel] & ((1 << p) - 1)).to(torch.int32)
            self.buf = torch.where(sel, self.buf >> p, self.buf)
            packed = _pack_bits(sel)
            self.slabs.append((packed, low))
            self._slab_bits += 8 * packed.numel() + 32 * low.numel()
            self.peak_bits = max(self.peak_bits, 64 * self.buf.numel() + self._slab_bits)
        buf = self.buf * GATE_ONE + torch.remainder(H, GATE_ONE)
        H = torch.div(H, GATE_ONE, rounding_mode="floor") * n + torch.remainder(buf, n)
        self.buf = torch.div(buf, n, rounding_mode="floor")
        self._info += (GATE_BITS - torch.log2(n.double())).sum()
        return H

    def pop(self, H: torch.Tensor, n: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is not None:
            n = torch.where(mask, n, torch.full_like(n, GATE_ONE))
        buf = self.buf * n + torch.remainder(H, n)
        H = torch.div(H, n, rounding_mode="floor") * GATE_ONE + torch.remainder(buf, GATE_ONE)
        self.buf = torch.div(buf, GATE_ONE, rounding_mode="floor")
        if self.flags.pop():
            packed, low = self.slabs.pop()
            p = self._piece_bits()
            sel = _unpack_bits(packed, self.buf.shape)
            if bool((self.buf[sel] >= (1 << (63 - p))).any()):
                raise RuntimeError("BitStack: entry too large to restore an overflow slab (pops out of order)")
            buf = self.buf.clone()
            buf[sel] = (self.buf[sel] << p) | low.long()
            self.buf = buf
            self._slab_bits -= 8 * packed.numel() + 32 * low.numel()
        return H

    def bits(self) -> int:
        """Storage at its peak: the live int64 words, the slabs (packed mask bytes + 32 bits per spilled
        piece; ``peak_bits``, updated at each spill, the only time they grow), and one flag bit per push."""
        return self.peak_bits + len(self.flags)

    def empty(self) -> bool:
        return not self.slabs and not self.flags and not bool(self.buf.any())

    @property
    def info_bits(self) -> float:
        """Information-theoretic bits of all pushes so far: sum of -log2(n / 1024)."""
        return float(self._info)


def _pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """A bool tensor as uint8 bytes, 8 entries a byte (what a slab's mask really costs)."""
    flat = mask.reshape(-1)
    flat = torch.cat([flat, flat.new_zeros((-flat.numel()) % 8)]).view(-1, 8).to(torch.uint8)
    return (flat * flat.new_tensor([1, 2, 4, 8, 16, 32, 64, 128])).sum(1, dtype=torch.uint8)


def _unpack_bits(packed: torch.Tensor, shape) -> torch.Tensor:
    bits = (packed[:, None] >> packed.new_tensor(range(8))) & 1
    return bits.reshape(-1)[:math.prod(shape)].bool().reshape(shape)


def _st(value: torch.Tensor, fixed: torch.Tensor | None) -> torch.Tensor:
    """Straight-through: the fixed-point value forward, the float value's gradient backward."""
    if fixed is None:
        return value
    return to_float(fixed, value.dtype) + (value - value.detach())   # exactly the fixed value forward


class _RevCell(nn.Module):
    """Shared plumbing; subclasses define ``n_states`` and the half updates."""

    n_states = 1

    def __init__(self, input_size: int, hidden_size: int, max_forget_bits):
        super().__init__()
        if hidden_size % 2:
            raise ValueError(f"reversible cells split the hidden state in halves: hidden_size={hidden_size} is odd")
        self.input_size, self.hidden_size, self.half = input_size, hidden_size, hidden_size // 2
        self.m = max_forget(max_forget_bits)
        self.drop: dict[int, torch.Tensor] = {}   # id(Linear) -> DropConnect mask on its recurrent columns

    def recurrent_linears(self) -> list[tuple[nn.Linear, int]]:
        """(Linear, number of input columns it reads from x) of every matrix that sees the other half."""
        raise NotImplementedError

    def set_weight_drop(self, p: float, training: bool) -> None:
        """DropConnect as the authors' ``WeightDrop``: a per-weight Bernoulli(1 - p) / (1 - p) mask on the columns of
        every cell matrix that multiply the other half of the state (for the RevGRU candidate: r * h), independent
        per matrix, sampled once per minibatch and used at every step, forwards and in reverse."""
        self.drop = {}
        if not training or p == 0:
            return
        for lin, n_in in self.recurrent_linears():
            self.drop[id(lin)] = torch.empty(lin.out_features, lin.in_features - n_in,
                                             device=lin.weight.device).bernoulli_(1 - p).div_(1 - p)

    def _linear(self, lin: nn.Linear, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        """lin([x; other]) with the DropConnect mask on the ``other`` columns (no concatenation copy)."""
        n_in = x.shape[1]
        W = lin.weight
        w_rec = W[:, n_in:] if id(lin) not in self.drop else W[:, n_in:] * self.drop[id(lin)]
        return torch.addmm(lin.bias, x, W[:, :n_in].t()) + other @ w_rec.t()

    def _quantized(self, z: torch.Tensor, quantize: bool) -> torch.Tensor:
        """The gate's 10-bit value forward with the float gate's gradient (straight-through)."""
        if not quantize:
            return z
        return z + (quantize_gate(z, self.m).to(z.dtype) / GATE_ONE - z).detach()

    def _push_h1(self, stack: BitStack, H: torch.Tensor, n: torch.Tensor, mask, unbuffered: int) -> torch.Tensor:
        """Half 1's h times n / 1024. Its first ``unbuffered`` units (the attention slice, stored elsewhere in
        full) do not go through the buffer: their low bits are dropped, as the authors' ``slice_dim``."""
        if not unbuffered:
            return stack.push(H, n, mask)
        cols = torch.ones_like(H[:1], dtype=torch.bool)
        cols[:, :unbuffered] = False
        keep = cols if mask is None else cols & mask
        out = stack.push(H, n, keep)
        lossy = torch.div(H[:, :unbuffered], GATE_ONE, rounding_mode="floor") * n[:, :unbuffered]
        if mask is not None:
            lossy = torch.where(mask, lossy, H[:, :unbuffered])
        return torch.cat([lossy, out[:, unbuffered:]], 1)

    def _pop_h1(self, stack: BitStack, H: torch.Tensor, n: torch.Tensor, mask, unbuffered: int,
                restore: torch.Tensor | None) -> torch.Tensor:
        """Undo ``_push_h1``: the buffered units pop, the slice units take their stored previous values."""
        if not unbuffered:
            return stack.pop(H, n, mask)
        cols = torch.ones_like(H[:1], dtype=torch.bool)
        cols[:, :unbuffered] = False
        out = stack.pop(H, n, cols if mask is None else cols & mask)
        # a padded example's slice did not change at this step, so its stored value is its current one
        return torch.cat([restore, out[:, unbuffered:]], 1)

    def init_state(self, batch: int, device=None) -> tuple[torch.Tensor, ...]:
        return tuple(torch.zeros(batch, self.hidden_size, dtype=torch.long, device=device) for _ in range(self.n_states))

    def new_stack(self, batch: int, device=None) -> BitStack:
        return BitStack((batch, self.half), device)

    @staticmethod
    def output(state) -> torch.Tensor:
        """The layer's output h (float) from a fixed-point state."""
        return to_float(state[0])

    def halves(self, S):
        return [(s[:, :self.half], s[:, self.half:]) for s in S]


class RevGRUCell(_RevCell):
    n_states = 1

    def __init__(self, input_size: int, hidden_size: int, max_forget_bits=3):
        super().__init__(input_size, hidden_size, max_forget_bits)
        h = self.half
        self.zr = nn.ModuleList(nn.Linear(input_size + h, 2 * h) for _ in range(2))   # torch's default init,
        self.g = nn.ModuleList(nn.Linear(input_size + h, h) for _ in range(2))        # as the authors' cells

    def recurrent_linears(self):
        return [(lin, self.input_size) for lin in (*self.zr, *self.g)]

    def _gates(self, k: int, x: torch.Tensor, other: torch.Tensor):
        zr = torch.sigmoid(self._linear(self.zr[k], x, other))
        zs, r = zr.chunk(2, 1)
        g = torch.tanh(self._linear(self.g[k], x, r * other))
        return self.m * zs + (1 - self.m), g

    @torch.no_grad()
    def step_fixed(self, x, S, stack: BitStack, mask=None, unbuffered: int = 0):
        (H1, H2), = self.halves(S)
        for k in range(2):
            other = to_float(H2 if k == 0 else H1)
            z, g = self._gates(k, x, other)
            n = quantize_gate(z, self.m)
            Hk = self._push_h1(stack, H1, n, mask, unbuffered) if k == 0 else stack.push(H2, n, mask)
            add = to_fixed((1 - z) * g)   # the float gate in the additive term, as the authors' RevGRU
            Hk = Hk + (add if mask is None else torch.where(mask, add, 0))
            H1, H2 = (Hk, H2) if k == 0 else (H1, Hk)
        return (torch.cat([H1, H2], 1),)

    @torch.no_grad()
    def reverse_fixed(self, x, S, stack: BitStack, mask=None, unbuffered: int = 0, restore=None):
        (H1, H2), = self.halves(S)
        for k in (1, 0):
            other = to_float(H2 if k == 0 else H1)
            z, g = self._gates(k, x, other)
            n = quantize_gate(z, self.m)
            add = to_fixed((1 - z) * g)
            Hk = (H1 if k == 0 else H2) - (add if mask is None else torch.where(mask, add, 0))
            Hk = self._pop_h1(stack, Hk, n, mask, unbuffered, restore) if k == 0 else stack.pop(Hk, n, mask)
            H1, H2 = (Hk, H2) if k == 0 else (H1, Hk)
        return (torch.cat([H1, H2], 1),)

    def step_float(self, x, s, fixed_next=None, quantize: bool = True):
        """Float step with autograd; with ``fixed_next`` the forward values are the fixed-point ones. The forget
        gate's product uses its 10-bit value (straight-through); ``quantize=False``: the plain float cell."""
        h1, h2 = s[0][:, :self.half], s[0][:, self.half:]
        f1 = f2 = None
        if fixed_next is not None:
            f1, f2 = fixed_next[0][:, :self.half], fixed_next[0][:, self.half:]
        z, g = self._gates(0, x, h2)
        zq = self._quantized(z, quantize)
        h1 = _st(zq * h1 + (1 - z) * g, f1)
        z, g = self._gates(1, x, h1)
        zq = self._quantized(z, quantize)
        h2 = _st(zq * h2 + (1 - z) * g, f2)
        return (torch.cat([h1, h2], 1),)


class RevLSTMCell(_RevCell):
    n_states = 2   # (h, c)

    def __init__(self, input_size: int, hidden_size: int, max_forget_bits=3):
        super().__init__(input_size, hidden_size, max_forget_bits)
        h = self.half
        self.gates = nn.ModuleList(nn.Linear(input_size + h, 5 * h) for _ in range(2))   # f, z, o, p | g

    def recurrent_linears(self):
        return [(lin, self.input_size) for lin in self.gates]

    def _gates(self, k: int, x: torch.Tensor, other: torch.Tensor):
        a = self._linear(self.gates[k], x, other)
        sig, g = a[:, :4 * self.half], torch.tanh(a[:, 4 * self.half:])
        f, zs, o, ps = torch.sigmoid(sig).chunk(4, 1)
        return f, self.m * zs + (1 - self.m), o, self.m * ps + (1 - self.m), g

    @torch.no_grad()
    def step_fixed(self, x, S, stack: BitStack, mask=None, unbuffered: int = 0):
        (H1, H2), (C1, C2) = self.halves(S)
        H, C = [H1, H2], [C1, C2]
        for k in range(2):
            f, z, o, p, g = self._gates(k, x, to_float(H[1 - k]))
            nz, np_ = quantize_gate(z, self.m), quantize_gate(p, self.m)
            add_c = to_fixed(f * g, " in c")
            C[k] = stack.push(C[k], nz, mask) + (add_c if mask is None else torch.where(mask, add_c, 0))
            add_h = to_fixed(o * torch.tanh(to_float(C[k])))
            pushed = self._push_h1(stack, H[k], np_, mask, unbuffered) if k == 0 else stack.push(H[k], np_, mask)
            H[k] = pushed + (add_h if mask is None else torch.where(mask, add_h, 0))
        self._check(C)
        return torch.cat(H, 1), torch.cat(C, 1)

    @staticmethod
    def _check(C) -> None:
        for c in C:
            if c.numel() and c.abs().max().item() >= MAX_ABS * (1 << FRAC_BITS):
                raise FixedPointOverflow(f"fixed-point overflow: |c| reached {to_float(c).abs().max().item():.3g}, "
                                         f"beyond the representable range +-2^{int(math.log2(MAX_ABS))}")

    @torch.no_grad()
    def reverse_fixed(self, x, S, stack: BitStack, mask=None, unbuffered: int = 0, restore=None):
        (H1, H2), (C1, C2) = self.halves(S)
        H, C = [H1, H2], [C1, C2]
        for k in (1, 0):
            f, z, o, p, g = self._gates(k, x, to_float(H[1 - k]))
            nz, np_ = quantize_gate(z, self.m), quantize_gate(p, self.m)
            add_h = to_fixed(o * torch.tanh(to_float(C[k])))
            Hk = H[k] - (add_h if mask is None else torch.where(mask, add_h, 0))
            H[k] = self._pop_h1(stack, Hk, np_, mask, unbuffered, restore) if k == 0 else stack.pop(Hk, np_, mask)
            add_c = to_fixed(f * g)
            C[k] = stack.pop(C[k] - (add_c if mask is None else torch.where(mask, add_c, 0)), nz, mask)
        return torch.cat(H, 1), torch.cat(C, 1)

    def step_float(self, x, s, fixed_next=None, quantize: bool = True):
        h, c = [s[0][:, :self.half], s[0][:, self.half:]], [s[1][:, :self.half], s[1][:, self.half:]]
        fh = fc = [None, None]
        if fixed_next is not None:
            fh = [fixed_next[0][:, :self.half], fixed_next[0][:, self.half:]]
            fc = [fixed_next[1][:, :self.half], fixed_next[1][:, self.half:]]
        for k in range(2):
            f, z, o, p, g = self._gates(k, x, h[1 - k])
            zq, pq = self._quantized(z, quantize), self._quantized(p, quantize)
            c[k] = _st(zq * c[k] + f * g, fc[k])
            h[k] = _st(pq * h[k] + o * torch.tanh(c[k]), fh[k])
        return torch.cat(h, 1), torch.cat(c, 1)


CELL_TYPES = {"revgru": RevGRUCell, "revlstm": RevLSTMCell}


class RevLayer(nn.Module):
    """A reversible cell as a language-model layer (the ``CELLS`` interface of models/awd_lstm.py).

    ``forward`` runs the fixed-point model over a sequence: the exact values (the bit stack is kept
    in ``self.last_stack`` for accounting) and, under autograd, the straight-through float graph, i.e.
    ordinary BPTT through the same model. Training by reversal uses the cell directly.
    The state is the int64 fixed-point tuple; it is exact across segments.
    """

    cell_type = "revlstm"

    def __init__(self, input_size: int, hidden_size: int, weight_drop: float = 0.0, max_forget_bits=3,
                 cell: str | None = None):
        super().__init__()
        self.cell = CELL_TYPES[cell or self.cell_type](input_size, hidden_size, max_forget_bits)
        self.weight_drop = weight_drop
        self.unbuffered = 0   # leading units of h stored elsewhere (an attention slice): not buffered
        self.last_stack: BitStack | None = None

    def init_state(self, batch: int, device):
        return self.cell.init_state(batch, device)

    @staticmethod
    def detach_state(state):
        return state

    def forward(self, x: torch.Tensor, state, mask: torch.Tensor | None = None, state_float=None):
        """``mask`` [T, B] (True on real tokens): padded steps leave the state and the stack untouched.
        ``state_float``: the float (straight-through) twin of ``state`` carrying gradient from an earlier
        layer (a decoder started from an encoder's final state); the final one is kept in
        ``self.last_float_state``."""
        self.cell.set_weight_drop(self.weight_drop, self.training)
        stack = self.cell.new_stack(x.size(1), x.device)
        outs, grad = [], torch.is_grad_enabled()
        s_float = tuple(to_float(S) for S in state) if state_float is None else state_float
        for t in range(x.size(0)):
            m = None if mask is None else mask[t][:, None]
            # a fresh copy: BLAS may round differently for an unaligned view, and a gate that lands on a
            # rounding boundary would then quantise differently from the reversal pass (which uses fresh tensors)
            nxt = self.cell.step_fixed(x[t].detach().clone(), state, stack, m, self.unbuffered)
            if grad:
                new = self.cell.step_float(x[t], s_float, nxt)
                s_float = new if m is None else tuple(torch.where(m, a, b) for a, b in zip(new, s_float))
                outs.append(s_float[0])
            else:
                outs.append(self.cell.output(nxt))
            state = nxt
        self.last_stack = stack
        self.last_float_state = s_float if grad else None
        return torch.stack(outs), state


class RevLSTMLayer(RevLayer):
    cell_type = "revlstm"


class RevGRULayer(RevLayer):
    cell_type = "revgru"

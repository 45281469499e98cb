"""Attention encoder-decoder for the reversible-RNN translation experiments (MacKay et al. 2018, sec. 5.2), as the
authors' OpenNMT-based code.

``layers`` recurrent layers each side (torch GRU/LSTM, or stacks of the fixed-point RevGRU/RevLSTM of
models/revrnn.py; decoder layer l starts from encoder layer l's final state), Luong "general" global attention on
top of the decoder's top-layer outputs (no input feeding, so the decoder RNN runs over the target in one pass):

    score(q_t, m_s) = q_t^T W_a m_s,   c_t = sum_s softmax(score) m_s,   h~_t = tanh(W_c [c_t; q_t]),
    p(y_t) = softmax(W_o h~_t)

The attention memory m_s is one of ``full`` (every top encoder state: the authors' baselines; it defeats reversal),
``emb`` (the source embeddings), ``slice`` (the first k units of the top encoder layer, stored in full and kept out
of its bit buffer) and ``emb+slice`` (the authors' "Emb+20H"). Dropout is the authors' locked dropout, one mask per
sentence shared over time (``dropout``, 0.4): on the source and target embeddings, between layers, on the decoder's
top output (the attention query; for ``full`` also on the encoder's top output, which is then the memory) and on
the slice; none on the attention output. Every parameter starts U(-0.1, 0.1) (``init_range``, the authors'
OpenNMT ``-param_init``; null: PyTorch's default initialisation). ``positions="sinusoidal"`` adds a sinusoidal
position signal to both embeddings (our synthetic task's reordering needs it; the authors' data do not). Padded
source positions are masked out of the attention, and padded time steps leave the recurrent state untouched.
``baseline_cell="authors"`` swaps torch's GRU/LSTM for the authors' per-step cells (``AuthorsRNN``).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from models.revrnn import RevLayer

ATTENTION = ("full", "emb", "slice", "emb+slice")
POSITIONS = ("none", "sinusoidal")
PAD, BOS, EOS = 0, 2, 3


def sinusoid(T: int, dim: int, device) -> torch.Tensor:
    """[T, 1, dim] sin / cos position signal (Vaswani et al. 2017)."""
    pos = torch.arange(T, device=device, dtype=torch.float32)[:, None]
    i = torch.arange(0, dim, 2, device=device, dtype=torch.float32)
    ang = pos / torch.pow(10000.0, i / dim)
    out = torch.zeros(T, dim, device=device)
    out[:, 0::2] = torch.sin(ang)
    out[:, 1::2] = torch.cos(ang)[:, :dim // 2]
    return out[:, None, :]


class AuthorsRNN(nn.Module):
    """The authors' baseline cells (their nmt/custom_models.py MyLSTM / MyGRU), one step at a time, shaped like
    torch's nn.LSTM / nn.GRU for this file (states [1, B, H]; ``lengths``: padded steps hold the state).

    LSTM: f, i, o = sigmoid, g = tanh of W_i x + W_h h; c' = f c + i g, but h' = o tanh(c) with the *previous*
    cell state c (torch, and the paper's equations: tanh(c')).
    GRU: z, r = sigmoid(W x + U h); h~ = tanh(W_h x + U_h (r h)), the reset applied before the recurrent product
    (torch: r (U_h h + b)); h' = (1 - z) h + z h~ (torch: z weights the old state, the same family).
    """

    def __init__(self, kind: str, input_size: int, hidden: int):
        super().__init__()
        self.kind, self.hidden = kind, hidden
        n = 4 if kind == "lstm" else 3
        self.i2h = nn.Linear(input_size, n * hidden)
        self.h2h = nn.Linear(hidden, n * hidden)

    def forward(self, x: torch.Tensor, state=None, lengths: torch.Tensor | None = None):
        T, B, H = x.size(0), x.size(1), self.hidden
        zeros = x.new_zeros(B, H)
        if self.kind == "lstm":
            h, c = (zeros, zeros) if state is None else (state[0][0], state[1][0])
        else:
            h, c = (zeros if state is None else state[0]), None
        # padded steps hold the state (the authors' masking): [T, B, 1], 1 at real steps
        keep = None
        if lengths is not None:
            keep = (torch.arange(T, device=x.device)[:, None] < lengths.to(x.device)).to(x.dtype)[..., None]
        xs = self.i2h(x)   # every step's input part at once
        U, b = self.h2h.weight, self.h2h.bias
        outs = []
        for t in range(T):
            if self.kind == "lstm":
                pre = xs[t] + F.linear(h, U, b)
                f, i, o = torch.sigmoid(pre[:, :3 * H]).chunk(3, 1)
                c_new = f * c + i * torch.tanh(pre[:, 3 * H:])
                h_new = o * torch.tanh(c)           # the authors': the previous cell state
            else:
                z, r = torch.sigmoid(xs[t, :, :2 * H] + F.linear(h, U[:2 * H], b[:2 * H])).chunk(2, 1)
                cand = torch.tanh(xs[t, :, 2 * H:] + F.linear(r * h, U[2 * H:], b[2 * H:]))
                h_new, c_new = (1 - z) * h + z * cand, None
            if keep is not None:
                m = keep[t]
                h_new = m * h_new + (1 - m) * h
                c_new = None if c is None else m * c_new + (1 - m) * c
            h, c = h_new, c_new
            outs.append(h)
        out = torch.stack(outs)
        return out, ((h[None], c[None]) if self.kind == "lstm" else h[None])


class Seq2Seq(nn.Module):
    def __init__(self, src_vocab: int, tgt_vocab: int, emb: int = 300, hidden: int = 300, cell: str = "gru",
                 attention: str = "emb+slice", slice_units: int = 20, max_forget_bits=3, dropout: float = 0.4,
                 layers: int = 1, positions: str = "none", init_range: float | None = 0.1,
                 baseline_cell: str = "torch"):
        super().__init__()
        if attention not in ATTENTION:
            raise ValueError(f"unknown attention memory '{attention}' ({' | '.join(ATTENTION)})")
        if cell not in ("gru", "lstm", "revgru", "revlstm"):
            raise ValueError(f"unknown cell '{cell}' (gru | lstm | revgru | revlstm)")
        if positions not in POSITIONS:
            raise ValueError(f"unknown positions '{positions}' ({' | '.join(POSITIONS)})")
        self.reversible = cell.startswith("rev")
        limit = hidden // 2 if self.reversible else hidden
        if "slice" in attention and not 0 < slice_units <= limit:
            raise ValueError(f"slice_units must be in 1..{limit}" + (" (half the hidden state: the slice is the first "
                             "units of a reversible cell's first half)" if self.reversible else "") + f", got {slice_units}")
        if layers < 1:
            raise ValueError(f"layers must be >= 1, got {layers}")
        if baseline_cell not in ("torch", "authors"):
            raise ValueError(f"unknown baseline_cell '{baseline_cell}' (torch | authors)")
        if baseline_cell == "authors" and cell.startswith("rev"):
            raise ValueError(f"baseline_cell=authors picks the gru / lstm baselines' cells; cell={cell} is reversible")
        if init_range is not None and not init_range > 0:
            raise ValueError(f"init_range must be > 0 (or null: PyTorch's default initialisation), got {init_range}")
        self.cell, self.attention, self.k, self.hidden, self.layers = cell, attention, slice_units, hidden, layers
        self.emb_size, self.p, self.positions = emb, dropout, positions
        self.src_emb = nn.Embedding(src_vocab, emb, padding_idx=PAD)
        self.tgt_emb = nn.Embedding(tgt_vocab, emb, padding_idx=PAD)
        if self.reversible:
            self.enc = nn.ModuleList(RevLayer(emb if l == 0 else hidden, hidden, 0.0, max_forget_bits, cell)
                                     for l in range(layers))
            self.dec = nn.ModuleList(RevLayer(emb if l == 0 else hidden, hidden, 0.0, max_forget_bits, cell)
                                     for l in range(layers))
            if "slice" in attention:
                self.enc[-1].unbuffered = slice_units   # stored for attention: kept out of the bit buffer
        elif baseline_cell == "authors":
            self.enc = nn.ModuleList(AuthorsRNN(cell, emb if l == 0 else hidden, hidden) for l in range(layers))
            self.dec = nn.ModuleList(AuthorsRNN(cell, emb if l == 0 else hidden, hidden) for l in range(layers))
        else:
            rnn = nn.GRU if cell == "gru" else nn.LSTM
            self.enc = nn.ModuleList(rnn(emb if l == 0 else hidden, hidden) for l in range(layers))
            self.dec = nn.ModuleList(rnn(emb if l == 0 else hidden, hidden) for l in range(layers))
        mem = self.memory_size()
        self.attn = nn.Linear(mem, hidden, bias=False)
        self.combine = nn.Linear(mem + hidden, hidden, bias=False)   # OpenNMT's linear_out: no bias
        self.out = nn.Linear(hidden, tgt_vocab)
        if init_range is not None:   # the authors (OpenNMT's -param_init 0.1): every parameter U(-r, r), the
            for p in self.parameters():   # padding embedding included
                nn.init.uniform_(p, -init_range, init_range)

    def memory_size(self) -> int:
        return {"full": self.hidden, "emb": self.emb_size, "slice": self.k, "emb+slice": self.emb_size + self.k}[self.attention]

    # ---------------------------------------------------------------- dropout masks (one per sentence)
    def masks(self, batch: int, device) -> dict:
        """Locked dropout masks for one minibatch (None when not training or p = 0)."""
        def m(dim):
            if not self.training or self.p == 0:
                return None
            return torch.empty(batch, dim, device=device).bernoulli_(1 - self.p).div_(1 - self.p)
        return {"src": m(self.emb_size), "tgt": m(self.emb_size), "query": m(self.hidden), "enc_top": m(self.hidden),
                "slice": m(self.k), "enc": [None] + [m(self.hidden) for _ in range(1, self.layers)],
                "dec": [None] + [m(self.hidden) for _ in range(1, self.layers)]}

    @staticmethod
    def drop(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return x if mask is None else x * mask

    def embed(self, words: torch.Tensor, side: str, masks: dict) -> torch.Tensor:
        e = (self.src_emb if side == "src" else self.tgt_emb)(words)
        if self.positions == "sinusoidal":
            e = e + sinusoid(words.size(0), self.emb_size, words.device)
        return self.drop(e, masks[side])

    def memory(self, e_src: torch.Tensor, top: torch.Tensor | None, masks: dict) -> torch.Tensor:
        """The attention memory from the (dropped) source embeddings and the top encoder outputs (or slice)."""
        if self.attention == "emb":
            return e_src
        if self.attention == "full":
            return self.drop(top, masks["enc_top"])
        sl = self.drop(top[..., :self.k], masks["slice"])
        return sl if self.attention == "slice" else torch.cat([e_src, sl], -1)

    # ---------------------------------------------------------------- encoder / decoder
    def _rev_stack(self, layers, x, states, mask, drops, floats=None):
        """Run a stack of RevLayers; returns the top outputs and the per-layer final states (each layer keeps its
        float twin in ``last_float_state``)."""
        out_states = []
        for l, layer in enumerate(layers):
            if l > 0:
                x = self.drop(x, drops[l])
            x, st = layer(x, states[l], mask, state_float=None if floats is None else floats[l])
            out_states.append(st)
        return x, out_states

    def _rnn_stack(self, layers, x, states, lengths, drops):
        outs = []
        for l, rnn in enumerate(layers):
            if l > 0:
                x = self.drop(x, drops[l])
            if isinstance(rnn, AuthorsRNN):
                x, st = rnn(x, None if states is None else states[l], lengths)
            elif lengths is not None:   # the encoder, from zero states: packed, so padding never enters the state
                packed, st = rnn(pack_padded_sequence(x, lengths, enforce_sorted=False))
                x = pad_packed_sequence(packed, total_length=x.size(0))[0]
            else:                     # the decoder, from the encoder's final states
                x, st = rnn(x, states[l])
            outs.append(st)
        return x, outs

    def encode(self, src: torch.Tensor, src_mask: torch.Tensor, masks: dict):
        """src [S, B] -> memory [S, B, m], final per-layer states (at each last real token)."""
        e = self.embed(src, "src", masks)
        if self.reversible:
            init = [layer.init_state(src.size(1), src.device) for layer in self.enc]
            outs, state = self._rev_stack(self.enc, e, init, src_mask, masks["enc"])
        else:
            outs, state = self._rnn_stack(self.enc, e, None, src_mask.sum(0).cpu(), masks["enc"])
        return self.memory(e, outs, masks), state

    def decoder_rnn(self, tgt_in: torch.Tensor, state, masks: dict, tgt_mask: torch.Tensor | None = None, floats=None):
        d = self.embed(tgt_in, "tgt", masks)
        if self.reversible:
            return self._rev_stack(self.dec, d, state, tgt_mask, masks["dec"], floats)
        return self._rnn_stack(self.dec, d, state, None, masks["dec"])   # padding after the real tokens is unused

    def attend(self, query: torch.Tensor, memory: torch.Tensor, src_mask: torch.Tensor,
               proj: torch.Tensor | None = None) -> torch.Tensor:
        """query [T, B, H] (the dropped decoder outputs), memory [S, B, m] -> logits [T, B, V]. ``proj``: W_a m,
        when computed once for many calls."""
        proj = self.attn(memory) if proj is None else proj
        scores = torch.einsum("tbh,sbh->bts", query, proj)
        scores = scores.masked_fill(~src_mask.T[:, None, :], float("-inf"))
        ctx = torch.einsum("bts,sbm->tbm", torch.softmax(scores, -1), memory)
        return self.out(torch.tanh(self.combine(torch.cat([ctx, query], -1))))

    def forward(self, src, src_mask, tgt_in, tgt_mask):
        masks = self.masks(src.size(1), src.device)
        memory, state = self.encode(src, src_mask, masks)
        floats = [layer.last_float_state for layer in self.enc] if self.reversible else None
        dec_out, _ = self.decoder_rnn(tgt_in, state, masks, tgt_mask, floats)   # from the encoder's final states
        return self.attend(self.drop(dec_out, masks["query"]), memory, src_mask)

    # ---------------------------------------------------------------- inference
    @torch.no_grad()
    def greedy(self, src, src_mask, max_len: int = 100) -> list[list[int]]:
        masks = self.masks(src.size(1), src.device)
        memory, state = self.encode(src, src_mask, masks)
        B = src.size(1)
        y = torch.full((1, B), BOS, dtype=torch.long, device=src.device)
        out, done = [], torch.zeros(B, dtype=torch.bool, device=src.device)
        for t in range(max_len):
            h, state = self._step(y, state, masks, t)
            y = self.attend(h, memory, src_mask).argmax(-1)
            out.append(y[0])
            done |= y[0] == EOS
            if bool(done.all()):
                break
        seqs = torch.stack(out, 1).tolist()
        return [s[:s.index(EOS)] if EOS in s else s for s in seqs]

    def _step(self, y: torch.Tensor, state, masks: dict, t: int):
        """One decoder step at position t (the position signal needs it)."""
        e = self.tgt_emb(y)
        if self.positions == "sinusoidal":
            e = e + sinusoid(t + 1, self.emb_size, y.device)[t:t + 1]
        if self.reversible:
            return self._rev_stack(self.dec, e, state, None, masks["dec"])
        return self._rnn_stack(self.dec, e, state, None, masks["dec"])

    @torch.no_grad()
    def beam(self, src, src_mask, width: int = 5, max_len: int = 100, alpha: float = 0.0) -> list[list[int]]:
        """Beam search, one sentence at a time, the beams as one batch; scores are summed log-probs
        divided by length^alpha."""
        results = []
        for j in range(src.size(1)):
            n = int(src_mask[:, j].sum())
            masks = self.masks(1, src.device)
            memory, state = self.encode(src[:n, j:j + 1], src_mask[:n, j:j + 1], masks)
            beams, finished = [([], 0.0, state)], []
            for t in range(max_len):
                ys = torch.tensor([[b[0][-1] if b[0] else BOS for b in beams]], device=src.device)
                states = _stack_states([b[2] for b in beams])
                h, new_state = self._step(ys, states, masks, t)
                mem = memory.expand(-1, len(beams), -1)
                logp = F.log_softmax(self.attend(h, mem, src_mask[:n, j:j + 1].expand(-1, len(beams)))[0], -1)
                cand = []
                for i, (toks, score, _) in enumerate(beams):
                    top = logp[i].topk(width)
                    cand += [(toks + [int(w)], score + float(lp), i) for lp, w in zip(top.values, top.indices)]
                cand.sort(key=lambda c: -c[1])
                beams = []
                for toks, score, i in cand:
                    if toks[-1] == EOS:
                        finished.append((toks[:-1], score / max(len(toks), 1) ** alpha))
                    elif len(beams) < width:
                        beams.append((toks, score, _pick_state(new_state, i)))
                    if len(beams) == width:
                        break
                if not beams or len(finished) >= width:
                    break
            finished += [(b[0], b[1] / max(len(b[0]), 1) ** alpha) for b in beams]
            results.append(max(finished, key=lambda f: f[1])[0])
        return results


def _stack_states(states):
    first = states[0]
    if isinstance(first, list):                  # reversible stack: one state tuple per layer
        return [_stack_states([s[l] for s in states]) for l in range(len(first))]
    if isinstance(first, torch.Tensor):          # GRU: [1, 1, H]
        return torch.cat(states, 1)
    if first[0].dim() == 3:                      # LSTM: ([1, 1, H], [1, 1, H])
        return tuple(torch.cat(parts, 1) for parts in zip(*states))
    return tuple(torch.cat(parts, 0) for parts in zip(*states))   # reversible: ([1, H] int64, ...)


def _pick_state(state, i: int):
    if isinstance(state, list):
        return [_pick_state(s, i) for s in state]
    if isinstance(state, torch.Tensor):
        return state[:, i:i + 1]
    if state[0].dim() == 3:
        return tuple(s[:, i:i + 1] for s in state)
    return tuple(s[i:i + 1] for s in state)

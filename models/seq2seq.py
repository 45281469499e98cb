"""Attention encoder-decoder for the reversible-RNN translation experiments (MacKay et al. 2018, sec. 5.2).

``layers`` recurrent layers each side (torch GRU/LSTM, or stacks of the fixed-point RevGRU/RevLSTM of
models/revrnn.py; decoder layer l starts from encoder layer l's final state; dropout between layers),
Luong "general" global attention on top of the decoder's top-layer outputs (no input feeding, so the
decoder RNN runs over the target in one pass and attention needs no state of its own):

    score(h_t, m_s) = h_t^T W_a m_s,   c_t = sum_s softmax(score) m_s,   h~_t = tanh(W_c [c_t; h_t]),
    p(y_t) = softmax(W_o h~_t)

The attention memory m_s is the paper's choice among ``full`` (every encoder hidden state: the baseline,
which defeats reversal), ``emb`` (the source embeddings), ``slice`` (the first k hidden units, stored
explicitly) and ``emb+slice`` ("Emb+20H"); the hidden slice is taken from the top encoder layer. Padded
source positions are masked out of the attention, and padded time steps leave the recurrent state
untouched (per-example masks, also inside exact forgetting).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from models.revrnn import RevLayer

ATTENTION = ("full", "emb", "slice", "emb+slice")
PAD, BOS, EOS = 0, 2, 3


class Seq2Seq(nn.Module):
    def __init__(self, src_vocab: int, tgt_vocab: int, emb: int = 300, hidden: int = 300, cell: str = "gru",
                 attention: str = "emb+slice", slice_units: int = 20, max_forget_bits=3, dropout: float = 0.2,
                 layers: int = 1):
        super().__init__()
        if attention not in ATTENTION:
            raise ValueError(f"unknown attention memory '{attention}' ({' | '.join(ATTENTION)})")
        if cell not in ("gru", "lstm", "revgru", "revlstm"):
            raise ValueError(f"unknown cell '{cell}' (gru | lstm | revgru | revlstm)")
        if "slice" in attention and not 0 < slice_units <= hidden:
            raise ValueError(f"slice_units must be in 1..{hidden}, got {slice_units}")
        if layers < 1:
            raise ValueError(f"layers must be >= 1, got {layers}")
        self.cell, self.attention, self.k, self.hidden, self.layers = cell, attention, slice_units, hidden, layers
        self.reversible = cell.startswith("rev")
        self.src_emb = nn.Embedding(src_vocab, emb, padding_idx=PAD)
        self.tgt_emb = nn.Embedding(tgt_vocab, emb, padding_idx=PAD)
        if self.reversible:
            self.enc = nn.ModuleList(RevLayer(emb if l == 0 else hidden, hidden, 0.0, max_forget_bits, cell)
                                     for l in range(layers))
            self.dec = nn.ModuleList(RevLayer(emb if l == 0 else hidden, hidden, 0.0, max_forget_bits, cell)
                                     for l in range(layers))
        else:
            rnn = nn.GRU if cell == "gru" else nn.LSTM
            between = dropout if layers > 1 else 0.0
            self.enc = rnn(emb, hidden, num_layers=layers, dropout=between)
            self.dec = rnn(emb, hidden, num_layers=layers, dropout=between)
        mem = {"full": hidden, "emb": emb, "slice": slice_units, "emb+slice": emb + slice_units}[attention]
        self.attn = nn.Linear(mem, hidden, bias=False)
        self.combine = nn.Linear(mem + hidden, hidden)
        self.out = nn.Linear(hidden, tgt_vocab)
        self.drop = nn.Dropout(dropout)

    def _rev_stack(self, layers, x, states, mask, floats=None):
        """Run a stack of RevLayers; returns the top outputs and the per-layer final states (each layer
        keeps its float twin in ``last_float_state``)."""
        out_states = []
        for l, layer in enumerate(layers):
            if l > 0:
                x = self.drop(x)
            x, st = layer(x, states[l], mask, state_float=None if floats is None else floats[l])
            out_states.append(st)
        return x, out_states

    # ---------------------------------------------------------------- encoder
    def encode(self, src: torch.Tensor, src_mask: torch.Tensor):
        """src [S, B] -> memory [S, B, m], top encoder outputs [S, B, H], final state (at each last real
        token; reversible: a list of per-layer states)."""
        e = self.drop(self.src_emb(src))
        if self.reversible:
            init = [layer.init_state(src.size(1), src.device) for layer in self.enc]
            outs, state = self._rev_stack(self.enc, e, init, src_mask)
        else:
            lengths = src_mask.sum(0).cpu()
            packed, state = self.enc(pack_padded_sequence(e, lengths, enforce_sorted=False))
            outs = pad_packed_sequence(packed, total_length=src.size(0))[0]
        mem = {"full": lambda: outs, "emb": lambda: e, "slice": lambda: outs[..., :self.k],
               "emb+slice": lambda: torch.cat([e, outs[..., :self.k]], -1)}[self.attention]()
        return mem, outs, state

    # ---------------------------------------------------------------- decoder
    def decoder_rnn(self, tgt_in: torch.Tensor, state, tgt_mask: torch.Tensor | None = None):
        d = self.drop(self.tgt_emb(tgt_in))
        if self.reversible:
            return self._rev_stack(self.dec, d, state, tgt_mask)
        return self.dec(d, state)   # padding sits after the real tokens: it never reaches a used output

    def attend(self, dec_out: torch.Tensor, memory: torch.Tensor, src_mask: torch.Tensor) -> torch.Tensor:
        """dec_out [T, B, H], memory [S, B, m] -> logits [T, B, V]."""
        scores = torch.einsum("tbh,sbh->bts", dec_out, self.attn(memory))
        scores = scores.masked_fill(~src_mask.T[:, None, :], float("-inf"))
        ctx = torch.einsum("bts,sbm->tbm", torch.softmax(scores, -1), memory)
        return self.out(self.drop(torch.tanh(self.combine(torch.cat([ctx, dec_out], -1)))))

    def forward(self, src, src_mask, tgt_in, tgt_mask):
        memory, _, state = self.encode(src, src_mask)
        if self.reversible:   # the decoder starts from the encoder's final states, gradient included
            dec_out, _ = self._rev_stack(self.dec, self.drop(self.tgt_emb(tgt_in)), state, tgt_mask,
                                         [layer.last_float_state for layer in self.enc])
        else:
            dec_out, _ = self.decoder_rnn(tgt_in, state, tgt_mask)
        return self.attend(dec_out, memory, src_mask)

    # ---------------------------------------------------------------- inference
    @torch.no_grad()
    def greedy(self, src, src_mask, max_len: int = 100) -> list[list[int]]:
        memory, _, state = self.encode(src, src_mask)
        B = src.size(1)
        y = torch.full((1, B), BOS, dtype=torch.long, device=src.device)
        out, done = [], torch.zeros(B, dtype=torch.bool, device=src.device)
        for _ in range(max_len):
            h, state = self.decoder_rnn(y, state)
            y = self.attend(h, memory, src_mask).argmax(-1)
            out.append(y[0])
            done |= y[0] == EOS
            if bool(done.all()):
                break
        seqs = torch.stack(out, 1).tolist()
        return [s[:s.index(EOS)] if EOS in s else s for s in seqs]

    @torch.no_grad()
    def beam(self, src, src_mask, width: int = 5, max_len: int = 100, alpha: float = 0.0) -> list[list[int]]:
        """Beam search, one sentence at a time, the beams as one batch; scores are summed log-probs
        divided by length^alpha."""
        results = []
        for j in range(src.size(1)):
            n = int(src_mask[:, j].sum())
            memory, _, state = self.encode(src[:n, j:j + 1], src_mask[:n, j:j + 1])
            beams, finished = [([], 0.0, state)], []
            for _ in range(max_len):
                ys = torch.tensor([[b[0][-1] if b[0] else BOS for b in beams]], device=src.device)
                states = _stack_states([b[2] for b in beams])
                h, new_state = self.decoder_rnn(ys, states)
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

"""Training by reversal (MacKay et al. 2018) for a stack of reversible recurrent layers.

Instead of storing every hidden state for backpropagation through time:

1. a no-grad forward over T steps and all layers, in fixed point, fills each layer's bit stack and
   keeps nothing else across time;
2. for t = T-1..0: the loss of step t (softmax on the top layer's state after step t; in translation,
   attention then softmax) is computed and backpropagated to that state, then the step is reversed
   layer by layer, top to bottom: undone exactly (recovering the previous state bit for bit), re-run
   with autograd to rebuild its local graph, and the carried state gradient backpropagated through it
   (plus the output gradient at the top, plus the gradient arriving from the layer above through its
   input at the lower layers). This is the authors' order: no per-step outputs are stored.

Every dropout mask (embedding, locked, DropConnect on the recurrent columns) is sampled once per
minibatch before step 1, so the forward and the reverse pass agree. After the reverse pass each
layer is back at its initial state with an empty stack; that is checked, not assumed.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from models.revrnn import to_float


def _locked_mask(shape, p: float, training: bool, device) -> torch.Tensor | None:
    if not training or p == 0:
        return None
    return torch.empty(shape, device=device).bernoulli_(1 - p).div_(1 - p)


def _apply(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return x if mask is None else x * mask


def memory_bits(cells, stacks, T: int, batch: int) -> dict:
    """Bits ordinary BPTT stores for the hidden states (32 x T x B x H per layer and state tensor)
    against the bits the buffers use, and the information-theoretic minimum."""
    normal = sum(32 * T * batch * c.hidden_size * c.n_states for c in cells)
    buffer = sum(s.bits() for s in stacks)
    info = sum(s.info_bits for s in stacks)
    return {"mem/bits_bptt": normal, "mem/bits_buffer": buffer, "mem/bits_info": info,
            "mem/saving_actual": normal / max(buffer, 1), "mem/saving_info": normal / max(info, 1e-9)}


def reverse_step(cells, S: list, stacks: list, g: list, x0: torch.Tensor, in_masks, g_top: torch.Tensor,
                 mask: torch.Tensor | None = None) -> None:
    """Reverse one time step of a layer stack, top layer first, in place: ``S`` (per-layer fixed-point
    states after the step) becomes the states before it, ``g`` (per-layer state gradients) moves back one
    step. Each layer's step is undone exactly, re-run with autograd and backpropagated; ``g_top`` is the
    gradient arriving at the top layer's output, and a lower layer receives the gradient of the layer
    above through its input. ``x0``: the bottom layer's input (with its graph, e.g. to the embeddings);
    ``in_masks[l]``: dropout mask on layer l's input (l >= 1) or None; ``mask`` [B, 1]: padded examples
    are no-ops both ways."""
    top = len(cells) - 1
    for l in range(top, -1, -1):
        c = cells[l]
        if l == 0:
            below, x_in = None, x0
        else:
            below = cells[l - 1].output(S[l - 1]).requires_grad_(True)
            x_in = _apply(below, in_masks[l])
        prev = c.reverse_fixed(x_in.detach(), S[l], stacks[l], mask)
        s_prev = tuple(to_float(q).requires_grad_(True) for q in prev)
        s_next = c.step_float(x_in, s_prev, fixed_next=S[l])
        if mask is not None:
            s_next = tuple(torch.where(mask, a, b) for a, b in zip(s_next, s_prev))
        grads = list(g[l])
        if l == top:
            grads[0] = grads[0] + g_top
        torch.autograd.backward(s_next, grads)
        g[l] = [sp.grad for sp in s_prev]
        if below is not None:
            g[l - 1][0] = g[l - 1][0] + below.grad
        S[l] = prev


def lm_step(model, words: torch.Tensor, targets: torch.Tensor, state: list):
    """One truncated-BPTT segment of ``models.awd_lstm.AWDLanguageModel`` with reversible layers, gradients by
    reversal (accumulated into ``.grad``), as the authors' ``rev_training/model.py``. Returns (cross-entropy, new
    state, memory stats).

    Nothing per step is kept across time but the bit stacks: the no-grad forward keeps no outputs, and the softmax
    and cross-entropy of step t are computed inside the reverse sweep, on the top layer's state after step t,
    just before that step is reversed (the loss is the mean over the T x B tokens)."""
    T, B = words.shape
    dev = words.device
    cells = [layer.cell for layer in model.layers]
    L, training = len(cells), model.training
    for layer in model.layers:
        layer.cell.set_weight_drop(layer.weight_drop, training)
    emb = model.encoder.weight
    row_mask = _locked_mask((emb.size(0), 1), model.dropoute, training, dev)
    in_masks = [_locked_mask((B, model.encoder.embedding_dim), model.dropouti, training, dev)]
    in_masks += [_locked_mask((B, cells[l - 1].hidden_size), model.dropouth, training, dev) for l in range(1, L)]
    out_mask = _locked_mask((B, cells[-1].hidden_size), model.dropout, training, dev)

    def embed(t: int) -> torch.Tensor:   # word-type dropout applied to the looked-up rows only
        e = F.embedding(words[t], emb)
        if row_mask is not None:
            e = e * row_mask[words[t]]
        return _apply(e, in_masks[0])

    # 1. no-grad forward in fixed point: only the bit stacks grow
    stacks = [c.new_stack(B, dev) for c in cells]
    S = list(state)
    initial = [tuple(s.clone() for s in st) for st in state]
    with torch.no_grad():
        for t in range(T):
            x = embed(t)
            for l, c in enumerate(cells):
                S[l] = c.step_fixed(x, S[l], stacks[l])
                x = c.output(S[l])
                if l < L - 1:
                    x = _apply(x, in_masks[l + 1])
    final = [tuple(s.clone() for s in st) for st in S]
    stats = memory_bits(cells, stacks, T, B)

    # 2. backwards in time: step t's loss on the top state after step t, then reverse step t through all layers
    g = [[torch.zeros(B, c.hidden_size, device=dev) for _ in range(c.n_states)] for c in cells]
    loss = torch.zeros((), device=dev)
    for t in range(T - 1, -1, -1):
        top = cells[-1].output(S[-1]).requires_grad_(True)
        logits = model.decoder(_apply(top, out_mask))
        part = F.cross_entropy(logits, targets[t], reduction="sum")
        (part / targets.numel()).backward()
        loss += part.detach()
        reverse_step(cells, S, stacks, g, embed(t), in_masks, top.grad)
    for l in range(L):
        if not (all(torch.equal(a, b) for a, b in zip(S[l], initial[l])) and stacks[l].empty()):
            raise RuntimeError(f"reversal did not restore layer {l}'s initial state exactly")
    return loss / targets.numel(), final, stats


def seq2seq_step(model, src: torch.Tensor, src_mask: torch.Tensor, tgt: torch.Tensor, tgt_mask: torch.Tensor):
    """One minibatch of ``models.seq2seq.Seq2Seq`` with reversible cells (any number of layers per side),
    gradients by reversal (accumulated into ``.grad``). ``tgt`` includes <s> ... </s>; the decoder reads
    tgt[:-1] and predicts tgt[1:]. Returns (mean cross-entropy per target token, {"enc"|"dec": (buffer
    bits at their peak, information bits)}, summed over layers).

    Encoder and decoder run once without grad in fixed point, filling their bit stacks; only what the
    attention and the softmax need is kept: the decoder's top outputs, the source embeddings and the top
    encoder layer's hidden slice (the attention memory, stored explicitly). The loss is backpropagated to
    those; then the decoder is reversed step by step, layers top to bottom within a step (its state
    gradients end at its initial states, the encoder's final states), then the encoder, adding the
    memory-slice gradient to each step's top output. Dropout between layers uses masks sampled once, so
    both directions agree. Padded steps are masked no-ops both ways. Every state and stack must come back
    exactly to its start (checked).
    """
    enc = [layer.cell for layer in model.enc]
    dec = [layer.cell for layer in model.dec]
    L = len(enc)
    S, B = src.shape
    T = tgt.size(0) - 1
    dev = src.device
    k = model.hidden if model.attention == "full" else model.k
    e_src = model.drop(model.src_emb(src))
    e_tgt = model.drop(model.tgt_emb(tgt[:-1]))
    xs, xt = e_src.detach().requires_grad_(True), e_tgt.detach().requires_grad_(True)
    ms, mt = src_mask[:, :, None], tgt_mask[:-1, :, None]
    p = model.drop.p
    drop_e = [None] + [_locked_mask((S, B, model.hidden), p, model.training, dev) for _ in range(1, L)]
    drop_d = [None] + [_locked_mask((T, B, model.hidden), p, model.training, dev) for _ in range(1, L)]

    def at(drops, t):   # each layer's input dropout mask at step t (None: no dropout)
        return [d if d is None else d[t] for d in drops]

    def layer_input(cells, l, Sx, x0, drops, t):
        return x0 if l == 0 else _apply(cells[l - 1].output(Sx[l - 1]), at(drops, t)[l])

    # 1. no-grad fixed-point forward, encoder then decoder
    stack_e = [c.new_stack(B, dev) for c in enc]
    stack_d = [c.new_stack(B, dev) for c in dec]
    init = [c.init_state(B, dev) for c in enc]
    Se, slices, outs = list(init), [], []
    with torch.no_grad():
        for s in range(S):
            for l in range(L):
                Se[l] = enc[l].step_fixed(layer_input(enc, l, Se, xs[s], drop_e, s), Se[l], stack_e[l], ms[s])
            slices.append(enc[-1].output(Se[-1])[:, :k])
        enc_final = list(Se)
        Sd = list(Se)
        for t in range(T):
            for l in range(L):
                Sd[l] = dec[l].step_fixed(layer_input(dec, l, Sd, xt[t], drop_d, t), Sd[l], stack_d[l], mt[t])
            outs.append(dec[-1].output(Sd[-1]))
    acct = {side: (sum(st.bits() for st in stacks), sum(st.info_bits for st in stacks))
            for side, stacks in (("enc", stack_e), ("dec", stack_d))}

    # 2. loss through attention and softmax on the kept tensors
    sl = torch.stack(slices).requires_grad_(True)
    dec_out = torch.stack(outs).requires_grad_(True)
    memory = {"full": sl, "emb": xs, "slice": sl, "emb+slice": torch.cat([xs, sl], -1)}[model.attention]
    logits = model.attend(dec_out, memory, src_mask)
    loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), tgt[1:].reshape(-1), ignore_index=0)
    loss.backward()
    g_out = dec_out.grad
    g_sl = sl.grad if sl.grad is not None else torch.zeros_like(sl)

    def reverse(cells, x_leaf, mask, S_end, stacks, drops, g, g_top):
        """Reverse a layer stack from S_end to its initial states; g: per-layer state gradients at the end."""
        Sx, g = list(S_end), [list(gl) for gl in g]
        for t in range(x_leaf.size(0) - 1, -1, -1):
            reverse_step(cells, Sx, stacks, g, x_leaf[t], at(drops, t), g_top(t), mask[t])
        return Sx, g

    pad = enc[-1].hidden_size - k      # the memory slice is the first k units of the top layer's output h

    # 3. decoder backwards to its initial states (= the encoder's final states), then the encoder
    zero = [[torch.zeros(B, c.hidden_size, device=dev) for _ in range(c.n_states)] for c in dec]
    Sd0, g = reverse(dec, xt, mt, Sd, stack_d, drop_d, zero, lambda t: g_out[t])
    Se0, _ = reverse(enc, xs, ms, Sd0, stack_e, drop_e, g, lambda t: F.pad(g_sl[t], (0, pad)))
    for l in range(L):
        if not (all(torch.equal(a, b) for a, b in zip(Sd0[l], enc_final[l])) and stack_d[l].empty()):
            raise RuntimeError(f"reversal did not restore decoder layer {l}'s initial state exactly")
        if not (all(torch.equal(a, b) for a, b in zip(Se0[l], init[l])) and stack_e[l].empty()):
            raise RuntimeError(f"reversal did not restore encoder layer {l}'s initial state exactly")
    torch.autograd.backward([e_src, e_tgt], [xs.grad, xt.grad])
    return loss.detach(), acct

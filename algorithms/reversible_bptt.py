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


def kept_slice(v: torch.Tensor) -> torch.Tensor:
    """A step's attention slice as it is kept: exact fixed point, as int32 when every value fits (|v| < 2^31,
    i.e. |h| < 256), else int64."""
    return v.to(torch.int32) if bool((v.abs() < 2**31).all()) else v.clone()


def memory_bits(cells, stacks, T: int, batch: int) -> dict:
    """Bits ordinary BPTT stores for the hidden states (32 x T x B x H per layer and state tensor)
    against the bits the buffers use, and the information-theoretic minimum."""
    normal = sum(32 * T * batch * c.hidden_size * c.n_states for c in cells)
    buffer = sum(s.bits() for s in stacks)
    info = sum(s.info_bits for s in stacks)
    return {"mem/bits_bptt": normal, "mem/bits_buffer": buffer, "mem/bits_info": info,
            "mem/saving_actual": normal / max(buffer, 1), "mem/saving_info": normal / max(info, 1e-9)}


def reverse_step(cells, S: list, stacks: list, g: list, x0: torch.Tensor, in_masks, g_top: torch.Tensor | float,
                 mask: torch.Tensor | None = None, unbuffered: int = 0, restore: torch.Tensor | None = None) -> None:
    """Reverse one time step of a layer stack, top layer first, in place: ``S`` (per-layer fixed-point
    states after the step) becomes the states before it, ``g`` (per-layer state gradients) moves back one
    step. Each layer's step is undone exactly, re-run with autograd and backpropagated; ``g_top`` is the
    gradient arriving at the top layer's output, and a lower layer receives the gradient of the layer
    above through its input. ``x0``: the bottom layer's input (with its graph, e.g. to the embeddings);
    ``in_masks[l]``: dropout mask on layer l's input (l >= 1) or None; ``mask`` [B, 1]: padded examples
    are no-ops both ways; ``unbuffered`` / ``restore``: the top layer's attention slice, kept out of its buffer,
    and its stored values before the step."""
    top = len(cells) - 1
    for l in range(top, -1, -1):
        c = cells[l]
        if l == 0:
            below, x_in = None, x0
        else:
            below = cells[l - 1].output(S[l - 1]).requires_grad_(True)
            x_in = _apply(below, in_masks[l])
        if l == top and unbuffered:
            prev = c.reverse_fixed(x_in.detach(), S[l], stacks[l], mask, unbuffered, restore)
        else:
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


def seq2seq_step(model, src: torch.Tensor, src_mask: torch.Tensor, tgt: torch.Tensor, tgt_mask: torch.Tensor,
                 norm: float):
    """One minibatch of ``models.seq2seq.Seq2Seq`` with reversible cells (any number of layers per side), gradients by
    reversal (accumulated into ``.grad``), as the authors' ``RevNMTModel.forward_and_backward``. ``tgt`` includes
    <s> ... </s>; the decoder reads tgt[:-1] and predicts tgt[1:]; the summed cross-entropy is divided by ``norm``
    (the number of sentences, as the authors, or of target tokens). Returns (the summed cross-entropy / norm,
    {"enc"|"dec": (bits kept across time, information bits)}).

    Encoder and decoder run once without grad in fixed point, filling their bit stacks; the only per-step values
    kept are the attention memory's: the top encoder layer's slice (the first k units of h1, stored in full, as int32
    when it fits, and kept out of that layer's buffer; counted at its storage width on the encoder) and the source
    embeddings (recomputed from the tokens in the authors' code; BPTT keeps them too). Then the decoder is reversed
    step by step: step t's attention, softmax and cross-entropy on the top state after step t, backpropagated, then
    step t undone through the layers (top to bottom); then the encoder, adding the slice's gradient to each step's top
    output and restoring the slice units from their stored values. Every state and stack must come back exactly (checked).
    """
    enc = [layer.cell for layer in model.enc]
    dec = [layer.cell for layer in model.dec]
    L = len(enc)
    S, B = src.shape
    T = tgt.size(0) - 1
    dev = src.device
    k = model.k if "slice" in model.attention else 0
    if model.attention == "full":
        raise ValueError("attention 'full' keeps every encoder state: it cannot be trained by reversal")
    masks = model.masks(B, dev)
    e_src, e_tgt = model.embed(src, "src", masks), model.embed(tgt[:-1], "tgt", masks)
    xs, xt = e_src.detach().requires_grad_(True), e_tgt.detach().requires_grad_(True)
    ms, mt = src_mask[:, :, None], tgt_mask[:-1, :, None]

    # 1. no-grad fixed-point forward, encoder then decoder; the slice values are stored (exact, int64)
    stack_e = [c.new_stack(B, dev) for c in enc]
    stack_d = [c.new_stack(B, dev) for c in dec]
    init = [c.init_state(B, dev) for c in enc]
    Se, slices = list(init), [kept_slice(init[-1][0][:, :k])]
    with torch.no_grad():
        for s in range(S):
            x = xs[s]
            for l in range(L):
                if l > 0:
                    x = _apply(enc[l - 1].output(Se[l - 1]), masks["enc"][l])
                Se[l] = enc[l].step_fixed(x, Se[l], stack_e[l], ms[s], k if l == L - 1 else 0)
            slices.append(kept_slice(Se[-1][0][:, :k]))
        enc_final = list(Se)
        Sd = list(Se)
        for t in range(T):
            x = xt[t]
            for l in range(L):
                if l > 0:
                    x = _apply(dec[l - 1].output(Sd[l - 1]), masks["dec"][l])
                Sd[l] = dec[l].step_fixed(x, Sd[l], stack_d[l], mt[t])
    # the slices kept across time, counted at their storage width for the real tokens (as BPTT's states are)
    slice_bits = sum(8 * v.element_size() * int(src_mask[s].sum()) * k for s, v in enumerate(slices[1:]))
    acct = {"enc": (sum(st.bits() for st in stack_e) + slice_bits, sum(st.info_bits for st in stack_e) + slice_bits),
            "dec": (sum(st.bits() for st in stack_d), sum(st.info_bits for st in stack_d))}

    # 2. the attention memory (and its projection) once, as leaves whose gradients the steps accumulate
    sl = to_float(torch.stack([v.long() for v in slices[1:]])).requires_grad_(True) if k else None
    top_float = None if sl is None else torch.cat([sl, sl.new_zeros(S, B, enc[-1].hidden_size - k)], -1)
    memory = model.memory(xs, top_float, masks)
    proj = model.attn(memory)
    mem_leaf, proj_leaf = memory.detach().requires_grad_(True), proj.detach().requires_grad_(True)

    # 3. the decoder backwards: step t's loss on the top state after step t, then reverse step t
    g = [[torch.zeros(B, c.hidden_size, device=dev) for _ in range(c.n_states)] for c in dec]
    loss = torch.zeros((), device=dev)
    for t in range(T - 1, -1, -1):
        top = dec[-1].output(Sd[-1]).requires_grad_(True)
        logits = model.attend(model.drop(top, masks["query"])[None], mem_leaf, src_mask, proj_leaf)[0]
        part = F.cross_entropy(logits, tgt[t + 1], ignore_index=0, reduction="sum") / norm
        part.backward()
        loss += part.detach()
        reverse_step(dec, Sd, stack_d, g, xt[t], masks["dec"], top.grad, mt[t])
    torch.autograd.backward([memory, proj], [mem_leaf.grad, proj_leaf.grad])

    # 4. the encoder backwards from the decoder's initial-state gradients (its final states)
    g_sl = None if sl is None else sl.grad   # the slice's gradient from every decoder step
    pad = enc[-1].hidden_size - k
    Se = list(Sd)
    for s in range(S - 1, -1, -1):
        g_top = 0.0 if g_sl is None else F.pad(g_sl[s], (0, pad))
        reverse_step(enc, Se, stack_e, g, xs[s], masks["enc"], g_top, ms[s], k, slices[s].long())
    for l in range(L):
        if not (all(torch.equal(a, b) for a, b in zip(Sd[l], enc_final[l])) and stack_d[l].empty()):
            raise RuntimeError(f"reversal did not restore decoder layer {l}'s initial state exactly")
        if not (all(torch.equal(a, b) for a, b in zip(Se[l], init[l])) and stack_e[l].empty()):
            raise RuntimeError(f"reversal did not restore encoder layer {l}'s initial state exactly")
    torch.autograd.backward([e_src, e_tgt], [xs.grad, xt.grad])
    return loss, acct

"""Training by reversal (MacKay et al. 2018) for a stack of reversible recurrent layers.

Instead of storing every hidden state for backpropagation through time:

1. a no-grad forward over T steps and all layers, in fixed point, fills each layer's bit stack
   (only the top layer's outputs are kept, as the softmax needs them anyway);
2. the loss on those outputs is backpropagated to the decoder and to the outputs;
3. for t = T-1..0 and layers top to bottom: reverse the step exactly (recovering the previous
   state bit for bit), re-run that one step with autograd to rebuild its local graph, and
   backpropagate the carried state gradient through it (plus the output gradient at the top,
   plus the gradient arriving from the layer above through its input at the lower layers).

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


def lm_step(model, words: torch.Tensor, targets: torch.Tensor, state: list, ar_alpha: float = 0.0,
            tar_beta: float = 0.0, loss_chunk: int | None = None):
    """One truncated-BPTT segment of ``models.awd_lstm.AWDLanguageModel`` with reversible layers,
    gradients by reversal (accumulated into ``.grad``). Returns (cross-entropy, new state, memory stats)."""
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

    # 1. no-grad forward in fixed point
    stacks = [c.new_stack(B, dev) for c in cells]
    S = list(state)
    initial = [tuple(s.clone() for s in st) for st in state]
    outs = []
    with torch.no_grad():
        for t in range(T):
            x = embed(t)
            for l, c in enumerate(cells):
                S[l] = c.step_fixed(x, S[l], stacks[l])
                x = c.output(S[l])
                if l < L - 1:
                    x = _apply(x, in_masks[l + 1])
            outs.append(x)
    final = [tuple(s.clone() for s in st) for st in S]
    stats = memory_bits(cells, stacks, T, B)

    # 2. loss on the stored top-layer outputs; the softmax in chunks of ``loss_chunk`` time steps so
    #    its logits (T x B x vocab) never exist all at once
    raw = torch.stack(outs).requires_grad_(True)
    reg = raw.new_zeros(())
    if ar_alpha:
        reg = reg + ar_alpha * _apply(raw, out_mask).pow(2).mean()
    if tar_beta:
        reg = reg + tar_beta * (raw[1:] - raw[:-1]).pow(2).mean()
    if reg.requires_grad:
        reg.backward()
    loss = raw.new_zeros(())
    chunk = loss_chunk or T
    for a in range(0, T, chunk):
        logits = model.decoder(_apply(raw[a:a + chunk], out_mask))
        part = F.cross_entropy(logits.view(-1, logits.size(-1)), targets[a:a + chunk].reshape(-1), reduction="sum")
        (part / targets.numel()).backward()
        loss = loss + part.detach()
    loss = loss / targets.numel()
    g_out = raw.grad

    # 3. reverse step by step, top layer first, rebuilding one step's graph at a time
    g = [[torch.zeros(B, c.hidden_size, device=dev) for _ in range(c.n_states)] for c in cells]
    for t in range(T - 1, -1, -1):
        for l in range(L - 1, -1, -1):
            c = cells[l]
            if l == 0:
                x_in, x_leaf = embed(t), None
            else:
                x_leaf = cells[l - 1].output(S[l - 1]).requires_grad_(True)
                x_in = _apply(x_leaf, in_masks[l])
            prev = c.reverse_fixed(x_in.detach(), S[l], stacks[l])
            s_prev = tuple(to_float(s).requires_grad_(True) for s in prev)
            s_next = c.step_float(x_in, s_prev, fixed_next=S[l])
            grads = list(g[l])
            if l == L - 1:
                grads[0] = grads[0] + g_out[t]
            torch.autograd.backward(s_next, grads)
            g[l] = [sp.grad for sp in s_prev]
            if x_leaf is not None:
                g[l - 1][0] = g[l - 1][0] + x_leaf.grad
            S[l] = prev
    for l in range(L):
        if not (all(torch.equal(a, b) for a, b in zip(S[l], initial[l])) and stacks[l].empty()):
            raise RuntimeError(f"reversal did not restore layer {l}'s initial state exactly")
    return loss.detach(), final, stats

"""K-FAC preconditioner with a KL trust region, as used by ACKTR (Wu et al., NeurIPS 2017).

For every ``nn.Linear`` and ``nn.Conv2d`` the Fisher block of its weights (bias appended as an
extra input column, the reference's homogeneous coordinates) is approximated by A kron G:
  A = E[a a^T] over the layer inputs a (with a trailing 1 for the bias),
  G = E[g g^T] over the per-sample gradients g of the *sampled* (true-Fisher) loss w.r.t. the outputs.
The statistics come from hooks (a forward hook on the module, a gradient hook on its output)
during a separate Fisher backward pass (see ``capture``).

Details follow the reference implementation (OpenAI baselines' ACKTR K-FAC), each a constructor
argument:
- running averages of the factors with ``stat_decay`` (0.99); the first ``cold_iters`` statistics
  are averaged plainly (a cold start) so the factors do not start biased towards zero;
- Conv2d: patches via ``unfold``; with L = output locations and B examples,
  A = sum_{b,l} [a;1][a;1]^T / (B L^2) and G = sum_{b,l} g g^T * L / B (per-sample g),
  i.e. A kron G = L * E[a a^T] kron E[g g^T], the reference's scaling by the spatial size;
- eigendecompositions (``torch.linalg.eigh``) refreshed every ``eig_every`` updates, eigenvalues
  below ``eig_eps`` clamped to 0; ``damping`` (0.01) added to the eigenvalue products, so the
  preconditioned gradient is (A kron G + damping I)^-1 g exactly;
- trust region: the step's predicted KL, lr^2 * sum(g . F^-1 g), is capped at ``kl_clip`` by the
  scale nu = min(1, sqrt(kl_clip / (lr^2 g.F^-1 g))); then SGD with momentum 0.9 and step size
  lr * (1 - momentum), as the reference.

``stats_every`` > 1 amortizes the factor statistics over several updates (an option, off by default:
the paper's setting takes statistics from every batch).
"""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn


class EigendecompositionError(RuntimeError):
    pass


class _Layer:
    __slots__ = ("module", "kind", "A", "G", "n_stats", "QA", "dA", "QG", "dG")

    def __init__(self, module: nn.Module):
        self.module = module
        self.kind = "conv" if isinstance(module, nn.Conv2d) else "linear"
        self.A = self.G = None
        self.n_stats = 0
        self.QA = self.dA = self.QG = self.dG = None

    def params(self):
        return [p for p in (self.module.weight, self.module.bias) if p is not None]

    def grad_matrix(self) -> torch.Tensor:
        """Weight gradient as (out, in[*kh*kw]) with the bias gradient as a last column."""
        w = self.module.weight.grad.reshape(self.module.weight.shape[0], -1)
        if self.module.bias is not None:
            w = torch.cat([w, self.module.bias.grad.unsqueeze(1)], 1)
        return w

    def set_grad(self, m: torch.Tensor) -> None:
        w = self.module.weight
        if self.module.bias is not None:
            self.module.bias.grad.copy_(m[:, -1])
            m = m[:, :-1]
        w.grad.copy_(m.reshape(w.shape))


def conv_patches(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """(B, C, H, W) -> (B, L, C*kh*kw): the input patch of every output location."""
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        raise NotImplementedError("K-FAC supports Conv2d with explicit zero padding")
    cols = F.unfold(x, conv.kernel_size, conv.dilation, conv.padding, conv.stride)
    return cols.transpose(1, 2)


def _window_sums(R: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """All (h, w) window sums over the first two axes of R, via 2-D prefix sums."""
    S = F.pad(R.cumsum(0).cumsum(1), (0, 0) * (R.dim() - 2) + (1, 0, 1, 0))
    return S[h:, w:] - S[:-h, w:] - S[h:, :-w] + S[:-h, :-w]


def conv_input_factor_cells(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """Exactly ``sum_{b,l} [a;1][a;1]^T`` of the conv's input patches, without materialising them.

    When the stride divides the kernel, every patch is an (mh x mw) block of stride-sized "cells".
    A block of the patch covariance pairs cells at a fixed offset delta, summed over a window of
    positions; windows of the same delta overlap almost entirely, so each delta's per-position
    products are computed once (one batched matmul over the cell grid) and every block is a window
    sum of them (prefix sums). For the Atari CNN this cuts the work of the A factors 2.6-3.8x
    (e.g. conv1: 5 cell-offset Grams over a 21x21 grid instead of one 256k x 257 Gram).
    """
    kh, kw = conv.kernel_size
    sh, sw = conv.stride
    ph, pw = conv.padding
    x = F.pad(x, (pw, pw, ph, ph)) if (ph or pw) else x
    # NHWC makes the regrouping into cells below a copy of contiguous channel runs (measured 1.3-5x
    # faster than from NCHW on a 2-core Xeon; a no-op for a channels_last network)
    x = x.contiguous(memory_format=torch.channels_last)
    N, C, H, W = x.shape
    oh, ow = (H - kh) // sh + 1, (W - kw) // sw + 1
    mh, mw = kh // sh, kw // sw
    Hc, Wc = oh - 1 + mh, ow - 1 + mw
    dc = C * sh * sw
    cells = (x[:, :, :Hc * sh, :Wc * sw].reshape(N, C, Hc, sh, Wc, sw)
             .permute(2, 4, 0, 1, 3, 5).reshape(Hc, Wc, N, dc))
    offsets = [(a, b) for a in range(mh) for b in range(mw)]
    nb = len(offsets)
    blocks = x.new_empty(nb, nb, dc, dc)
    cache = {}
    for i, (a, b) in enumerate(offsets):
        for j in range(i, nb):
            a2, b2 = offsets[j]
            dy, dx = a2 - a, b2 - b
            if (dy, dx) not in cache:
                y0, y1, x0, x1 = max(0, -dy), min(Hc, Hc - dy), max(0, -dx), min(Wc, Wc - dx)
                # one grid row at a time: cells[y, x0:x1] is contiguous, so no (positions x N x dc) copy
                R = x.new_empty(y1 - y0, x1 - x0, dc, dc)
                for y in range(y0, y1):
                    torch.bmm(cells[y, x0:x1].transpose(1, 2), cells[y + dy, x0 + dx:x1 + dx], out=R[y - y0])
                cache[(dy, dx)] = (_window_sums(R, oh, ow), y0, x0)
            sums, y0, x0 = cache[(dy, dx)]
            blocks[i, j] = sums[a - y0, b - x0]
            if j != i:
                blocks[j, i] = blocks[i, j].t()
    d = nb * dc
    A = x.new_empty(d + 1, d + 1)
    A[:d, :d] = blocks.permute(0, 2, 1, 3).reshape(d, d)
    s = _window_sums(cells.sum(2), oh, ow)  # (Hc-oh+1, Wc-ow+1, dc): per-offset patch sums
    A[:d, d] = A[d, :d] = torch.stack([s[a, b] for a, b in offsets]).reshape(d)
    A[d, d] = N * oh * ow
    # block order (a, b, c, sy, sx) -> unfold order (c, a*sh+sy, b*sw+sx)
    a_, b_, c_, sy, sx = torch.meshgrid(torch.arange(mh), torch.arange(mw), torch.arange(C), torch.arange(sh),
                                        torch.arange(sw), indexing="ij")
    unfold_idx = (c_ * kh * kw + (a_ * sh + sy) * kw + (b_ * sw + sx)).reshape(-1)
    perm = torch.cat([torch.argsort(unfold_idx), torch.tensor([d])]).to(x.device)
    return A[perm][:, perm]


def _cells_apply(conv: nn.Conv2d) -> bool:
    return (conv.dilation == (1, 1) and conv.groups == 1 and conv.kernel_size[0] % conv.stride[0] == 0
            and conv.kernel_size[1] % conv.stride[1] == 0 and conv.bias is not None
            and conv.padding_mode == "zeros" and not isinstance(conv.padding, str))


def input_factor(layer: _Layer, x: torch.Tensor) -> torch.Tensor:
    """A for one batch of layer inputs, with the reference's scaling."""
    m = layer.module
    B = x.shape[0]
    if layer.kind == "conv" and _cells_apply(m):
        oh = (x.shape[2] + 2 * m.padding[0] - m.kernel_size[0]) // m.stride[0] + 1
        ow = (x.shape[3] + 2 * m.padding[1] - m.kernel_size[1]) // m.stride[1] + 1
        L = oh * ow
        return conv_input_factor_cells(x, m) / (B * L * L)
    if layer.kind == "conv":
        p = conv_patches(x, m)
        L = p.shape[1]
        a = p.reshape(B * L, -1)
        if m.bias is not None:
            a = torch.cat([a, a.new_ones(a.shape[0], 1)], 1)
        return (a.t() @ a) / (B * L * L)
    a = x.reshape(-1, x.shape[-1])
    if m.bias is not None:
        a = torch.cat([a, a.new_ones(a.shape[0], 1)], 1)
    return (a.t() @ a) / B


def grad_factor(layer: _Layer, gout: torch.Tensor, batch_size: int) -> torch.Tensor:
    """G for one batch of output gradients of a batch-mean loss (hence the factor batch_size)."""
    if layer.kind == "conv":
        B, C, oh, ow = gout.shape
        L = oh * ow
        g = gout.permute(0, 2, 3, 1).reshape(-1, C) * batch_size
        return (g.t() @ g) * (L / B)
    g = gout.reshape(-1, gout.shape[-1]) * batch_size
    return (g.t() @ g) / batch_size


class KFAC(torch.optim.Optimizer):
    def __init__(self, model: nn.Module, lr: float = 0.25, momentum: float = 0.9, stat_decay: float = 0.99,
                 damping: float = 0.01, kl_clip: float = 0.001, eig_every: int = 10, stats_every: int = 1,
                 cold_iters: int = 10, eig_eps: float = 1e-6, weight_decay: float = 0.0,
                 extra_params: list | None = None):
        self.layers = [_Layer(m) for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
        if not self.layers:
            raise ValueError("K-FAC found no nn.Linear or nn.Conv2d layer in the model")
        covered = {id(p) for layer in self.layers for p in layer.params()}
        others = [p for p in list(model.parameters()) + list(extra_params or [])
                  if p.requires_grad and id(p) not in covered]
        # parameters outside Linear/Conv2d (e.g. a Gaussian policy's log-std) get the plain gradient
        super().__init__([{"params": [p for layer in self.layers for p in layer.params()], "kfac": True},
                          {"params": others, "kfac": False}],
                         dict(lr=lr, momentum=momentum))
        self.param_groups = [g for g in self.param_groups if g["params"]]
        self.stat_decay, self.damping, self.kl_clip = stat_decay, damping, kl_clip
        self.eig_every, self.stats_every, self.cold_iters = eig_every, stats_every, cold_iters
        self.eig_eps, self.weight_decay = eig_eps, weight_decay
        self.steps = 0
        self._capturing = False
        self._outputs: list[torch.Tensor] = []
        self._handles = []
        for layer in self.layers:
            self._handles.append(layer.module.register_forward_hook(self._make_fwd_hook(layer)))
        self.last = {}

    # ------------------------------------------------------------------ statistics
    def _make_fwd_hook(self, layer):
        # Inside capture(): keep this call's input and hook the output tensor, whose gradient in the
        # Fisher backward pass gives G. Tensor hooks avoid full-module backward hooks and their cost.
        def hook(module, inputs, output):
            if self._capturing and torch.is_grad_enabled() and output.requires_grad:
                x = inputs[0].detach()

                def on_grad(gout):
                    if self._capturing:
                        self._accumulate(layer, input_factor(layer, x), grad_factor(layer, gout.detach(), x.shape[0]))

                output.register_hook(on_grad)
                self._outputs.append(output)
        return hook

    def _accumulate(self, layer, A, G):
        n = layer.n_stats
        if layer.A is None:
            layer.A, layer.G = A.clone(), G.clone()
        elif n < self.cold_iters:  # cold start: plain average of the first statistics
            layer.A.add_(A - layer.A, alpha=1.0 / (n + 1))
            layer.G.add_(G - layer.G, alpha=1.0 / (n + 1))
        else:
            layer.A.lerp_(A, 1 - self.stat_decay)
            layer.G.lerp_(G, 1 - self.stat_decay)
        layer.n_stats = n + 1

    def wants_stats(self) -> bool:
        return self.steps % self.stats_every == 0

    @contextlib.contextmanager
    def capture(self):
        """Record inputs in forward passes and output gradients in backward passes run inside.
        Use it around the forward pass and the Fisher (sampled-loss) backward pass only."""
        self._capturing = True
        self._outputs = []
        try:
            yield
        finally:
            self._capturing = False
            self._outputs = []

    def fisher_backward(self, fisher_loss: torch.Tensor) -> None:
        """Backpropagate the sampled (true-Fisher) loss only as far as the layer outputs: their
        gradients are all G needs, so the weight-gradient products of a full backward are skipped.
        Call inside ``capture()`` after the forward pass; the graph is kept for the real loss."""
        if not self._outputs:
            raise RuntimeError("fisher_backward() needs a forward pass inside capture()")
        torch.autograd.grad(fisher_loss, self._outputs, retain_graph=True)

    # ------------------------------------------------------------------ update
    @staticmethod
    def _eigh(M: torch.Tensor):
        """eigh in the factor's dtype; on failure or non-finite output (nearly constant inputs make
        factors with many repeated or zero eigenvalues, where float32 LAPACK can fail), again in
        float64, as the reference's use_float64 option."""
        try:
            d, Q = torch.linalg.eigh(M)
            if torch.isfinite(d).all() and torch.isfinite(Q).all():
                return d, Q
        except RuntimeError:
            pass
        d, Q = torch.linalg.eigh(M.double())
        return d.to(M.dtype), Q.to(M.dtype)

    def _refresh_eigen(self):
        for layer in self.layers:
            try:
                dA, QA = self._eigh(layer.A)
                dG, QG = self._eigh(layer.G)
            except RuntimeError as e:
                raise EigendecompositionError(
                    f"eigendecomposition of a K-FAC factor failed at update {self.steps}: {e}") from None
            if not (torch.isfinite(dA).all() and torch.isfinite(dG).all()):
                raise EigendecompositionError(f"non-finite K-FAC factor eigenvalues at update {self.steps}")
            layer.dA, layer.QA = dA.masked_fill(dA < self.eig_eps, 0.0), QA
            layer.dG, layer.QG = dG.masked_fill(dG < self.eig_eps, 0.0), QG

    def precondition(self, layer: _Layer, grad: torch.Tensor) -> torch.Tensor:
        """(A kron G + damping I)^-1 applied to the (out, in) gradient matrix."""
        v = layer.QG.t() @ grad @ layer.QA
        v = v / (layer.dG.unsqueeze(1) * layer.dA.unsqueeze(0) + self.damping + self.weight_decay)
        return layer.QG @ v @ layer.QA.t()

    @torch.no_grad()
    def step(self, closure=None):
        if any(layer.A is None for layer in self.layers):
            raise RuntimeError("K-FAC step before any statistics: run a Fisher backward inside capture() first")
        if self.steps % self.eig_every == 0 or self.layers[0].dA is None:
            self._refresh_eigen()
        group = next(g for g in self.param_groups if g["kfac"])
        lr = group["lr"]
        if self.weight_decay:
            for layer in self.layers:
                for p in layer.params():
                    p.grad.add_(p, alpha=self.weight_decay)
        grads = [layer.grad_matrix() for layer in self.layers]
        nat = [self.precondition(layer, g) for layer, g in zip(self.layers, grads)]
        vg = sum((n * g).sum() for n, g in zip(nat, grads)) * lr * lr
        nu = min(1.0, math.sqrt(self.kl_clip / vg.item())) if vg.item() > 0 else 1.0
        for layer, n in zip(self.layers, nat):
            layer.set_grad(n * nu)
        self.last = {"kl_predicted": (vg * nu * nu).item(), "trust_scale": nu, "vg": vg.item()}
        for g in self.param_groups:  # SGD with momentum, step lr * (1 - momentum) as the reference
            params = [p for p in g["params"] if p.grad is not None]
            bufs = []
            for p in params:
                st = self.state[p]
                if "momentum_buffer" not in st:
                    st["momentum_buffer"] = torch.zeros_like(p)
                bufs.append(st["momentum_buffer"])
            grads_ = [p.grad for p in params]
            torch._foreach_mul_(bufs, g["momentum"])
            torch._foreach_add_(bufs, grads_)
            torch._foreach_add_(params, bufs, alpha=-g["lr"] * (1 - g["momentum"]))
        self.steps += 1

    # ------------------------------------------------------------------ state
    def state_dict(self):
        sd = super().state_dict()
        sd["kfac"] = {"steps": self.steps,
                      "factors": [(l.A, l.G, l.n_stats, l.dA, l.QA, l.dG, l.QG) for l in self.layers]}
        return sd

    def load_state_dict(self, sd):
        sd = dict(sd)
        k = sd.pop("kfac")
        super().load_state_dict(sd)
        self.steps = k["steps"]
        for layer, (A, G, n, dA, QA, dG, QG) in zip(self.layers, k["factors"]):
            # the eigendecompositions are restored too: between refreshes the steps use stale ones
            layer.A, layer.G, layer.n_stats = A, G, n
            layer.dA, layer.QA, layer.dG, layer.QG = dA, QA, dG, QG

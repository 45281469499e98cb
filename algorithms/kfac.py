"""K-FAC preconditioner with a KL trust region, as used by ACKTR (Wu et al., NeurIPS 2017).

For every ``nn.Linear`` and ``nn.Conv2d`` the Fisher block of its weights is approximated by A kron G:
  A = E[a a^T] over the layer inputs a,
  G = E[g g^T] over the per-sample gradients g of the *sampled* (true-Fisher) loss w.r.t. the outputs.
The statistics come from hooks (a forward hook on the module, a gradient hook on its output) during a
separate Fisher backward pass (see ``capture``). Defaults follow OpenAI baselines' K-FAC (``kfac.py``):

- biases (``bias_mode``): ``"separate"`` (baselines' Atari networks add their biases with ``+ b``, which its
  K-FAC treats as a block of its own with only a G factor: G_b = E[g g^T] for a Linear, and for a Conv2d the
  per-example gradient summed over the spatial positions, G_b = (1/B) sum_n (sum_s g)(sum_s g)^T);
  ``"homogeneous"`` (baselines' MuJoCo networks use ``bias_add``: the bias is an extra input column of the
  weight's A, a trailing 1);
- ``g_blocks``: other parameters with a G-only block of one batch-level gradient (the Gaussian policy's
  log-std in baselines' acktr_cont: G = v v^T with v the batch gradient of the sampled loss w.r.t. the std);
- factor statistics averaged plainly over the first ``stats_accum`` batches, then a running average with
  ``stat_decay`` (0.99);
- Conv2d: A = sum_{b,l} a a^T / (B L^2) and G = sum_{b,l} g g^T * L / B (L output locations, per-sample g);
- a cold phase: the first ``cold_iters`` steps are momentum SGD (lr ``cold_lr_scale`` x lr, momentum 0.9,
  gradients clipped to global norm ``cold_max_grad_norm``) while the factors accumulate;
- eigendecompositions (``torch.linalg.eigh``) every ``eig_every`` updates; ``eig_async=True`` computes them in a
  background thread from the factors of the previous update (as baselines' queue runner, off the critical path;
  we wait for it at the next update, so it is exactly one update stale, where baselines' non-blocking dequeue
  keeps an older one while the thread is still busy); eigenvalues below ``eig_eps`` clamped to 0; ``damping``
  (0.01) plus ``weight_damping`` (on weight blocks only; baselines adds its weight-decay coefficients there)
  added to the eigenvalue products, so
  the preconditioned gradient is (A kron G + damping I)^-1 g exactly;
- trust region: the step's predicted KL, lr^2 * sum(g . F^-1 g) over every block, is capped at ``kl_clip`` by
  nu = min(1, sqrt(kl_clip / (lr^2 g.F^-1 g))) (no factor 2, as the code); then SGD with momentum 0.9 and step
  size lr * (1 - momentum).

``stats_every`` > 1 amortizes the factor statistics over several updates (a deviation, off by default).
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
    """One Linear/Conv2d layer: its weight block A kron G (with the bias as a homogeneous column of A, or as
    a G-only block of its own), running factors and their eigendecompositions."""

    __slots__ = ("module", "kind", "homogeneous", "A", "G", "Gb", "n_stats", "eig")

    def __init__(self, module: nn.Module, bias_mode: str):
        self.module = module
        self.kind = "conv" if isinstance(module, nn.Conv2d) else "linear"
        self.homogeneous = bias_mode == "homogeneous" and module.bias is not None
        self.A = self.G = self.Gb = None
        self.n_stats = 0
        self.eig = None   # {"A": (d, Q), "G": (d, Q), "Gb": (d, Q)}

    def params(self):
        return [p for p in (self.module.weight, self.module.bias) if p is not None]

    def separate_bias(self) -> bool:
        return self.module.bias is not None and not self.homogeneous

    def factors(self) -> dict:
        return {"A": self.A, "G": self.G, **({"Gb": self.Gb} if self.separate_bias() else {})}

    def grad_matrix(self) -> torch.Tensor:
        """Weight gradient as (out, in[*kh*kw]), with the bias gradient as a last column if homogeneous."""
        w = self.module.weight.grad.reshape(self.module.weight.shape[0], -1)
        if self.homogeneous:
            w = torch.cat([w, self.module.bias.grad.unsqueeze(1)], 1)
        return w

    def set_grad(self, m: torch.Tensor) -> None:
        w = self.module.weight
        if self.homogeneous:
            self.module.bias.grad.copy_(m[:, -1])
            m = m[:, :-1]
        w.grad.copy_(m.reshape(w.shape))


class _GBlock:
    """A parameter with a G-only block built from one batch-level gradient (baselines' treatment of ops its
    K-FAC does not know, such as the Gaussian policy's log-std): G = v v^T, v = transform(dL_fisher/dp, p)."""

    __slots__ = ("param", "transform", "G", "n_stats", "eig")

    def __init__(self, param: torch.Tensor, transform):
        self.param, self.transform = param, transform
        self.G, self.n_stats, self.eig = None, 0, None


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
    a_, b_, c_, sy, sx = torch.meshgrid(*(torch.arange(n, device=x.device) for n in (mh, mw, C, sh, sw)),
                                        indexing="ij")
    unfold_idx = (c_ * kh * kw + (a_ * sh + sy) * kw + (b_ * sw + sx)).reshape(-1)
    perm = torch.cat([torch.argsort(unfold_idx), unfold_idx.new_full((1,), d)])
    return A[perm][:, perm]


def _cells_apply(conv: nn.Conv2d) -> bool:
    return (conv.dilation == (1, 1) and conv.groups == 1 and conv.kernel_size[0] % conv.stride[0] == 0
            and conv.kernel_size[1] % conv.stride[1] == 0 and conv.bias is not None
            and conv.padding_mode == "zeros" and not isinstance(conv.padding, str))


def input_factor(layer: _Layer, x: torch.Tensor) -> torch.Tensor:
    """A for one batch of layer inputs, with the reference's scaling (a trailing 1 if the bias is homogeneous)."""
    m = layer.module
    B = x.shape[0]
    if layer.kind == "conv" and _cells_apply(m):
        oh = (x.shape[2] + 2 * m.padding[0] - m.kernel_size[0]) // m.stride[0] + 1
        ow = (x.shape[3] + 2 * m.padding[1] - m.kernel_size[1]) // m.stride[1] + 1
        L = oh * ow
        A = conv_input_factor_cells(x, m) / (B * L * L)
        return A if layer.homogeneous else A[:-1, :-1]
    if layer.kind == "conv":
        p = conv_patches(x, m)
        L = p.shape[1]
        a = p.reshape(B * L, -1)
        if layer.homogeneous:
            a = torch.cat([a, a.new_ones(a.shape[0], 1)], 1)
        return (a.t() @ a) / (B * L * L)
    a = x   # (batch, features): the forward hook refuses other shapes
    if layer.homogeneous:
        a = torch.cat([a, a.new_ones(a.shape[0], 1)], 1)
    return (a.t() @ a) / B


def grad_factor(layer: _Layer, gout: torch.Tensor, batch_size: int) -> torch.Tensor:
    """G for one batch of output gradients of a batch-mean loss (hence the factor batch_size)."""
    if layer.kind == "conv":
        B, C, oh, ow = gout.shape
        L = oh * ow
        g = gout.permute(0, 2, 3, 1).reshape(-1, C) * batch_size
        return (g.t() @ g) * (L / B)
    g = gout * batch_size
    return (g.t() @ g) / batch_size


def bias_grad_factor(layer: _Layer, gout: torch.Tensor, batch_size: int) -> torch.Tensor:
    """G of a separate bias block: per-example output gradients summed over the spatial positions (conv),
    G_b = (1/B) sum_n (sum_s g)(sum_s g)^T, as baselines' K-FAC for a ``+ b`` bias."""
    g = (gout.sum((2, 3)) if layer.kind == "conv" else gout) * batch_size
    return (g.t() @ g) / g.shape[0]


def _eigh(M: torch.Tensor):
    """eigh in the factor's dtype; on failure or non-finite output (nearly constant inputs make factors with many
    repeated or zero eigenvalues, where float32 LAPACK can fail), again in float64, as the reference's
    use_float64 option."""
    try:
        d, Q = torch.linalg.eigh(M)
        if torch.isfinite(d).all() and torch.isfinite(Q).all():
            return d, Q
    except RuntimeError:
        pass
    d, Q = torch.linalg.eigh(M.double())
    return d.to(M.dtype), Q.to(M.dtype)


def _eigendecompose(factors: list[dict], eps: float, step: int) -> list[dict]:
    """Eigendecompositions of every block's factors, eigenvalues below ``eps`` clamped to 0."""
    out = []
    for block in factors:
        eig = {}
        for name, M in block.items():
            try:
                d, Q = _eigh(M)
            except RuntimeError as e:
                raise EigendecompositionError(
                    f"eigendecomposition of a K-FAC factor failed at update {step}: {e}") from None
            if not torch.isfinite(d).all():
                raise EigendecompositionError(f"non-finite K-FAC factor eigenvalues at update {step}")
            eig[name] = (d.masked_fill(d < eps, 0.0), Q)
        out.append(eig)
    return out


BIAS_MODES = ("separate", "homogeneous")


class KFAC(torch.optim.Optimizer):
    def __init__(self, model: nn.Module, lr: float = 0.25, momentum: float = 0.9, stat_decay: float = 0.99,
                 damping: float = 0.01, kl_clip: float = 0.001, eig_every: int = 1, eig_async: bool = True,
                 stats_every: int = 1, stats_accum: int = 10, cold_iters: int = 11, cold_lr_scale: float = 1.0,
                 cold_max_grad_norm: float | None = 0.5, eig_eps: float = 1e-6, weight_damping: float = 0.0,
                 bias_mode: str = "separate", g_blocks: list | None = None, extra_params: list | None = None):
        if bias_mode not in BIAS_MODES:
            raise ValueError(f"bias_mode must be one of {BIAS_MODES}, got {bias_mode!r}")
        self.layers = [_Layer(m, bias_mode) for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
        if not self.layers:
            raise ValueError("K-FAC found no nn.Linear or nn.Conv2d layer in the model")
        self.gblocks = [_GBlock(p, t) for p, t in (g_blocks or [])]
        covered = {id(p) for layer in self.layers for p in layer.params()} | {id(b.param) for b in self.gblocks}
        others = [p for p in list(model.parameters()) + list(extra_params or [])
                  if p.requires_grad and id(p) not in covered]
        # parameters outside every block get the plain gradient (a deviation; none in the reference networks)
        super().__init__([{"params": [p for layer in self.layers for p in layer.params()] +
                           [b.param for b in self.gblocks]},
                          {"params": others}],
                         dict(lr=lr, momentum=momentum))
        self.param_groups = [g for g in self.param_groups if g["params"]]
        self.stat_decay, self.damping, self.weight_damping, self.kl_clip = stat_decay, damping, weight_damping, kl_clip
        self.eig_every, self.eig_async, self.stats_every = eig_every, eig_async, stats_every
        self.stats_accum, self.cold_iters, self.cold_lr_scale = stats_accum, cold_iters, cold_lr_scale
        self.cold_max_grad_norm, self.eig_eps = cold_max_grad_norm, eig_eps
        self.steps = 0
        self._capturing = False
        self._outputs: list[torch.Tensor] = []
        self._handles = []
        self._pending = None          # eigendecompositions under way (a Future) or done and not yet installed
        self._executor = None
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
                if layer.kind == "linear" and x.dim() != 2:
                    raise ValueError("K-FAC supports nn.Linear on (batch, features) inputs, got shape "
                                     f"{tuple(x.shape)}")

                def on_grad(gout):
                    if self._capturing:
                        gout = gout.detach()
                        Gb = bias_grad_factor(layer, gout, x.shape[0]) if layer.separate_bias() else None
                        self._accumulate(layer, input_factor(layer, x), grad_factor(layer, gout, x.shape[0]), Gb)

                output.register_hook(on_grad)
                self._outputs.append(output)
        return hook

    def _running(self, old: torch.Tensor | None, new: torch.Tensor, n: int) -> torch.Tensor:
        if old is None:
            return new.clone()
        if n < self.stats_accum:   # the first statistics: a plain average
            return old.add_(new - old, alpha=1.0 / (n + 1))
        return old.lerp_(new, 1 - self.stat_decay)

    def _accumulate(self, layer, A, G, Gb=None):
        n = layer.n_stats
        layer.A, layer.G = self._running(layer.A, A, n), self._running(layer.G, G, n)
        if Gb is not None:
            layer.Gb = self._running(layer.Gb, Gb, n)
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
        """Backpropagate the sampled (true-Fisher) loss only as far as the layer outputs (and the G-only
        parameters): their gradients are all the factors need, so the weight-gradient products of a full
        backward are skipped. Call inside ``capture()`` after the forward pass; the graph is kept."""
        if not self._outputs:
            raise RuntimeError("fisher_backward() needs a forward pass inside capture()")
        grads = torch.autograd.grad(fisher_loss, self._outputs + [b.param for b in self.gblocks],
                                    retain_graph=True, allow_unused=True)
        for block, g in zip(self.gblocks, grads[len(self._outputs):]):
            g = torch.zeros_like(block.param) if g is None else g
            v = block.transform(g.detach(), block.param.detach()).reshape(1, -1)
            block.G = self._running(block.G, v.t() @ v, block.n_stats)
            block.n_stats += 1

    # ------------------------------------------------------------------ update
    def _factors(self) -> list[dict]:
        return [layer.factors() for layer in self.layers] + [{"G": b.G} for b in self.gblocks]

    def _blocks(self) -> list:
        return self.layers + self.gblocks

    def _install(self, eigs: list[dict]) -> None:
        for block, eig in zip(self._blocks(), eigs):
            block.eig = eig

    def _collect(self) -> None:
        """Install the eigendecompositions launched at an earlier update, if any."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self._install(pending.result() if hasattr(pending, "result") else pending)

    def _launch(self) -> None:
        """Eigendecompose a copy of the current factors in a background thread; the result is installed at the
        next update (baselines' queue runner: off the critical path; waited for, so exactly one update stale)."""
        snapshot = [{k: v.clone() for k, v in f.items()} for f in self._factors()]
        if self._executor is None:
            from concurrent.futures import ThreadPoolExecutor

            self._executor = ThreadPoolExecutor(1, thread_name_prefix="kfac-eigh")
        self._pending = self._executor.submit(_eigendecompose, snapshot, self.eig_eps, self.steps)

    def precondition(self, layer: _Layer, grad: torch.Tensor) -> torch.Tensor:
        """(A kron G + damping I)^-1 applied to the (out, in) gradient matrix."""
        dA, QA = layer.eig["A"]
        dG, QG = layer.eig["G"]
        v = QG.t() @ grad @ QA
        v = v / (dG.unsqueeze(1) * dA.unsqueeze(0) + self.damping + self.weight_damping)
        return QG @ v @ QA.t()

    def precondition_g(self, eig: tuple, grad: torch.Tensor) -> torch.Tensor:
        """(G + damping I)^-1 applied to a G-only block's gradient (flattened)."""
        dG, QG = eig
        g = grad.reshape(-1)
        return QG @ ((QG.t() @ g) / (dG + self.damping))

    def _momentum_step(self, params, lr, momentum, key):
        bufs = []
        for p in params:
            st = self.state[p]
            if key not in st:
                st[key] = torch.zeros_like(p)
            bufs.append(st[key])
        torch._foreach_mul_(bufs, momentum)
        torch._foreach_add_(bufs, [p.grad for p in params])
        torch._foreach_add_(params, bufs, alpha=-lr)

    @torch.no_grad()
    def step(self, closure=None):
        if any(layer.A is None for layer in self.layers) or any(b.G is None for b in self.gblocks):
            raise RuntimeError("K-FAC step before any statistics: run a Fisher backward inside capture() first")
        group = self.param_groups[0]   # the K-FAC blocks (never empty); others, if any, second
        lr, m = group["lr"], group["momentum"]
        if self.steps < self.cold_iters:   # cold phase: momentum SGD while the factors accumulate
            params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
            if self.cold_max_grad_norm:
                nn.utils.clip_grad_norm_(params, self.cold_max_grad_norm)
            self._momentum_step(params, lr * self.cold_lr_scale, m, "cold_momentum_buffer")
            self.last = {"kl_predicted": float("nan"), "trust_scale": float("nan"), "vg": float("nan"), "cold": 1.0}
            self.steps += 1
            if self.steps == self.cold_iters and self.eig_async:   # ready for the first K-FAC step
                self._launch()
            return
        if self.eig_async:
            self._collect()
        if self.layers[0].eig is None or (not self.eig_async and (self.steps - self.cold_iters) % self.eig_every == 0):
            self._install(_eigendecompose(self._factors(), self.eig_eps, self.steps))   # from the current factors
        grads = [layer.grad_matrix() for layer in self.layers]
        nat = [self.precondition(layer, g) for layer, g in zip(self.layers, grads)]
        for layer in self.layers:
            if layer.separate_bias():
                b = layer.module.bias
                grads.append(b.grad)
                nat.append(self.precondition_g(layer.eig["Gb"], b.grad).reshape(b.shape))
        for block in self.gblocks:
            grads.append(block.param.grad)
            nat.append(self.precondition_g(block.eig["G"], block.param.grad).reshape(block.param.shape))
        vg = sum((n * g).sum() for n, g in zip(nat, grads)) * lr * lr
        nu = min(1.0, math.sqrt(self.kl_clip / vg.item())) if vg.item() > 0 else 1.0
        n_layers = len(self.layers)
        for layer, n in zip(self.layers, nat[:n_layers]):
            layer.set_grad(n * nu)
        k = n_layers
        for layer in self.layers:
            if layer.separate_bias():
                layer.module.bias.grad.copy_(nat[k] * nu)
                k += 1
        for block in self.gblocks:
            block.param.grad.copy_(nat[k] * nu)
            k += 1
        self.last = {"kl_predicted": (vg * nu * nu).item(), "trust_scale": nu, "vg": vg.item(), "cold": 0.0}
        for g in self.param_groups:  # SGD with momentum, step lr * (1 - momentum) as the reference
            params = [p for p in g["params"] if p.grad is not None]
            self._momentum_step(params, g["lr"] * (1 - g["momentum"]), g["momentum"], "momentum_buffer")
        self.steps += 1
        if self.eig_async and (self.steps - self.cold_iters) % self.eig_every == 0:
            self._launch()

    # ------------------------------------------------------------------ state
    def state_dict(self):
        sd = super().state_dict()
        pending = self._pending.result() if hasattr(self._pending, "result") else self._pending
        self._pending = pending   # resolved: the same eigendecompositions are installed at the next update
        sd["kfac"] = {"steps": self.steps,
                      "factors": [{"n": b.n_stats, **{k: v for k, v in b.factors().items()}} if isinstance(b, _Layer)
                                  else {"n": b.n_stats, "G": b.G} for b in self._blocks()],
                      "eig": [b.eig for b in self._blocks()], "pending": pending}
        return sd

    def load_state_dict(self, sd):
        sd = dict(sd)
        k = sd.pop("kfac")
        super().load_state_dict(sd)
        self.steps = k["steps"]
        for block, f, eig in zip(self._blocks(), k["factors"], k["eig"]):
            block.n_stats = f["n"]
            if isinstance(block, _Layer):
                block.A, block.G, block.Gb = f["A"], f["G"], f.get("Gb")
            else:
                block.G = f["G"]
            block.eig = eig
        self._pending = k["pending"]   # eigendecompositions launched before the checkpoint, installed next

"""Graph Normalizing Flows (Liu, Kumar, Ba, Kiros, Swersky, NeurIPS 2019).

* :class:`AttentionMP` -- the message-passing function F/G: multi-head dot-product attention over the
  incoming edges (torch-geometric's ``TransformerConv`` without its root weight), concatenated with the
  node's own features, then an MLP.
* :class:`GRevCoupling` -- the GRevNet step over the two halves of the node features,
  H0 <- H0 * exp(F1(H1)) + F2(H1),  H1 <- H1 * exp(G1(H0)) + G2(H0), exact inverse, log-determinant
  sum(F1) + sum(G1) per node; F1, F2, G1, G2 separate networks (the authors'). Options: F1/G1 through
  ``b * tanh(. / b)`` (``scale_bound`` b; a function of H1/H0 like any other, so the formulas hold) and a
  zero last layer so every step starts as the identity (``identity_init``).
* :class:`ActNorm` -- the normalisation bijector (per-feature scale and shift, data-dependent init).
* :class:`GraphFlow` -- ActNorm + coupling blocks, log-likelihood under an i.i.d. N(0, I) node prior.
* :class:`GraphEncoder` and :func:`decoder_logits` -- the permutation-invariant graph auto-encoder:
  N(0, 1) node features, ``steps`` shared-weight attention message-passing steps over edges + self-loops,
  each after a BatchNorm (the authors'), parameter-free decoder A_ij = sigmoid(C (1 - ||x_i - x_j||^2 / sqrt(d))).
* :class:`NodeClassifier` -- the supervised GRevNet (trained with reversible backprop: node states are
  recomputed from the output by the inverse, so activation memory does not grow with the number of
  steps) and the GNN baseline with the same message-passing function.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch_geometric.nn import TransformerConv
from torch_geometric.utils import scatter


class FlowNumericalError(FloatingPointError):
    """The flow's state became non-finite (NaN/inf): the map is no longer invertible."""


class _NoSkip(nn.Module):
    def reset_parameters(self):
        pass


class AttentionMP(nn.Module):
    """Attention over the incoming edges (``heads`` x ``hidden / heads``), concatenated with the node's own
    features, then an MLP of ``mlp_layers`` linear layers (``mlp_hidden`` wide; the authors: 3 layers, 2048)."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 64, heads: int = 4, zero_init: bool = False,
                 mlp_layers: int = 2, mlp_hidden: int | None = None):
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden ({hidden}) must be divisible by heads ({heads})")
        self.att = TransformerConv(in_dim, hidden // heads, heads=heads, concat=True, root_weight=False)
        # TransformerConv builds its skip projection even with root_weight=False and never uses it:
        # drop the dead parameters (they would get no gradient and confuse DDP and parameter counts)
        self.att.lin_skip = _NoSkip()
        width = mlp_hidden or hidden
        sizes = [in_dim + hidden] + [width] * (mlp_layers - 1) + [out_dim]
        mods = []
        for i in range(len(sizes) - 1):
            mods.append(nn.Linear(sizes[i], sizes[i + 1]))
            if i < len(sizes) - 2:
                mods.append(nn.ReLU())
        self.mlp = nn.Sequential(*mods)
        if zero_init:
            nn.init.zeros_(self.mlp[-1].weight)
            nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        return self.mlp(torch.cat([x, self.att(x, edge_index)], -1))


class GRevCoupling(nn.Module):
    """One GRevNet block. ``separate_st`` (the authors' GRevNet): F1, F2, G1, G2 are four message-passing nets;
    otherwise one net per half-step outputs [F1, F2] (a deviation)."""

    def __init__(self, dim: int, hidden: int = 64, heads: int = 4, scale_bound: float | None = 2.0,
                 identity_init: bool = True, separate_st: bool = True, mlp_layers: int = 2, mlp_hidden: int | None = None):
        super().__init__()
        if dim % 2:
            raise ValueError(f"GRevNet needs an even feature size, got {dim}")
        half = dim // 2
        kw = dict(hidden=hidden, heads=heads, zero_init=identity_init, mlp_layers=mlp_layers, mlp_hidden=mlp_hidden)
        self.separate_st = separate_st
        if separate_st:
            self.F = nn.ModuleList([AttentionMP(half, half, **kw), AttentionMP(half, half, **kw)])   # log-scale, shift
            self.G = nn.ModuleList([AttentionMP(half, half, **kw), AttentionMP(half, half, **kw)])
        else:
            self.F = AttentionMP(half, dim, **kw)   # -> [F1 (log-scale), F2 (shift)]
            self.G = AttentionMP(half, dim, **kw)
        self.scale_bound = scale_bound

    def _scale_shift(self, net, h, edge_index):
        if self.separate_st:
            s, t = net[0](h, edge_index), net[1](h, edge_index)
        else:
            s, t = net(h, edge_index).chunk(2, -1)
        if self.scale_bound:
            s = self.scale_bound * torch.tanh(s / self.scale_bound)
        return s, t

    def forward(self, x, edge_index):
        h0, h1 = x.chunk(2, -1)
        s0, t0 = self._scale_shift(self.F, h1, edge_index)
        h0 = h0 * torch.exp(s0) + t0
        s1, t1 = self._scale_shift(self.G, h0, edge_index)
        h1 = h1 * torch.exp(s1) + t1
        return torch.cat([h0, h1], -1), s0.sum(-1) + s1.sum(-1)

    def inverse(self, y, edge_index):
        h0, h1 = y.chunk(2, -1)
        s1, t1 = self._scale_shift(self.G, h0, edge_index)
        h1 = (h1 - t1) * torch.exp(-s1)
        s0, t0 = self._scale_shift(self.F, h1, edge_index)
        h0 = (h0 - t0) * torch.exp(-s0)
        return torch.cat([h0, h1], -1)


class ActNorm(nn.Module):
    """y = (x + b) * exp(s) per feature; on the first training batch b, s make the output zero-mean,
    unit-variance (Kingma & Dhariwal 2018). Log-determinant sum(s) per node."""

    def __init__(self, dim: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(dim))
        self.log_scale = nn.Parameter(torch.zeros(dim))
        self.register_buffer("initialized", torch.tensor(False))

    def forward(self, x, edge_index=None):
        if self.training and not bool(self.initialized):
            with torch.no_grad():
                self.bias.copy_(-x.mean(0))
                self.log_scale.copy_(-torch.log(x.std(0, unbiased=False).clamp_min(1e-6)))
                self.initialized.fill_(True)
        return (x + self.bias) * torch.exp(self.log_scale), self.log_scale.sum().expand(x.shape[0])

    def inverse(self, y, edge_index=None):
        return y * torch.exp(-self.log_scale) - self.bias


class GraphFlow(nn.Module):
    def __init__(self, dim: int, n_blocks: int = 10, hidden: int = 64, heads: int = 4,
                 scale_bound: float | None = 2.0, actnorm: bool = True, separate_st: bool = True,
                 identity_init: bool = True, mlp_layers: int = 2, mlp_hidden: int | None = None):
        super().__init__()
        self.dim = dim
        layers = []
        for _ in range(n_blocks):
            if actnorm:
                layers.append(ActNorm(dim))
            layers.append(GRevCoupling(dim, hidden, heads, scale_bound, identity_init, separate_st, mlp_layers,
                                       mlp_hidden))
        self.layers = nn.ModuleList(layers)

    def forward(self, x, edge_index):
        """Node features -> latent, log|det J| per node."""
        logdet = x.new_zeros(x.shape[0])
        for layer in self.layers:
            x, ld = layer(x, edge_index)
            logdet = logdet + ld
        _check_finite(x, "forward")
        return x, logdet

    def inverse(self, z, edge_index):
        for layer in reversed(self.layers):
            z = layer.inverse(z, edge_index)
        _check_finite(z, "inverse")
        return z

    def log_prob(self, x, edge_index, batch, num_graphs: int) -> torch.Tensor:
        """log p(X) of each graph: sum over its nodes of log N(z; 0, I) + log|det|."""
        z, logdet = self(x, edge_index)
        node = -0.5 * (z * z).sum(-1) - 0.5 * self.dim * math.log(2 * math.pi) + logdet
        return scatter(node, batch, 0, dim_size=num_graphs, reduce="sum")


def _check_finite(x: torch.Tensor, where: str) -> None:
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).any(-1).sum())
        raise FlowNumericalError(f"flow {where} pass produced a non-finite state at {bad} node(s); "
                                 f"the map is not invertible there (lower the learning rate or set model.scale_bound)")


class GraphEncoder(nn.Module):
    """Permutation-invariant encoder: one shared attention message-passing function applied ``steps`` times to
    N(0, 1) node features, over the edges plus self-loops. As the authors' ``TimestepGNN``: a BatchNorm (batch
    statistics, also at evaluation) before each step, non-residual h <- MP(BN(h)); ``residual`` and ``center``
    (subtract each graph's mean embedding) are deviations kept as options."""

    def __init__(self, dim: int, steps: int = 10, hidden: int = 64, heads: int = 4, center: bool = False,
                 residual: bool = False, batch_norm: bool = True, mlp_layers: int = 2, mlp_hidden: int | None = None):
        super().__init__()
        self.dim, self.steps, self.center, self.residual = dim, steps, center, residual
        self.mp = AttentionMP(dim, dim, hidden, heads, mlp_layers=mlp_layers, mlp_hidden=mlp_hidden)
        self.norms = nn.ModuleList(nn.BatchNorm1d(dim, track_running_stats=False) for _ in range(steps)) \
            if batch_norm else None

    def forward(self, edge_index, num_nodes: int, x0: torch.Tensor | None = None, batch: torch.Tensor | None = None):
        h = torch.randn(num_nodes, self.dim, device=edge_index.device) if x0 is None else x0
        for i in range(self.steps):
            u = self.norms[i](h) if self.norms is not None else h
            h = h + self.mp(u, edge_index) if self.residual else self.mp(u, edge_index)
        if self.center:
            # Subtract each graph's mean node embedding. The decoder sees only differences, so this loses
            # nothing, and it removes the per-graph offset that message passing from random inputs leaves:
            # a shift shared by all nodes of a graph within one feature half is something the GRevNet
            # couplings (each half conditioned on the *other* half) cannot learn to whiten (measured: a
            # flow trained on x_i = c + 0.1 e_i stays at the marginal-Gaussian likelihood).
            b = h.new_zeros(num_nodes, dtype=torch.long) if batch is None else batch
            h = h - scatter(h, b, 0, reduce="mean")[b]
        return h


def decoder_logits(x: torch.Tensor, pairs: torch.Tensor, temperature: float = 10.0) -> torch.Tensor:
    """Logits of A_ij = sigmoid(C (1 - ||x_i - x_j||^2 / sqrt(d))) for each (i, j) column of ``pairs``."""
    d2 = (x[pairs[0]] - x[pairs[1]]).pow(2).sum(-1)
    return temperature * (1.0 - d2 / math.sqrt(x.shape[-1]))


# --------------------------------------------------------------------------- supervised GRevNet vs GNN
class _ReversibleStack(torch.autograd.Function):
    """Runs couplings without storing their activations; backward recomputes each block's input from
    its output with the exact inverse, re-runs the block with grad and backpropagates through it."""

    @staticmethod
    def forward(ctx, x, edge_index, blocks, *params):
        with torch.no_grad():
            for b in blocks:
                x = b(x, edge_index)[0]
        ctx.blocks = blocks
        ctx.save_for_backward(x.detach(), edge_index)
        return x

    @staticmethod
    def backward(ctx, grad_y):
        y, edge_index = ctx.saved_tensors
        grads = []
        for b in reversed(ctx.blocks):
            with torch.no_grad():
                x = b.inverse(y, edge_index)
            with torch.enable_grad():
                x_ = x.detach().requires_grad_(True)
                params = list(b.parameters())
                out = torch.autograd.grad(b(x_, edge_index)[0], [x_] + params, grad_y)   # every parameter is used
            grad_y, y = out[0], x
            grads.append(list(out[1:]))
        flat = [g for block_grads in reversed(grads) for g in block_grads]
        return (grad_y, None, None, *flat)


class NodeClassifier(nn.Module):
    """Input projection, ``steps`` message-passing steps, linear read-out.

    kind="grevnet": GRevNet couplings (reversible backprop when ``reversible`` and training);
    kind="gnn": residual steps h <- h + MP(h) with the same message-passing function."""

    def __init__(self, in_dim: int, n_classes: int, dim: int = 64, steps: int = 4, kind: str = "grevnet",
                 hidden: int = 64, heads: int = 4, dropout: float = 0.5, reversible: bool = True,
                 scale_bound: float | None = 2.0, identity_init: bool = False):
        super().__init__()
        if kind not in ("grevnet", "gnn"):
            raise ValueError(f"unknown node classifier kind '{kind}' (grevnet | gnn)")
        self.kind, self.reversible = kind, reversible
        self.inp = nn.Linear(in_dim, dim)
        self.drop = nn.Dropout(dropout)
        if kind == "grevnet":
            self.blocks = nn.ModuleList(GRevCoupling(dim, hidden, heads, scale_bound, identity_init, separate_st=False)
                                        for _ in range(steps))
        else:
            self.blocks = nn.ModuleList(AttentionMP(dim, dim, hidden, heads) for _ in range(steps))
        self.out = nn.Linear(dim, n_classes)

    def forward(self, x, edge_index):
        h = self.inp(self.drop(x))
        if self.kind == "gnn":
            for b in self.blocks:
                h = h + b(h, edge_index)
        elif self.reversible and torch.is_grad_enabled():
            h = _ReversibleStack.apply(h, edge_index, list(self.blocks), *self.blocks.parameters())
        else:
            for b in self.blocks:
                h = b(h, edge_index)[0]
        return self.out(self.drop(h))

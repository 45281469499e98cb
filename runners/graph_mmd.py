"""GraphRNN's graph-generation evaluation, exactly, without its ORCA binary or pyemd.

What GraphRNN's ``eval/stats.py`` + ``eval/mmd.py`` compute, reproduced here (self-loops removed first,
empty generated graphs dropped as GraphRNN does):

* MMD^2, biased (every pair incl. i = j, no square root): mean K(X, X') + mean K(Y, Y') - 2 mean K(X, Y).
* degree: ``nx.degree_histogram`` per graph, normalised to a pmf, Gaussian-EMD kernel
  exp(-EMD^2 / (2 sigma^2)) with sigma 1 and ground distance |i - j|.
* clustering: 100-bin histogram on [0, 1] of the local clustering coefficients, normalised, Gaussian-EMD
  with sigma 0.1 and ground distance |i - j| / 100.
* orbit: ORCA's 15 node-orbit counts of the 2..4-node graphlets, summed over nodes and divided by the
  node count; Gaussian kernel on the 15-vectors with sigma 30 (not normalised).

For 1-D histograms with equal mass and ground distance |i - j| / s, the earth mover's distance is
sum_i |CDF_x(i) - CDF_y(i)| / s (what pyemd's LP returns); we use that closed form, vectorised over all
pairs. Orbit counts enumerate every 3- and 4-node subset (vectorised), exact for the small graphs these
benchmarks use; the tests check them against an isomorphism-based enumeration.
"""
from __future__ import annotations

import itertools
from functools import lru_cache

import numpy as np

from runners.graph_data import Graph

N_ORBITS = 15

# orbit of a node in a connected 4-node graphlet, indexed [edges, max local degree, min local degree,
# node's local degree] (ORCA/Przulj numbering: 4/5 path end/middle, 6/7 claw leaf/centre, 8 4-cycle,
# 9/10/11 paw tail/triangle/centre, 12/13 diamond degree 2/3, 14 K4); -1: not a connected graphlet
_LUT4 = np.full((7, 4, 4, 4), -1, dtype=np.int64)
_LUT4[3, 2, 1, 1], _LUT4[3, 2, 1, 2] = 4, 5
_LUT4[3, 3, 1, 1], _LUT4[3, 3, 1, 3] = 6, 7
_LUT4[4, 2, 2, 2] = 8
_LUT4[4, 3, 1, 1], _LUT4[4, 3, 1, 2], _LUT4[4, 3, 1, 3] = 9, 10, 11
_LUT4[5, 3, 2, 2], _LUT4[5, 3, 2, 3] = 12, 13
_LUT4[6, 3, 3, 3] = 14


@lru_cache(maxsize=64)
def _subsets(n: int, k: int) -> np.ndarray:
    return np.fromiter(itertools.chain.from_iterable(itertools.combinations(range(n), k)),
                       dtype=np.int64).reshape(-1, k)


def _induced(adj: np.ndarray, sub: np.ndarray):
    k = sub.shape[1]
    deg = np.zeros(sub.shape, dtype=np.int64)
    for i, j in itertools.combinations(range(k), 2):
        e = adj[sub[:, i], sub[:, j]]
        deg[:, i] += e
        deg[:, j] += e
    return deg, deg.sum(1) // 2


def orbit_counts(g: Graph, chunk: int = 1 << 20) -> np.ndarray:
    """``[num_nodes, 15]`` ORCA node-orbit counts (graphlets on 2..4 nodes, induced), self-loops ignored."""
    g = g.without_self_loops()
    n = g.num_nodes
    adj = g.adjacency()
    out = np.zeros((n, N_ORBITS), dtype=np.int64)
    out[:, 0] = adj.sum(1)
    if n >= 3:
        sub = _subsets(n, 3)
        deg, ne = _induced(adj, sub)
        orb = np.where(ne[:, None] == 3, 3, np.where(ne[:, None] == 2, deg, -1))   # 1 end, 2 middle, 3 triangle
        ok = orb > 0
        out += np.bincount(sub[ok] * N_ORBITS + orb[ok], minlength=n * N_ORBITS).reshape(n, N_ORBITS)
    if n >= 4:
        for s in range(0, len(_subsets(n, 4)), chunk):
            sub = _subsets(n, 4)[s:s + chunk]
            deg, ne = _induced(adj, sub)
            orb = _LUT4[ne[:, None], deg.max(1, keepdims=True), deg.min(1, keepdims=True), deg]
            ok = orb >= 0
            out += np.bincount(sub[ok] * N_ORBITS + orb[ok], minlength=n * N_ORBITS).reshape(n, N_ORBITS)
    return out


def clustering(g: Graph) -> np.ndarray:
    """Local clustering coefficient (``nx.clustering`` of a simple graph): triangles / C(deg, 2), 0 if deg < 2."""
    a = g.without_self_loops().adjacency().astype(np.int64)
    deg = a.sum(1)
    tri = np.einsum("ij,jk,ki->i", a, a, a) // 2
    return np.where(deg > 1, 2.0 * tri / np.maximum(deg * (deg - 1), 1), 0.0)


def degree_hist(g: Graph) -> np.ndarray:
    return np.bincount(g.without_self_loops().adjacency().sum(1))   # = nx.degree_histogram


def clustering_hist(g: Graph, bins: int = 100) -> np.ndarray:
    return np.histogram(clustering(g), bins=bins, range=(0.0, 1.0))[0]


def orbit_mean(g: Graph) -> np.ndarray:
    return orbit_counts(g).sum(0) / g.num_nodes


# --------------------------------------------------------------------------- kernels and MMD
def _pmfs(hists: list[np.ndarray], length: int) -> np.ndarray:
    out = np.zeros((len(hists), length))
    for i, h in enumerate(hists):
        out[i, :len(h)] = h / h.sum()
    return out


def gaussian_emd_kernel(x: list[np.ndarray], y: list[np.ndarray], sigma: float, scale: float = 1.0) -> np.ndarray:
    """K[i, j] = exp(-EMD(x_i, y_j)^2 / (2 sigma^2)), histograms normalised and zero-padded to one length."""
    length = max(max(len(h) for h in x), max(len(h) for h in y))
    cx, cy = np.cumsum(_pmfs(x, length), 1), np.cumsum(_pmfs(y, length), 1)
    emd = np.abs(cx[:, None, :] - cy[None, :, :]).sum(-1) / scale
    return np.exp(-emd * emd / (2 * sigma * sigma))


def gaussian_kernel(x: np.ndarray, y: np.ndarray, sigma: float) -> np.ndarray:
    d2 = ((np.asarray(x)[:, None, :] - np.asarray(y)[None, :, :]) ** 2).sum(-1)
    return np.exp(-d2 / (2 * sigma * sigma))


def mmd2(kernel, x, y, **kw) -> float:
    """Biased MMD^2 as GraphRNN's ``compute_mmd``: mean K(x,x) + mean K(y,y) - 2 mean K(x,y)."""
    return float(kernel(x, x, **kw).mean() + kernel(y, y, **kw).mean() - 2 * kernel(x, y, **kw).mean())


def graph_mmd(ref: list[Graph], pred: list[Graph]) -> dict[str, float]:
    """The three GraphRNN statistics between a reference (test) set and generated graphs."""
    pred = [g for g in pred if g.num_nodes > 0]
    if not pred or not ref:
        raise ValueError("graph_mmd needs at least one reference and one non-empty generated graph")
    return {
        "degree": mmd2(gaussian_emd_kernel, [degree_hist(g) for g in ref], [degree_hist(g) for g in pred], sigma=1.0),
        "clustering": mmd2(gaussian_emd_kernel, [clustering_hist(g) for g in ref], [clustering_hist(g) for g in pred],
                           sigma=0.1, scale=100.0),
        "orbit": mmd2(gaussian_kernel, np.stack([orbit_mean(g) for g in ref]), np.stack([orbit_mean(g) for g in pred]),
                      sigma=30.0),
    }


def match_sizes(ref: list[Graph], pred: list[Graph]) -> list[Graph]:
    """GraphRNN's ``clean_graphs``: for each reference graph, the generated graph whose node count is
    nearest (first on ties; with replacement), so both sets have the same size distribution."""
    sizes = np.array([g.num_nodes for g in pred])
    return [pred[int(np.abs(sizes - g.num_nodes).argmin())] for g in ref]

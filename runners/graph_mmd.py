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


def gaussian_emd_kernel(x: list[np.ndarray], y: list[np.ndarray], sigma: float, scale: float = 1.0,
                        chunk: int = 256) -> np.ndarray:
    """K[i, j] = exp(-EMD(x_i, y_j)^2 / (2 sigma^2)), histograms normalised and zero-padded to one length
    (computed ``chunk`` rows at a time: thousands of generated graphs against thousands)."""
    length = max(max(len(h) for h in x), max(len(h) for h in y))
    cx, cy = np.cumsum(_pmfs(x, length), 1), np.cumsum(_pmfs(y, length), 1)
    out = np.empty((len(cx), len(cy)))
    for a in range(0, len(cx), chunk):
        emd = np.abs(cx[a:a + chunk, None, :] - cy[None, :, :]).sum(-1) / scale
        out[a:a + chunk] = np.exp(-emd * emd / (2 * sigma * sigma))
    return out


def gaussian_kernel(x: np.ndarray, y: np.ndarray, sigma: float) -> np.ndarray:
    d2 = ((np.asarray(x)[:, None, :] - np.asarray(y)[None, :, :]) ** 2).sum(-1)
    return np.exp(-d2 / (2 * sigma * sigma))


def mmd2(kernel, x, y, **kw) -> float:
    """Biased MMD^2 as GraphRNN's ``compute_mmd``: mean K(x,x) + mean K(y,y) - 2 mean K(x,y)."""
    return float(kernel(x, x, **kw).mean() + kernel(y, y, **kw).mean() - 2 * kernel(x, y, **kw).mean())


STATS = ("degree", "clustering", "orbit")
KERNELS = {"degree": (gaussian_emd_kernel, dict(sigma=1.0)),
           "clustering": (gaussian_emd_kernel, dict(sigma=0.1, scale=100.0)),
           "orbit": (gaussian_kernel, dict(sigma=30.0))}


def descriptors(graphs: list[Graph]) -> dict:
    """Each statistic's per-graph descriptor (computed once: the kernels below reuse them)."""
    return {"degree": [degree_hist(g) for g in graphs], "clustering": [clustering_hist(g) for g in graphs],
            "orbit": np.stack([orbit_mean(g) for g in graphs])}


def kernel_blocks(ref: dict, pred: dict) -> dict:
    """{stat: (K_ref_ref, K_pred_pred, K_ref_pred)} of GraphRNN's kernels."""
    out = {}
    for k in STATS:
        fn, kw = KERNELS[k]
        out[k] = (fn(ref[k], ref[k], **kw), fn(pred[k], pred[k], **kw), fn(ref[k], pred[k], **kw))
    return out


def mmd2_from_blocks(Krr: np.ndarray, Kpp: np.ndarray, Krp: np.ndarray, w: np.ndarray | None = None) -> float:
    """Biased MMD^2 from the kernel blocks; ``w``: multiplicities of the generated graphs (a bootstrap draw)."""
    if w is None:
        return float(Krr.mean() + Kpp.mean() - 2 * Krp.mean())
    w = w / w.sum()
    return float(Krr.mean() + w @ Kpp @ w - 2 * (Krp.mean(0) @ w))


def bootstrap_interval(blocks: tuple, n_boot: int = 500, seed: int = 0, coverage: float = 0.95) -> tuple:
    """Percentile interval of MMD^2 over bootstrap resamples of the generated graphs (the generator's sampling
    variability; the test set is the benchmark's, fixed)."""
    Krr, Kpp, Krp = blocks
    rng = np.random.default_rng(seed)
    n = Kpp.shape[0]
    vals = [mmd2_from_blocks(Krr, Kpp, Krp, rng.multinomial(n, np.full(n, 1.0 / n)).astype(np.float64))
            for _ in range(n_boot)]
    lo, hi = np.quantile(vals, [(1 - coverage) / 2, (1 + coverage) / 2])
    return float(lo), float(hi)


def largest_connected(g: Graph) -> Graph:
    """GraphRNN's evaluation keeps the largest connected component of each generated graph
    (``max(nx.connected_component_subgraphs(G), key=len)``, self-loops removed)."""
    from runners.graph_data import largest_component

    g = g.without_self_loops()
    if g.num_nodes == 0:
        return g
    return largest_component(g.num_nodes, np.asarray(g.edges, dtype=np.int64).reshape(-1, 2))


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


def polygraph_mmd(ref: list[Graph], pred: list[Graph], n_sub: int = 500, coverage: float = 0.95) -> dict:
    """polygraph-benchmark's scores (``_polygraph_mmd``), leaving torch's thread count as it was: polygraph's
    featurizers set it to the machine's core count, which would take a core from a parallel run (threads=1)."""
    import torch

    threads = torch.get_num_threads()
    try:
        return _polygraph_mmd(ref, pred, n_sub, coverage)
    finally:
        torch.set_num_threads(threads)


def _polygraph_mmd(ref: list[Graph], pred: list[Graph], n_sub: int, coverage: float) -> dict:
    """A second opinion from polygraph-benchmark: its Gaussian-TV MMD^2 benchmark (GRAN's kernels: degree,
    100-bin clustering and orbit descriptors from polygraph, k = exp(-TV^2 / (2 bw^2)) with bw 1, 0.1, 30), biased and
    unbiased (umve) estimates on every graph, and polygraph's subsampling interval (subsets of the test set's size
    drawn from both sides, seed 42). polygraph.metrics imports tabpfn (a large optional dependency) at import time,
    so its interval loop (``_MMD2SamplingMixin``) is written out here over polygraph's own descriptors, kernel and
    estimator (polygraph.utils)."""
    import networkx as nx
    from polygraph.utils.descriptors import ClusteringHistogram, OrbitCounts, SparseDegreeHistogram
    from polygraph.utils.kernels import GaussianTV
    from polygraph.utils.mmd_utils import mmd_from_gram

    def to_nx(gs):
        out = []
        for g in gs:
            h = nx.Graph()
            h.add_nodes_from(range(g.num_nodes))
            h.add_edges_from((int(a), int(b)) for a, b in g.without_self_loops().edges)
            out.append(h)
        return out

    ref_nx, pred_nx = to_nx(ref), to_nx([g for g in pred if g.num_nodes > 0])
    kernels = {"degree": GaussianTV(SparseDegreeHistogram(), bw=1.0),
               "clustering": GaussianTV(ClusteringHistogram(bins=100), bw=0.1),
               "orbit": GaussianTV(OrbitCounts(), bw=30.0)}
    out, m = {}, len(ref_nx)
    for name, k in kernels.items():
        rr, rp, pp = k.pre_gram(k.featurize(ref_nx), k.featurize(pred_nx))
        out[f"polygraph/{name}"] = float(mmd_from_gram(rr, pp, rp, variant="biased"))
        out[f"polygraph_umve/{name}"] = float(mmd_from_gram(rr, pp, rp, variant="umve"))
        rng = np.random.default_rng(42)
        vals = []
        for _ in range(n_sub):
            i = rng.choice(len(rr), size=m, replace=False)
            j = rng.choice(len(pp), size=min(m, len(pp)), replace=False)
            vals.append(mmd_from_gram(rr[i][:, i], pp[j][:, j], rp[i][:, j], variant="biased"))
        out[f"polygraph/{name}_sub{m}_ci95"] = [float(x) for x in np.quantile(vals, [(1 - coverage) / 2,
                                                                                      (1 + coverage) / 2])]
    return out

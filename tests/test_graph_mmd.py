"""GraphRNN's evaluation, checked against independent computations: hand-derived MMD values, scipy's
Wasserstein distance, networkx's degree histogram and clustering, and orbit counts from an
isomorphism-based enumeration of every induced 2..4-node subgraph."""
import itertools
import json
import math

import networkx as nx
import numpy as np
import pytest
import torch
from networkx.algorithms.isomorphism import GraphMatcher
from scipy.stats import wasserstein_distance

from runners.core import UserError
from runners.graph_data import Graph, check_graph, read_jsonl, write_jsonl, split, ego_small
from runners.graph_mmd import (clustering, degree_hist, gaussian_emd_kernel, gaussian_kernel, graph_mmd,
                               mmd2, orbit_counts, orbit_mean)


def random_graph(n, p, seed):
    g = nx.gnp_random_graph(n, p, seed=seed)
    return Graph.make(n, list(g.edges)), g


def test_mmd_by_hand_on_two_bin_histograms():
    # pmfs [a, 1-a]: EMD with ground distance |i-j| is |a - b|; kernel exp(-d^2 / 2)
    s1 = [np.array([0.2, 0.8]), np.array([0.3, 0.7])]
    s2 = [np.array([0.25, 0.75]), np.array([0.35, 0.65])]
    k = lambda d: math.exp(-d * d / 2)
    kxx = (2 + 2 * k(0.1)) / 4
    kyy = (2 + 2 * k(0.1)) / 4
    kxy = (k(0.05) + k(0.15) + k(0.05) + k(0.05)) / 4
    assert mmd2(gaussian_emd_kernel, s1, s2, sigma=1.0) == pytest.approx(kxx + kyy - 2 * kxy, abs=1e-15)


def test_gaussian_emd_matches_scipy_wasserstein_and_normalises_and_pads():
    rng = np.random.default_rng(0)
    xs = [rng.integers(0, 5, size=rng.integers(2, 9)) + 0.0 for _ in range(4)]
    ys = [rng.integers(0, 5, size=rng.integers(2, 12)) + 0.0 for _ in range(3)]
    for x in xs + ys:
        x[0] += 1   # no all-zero histogram
    got = gaussian_emd_kernel(xs, ys, sigma=0.7, scale=10.0)
    for i, x in enumerate(xs):
        for j, y in enumerate(ys):
            emd = wasserstein_distance(np.arange(len(x)), np.arange(len(y)), x, y) / 10.0
            assert got[i, j] == pytest.approx(math.exp(-emd ** 2 / (2 * 0.49)), rel=1e-12)


def test_gaussian_mmd_matches_naive_loop():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(5, 15)) * 20, rng.normal(size=(3, 15)) * 20
    k = lambda a, b: math.exp(-np.sum((a - b) ** 2) / (2 * 30.0 ** 2))
    naive = (sum(k(a, b) for a in x for b in x) / 25 + sum(k(a, b) for a in y for b in y) / 9
             - 2 * sum(k(a, b) for a in x for b in y) / 15)
    assert mmd2(gaussian_kernel, x, y, sigma=30.0) == pytest.approx(naive, abs=1e-14)


def test_descriptors_match_networkx():
    for seed in range(5):
        g, nxg = random_graph(12, 0.35, seed)
        assert degree_hist(g).tolist() == nx.degree_histogram(nxg)
        c = nx.clustering(nxg)
        assert np.allclose(clustering(g), [c[i] for i in range(12)], atol=1e-15)
    # self-loops are removed before any statistic
    g = Graph.make(3, [[0, 1], [1, 2], [0, 2], [1, 1]])
    assert degree_hist(g).tolist() == [0, 0, 3] and clustering(g).tolist() == [1.0, 1.0, 1.0]


# ORCA orbits as (template graph, node -> orbit); graphlets on 2, 3 and 4 nodes
TEMPLATES = [
    (nx.path_graph(2), {0: 0, 1: 0}),
    (nx.path_graph(3), {0: 1, 1: 2, 2: 1}),
    (nx.complete_graph(3), {0: 3, 1: 3, 2: 3}),
    (nx.path_graph(4), {0: 4, 1: 5, 2: 5, 3: 4}),
    (nx.star_graph(3), {0: 7, 1: 6, 2: 6, 3: 6}),
    (nx.cycle_graph(4), {i: 8 for i in range(4)}),
    (nx.Graph([(0, 1), (1, 2), (2, 0), (2, 3)]), {3: 9, 0: 10, 1: 10, 2: 11}),
    (nx.Graph([(0, 1), (1, 2), (2, 3), (3, 0), (0, 2)]), {1: 12, 3: 12, 0: 13, 2: 13}),
    (nx.complete_graph(4), {i: 14 for i in range(4)}),
]


def orbits_by_isomorphism(nxg, n):
    out = np.zeros((n, 15), dtype=np.int64)
    for k in (2, 3, 4):
        for nodes in itertools.combinations(range(n), k):
            sub = nxg.subgraph(nodes)
            if not nx.is_connected(sub):
                continue
            for tmpl, orbit in TEMPLATES:
                if len(tmpl) == k and tmpl.number_of_edges() == sub.number_of_edges():
                    gm = GraphMatcher(sub, tmpl)
                    if gm.is_isomorphic():
                        for u, t in gm.mapping.items():
                            out[u, orbit[t]] += 1
                        break
            else:
                raise AssertionError("no template matched")
    return out


@pytest.mark.parametrize("seed", range(4))
def test_orbit_counts_match_isomorphism_enumeration(seed):
    g, nxg = random_graph(9, [0.3, 0.5, 0.7, 0.9][seed], seed)
    assert np.array_equal(orbit_counts(g), orbits_by_isomorphism(nxg, 9))


def test_orbit_counts_by_hand():
    k4 = orbit_counts(Graph.make(4, list(itertools.combinations(range(4), 2))))
    assert k4.tolist() == [[3, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]] * 4    # 3 triangles (no induced path), 1 K4
    c5 = orbit_counts(Graph.make(5, [[i, (i + 1) % 5] for i in range(5)]))
    # each node of a 5-cycle: degree 2, ends of 2 paths of 3, middle of 1, ends of 2 and middle of 2 4-paths
    assert c5.tolist() == [[2, 2, 1, 0, 2, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0]] * 5
    star = orbit_counts(Graph.make(4, [[0, 1], [0, 2], [0, 3], [2, 2]]))           # self-loop ignored
    assert star[0].tolist() == [3, 0, 3, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]
    assert star[1].tolist() == [1, 2, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]
    assert orbit_mean(Graph.make(1, [])).tolist() == [0.0] * 15


def test_identical_sets_have_zero_mmd_and_different_sets_do_not():
    gs = [random_graph(10, 0.4, s)[0] for s in range(6)]
    for v in graph_mmd(gs, gs).values():
        assert v == pytest.approx(0.0, abs=1e-12)
    dense = [random_graph(10, 0.9, s)[0] for s in range(6)]
    assert all(v > 1e-3 for v in graph_mmd(gs, dense).values())


def test_jsonl_roundtrip_split_and_errors(tmp_path):
    gs = [Graph.make(3, [[0, 1], [2, 1]]), Graph.make(2, [[1, 0], [0, 1]]), Graph.make(4, [])]
    write_jsonl(tmp_path / "g.jsonl", gs)
    back = read_jsonl(tmp_path / "g.jsonl")
    assert [(g.num_nodes, g.edges.tolist()) for g in back] == [(3, [[0, 1], [1, 2]]), (2, [[0, 1]]), (4, [])]
    assert [len(s) for s in split(back * 5)] == [12, 3] and split(back * 5)[1][0] is back[0]
    (tmp_path / "bad.jsonl").write_text(json.dumps({"num_nodes": 0, "edges": []}) + "\n")
    with pytest.raises(UserError, match="empty graph"):
        read_jsonl(tmp_path / "bad.jsonl")
    with pytest.raises(UserError, match="over the size limit data.max_nodes=3"):
        read_jsonl(tmp_path / "g.jsonl", max_nodes=3)
    with pytest.raises(UserError, match="out of range"):
        check_graph(Graph.make(2, [[0, 2]]), None, "g")
    (tmp_path / "junk.jsonl").write_text("{\"edges\": []}\n")
    with pytest.raises(UserError, match="junk.jsonl:1: not a graph line"):
        read_jsonl(tmp_path / "junk.jsonl")


def test_ego_small_from_planetoid_fixture(tmp_path, monkeypatch):
    import runners.graph_data as gd
    from fixtures import write_planetoid

    write_planetoid(tmp_path / "ro", "CiteSeer")
    # a read-only root (like ../shared/data; chmod does not stop root, so the check is patched) is copied
    monkeypatch.setattr(gd.os, "access", lambda p, mode: "ro" not in str(p))
    gs = ego_small(tmp_path / "ro" / "planetoid", tmp_path / "cache", n_graphs=50, seed=0)
    assert (tmp_path / "cache" / "CiteSeer" / "processed").exists()
    assert not (tmp_path / "ro" / "planetoid" / "CiteSeer" / "processed").exists()
    assert len(gs) == 50 and all(4 <= g.num_nodes <= 20 for g in gs)
    # an ego graph has a centre adjacent to every other node
    assert all((g.adjacency().sum(1) == g.num_nodes - 1).any() for g in gs)
    with pytest.raises(UserError, match="raw files missing.*kimiyoung/planetoid"):
        ego_small(tmp_path / "nowhere", tmp_path / "cache2")
    # the fixture is not the real CiteSeer: with verification on, the first file's MD5 is a clear error
    with pytest.raises(UserError, match=r"ind.citeseer.allx: MD5 mismatch .*data.verify_md5=false"):
        ego_small(tmp_path / "ro" / "planetoid", tmp_path / "cache3", verify=True)


# --------------------------------------------------------------------------- scoring as GraphRNN's evaluation
def test_largest_connected_component_matches_networkx():
    from runners.graph_mmd import largest_connected

    for seed in range(20):
        g, nxg = random_graph(14, 0.12, seed)
        lcc = largest_connected(Graph.make(14, np.concatenate([g.edges, [[3, 3]]])))   # a self-loop too
        biggest = max(nx.connected_components(nxg), key=len)
        assert lcc.num_nodes == len(biggest)
        assert nx.is_isomorphic(nx.Graph(list(map(tuple, lcc.edges))) if len(lcc.edges) else nx.empty_graph(1),
                                nxg.subgraph(biggest)) or lcc.num_nodes == 1
        assert not (lcc.edges[:, 0] == lcc.edges[:, 1]).any()


def test_all_pairs_mmd_from_blocks_and_bootstrap_weights():
    """Kernel blocks reproduce graph_mmd (every generated graph against every reference graph); a bootstrap
    weight vector equals scoring the explicitly duplicated sample; the interval brackets the estimate."""
    from runners.graph_mmd import STATS, bootstrap_interval, descriptors, kernel_blocks, mmd2_from_blocks

    ref = [random_graph(10, 0.3, s)[0] for s in range(6)]
    pred = [random_graph(n, 0.25, 100 + n) [0] for n in range(6, 15)]
    blocks = kernel_blocks(descriptors(ref), descriptors(pred))
    direct = graph_mmd(ref, pred)
    for k in STATS:
        assert mmd2_from_blocks(*blocks[k]) == pytest.approx(direct[k], rel=1e-12, abs=1e-15)
    w = np.array([2, 0, 1, 1, 0, 3, 1, 0, 1], dtype=np.float64)
    dup = [g for g, c in zip(pred, w.astype(int)) for _ in range(c)]
    dup_direct = graph_mmd(ref, dup)
    for k in STATS:
        assert mmd2_from_blocks(*blocks[k], w=w) == pytest.approx(dup_direct[k], rel=1e-12, abs=1e-15)
        lo, hi = bootstrap_interval(blocks[k], 200, 0)
        assert lo <= direct[k] + 1e-12 and hi >= lo


# --------------------------------------------------------------------------- a second implementation
def test_descriptors_and_orbit_mmd_equal_polygraph_benchmark():
    """polygraph-benchmark (a maintained evaluator) computes the same descriptors: node degree histograms,
    100-bin clustering histograms and 4-node graphlet orbit counts (its orbit_count package); and with the same
    RBF kernel and biased estimator, the same orbit MMD^2."""
    from polygraph.utils.descriptors import ClusteringHistogram, OrbitCounts, SparseDegreeHistogram
    from polygraph.utils.mmd_utils import mmd_from_gram

    ours = [random_graph(n, 0.3, n)[0] for n in range(5, 17)]
    theirs = [nx.Graph(list(map(tuple, g.edges))) for g in ours]
    for g, h in zip(ours, theirs):
        h.add_nodes_from(range(g.num_nodes))
    orb = np.asarray(OrbitCounts()(theirs))          # per graph: orbit counts averaged over nodes (GraphRNN's)
    np.testing.assert_allclose(orb, np.stack([orbit_mean(g) for g in ours]), rtol=0, atol=1e-9)
    deg = SparseDegreeHistogram()(theirs)
    deg = deg.toarray() if hasattr(deg, "toarray") else np.asarray(deg)
    for i, g in enumerate(ours):
        d = degree_hist(g)
        np.testing.assert_allclose(deg[i, :len(d)] / deg[i].sum(), d / d.sum(), rtol=1e-12)
    clu = np.asarray(ClusteringHistogram(bins=100)(theirs))
    for i, g in enumerate(ours):
        h = np.histogram(clustering(g), bins=100, range=(0.0, 1.0))[0]
        np.testing.assert_allclose(clu[i] / clu[i].sum(), h / h.sum(), rtol=1e-12)
    x, y = np.stack([orbit_mean(g) for g in ours[:6]]), np.stack([orbit_mean(g) for g in ours[6:]])
    k = lambda a, b: gaussian_kernel(a, b, sigma=30.0)   # noqa: E731
    theirs_mmd = mmd_from_gram(k(x, x), k(y, y), k(x, y), variant="biased")
    assert float(theirs_mmd) == pytest.approx(mmd2(gaussian_kernel, x, y, sigma=30.0), rel=1e-12)


def test_polygraph_second_opinion_equals_its_kernel_estimators_and_interval_class(monkeypatch):
    """The second opinion (polygraph's Gaussian-TV MMD^2): written out from the descriptors with numpy, biased and
    unbiased (umve) estimators; the subsampling interval equals polygraph's own ``DescriptorMMD2Interval`` (500
    subsets of the test set's size, seed 42, percentiles), imported without polygraph.metrics' package init (which
    pulls the optional tabpfn). Empty generated graphs are dropped, one-node graphs kept. One test: polygraph's
    import and numba compilation cost about 50 s per process."""
    import os
    import sys
    import types

    import polygraph
    from polygraph.utils.descriptors import ClusteringHistogram, OrbitCounts, SparseDegreeHistogram
    from polygraph.utils.kernels import GaussianTV

    from runners.graph_mmd import polygraph_mmd

    root = os.path.dirname(polygraph.__file__)
    for name, sub in (("polygraph.metrics", "metrics"), ("polygraph.metrics.base", "metrics/base")):
        pkg = types.ModuleType(name)
        pkg.__path__ = [os.path.join(root, sub)]
        monkeypatch.setitem(sys.modules, name, pkg)
    from polygraph.metrics.base.mmd import DescriptorMMD2Interval

    ref = [random_graph(n, 0.4, n)[0] for n in range(6, 14)]
    gen = [random_graph(n, 0.2, 100 + n)[0] for n in range(5, 25)] + [Graph.make(1, [])]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = polygraph_mmd(ref, gen + [Graph.make(0, [])])
        assert torch.get_num_threads() == 1   # polygraph's featurizers reset it; a threads=1 run must keep 1
        out_half = polygraph_mmd(ref, gen, n_sub=40, coverage=0.5)
    finally:
        torch.set_num_threads(threads)

    def nxs(gs):
        hs = []
        for g in gs:
            h = nx.Graph()
            h.add_nodes_from(range(g.num_nodes))
            h.add_edges_from(map(tuple, g.without_self_loops().edges))
            hs.append(h)
        return hs

    m = len(ref)
    for name, desc, bw in (("degree", SparseDegreeHistogram(), 1.0), ("clustering", ClusteringHistogram(bins=100), 0.1),
                           ("orbit", OrbitCounts(), 30.0)):
        X, Y = (desc(nxs(s)) for s in (ref, gen))
        X, Y = (np.asarray(a.toarray() if hasattr(a, "toarray") else a, dtype=np.float64) for a in (X, Y))
        width = max(X.shape[1], Y.shape[1])
        X, Y = (np.pad(a, ((0, 0), (0, width - a.shape[1]))) for a in (X, Y))
        k = lambda a, b: np.exp(-((np.abs(a[:, None] - b[None]).sum(-1) / 2) ** 2) / (2 * bw ** 2))  # noqa: E731
        kxx, kyy, kxy = k(X, X), k(Y, Y), k(X, Y)
        n, mg = len(X), len(Y)
        biased = kxx.mean() + kyy.mean() - 2 * kxy.mean()
        umve = ((kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (mg * (mg - 1))
                - 2 * kxy.mean())
        assert out[f"polygraph/{name}"] == pytest.approx(biased, rel=1e-9, abs=1e-12)
        assert out[f"polygraph_umve/{name}"] == pytest.approx(umve, rel=1e-9, abs=1e-12)
        for res, n_sub, cov in ((out, 500, 0.95), (out_half, 40, 0.5)):
            theirs = DescriptorMMD2Interval(nxs(ref), GaussianTV(desc, bw=bw), subsample_size=m, num_samples=n_sub,
                                            coverage=cov).compute(nxs(gen))
            assert res[f"polygraph/{name}_sub{m}_ci95"] == pytest.approx([theirs.low, theirs.high], rel=1e-12)
    for key in [k for k in sys.modules if k.startswith("polygraph.metrics.")]:
        monkeypatch.delitem(sys.modules, key)
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------- edges of the contract (mutation-found)
def test_bootstrap_interval_equals_naive_resampling_of_the_generated_graphs():
    """Each bootstrap draw is a multiset of generated graphs (multinomial counts, seed 0, 500 draws by default);
    its MMD^2 written out on the duplicated index list, and numpy's percentiles: the interval exactly."""
    from runners.graph_mmd import STATS, bootstrap_interval, descriptors, kernel_blocks

    ref = [random_graph(10, 0.3, s)[0] for s in range(5)]
    pred = [random_graph(n, 0.25, 200 + n)[0] for n in range(6, 13)]
    blocks = kernel_blocks(descriptors(ref), descriptors(pred))

    def naive(Krr, Kpp, Krp, n_boot, seed, pct):
        rng, n, vals = np.random.default_rng(seed), Kpp.shape[0], []
        for _ in range(n_boot):
            idx = np.repeat(np.arange(n), rng.multinomial(n, np.full(n, 1.0 / n)))
            vals.append(Krr.mean() + Kpp[np.ix_(idx, idx)].mean() - 2 * Krp[:, idx].mean())
        return tuple(np.percentile(vals, pct))

    for k in STATS:
        Krr, Kpp, Krp = blocks[k]
        assert Krr.shape != Kpp.shape and Krp.shape == (len(Krr), len(Kpp))   # blocks kept apart
        assert bootstrap_interval(blocks[k]) == pytest.approx(naive(*blocks[k], 500, 0, [2.5, 97.5]), rel=1e-12)
        assert bootstrap_interval(blocks[k], n_boot=60, seed=3, coverage=0.5) == pytest.approx(
            naive(*blocks[k], 60, 3, [25, 75]), rel=1e-12)


def test_graph_mmd_drops_empty_graphs_keeps_single_nodes_and_rejects_empty_sets():
    ref = [random_graph(8, 0.4, s)[0] for s in range(4)]
    pred = [random_graph(9, 0.3, 50 + s)[0] for s in range(3)]
    assert graph_mmd(ref, pred + [Graph.make(0, [])]) == graph_mmd(ref, pred)
    single = graph_mmd(ref, pred + [Graph.make(1, [])])
    expect = mmd2(gaussian_emd_kernel, [degree_hist(g) for g in ref],
                  [degree_hist(g) for g in pred] + [np.array([1])], sigma=1.0)
    assert single["degree"] == pytest.approx(expect, rel=1e-12) and single["degree"] != graph_mmd(ref, pred)["degree"]
    with pytest.raises(ValueError, match="^graph_mmd needs at least one reference and one non-empty generated graph$"):
        graph_mmd([], pred)
    with pytest.raises(ValueError, match="^graph_mmd needs at least one reference"):
        graph_mmd(ref, [Graph.make(0, [])])


def test_clustering_histogram_is_graphrnns_numpy_call_on_networkx_clustering():
    """GraphRNN: ``np.histogram(list(nx.clustering(G).values()), bins=100, range=(0.0, 1.0), density=False)``."""
    from runners.graph_mmd import clustering_hist

    for seed in range(4):
        g, nxg = random_graph(14, 0.35, 400 + seed)
        expect = np.histogram(list(nx.clustering(nxg).values()), bins=100, range=(0.0, 1.0), density=False)[0]
        assert clustering_hist(g).tolist() == expect.tolist()
    g = Graph.make(4, [[0, 1], [1, 2], [2, 0], [2, 3]])          # clustering 1, 1, 1/3, 0: not the full range
    assert np.flatnonzero(clustering_hist(g)).tolist() == [0, 33, 99] and clustering_hist(g).sum() == 4


def test_small_graphs_orbits_integer_counts_and_chunked_kernel():
    """Orbit counts on every 2-, 3- and 4-node template (integers, as ORCA writes them); the EMD kernel computed
    two rows at a time equals one pass; the largest component of an empty graph is the empty graph."""
    from runners.graph_mmd import largest_connected

    for tmpl, _ in TEMPLATES:
        n = len(tmpl)
        got = orbit_counts(Graph.make(n, list(tmpl.edges)))
        assert got.dtype == np.int64 and np.array_equal(got, orbits_by_isomorphism(tmpl, n))
    hists = [degree_hist(random_graph(9, 0.3, s)[0]) for s in range(5)]
    np.testing.assert_array_equal(gaussian_emd_kernel(hists, hists[:3], sigma=1.0, chunk=2),
                                  gaussian_emd_kernel(hists, hists[:3], sigma=1.0))
    assert largest_connected(Graph.make(0, [])).num_nodes == 0

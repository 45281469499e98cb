"""Graph sets for Graph Normalizing Flows (Liu et al. 2019): GraphRNN's community-small and ego-small
recipes, the JSON-lines graph format, validation, and batching into torch-geometric ``Batch`` objects.

A graph is a :class:`Graph`: ``num_nodes`` and an ``[m, 2]`` array of undirected edges (each stored
once, ``u <= v``). The JSON-lines format is one graph a line, ``{"num_nodes": n, "edges": [[u, v], ...]}``
(the format of the authors' sets in ``../shared/data/graphs``). Splits are the first 80 % train and the
last 20 % test of the file or generated order, never reshuffled (GraphRNN shuffles once, at generation).
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from runners.core import DataMissingError, UserError, file_digest

PLANETOID_URL = "https://github.com/kimiyoung/planetoid/raw/master/data"
PLANETOID_FILES = ["x", "tx", "allx", "y", "ty", "ally", "graph", "test.index"]
PPI_URL = "https://data.dgl.ai/dataset/ppi.zip"
# MD5 of the raw files as kimiyoung/planetoid distributes them (computed from the copy this project was
# developed with); PubMed's are not recorded, so it is not verified.
PLANETOID_MD5 = {
    "Cora": {"allx": "c9083193a57057dd1238321e140194d7", "ally": "125d70817fe1fdbfdcad991995e81579",
             "graph": "b37c419cec179f45834467630c278e4c", "test.index": "9b822cae1d01f41e8bf8782e20367c0e",
             "tx": "b29c36916768e1d2f55391c1aa9317ac", "ty": "48bf43f54fa5b86089a4bd0299795f10",
             "x": "190831eee19d8f330d89d94b40a65c5a", "y": "78344284e3ff7fd24eb9c307d51351eb"},
    "CiteSeer": {"allx": "28486b4b9c4ee076b4eee2febd89ba86", "ally": "f0df7e5f859245e32987bfd224d01657",
                 "graph": "5f88483d5f5cc2b26b987bbbfb695005", "test.index": "70af39d4dff8aaa5c63f8dc526b16534",
                 "tx": "c25ab826a7e95c0922ab625de705f7df", "ty": "356894a73b7a7eff43c3580f2fcf92a4",
                 "x": "baeb0100b5a8af8d41f928113ce0a4e5", "y": "8b99f50aa950fbbf9a7a2b71ff9cac97"},
}


@dataclass
class Graph:
    num_nodes: int
    edges: np.ndarray  # int64 [m, 2], u <= v, unique (self-loops allowed, removed before evaluation)

    @staticmethod
    def make(num_nodes: int, edges) -> "Graph":
        e = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
        e = np.unique(np.sort(e, axis=1), axis=0)
        return Graph(int(num_nodes), e)

    def without_self_loops(self) -> "Graph":
        return Graph(self.num_nodes, self.edges[self.edges[:, 0] != self.edges[:, 1]])

    def adjacency(self) -> np.ndarray:
        a = np.zeros((self.num_nodes, self.num_nodes), dtype=bool)
        a[self.edges[:, 0], self.edges[:, 1]] = True
        a[self.edges[:, 1], self.edges[:, 0]] = True
        return a

    def to_json(self) -> str:
        return json.dumps({"num_nodes": self.num_nodes, "edges": self.edges.tolist()}, separators=(",", ":"))


def check_graph(g: Graph, max_nodes: int | None, where: str) -> Graph:
    """Reject what the models cannot take, one clear line each."""
    if g.num_nodes <= 0:
        raise UserError(f"{where}: empty graph (num_nodes={g.num_nodes}); every graph needs at least one node")
    if max_nodes is not None and g.num_nodes > max_nodes:
        raise UserError(f"{where}: graph has {g.num_nodes} nodes, over the size limit data.max_nodes={max_nodes}")
    if len(g.edges) and (g.edges.min() < 0 or g.edges.max() >= g.num_nodes):
        raise UserError(f"{where}: edge endpoint out of range 0..{g.num_nodes - 1}")
    return g


def read_jsonl(path: str | Path, max_nodes: int | None = None) -> list[Graph]:
    path = Path(path)
    if not path.exists():
        raise DataMissingError(f"graph file {path} not found (JSON lines: one {{\"num_nodes\": n, \"edges\": [[u, v], ...]}} a line)")
    graphs = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            g = Graph.make(int(obj["num_nodes"]), obj.get("edges", []))
        except (ValueError, KeyError, TypeError) as e:
            raise UserError(f"{path}:{i}: not a graph line ({type(e).__name__}: {e})") from None
        graphs.append(check_graph(g, max_nodes, f"{path}:{i}"))
    if not graphs:
        raise UserError(f"{path}: no graphs")
    return graphs


def write_jsonl(path: str | Path, graphs: list[Graph]) -> None:
    Path(path).write_text("".join(g.to_json() + "\n" for g in graphs))


def largest_component(num_nodes: int, edges: np.ndarray) -> Graph:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    adj = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(num_nodes, num_nodes))
    _, label = connected_components(adj, directed=False)
    keep = label == np.bincount(label).argmax()   # first largest, as max(..., key=len) picks
    new_id = np.cumsum(keep) - 1
    e = edges[keep[edges[:, 0]] & keep[edges[:, 1]]]
    return Graph.make(int(keep.sum()), new_id[e])


def community_small(n_graphs: int = 100, seed: int = 123) -> list[Graph]:
    """GraphRNN's ``caveman_small``: two cliques of k nodes (k = 6..10, n_graphs/5 each), each intra
    edge kept with p 0.8, one random inter edge (ceil(0.1 k) = 1), largest connected component; then
    one shuffle with ``seed`` (GraphRNN shuffles before its 80/20 split)."""
    rng = np.random.default_rng(seed)
    graphs = []
    for k in range(6, 11):
        iu = np.stack(np.triu_indices(k, 1), 1)
        for _ in range(n_graphs // 5):
            intra = np.concatenate([iu, iu + k])
            intra = intra[rng.random(len(intra)) < 0.8]
            inter = np.array([[rng.integers(0, k), rng.integers(k, 2 * k)]])
            graphs.append(largest_component(2 * k, np.concatenate([intra, inter])))
    order = rng.permutation(len(graphs))
    return [graphs[i] for i in order]


def planetoid_root(root: Path, name: str, cache: Path, download: bool, verify: bool = False) -> Path:
    """A writable root holding ``<Name>/raw`` for torch-geometric's ``Planetoid``; raw files under a
    read-only ``root`` (e.g. ../shared/data/planetoid) are copied to ``cache`` first. ``verify`` checks the
    raw files' MD5 (Cora, CiteSeer)."""
    raw = root / name / "raw"
    missing = [f for f in PLANETOID_FILES if not (raw / f"ind.{name.lower()}.{f}").exists()]
    if missing and not download:
        raise DataMissingError(f"Planetoid {name} raw files missing in {raw} (e.g. ind.{name.lower()}.{missing[0]}); "
                               f"offline: put the files from {PLANETOID_URL} there, or set data.download=true")
    if verify and not missing and name in PLANETOID_MD5:
        for f, md5 in PLANETOID_MD5[name].items():
            path = raw / f"ind.{name.lower()}.{f}"
            if file_digest(path) != md5:
                raise UserError(f"{path}: MD5 mismatch (expected {md5}); replace it with the file from {PLANETOID_URL} "
                                f"or set data.verify_md5=false")
    if missing or os.access(root / name, os.W_OK):
        return root
    dst = cache / name / "raw"
    if not all((dst / f"ind.{name.lower()}.{f}").exists() for f in PLANETOID_FILES):
        dst.mkdir(parents=True, exist_ok=True)
        for f in PLANETOID_FILES:
            shutil.copy2(raw / f"ind.{name.lower()}.{f}", dst)
    return cache


def load_planetoid(root: Path, name: str, cache: Path, download: bool = False, verify: bool = False):
    from torch_geometric.datasets import Planetoid

    return Planetoid(str(planetoid_root(Path(root), name, Path(cache), download, verify)), name, split="public")[0]


def ego_small(root: Path, cache: Path, n_graphs: int = 200, seed: int = 123, download: bool = False,
              min_nodes: int = 4, max_nodes: int = 20, verify: bool = False) -> list[Graph]:
    """GraphRNN's ``citeseer_small``: largest connected component of CiteSeer, the radius-1 ego graph of
    every node, kept when it has 4..20 nodes, shuffled with ``seed``, the first 200."""
    data = load_planetoid(root, "CiteSeer", cache, download, verify)
    e = data.edge_index.numpy().T
    g = largest_component(data.num_nodes, e[e[:, 0] < e[:, 1]])
    adj = g.adjacency()
    graphs = []
    for i in range(g.num_nodes):
        nodes = np.flatnonzero(adj[i] | (np.arange(g.num_nodes) == i))
        if min_nodes <= len(nodes) <= max_nodes:
            sub = np.triu(adj[np.ix_(nodes, nodes)])
            graphs.append(Graph.make(len(nodes), np.argwhere(sub)))
    order = np.random.default_rng(seed).permutation(len(graphs))
    return [graphs[i] for i in order[:n_graphs]]


def split(graphs: list[Graph], train_frac: float = 0.8) -> tuple[list[Graph], list[Graph]]:
    n = int(train_frac * len(graphs))
    return graphs[:n], graphs[n:]


# --------------------------------------------------------------------------- batching
def complete_edges(batch: torch.Tensor, self_edges: bool = False) -> torch.Tensor:
    """Directed edges j -> i between every pair i != j of nodes in the same graph (``batch`` sorted);
    ``self_edges`` adds i -> i (the authors' flow graph, n^2 edges per graph)."""
    counts = torch.bincount(batch)
    ptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
    n_pairs = counts * counts
    g = torch.repeat_interleave(torch.arange(len(counts), device=batch.device), n_pairs)
    k = torch.arange(int(n_pairs.sum()), device=batch.device) - torch.repeat_interleave(
        torch.cumsum(n_pairs, 0) - n_pairs, n_pairs)
    src = ptr[g] + k // counts[g]
    dst = ptr[g] + k % counts[g]
    if self_edges:
        return torch.stack([src, dst])
    keep = src != dst
    return torch.stack([src[keep], dst[keep]])


def to_data(g: Graph, self_loops: bool = False):
    """One graph as a torch-geometric ``Data``: ``edge_index`` both directions, optionally with self-loops."""
    from torch_geometric.data import Data

    e = g.without_self_loops().edges
    ei = np.concatenate([e, e[:, ::-1]]).T
    if self_loops:
        ei = np.concatenate([ei, np.tile(np.arange(g.num_nodes), (2, 1))], 1)
    return Data(edge_index=torch.from_numpy(np.ascontiguousarray(ei)), num_nodes=g.num_nodes)


def to_batch(graphs: list, device: torch.device | str = "cpu", self_loops: bool = False):
    """A torch-geometric ``Batch`` (``edge_index``, ``batch`` vector) of graphs, or of ``to_data`` items
    converted once beforehand (the training loop's case)."""
    from torch_geometric.data import Batch

    items = [to_data(g, self_loops) if isinstance(g, Graph) else g for g in graphs]
    return Batch.from_data_list(items).to(device)


def adjacency_targets(batch, pairs: torch.Tensor) -> torch.Tensor:
    """1.0 where the pair (src, dst) of ``pairs`` is an edge of the batch's graphs, else 0.0."""
    n = batch.num_nodes
    key_e = batch.edge_index[0] * n + batch.edge_index[1]
    key_p = pairs[0] * n + pairs[1]
    return torch.isin(key_p, key_e).float()

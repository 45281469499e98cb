"""Tiny datasets written in the real on-disk formats, so the data code paths run without a network."""
from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np


def write_ptb(root: Path, gz: bool = False, seed: int = 0) -> Path:
    """ptb.{train,valid,test}.txt in Mikolov's format: space-separated lower-case words, <unk>, one
    sentence a line with a leading and trailing space (as the real files have). Sentences follow a
    small grammar, so a model can learn them (entropy about 1 bit a word)."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "ptb"
    folder.mkdir(parents=True, exist_ok=True)

    def sentence():
        det, noun, verb = ("the", "a"), ("cat", "dog", "<unk>"), ("sat", "ran")
        words = [rng.choice(det), rng.choice(noun), rng.choice(verb), "on", "the", "mat"]
        if rng.random() < 0.3:
            words += ["for", "n", "$"]
        return " " + " ".join(words) + " "

    for split, n in (("train", 400), ("valid", 60), ("test", 60)):
        text = ("\n".join(sentence() for _ in range(n)) + "\n").encode()
        if gz:
            (folder / f"ptb.{split}.txt.gz").write_bytes(gzip.compress(text))
        else:
            (folder / f"ptb.{split}.txt").write_bytes(text)
    return folder


def write_cifar(root: Path, n_classes: int = 10, n_train: int = 50, n_test: int = 20, seed: int = 0) -> Path:
    """CIFAR-10 (5 pickled train batches + test_batch + batches.meta) or CIFAR-100 (train, test,
    meta) python-format folders, as torchvision's CIFAR10/CIFAR100 read them."""
    rng = np.random.default_rng(seed)

    def block(n):
        return rng.integers(0, 256, size=(n, 3072), dtype=np.uint8), rng.integers(0, n_classes, n).tolist()

    root = Path(root)
    if n_classes == 10:
        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True, exist_ok=True)
        per = n_train // 5
        for i in range(1, 6):
            data, labels = block(per)
            _pickle(folder / f"data_batch_{i}", {"data": data, "labels": labels})
        data, labels = block(n_test)
        _pickle(folder / "test_batch", {"data": data, "labels": labels})
        _pickle(folder / "batches.meta", {"label_names": [f"class{i}" for i in range(10)]})
    else:
        folder = root / "cifar-100-python"
        folder.mkdir(parents=True, exist_ok=True)
        for name, n in (("train", n_train), ("test", n_test)):
            data, labels = block(n)
            _pickle(folder / name, {"data": data, "fine_labels": labels})
        _pickle(folder / "meta", {"fine_label_names": [f"class{i}" for i in range(100)]})
    return folder


def _pickle(path: Path, obj: dict) -> None:
    # the real files are Python-2 pickles with byte keys; torchvision reads them with encoding="latin1"
    path.write_bytes(pickle.dumps(obj, protocol=2))


def write_imagefolder(root: Path, classes=("n01440764", "n01443537", "n01484850"), per_class: int = 4,
                      size: int = 40, seed: int = 0) -> Path:
    """An ImageNet-style tree: <root>/imagenet/{train,val}/<wnid>/*.JPEG."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    base = Path(root) / "imagenet"
    for split in ("train", "val"):
        for c in classes:
            d = base / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                arr = rng.integers(0, 256, size=(size, size + 8, 3), dtype=np.uint8)
                Image.fromarray(arr).save(d / f"{c}_{i}.JPEG", format="JPEG")
    return base


def write_planetoid(root: Path, name: str = "CiteSeer", n_train: int = 20, n_all: int = 540, n_test: int = 20,
                    n_feat: int = 8, n_classes: int = 3, degree: float = 3.0, seed: int = 0) -> Path:
    """Planetoid's raw files (kimiyoung/planetoid): <root>/planetoid/<Name>/raw/ind.<name>.{x,tx,allx,y,ty,ally,
    graph,test.index}; pickled scipy CSR features, one-hot label arrays, a dict-of-lists graph (with a
    duplicate edge and a self-loop, as the real files have), test indices one a line, out of order.
    torch-geometric's public split needs 500 validation nodes after the training nodes, hence n_all."""
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    raw = Path(root) / "planetoid" / name / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    n = n_all + n_test
    feats = sp.csr_matrix((rng.random((n, n_feat)) < 0.3).astype(np.float32))
    labels = np.eye(n_classes, dtype=np.int64)[rng.integers(0, n_classes, n)]
    test_index = rng.permutation(np.arange(n_all, n))
    graph = {i: [] for i in range(n)}
    for u, v in rng.integers(0, n, size=(int(n * degree / 2), 2)):
        if u != v:
            graph[int(u)].append(int(v))
            graph[int(v)].append(int(u))
    graph[0] += [0, graph[0][0]] if graph[0] else [0]
    prefix = raw / f"ind.{name.lower()}."
    for key, obj in {"x": feats[:n_train], "allx": feats[:n_all], "tx": feats[test_index],
                     "y": labels[:n_train], "ally": labels[:n_all], "ty": labels[test_index], "graph": graph}.items():
        Path(str(prefix) + key).write_bytes(pickle.dumps(obj, protocol=2))
    Path(str(prefix) + "test.index").write_text("".join(f"{i}\n" for i in test_index))
    return raw


def write_ppi(root: Path, n_feat: int = 5, n_labels: int = 6, seed: int = 0) -> Path:
    """The PPI archive's layout (data.dgl.ai/dataset/ppi.zip): <root>/ppi/raw/{train,valid,test}_{graph.json
    (networkx node-link), feats.npy, labels.npy, graph_id.npy (1-based graph ids per node)}."""
    import json

    import networkx as nx
    from networkx.readwrite import json_graph

    rng = np.random.default_rng(seed)
    raw = Path(root) / "ppi" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for split, n_graphs in (("train", 2), ("valid", 1), ("test", 1)):
        g, ids, start = nx.DiGraph(), [], 0
        for k in range(n_graphs):
            size = 12 + 2 * k
            sub = nx.gnm_random_graph(size, 3 * size, seed=int(rng.integers(1 << 30)))
            g.add_nodes_from(range(start, start + size))
            g.add_edges_from((start + u, start + v) for a, b in sub.edges for u, v in ((a, b), (b, a)))
            ids += [k + 1] * size
            start += size
        (raw / f"{split}_graph.json").write_text(json.dumps(json_graph.node_link_data(g, edges="links")))
        np.save(raw / f"{split}_feats.npy", rng.standard_normal((start, n_feat)).astype(np.float32))
        np.save(raw / f"{split}_labels.npy", (rng.random((start, n_labels)) < 0.3).astype(np.float32))
        np.save(raw / f"{split}_graph_id.npy", np.array(ids, dtype=np.int64))
    return raw


def write_parallel(root: Path, seed: int = 0) -> None:
    """Multi30K's extracted layout (<root>/multi30k/{train,val,test}.{en,de}) and the prepared IWSLT16
    folder (<root>/iwslt16/{train,valid,test}.{de,en}): raw, cased sentences with punctuation, one a line."""
    rng = np.random.default_rng(seed)
    en = ["A man", "Two dogs", "The girl", "A woman", "People"]
    de = ["Ein Mann", "Zwei Hunde", "Das Mädchen", "Eine Frau", "Leute"]
    verbs = [("runs.", "läuft."), ("sits, smiling.", "sitzt, lächelnd."), ("plays outside!", "spielt draußen!")]
    for folder, splits in (("multi30k", ("train", "val", "test")), ("iwslt16", ("train", "valid", "test"))):
        d = Path(root) / folder
        d.mkdir(parents=True, exist_ok=True)
        for split, n in zip(splits, (40, 10, 10)):
            pairs = [(rng.integers(len(en)), rng.integers(len(verbs))) for _ in range(n)]
            (d / f"{split}.en").write_text("".join(f"{en[a]} {verbs[b][0]}\n" for a, b in pairs), encoding="utf-8")
            (d / f"{split}.de").write_text("".join(f"{de[a]} {verbs[b][1]}\n" for a, b in pairs), encoding="utf-8")


def write_all(root: Path) -> None:
    write_parallel(root)
    for name in ("CiteSeer", "Cora", "PubMed"):
        write_planetoid(root, name)
    write_ppi(root)
    write_ptb(root)
    write_cifar(root, 10)
    write_cifar(root, 100)
    write_imagefolder(root)

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


def write_all(root: Path) -> None:
    write_ptb(root)
    write_cifar(root, 10)
    write_cifar(root, 100)
    write_imagefolder(root)

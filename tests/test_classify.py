"""Image-classification data and runner: real on-disk formats (CIFAR pickles, an ImageFolder tree),
batched augmentation against a per-image loop, the schedule by hand, resume, and errors."""
import json
import pickle

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from conftest import run_cli
from fixtures import write_cifar, write_imagefolder
from models.resnet import cifar_resnet18
from runners import image_data
from runners.classify import lr_at
from runners.core import DataMissingError, UserError
from sigterm import sigterm_then_resume

QUIET = ["logger.mode=disabled", "logger.progress=false"]


@pytest.mark.parametrize("n_classes", [10, 100])
def test_cifar_reader_returns_the_pickled_arrays(tmp_path, n_classes):
    folder = write_cifar(tmp_path, n_classes, n_train=50, n_test=20)
    xtr, ytr, xte, yte = image_data.load_cifar(tmp_path, n_classes, verify_md5=False)
    names = [f"data_batch_{i}" for i in range(1, 6)] if n_classes == 10 else ["train"]
    key = "labels" if n_classes == 10 else "fine_labels"
    raw = [pickle.loads((folder / n).read_bytes()) for n in names]
    data = np.concatenate([r["data"] for r in raw]).reshape(-1, 3, 32, 32)   # CIFAR rows are CHW planes
    assert xtr.dtype == torch.uint8 and torch.equal(xtr, torch.from_numpy(data))
    assert ytr.tolist() == sum((r[key] for r in raw), [])
    assert xte.shape == (20, 3, 32, 32) and len(yte) == 20


def test_cifar_errors_missing_and_md5(tmp_path):
    with pytest.raises(DataMissingError, match=r"cifar-10-batches-py/data_batch_1 is missing; download https://www.cs.toronto.edu"):
        image_data.load_cifar(tmp_path, 10)
    write_cifar(tmp_path, 10)
    with pytest.raises(UserError, match=r"MD5 mismatch for .*data_batch_1: expected c99cafc152244af753f735de768cd75f"):
        image_data.load_cifar(tmp_path, 10, verify_md5=True)
    with pytest.raises(DataMissingError, match=r"ImageNet not found: .*imagenet/train is missing"):
        image_data.imagenet_datasets(tmp_path / "nothing")


def test_batched_augmentation_matches_per_image_loop():
    x = torch.randint(0, 256, (9, 3, 32, 32), dtype=torch.uint8)
    got = image_data.augment_cifar(x, 4, True, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)                 # the same draws, in the same order
    oy, ox = torch.randint(0, 9, (9,), generator=g), torch.randint(0, 9, (9,), generator=g)
    flips = torch.rand(9, generator=g) < 0.5
    for b in range(9):
        padded = torch.zeros(3, 40, 40, dtype=torch.uint8)
        padded[:, 4:36, 4:36] = x[b]
        crop = padded[:, oy[b]:oy[b] + 32, ox[b]:ox[b] + 32]
        if flips[b]:
            crop = crop.flip(2)
        assert torch.equal(got[b], crop)
    assert not torch.equal(got, x)


def test_normalize_matches_formula():
    x = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    y = image_data.normalize(x, (0.1, 0.2, 0.3), (0.5, 0.6, 0.7))
    torch.testing.assert_close(y[:, 1], (x[:, 1].float() / 255 - 0.2) / 0.6)


def test_schedule_by_hand():
    tc = OmegaConf.create({"warmup_epochs": 5, "lr_milestones": [30, 48, 58], "lr_gamma": 0.1})
    assert lr_at(tc, 0.1, 0, 0.5) == pytest.approx(0.01)        # 0.5 of 5 warm-up epochs
    assert lr_at(tc, 0.1, 10, 0.0) == pytest.approx(0.1)
    assert lr_at(tc, 0.1, 30, 0.0) == pytest.approx(0.01)
    assert lr_at(tc, 0.1, 59, 0.9) == pytest.approx(1e-4)
    tc = OmegaConf.create({"warmup_epochs": 0, "lr_milestones": [60, 120, 160], "lr_gamma": 0.2})
    assert lr_at(tc, 0.1, 160, 0.0) == pytest.approx(0.1 * 0.2 ** 3)


def test_cifar_resnet18_stem():
    m = cifar_resnet18(100)
    assert m.conv1.kernel_size == (3, 3) and m.conv1.stride == (1, 1) and isinstance(m.maxpool, torch.nn.Identity)
    assert m(torch.zeros(2, 3, 32, 32)).shape == (2, 100)
    assert sum(p.numel() for p in m.parameters()) == 11_220_132   # the CIFAR-100 ResNet-18's 11.2M


def test_cifar_run_learns_a_separable_fixture(tmp_path):
    """Labels are a function of the mean brightness, so a working pipeline fits them quickly. (Pixel noise keeps
    the images from being constant: with constant images the batch-norm running statistics after 20 steps were
    so far from the batch statistics that evaluation depended on the thread count.)"""
    write_cifar(tmp_path / "data", 10, n_train=100, n_test=40)
    folder = tmp_path / "data" / "cifar-10-batches-py"
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        d = pickle.loads((folder / name).read_bytes())
        labels = np.arange(len(d["labels"])) % 2
        base = np.where(labels[:, None] == 1, 170, 70)
        d["data"] = (base + rng.integers(-40, 41, size=(len(labels), 3072))).astype(np.uint8)
        d["labels"] = labels.tolist()
        (folder / name).write_bytes(pickle.dumps(d, protocol=2))
    run_cli("experiment=lookahead_cifar10", "smoke=true", f"data.root={tmp_path}/data", "data.subset=null",
            "train.epochs=2", "train.batch_size=10", f"hydra.run.dir={tmp_path}/run", *QUIET, check=True)
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert s["test/acc"] == 1.0 and s["train/steps"] == 20 and s["optimizer"] == "lookahead_sgd"


def test_imagenet_folder_run(tmp_path):
    write_imagefolder(tmp_path / "data")
    run_cli("experiment=lookahead_imagenet", "smoke=true", f"data.root={tmp_path}/data", "optimizer=sgd",
            f"hydra.run.dir={tmp_path}/run", *QUIET, check=True)
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert s["dataset"] == "imagenet" and s["train/steps"] == 6 and 0 <= s["test/acc"] <= 1 and s["test/top5"] == 1.0


def test_sigterm_mid_epoch_then_resume_matches_uninterrupted(tmp_path):
    write_cifar(tmp_path / "data", 10, n_train=40)
    args = ["experiment=lookahead_cifar10", "smoke=true", "data.subset=null", f"data.root={tmp_path}/data",
            "train.epochs=2", "train.log_every=1", "checkpoint.every=1000", "threads=1", *QUIET]
    full, resumed, stopped = sigterm_then_resume(tmp_path, args, total_key="train/steps")
    assert stopped["batch"] > 0
    for key in ["test/acc", "test/loss", "test/acc_best", "train/steps"]:
        assert resumed[key] == full[key], key


def test_torchrun_two_processes_keep_identical_weights(tmp_path):
    """DistributedDataParallel on CPU (gloo): each rank sees half of every global batch, gradients are
    averaged, so both ranks end with the same parameters; rank 0 writes the summary."""
    import subprocess
    import sys

    from conftest import ROOT
    write_cifar(tmp_path / "data", 10, n_train=50)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(ROOT / "run.py"),
           "experiment=lookahead_cifar10", "smoke=true", f"data.root={tmp_path}/data", f"hydra.run.dir={tmp_path}/run",
           "train.batch_size=8", "threads=1", *QUIET]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert s["world_size"] == 2 and s["train/steps"] == 4           # 16 images / 2 ranks / 4 per rank x 2 epochs
    a = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "run" / "rank1" / "checkpoint.pt", weights_only=True)["model"]
    for k in a:
        if "running" not in k and "num_batches" not in k:           # BN running stats stay per rank
            assert torch.equal(a[k], b[k]), k
    assert any(not torch.equal(a[k], b[k]) for k in a if "running_mean" in k)   # ranks saw different images

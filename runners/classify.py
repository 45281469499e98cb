"""Image classification (Lookahead paper: CIFAR-10/100 ResNet-18, ImageNet ResNet-50).

Epoch-based training with per-iteration learning rates (linear warm-up, then a step schedule given
in epochs), evaluation on the test/val set after every epoch on the optimizer's evaluation weights
(Lookahead's slow weights, Polyak's average). The batch order of epoch e is a pure function of
(seed, e), and CIFAR's augmentation of batch i a pure function of (seed, e, i), so a run resumed from
a mid-epoch checkpoint sees the same data.

GPU path: mixed precision (fp16 autocast + GradScaler) and channels_last, both on by default on CUDA
(``train.amp``/``train.channels_last``: auto | true | false); pinned memory for ImageNet loaders.
Multi-GPU: launch with torchrun, one process per GPU (DistributedDataParallel; NCCL on CUDA, gloo on CPU):

    torchrun --nproc_per_node 8 run.py experiment=lookahead_imagenet hydra.run.dir=runs/in1k

``train.batch_size`` is the global batch, split evenly over the processes; rank 0 logs, the other
ranks write their checkpoints under ``<run dir>/rank<r>/`` with logging off.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from omegaconf import open_dict

from algorithms.lookahead import Lookahead, Polyak, eval_weights
from models.resnet import build as build_classifier
from runners import image_data
from runners.core import Checkpointer, Tracker, UserError, check_finite, make_optimizer, set_rng_state
from runners.text_data import resolve_root


def _auto(flag, device: torch.device) -> bool:
    return device.type == "cuda" if flag in ("auto", None) else bool(flag)


def lr_at(tc, base_lr: float, epoch: int, frac: float) -> float:
    """Learning rate at fractional epoch ``epoch + frac``: linear warm-up, then x gamma per milestone."""
    t = epoch + frac
    if tc.warmup_epochs and t < tc.warmup_epochs:
        return base_lr * t / tc.warmup_epochs
    return base_lr * tc.lr_gamma ** sum(epoch >= m for m in tc.lr_milestones)


def setup_distributed(device: torch.device) -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, device
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


class Data:
    """Train/eval batches for CIFAR (tensors on the device) or ImageNet (ImageFolder + DataLoader)."""

    def __init__(self, cfg, device, project_root: Path, rank: int, world: int):
        dc, tc = cfg.data, cfg.train
        self.device, self.rank, self.world, self.seed = device, rank, world, cfg.seed
        if tc.batch_size % world:
            raise UserError(f"train.batch_size={tc.batch_size} is not divisible by the {world} processes")
        self.bs = tc.batch_size // world
        self.eval_bs = tc.eval_batch_size
        root = resolve_root(dc.root, project_root)
        self.kind = dc.name
        if dc.name in ("cifar10", "cifar100"):
            self.num_classes = 10 if dc.name == "cifar10" else 100
            xtr, ytr, xte, yte = image_data.load_cifar(root, self.num_classes, dc.download, dc.verify_md5)
            if dc.get("subset"):   # a fixed slice for quick runs
                xtr, ytr = xtr[:dc.subset], ytr[:dc.subset]
            pin = device.type == "cuda"
            self.xtr, self.ytr = xtr.to(device, non_blocking=pin), ytr.to(device)
            self.xte, self.yte = xte.to(device), yte.to(device)
            self.n_train = len(ytr)
            self.mean, self.std = image_data.CIFAR_MEAN[self.num_classes], image_data.CIFAR_STD[self.num_classes]
            self.pad, self.flip = dc.pad, dc.flip
        elif dc.name == "imagenet":
            self.train_set, self.val_set = image_data.imagenet_datasets(root, dc.crop, dc.resize)
            self.num_classes = len(self.train_set.classes)
            if dc.get("subset"):
                self.train_set = torch.utils.data.Subset(self.train_set, range(min(dc.subset, len(self.train_set))))
            self.n_train = len(self.train_set)
            self.workers = dc.workers
        else:
            raise UserError(f"data.name must be cifar10, cifar100 or imagenet, got '{dc.name}'")
        self.steps_per_epoch = (self.n_train // world) // self.bs
        if self.steps_per_epoch == 0:
            raise UserError(f"{self.n_train} training images are fewer than one batch of {tc.batch_size}")

    def _order(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n_train, generator=g)[self.rank::self.world]

    def train_batches(self, epoch: int, start: int):
        """Yield (i, x, y) for batches start..steps_per_epoch-1 of ``epoch``; x is float, normalised."""
        order = self._order(epoch)[: self.steps_per_epoch * self.bs]
        if self.kind == "imagenet":
            loader = torch.utils.data.DataLoader(
                self.train_set, batch_size=self.bs, sampler=order[start * self.bs:].tolist(),
                num_workers=self.workers, pin_memory=self.device.type == "cuda", drop_last=True)
            for i, (x, y) in enumerate(loader, start):
                yield i, x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            return
        for i in range(start, self.steps_per_epoch):
            idx = order[i * self.bs:(i + 1) * self.bs].to(self.device)
            g = torch.Generator().manual_seed(((self.seed * 1_000_003 + epoch) * 1_000_003 + i) * 256 + self.rank)
            x = image_data.augment_cifar(self.xtr[idx], self.pad, self.flip, g)
            yield i, image_data.normalize(x, self.mean, self.std), self.ytr[idx]

    def eval_batches(self):
        if self.kind == "imagenet":
            idx = list(range(len(self.val_set)))[self.rank::self.world]
            loader = torch.utils.data.DataLoader(self.val_set, batch_size=self.eval_bs, sampler=idx,
                                                 num_workers=self.workers, pin_memory=self.device.type == "cuda")
            for x, y in loader:
                yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            return
        idx = torch.arange(len(self.yte), device=self.device)[self.rank::self.world]
        for j in range(0, len(idx), self.eval_bs):
            b = idx[j:j + self.eval_bs]
            yield image_data.normalize(self.xte[b], self.mean, self.std), self.yte[b]


@torch.inference_mode()
def evaluate(model, data: Data, amp: bool, channels_last: bool) -> dict[str, float]:
    was = model.training
    model.eval()
    dev = data.device
    sums = torch.zeros(4, dtype=torch.float64, device=dev)   # loss, top1, top5, n
    for x, y in data.eval_batches():
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(dev.type, dtype=torch.float16, enabled=amp):
            logits = model(x)
        logits = logits.float()
        top = logits.topk(min(5, logits.size(1)), dim=1).indices
        hit = top == y[:, None]
        sums += torch.stack([F.cross_entropy(logits, y, reduction="sum").double(), hit[:, 0].sum().double(),
                             hit.any(1).sum().double(), torch.tensor(float(len(y)), device=dev, dtype=torch.float64)])
    if dist.is_initialized():
        dist.all_reduce(sums)
    model.train(was)
    loss, top1, top5, n = sums.tolist()
    return {"loss": loss / n, "acc": top1 / n, "top5": top5 / n, "error": 1 - top1 / n}


def _bn_layers(model):
    return [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def recompute_bn(model, data, epoch: int, channels_last: bool, batches: int | None) -> dict:
    """torch's ``swa_utils.update_bn``: BatchNorm running statistics recomputed, as a cumulative average over
    training batches, for the weights now in the model (Polyak's average or Lookahead's slow weights, whose
    statistics differ from the fast iterate's). Returns the previous buffers, for ``restore_bn``."""
    bns = _bn_layers(model)
    saved = {id(m): (m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone(), m.momentum)
             for m in bns}
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    was = model.training
    model.train()
    for n, (_, x, _) in enumerate(data.train_batches(epoch, 0)):
        if batches is not None and n >= batches:
            break
        model(x.contiguous(memory_format=torch.channels_last) if channels_last else x)
    model.train(was)
    for m in bns:
        m.momentum = saved[id(m)][3]
    return saved


@torch.no_grad()
def restore_bn(model, saved: dict) -> None:
    for m in _bn_layers(model):
        mean, var, n, _ = saved[id(m)]
        m.running_mean.copy_(mean), m.running_var.copy_(var), m.num_batches_tracked.copy_(n)


def evaluate_weights(model, opt, data, amp, channels_last, tc, epoch: int) -> dict:
    """Test metrics of the optimizer's evaluation weights (Lookahead's slow, Polyak's average), with BatchNorm
    statistics recomputed for those weights when ``train.update_bn`` asks for it."""
    recompute = {"none": False, "polyak": isinstance(opt, Polyak) and opt.count > 0,
                 "all": isinstance(opt, (Polyak, Lookahead))}[tc.update_bn]
    with eval_weights(opt):
        saved = recompute_bn(model, data, epoch, channels_last, tc.update_bn_batches) if recompute else None
        out = evaluate(model, data, amp, channels_last)
        if saved is not None:
            restore_bn(model, saved)
    return out


def train(cfg, run_dir: Path, device: torch.device, project_root: Path) -> dict:
    tc = cfg.train
    rank, world, device = setup_distributed(device)
    if rank > 0:   # only rank 0 logs; the others keep their own checkpoints for a resume
        run_dir = run_dir / f"rank{rank}"
        run_dir.mkdir(parents=True, exist_ok=True)
        with open_dict(cfg):
            cfg.logger.mode, cfg.logger.progress = "disabled", False
    data = Data(cfg, device, project_root, rank, world)
    amp, channels_last = _auto(tc.amp, device), _auto(tc.channels_last, device)
    if amp and device.type != "cuda":
        raise UserError("train.amp=true needs a CUDA device (fp16 autocast); use train.amp=auto on CPU")

    model = build_classifier(cfg.model.name, data.num_classes).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = make_optimizer(model.parameters(), cfg)
    base_lr = opt.param_groups[0]["lr"]
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    ckpt = Checkpointer(run_dir, cfg.checkpoint.every)
    epoch, batch, step, wandb_id = 0, 0, 0, None
    best = {"acc": -1.0, "epoch": 0}
    if cfg.resume:
        state = ckpt.load(map_location=device)
        if state is not None:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            scaler.load_state_dict(state["scaler"])
            epoch, batch, step, best, wandb_id = state["epoch"], state["batch"], state["step"], state["best"], state["wandb_id"]
            set_rng_state(state["rng"])
        elif cfg.resume != "auto":
            raise UserError(f"resume: no checkpoint at {ckpt.path}")
    total_steps = tc.epochs * data.steps_per_epoch
    tracker = Tracker(cfg, run_dir, total_steps=total_steps, start_step=step, wandb_id=wandb_id, ckpt=ckpt)

    def snapshot():
        return {"model": model.state_dict(), "optimizer": opt.state_dict(), "scaler": scaler.state_dict(),
                "epoch": epoch, "batch": batch, "step": step, "best": best, "wandb_id": tracker.wandb_id}

    if tc.update_bn not in ("none", "polyak", "all"):
        raise UserError(f"train.update_bn must be none, polyak or all, got '{tc.update_bn}'")
    failed = True
    t0, seen0 = time.perf_counter(), step
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device)
    n_log, test = 0, None
    try:
        with ckpt:
            while epoch < tc.epochs:
                if epoch >= tc.polyak_start_epoch and hasattr(opt, "start_averaging"):
                    opt.start_averaging()      # Polyak (start: null): from this epoch on
                for i, x, y in data.train_batches(epoch, batch):
                    lr = lr_at(tc, base_lr, epoch, i / data.steps_per_epoch)
                    for group in opt.param_groups:
                        group["lr"] = lr
                    if channels_last:
                        x = x.contiguous(memory_format=torch.channels_last)
                    with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                        logits = net(x)
                        loss = F.cross_entropy(logits.float(), y)
                    check_finite(loss, step + 1, ckpt)
                    opt.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    scaler.step(opt)
                    scaler.update()
                    batch, step = i + 1, step + 1
                    loss_sum += loss.detach()
                    correct += (logits.detach().argmax(1) == y).sum()
                    n_log += 1
                    if step % tc.log_every == 0:
                        elapsed = time.perf_counter() - t0
                        tracker.log({"train/loss": loss_sum.item() / n_log,
                                     "train/acc": correct.item() / (n_log * data.bs), "train/lr": lr,
                                     "epoch": epoch + batch / data.steps_per_epoch,
                                     "perf/images_per_s": (step - seen0) * data.bs * world / max(elapsed, 1e-9)}, step)
                        loss_sum.zero_(), correct.zero_()
                        n_log = 0
                    ckpt.after_step(snapshot, step)
                    tracker.advance(step)

                test = evaluate_weights(model, opt, data, amp, channels_last, tc, epoch)
                if test["acc"] > best["acc"]:
                    best = {"acc": test["acc"], "epoch": epoch + 1}
                tracker.log({"test/loss": test["loss"], "test/acc": test["acc"], "test/top5": test["top5"],
                             "test/acc_best": best["acc"], "epoch": epoch + 1}, step)
                epoch, batch = epoch + 1, 0
                ckpt.save(snapshot(), step)
                if ckpt.should_stop():
                    ckpt.interrupt(snapshot(), step)

        if test is None:   # resumed a finished run: evaluate the final weights once more
            test = evaluate_weights(model, opt, data, amp, channels_last, tc, epoch)
        summary = tracker.write_summary({
            "test/error": test["error"], "test/acc": test["acc"], "test/top5": test["top5"], "test/loss": test["loss"],
            "test/acc_best": best["acc"], "best_epoch": best["epoch"], "train/epochs": epoch, "train/steps": step,
            "optimizer": cfg.optimizer.name, "lr": base_lr, "seed": cfg.seed, "device": str(device),
            "world_size": world, "amp": amp, "channels_last": channels_last, "model": cfg.model.name,
            "dataset": cfg.data.name, "n_params": sum(p.numel() for p in model.parameters()),
        })
        failed = False
        return summary
    finally:
        tracker.close(failed=failed)
        if dist.is_initialized():
            dist.destroy_process_group()

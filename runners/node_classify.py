"""Supervised GRevNet vs GNN (Liu et al. 2019, section 4): node classification with the same attention
message-passing function, GRevNet trained by reversible backprop (node states recomputed from the
output, activation memory flat in the number of steps).

* Cora / CiteSeer / PubMed: torch-geometric's ``Planetoid`` with the public split (transductive,
  softmax cross-entropy, accuracy). Test accuracy is reported at the best validation accuracy.
* PPI: torch-geometric's ``PPI`` (inductive, 20/2/2 graphs, 121 labels, sigmoid BCE, micro-F1).

The peak memory of one training step (profiler on CPU, ``max_memory_allocated`` on GPU) is measured
once at the end and reported as ``mem/step_peak_bytes``.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F

from models.gnf import NodeClassifier
from runners.core import Checkpointer, DataMissingError, Tracker, UserError, check_finite, peak_memory_bytes
from runners.graph_data import PPI_URL, load_planetoid

PPI_FILES = [f"{s}_{f}" for s in ("train", "valid", "test") for f in ("feats.npy", "graph_id.npy", "graph.json", "labels.npy")]


class Data:
    def __init__(self, dc, device, project_root: Path):
        root = Path(dc.root) if Path(dc.root).is_absolute() else project_root / dc.root
        cache = Path(dc.cache) if Path(dc.cache).is_absolute() else project_root / dc.cache
        self.name = dc.name
        if dc.name in ("Cora", "CiteSeer", "PubMed"):
            g = load_planetoid(root / "planetoid", dc.name, cache / "planetoid", dc.download, dc.verify_md5)
            if dc.get("normalize_features", True):   # row-normalised bag-of-words, as GCN/GAT preprocess
                g.x = g.x / g.x.sum(1, keepdim=True).clamp_min(1)
            self.multilabel = False
            self.n_classes = int(g.y.max()) + 1
            self.in_dim = g.num_features
            self.train = [g.to(device)]
            self.val = self.test = self.train
        elif dc.name == "PPI":
            from torch_geometric.datasets import PPI

            raw = root / "ppi" / "raw"
            missing = [f for f in PPI_FILES if not (raw / f).exists()]
            if missing and not dc.download:
                raise DataMissingError(f"PPI raw files missing in {raw} (e.g. {missing[0]}); offline: unzip "
                                       f"{PPI_URL} there, or set data.download=true")
            sets = [PPI(str(root / "ppi"), split=s) for s in ("train", "val", "test")]
            self.multilabel = True
            self.n_classes, self.in_dim = sets[0].num_classes, sets[0].num_features
            self.train, self.val, self.test = ([d.to(device) for d in ds] for ds in sets)
        else:
            raise UserError(f"unknown node-classification dataset '{dc.name}' (Cora | CiteSeer | PubMed | PPI)")

    def mask(self, g, split: str):
        return getattr(g, f"{split}_mask", None) if not self.multilabel else None


def loss_on(model, data: Data, g, split: str):
    out = model(g.x, g.edge_index)
    if data.multilabel:
        return F.binary_cross_entropy_with_logits(out, g.y), out
    m = data.mask(g, split)
    return F.cross_entropy(out[m], g.y[m]), out


@torch.no_grad()
def scores(model, data: Data) -> dict[str, float]:
    """Accuracy (Planetoid: one forward pass, every mask) or micro-F1 (PPI) of the val and test splits."""
    model.eval()
    if not data.multilabel:
        g = data.train[0]
        pred = model(g.x, g.edge_index).argmax(-1)
        return {s: (pred[m] == g.y[m]).float().mean().item() for s in ("val", "test") for m in [data.mask(g, s)]}
    out = {}
    for split, graphs in (("val", data.val), ("test", data.test)):
        tp = fp = fn = 0
        for g in graphs:
            pred, y = model(g.x, g.edge_index) > 0, g.y > 0.5
            tp += (pred & y).sum().item()
            fp += (pred & ~y).sum().item()
            fn += (~pred & y).sum().item()
        out[split] = 2 * tp / max(2 * tp + fp + fn, 1)
    return out


def train(cfg, run_dir: Path, device: torch.device, project_root: Path) -> dict:
    tc, mc = cfg.train, cfg.model
    data = Data(cfg.data, device, project_root)
    try:   # the model's own checks (an even dim for the couplings, heads dividing hidden) as one line
        model = NodeClassifier(data.in_dim, data.n_classes, mc.dim, mc.steps, mc.kind, mc.hidden, mc.heads,
                               mc.dropout, mc.reversible, mc.scale_bound, mc.identity_init).to(device)
    except ValueError as e:
        raise UserError(f"model: {e}") from None
    opt = torch.optim.Adam(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    ckpt = Checkpointer(run_dir, cfg.checkpoint.every)
    epoch, step, wandb_id = 0, 0, None
    best = {"val": -1.0, "test": 0.0, "epoch": 0}
    state = ckpt.resume_state(cfg.resume, device)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        epoch, step, best, wandb_id = state["epoch"], state["step"], state["best"], state["wandb_id"]
    tracker = Tracker(cfg, run_dir, total_steps=tc.epochs * len(data.train), start_step=step, wandb_id=wandb_id, ckpt=ckpt)

    def snapshot():
        return {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch, "step": step,
                "best": best, "wandb_id": tracker.wandb_id}

    def one_step(g):
        model.train()
        loss, _ = loss_on(model, data, g, "train")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        return loss

    failed = True
    try:
        with ckpt:
            t0 = time.perf_counter()
            while epoch < tc.epochs:
                for g in data.train:
                    loss = one_step(g)
                    check_finite(loss, step + 1, ckpt)
                    opt.step()
                    step += 1
                epoch += 1
                if epoch % tc.eval_every == 0 or epoch == tc.epochs:
                    sc = scores(model, data)
                    val, test = sc["val"], sc["test"]
                    if val > best["val"]:
                        best = {"val": val, "test": test, "epoch": epoch}
                    tracker.log({"train/loss": loss.item(), "val/score": val, "test/score": test,
                                 "test/score_at_best_val": best["test"], "epoch": epoch,
                                 "perf/epochs_per_s": tc.eval_every / max(time.perf_counter() - t0, 1e-9)}, step)
                    t0 = time.perf_counter()
                ckpt.after_step(snapshot, step)
                tracker.advance(step)
            ckpt.save(snapshot(), step)

        model.train()
        peak = peak_memory_bytes(lambda: one_step(data.train[0]), device)
        opt.zero_grad(set_to_none=True)
        summary = tracker.write_summary({
            "test/score": best["test"], "test/error": 1.0 - best["test"], "val/score_best": best["val"],
            "best_epoch": best["epoch"], "metric": "micro_f1" if data.multilabel else "accuracy",
            "mem/step_peak_bytes": peak, "train/epochs": epoch, "train/steps": step, "kind": mc.kind,
            "steps": mc.steps, "reversible": bool(mc.reversible and mc.kind == "grevnet"), "seed": cfg.seed,
            "dataset": data.name, "device": str(device), "n_params": sum(p.numel() for p in model.parameters()),
        })
        failed = False
        return summary
    finally:
        tracker.close(failed=failed)

"""Training loop for the associative retrieval task (fast weights, IRNN, LSTM, A-LSTM).

Adam on mini-batches of 128 with gradient-norm clipping; validation error every ``train.eval_every``
steps; the reported test error is that of the parameters with the best validation error.
The batch order is a pure function of (seed, step), so a resumed run replays exactly.
"""
from __future__ import annotations

import copy
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from models.fast_weights import build_retrieval_model
from runners import retrieval_data
from runners.core import Checkpointer, Tracker, UserError, check_finite, set_rng_state


class EpochSampler:
    """Shuffled epochs without replacement; batch ``step`` is a pure function of (seed, step)."""

    def __init__(self, n: int, batch_size: int, seed: int):
        if batch_size > n:
            raise UserError(f"train.batch_size={batch_size} exceeds the {n} training sequences")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.per_epoch = n // batch_size
        self._epoch, self._perm = -1, None

    def indices(self, step: int) -> torch.Tensor:
        epoch, i = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=g)
        return self._perm[i * self.batch_size:(i + 1) * self.batch_size]


@torch.inference_mode()
def evaluate(model, x, y, batch_size: int = 2000) -> dict[str, float]:
    model.eval()
    loss, wrong = 0.0, 0
    for i in range(0, len(x), batch_size):
        logits = model(x[i:i + batch_size])
        loss += F.cross_entropy(logits, y[i:i + batch_size], reduction="sum").item()
        wrong += (logits.argmax(1) != y[i:i + batch_size]).sum().item()
    model.train()
    return {"loss": loss / len(x), "error": wrong / len(x)}


def build_model(cfg):
    m = dict(cfg.model)
    name = m.pop("name")
    return build_retrieval_model(name, len(retrieval_data.VOCAB), retrieval_data.N_CLASSES, **m)


def train(cfg, run_dir: Path, device: torch.device, project_root: Path) -> dict:
    tc = cfg.train
    data = retrieval_data.load(cfg.data, project_root)
    data = {k: (x.to(device), y.to(device)) for k, (x, y) in data.items()}
    (xtr, ytr), (xva, yva), (xte, yte) = data["train"], data["valid"], data["test"]

    model = build_model(cfg).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=tc.lr, betas=tuple(tc.betas), eps=tc.eps)
    sampler = EpochSampler(len(xtr), tc.batch_size, cfg.seed)
    if tc.schedule not in ("constant", "cosine"):
        raise UserError(f"train.schedule must be constant or cosine, got '{tc.schedule}'")

    ckpt = Checkpointer(run_dir, cfg.checkpoint.every)
    step, best = 0, {"error": float("inf"), "step": 0, "state": copy.deepcopy(model.state_dict())}
    wandb_id = None
    if cfg.resume:
        state = ckpt.load(map_location=device)
        if state is not None:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            step, best, wandb_id = state["step"], state["best"], state.get("wandb_id")
            set_rng_state(state["rng"])
            for group in opt.param_groups:  # an lr given on the resuming command line wins
                group["lr"] = tc.lr
        elif cfg.resume != "auto":
            raise UserError(f"resume: no checkpoint at {ckpt.path}")

    tracker = Tracker(cfg, run_dir, total_steps=tc.steps, start_step=step, wandb_id=wandb_id, ckpt=ckpt)

    def snapshot():
        return {"model": model.state_dict(), "optimizer": opt.state_dict(), "best": best,
                "wandb_id": tracker.wandb_id}

    failed = True
    t0, seen0 = time.perf_counter(), step
    loss_sum = torch.zeros((), device=device)
    wrong_sum = torch.zeros((), device=device)
    try:
        with ckpt:
            while step < tc.steps:
                if tc.schedule == "cosine":  # a pure function of the step, so resume needs no state
                    for group in opt.param_groups:
                        group["lr"] = 0.5 * tc.lr * (1 + math.cos(math.pi * step / tc.steps))
                idx = sampler.indices(step).to(device)
                x, y = xtr[idx], ytr[idx]
                logits = model(x)
                loss = F.cross_entropy(logits, y)
                check_finite(loss, step + 1, ckpt)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                # train.clip=null: no clipping (as in the other runners); the norm is still logged
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), tc.clip or float("inf"))
                opt.step()
                step += 1
                loss_sum += loss.detach()
                wrong_sum += (logits.detach().argmax(1) != y).sum()

                if step % tc.log_every == 0 or step == tc.steps:
                    n = tc.log_every if step % tc.log_every == 0 else step % tc.log_every
                    elapsed = time.perf_counter() - t0
                    tracker.log({"train/loss": loss_sum.item() / n,
                                 "train/error": wrong_sum.item() / (n * tc.batch_size),
                                 "train/grad_norm": grad_norm.item(),
                                 "perf/seqs_per_s": (step - seen0) * tc.batch_size / max(elapsed, 1e-9)}, step)
                    loss_sum.zero_(), wrong_sum.zero_()
                if step % tc.eval_every == 0 or step == tc.steps:
                    val = evaluate(model, xva, yva)
                    if val["error"] < best["error"]:
                        best = {"error": val["error"], "step": step, "state": copy.deepcopy(model.state_dict())}
                    tracker.log({"val/loss": val["loss"], "val/error": val["error"],
                                 "val/error_best": best["error"]}, step)
                if ckpt.due(step) or step == tc.steps:
                    ckpt.save(snapshot(), step)
                if ckpt.should_stop():
                    ckpt.interrupt(snapshot(), step)
                tracker.advance(step)

        final_val = evaluate(model, xva, yva)
        final_test = evaluate(model, xte, yte)
        model.load_state_dict(best["state"])
        test = evaluate(model, xte, yte)
        summary = tracker.write_summary({
            "test/error": test["error"], "test/loss": test["loss"],
            "val/error_best": best["error"], "best_step": best["step"],
            "val/error_final": final_val["error"], "test/error_final": final_test["error"],
            "train/steps": step, "n_params": sum(p.numel() for p in model.parameters()),
            "model": cfg.model.name, "hidden_size": cfg.model.hidden_size, "seed": cfg.seed,
            "lr": tc.lr, "device": str(device),
        })
        failed = False
        return summary
    finally:
        tracker.close(failed=failed)

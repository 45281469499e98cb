"""Word-level language modelling on PTB with an AWD-LSTM-style model (Lookahead and RevRNN papers).

Truncated BPTT over batchified streams with the hidden state carried across segments (detached);
AWD-LSTM's variable segment length (``bptt`` with probability 0.95, else ``bptt/2``, then
N(., 5), at least 5 tokens) with the learning rate scaled by ``seq_len / bptt``; gradient-norm
clipping; AR/TAR penalties. Validation perplexity after every epoch, on the optimizer's evaluation
weights (Lookahead's slow weights, Polyak's average); the test perplexity is that of the weights with
the best validation perplexity. Checkpoints (periodic and on SIGTERM) store the position inside the
epoch and the carried hidden state, so a resumed run continues exactly.
"""
from __future__ import annotations

import copy
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from algorithms import reversible_bptt
from algorithms.lookahead import Lookahead, eval_weights
from models.awd_lstm import AWDLanguageModel
from models.revrnn import FixedPointOverflow
from runners import text_data
from runners.core import Checkpointer, Tracker, UserError, check_finite, make_optimizer, set_rng_state


def perplexity(loss: float) -> float:
    """exp(loss), capped at exp(50): a diverged run (loss in the hundreds) overflowed math.exp and lost its summary
    to a traceback; the loss itself is recorded beside every perplexity."""
    return math.exp(min(loss, 50.0))


def build_model(cfg, vocab_size: int) -> AWDLanguageModel:
    m = OmegaConf.to_container(cfg.model, resolve=True)
    m.pop("name", None)
    try:
        return AWDLanguageModel(vocab_size, **m)
    except ValueError as e:
        raise UserError(str(e)) from None


@torch.inference_mode()
def evaluate(model, source: torch.Tensor, bptt: int) -> float:
    """Mean cross-entropy per token over a batchified stream, hidden state carried throughout."""
    was_training = model.training
    model.eval()
    state = model.init_state(source.size(1))
    total, count = 0.0, 0
    for i in range(0, len(source) - 1, bptt):
        x, y = text_data.get_batch(source, i, bptt)
        logits, state, _ = model(x, state)
        total += F.cross_entropy(logits.view(-1, logits.size(-1)), y.reshape(-1), reduction="sum").item()
        count += y.numel()
    model.train(was_training)
    return total / count


def segment_length(bptt: int, variable: bool, rng: np.random.Generator) -> int:
    if not variable:
        return bptt
    base = bptt if rng.random() < 0.95 else bptt / 2.0
    return max(5, int(rng.normal(base, 5)))


def epoch_lr(tc, base_lr: float, epoch: int, plateau_scale: float = 1.0) -> float:
    if tc.lr_schedule == "constant":
        return base_lr
    if tc.lr_schedule in ("plateau", "nonmono"):   # decayed by ``lr_decay_due`` after validations
        return base_lr * plateau_scale
    if tc.lr_schedule == "step":
        return base_lr * tc.lr_gamma ** sum(epoch >= m for m in tc.lr_milestones)
    raise UserError(f"train.lr_schedule must be constant, step, plateau or nonmono, got '{tc.lr_schedule}'")


def lr_decay_due(tc, val_history: list[float], bad_epochs: int) -> tuple[bool, int]:
    """After a validation pass (``val_history`` ends with it): is the learning rate cut now, and the new
    count of consecutive epochs without a new best.

    ``plateau``: x ``lr_gamma`` after ``lr_patience`` consecutive epochs without a new best validation loss,
    then the count restarts (the Lookahead paper's PTB rule: halve after 15 epochs without improvement).
    ``nonmono``: x ``lr_gamma`` whenever the latest validation loss is worse than the best of all but the last
    ``lr_nonmono`` epochs (AWD-LSTM's non-monotone trigger, as the reversible-RNN authors' code uses it).
    """
    *before, latest = val_history
    if tc.lr_schedule == "plateau":
        bad = 0 if not before or latest < min(before) else bad_epochs + 1
        return (True, 0) if bad >= tc.lr_patience else (False, bad)
    if tc.lr_schedule == "nonmono":
        n = tc.lr_nonmono
        return len(before) > n and latest > min(before[:-n]), 0
    return False, 0


def stopped_by_lr(tc, lr: float) -> bool:
    """``train.lr_min``: training ends once a decayed learning rate falls below it (the reversible-RNN
    authors stop at lr < 0.01)."""
    return tc.lr_min is not None and lr < tc.lr_min


def train(cfg, run_dir: Path, device: torch.device, project_root: Path) -> dict:
    tc = cfg.train
    corpus = text_data.load(cfg.data, project_root)
    train_data = text_data.batchify(corpus.ids["train"], tc.batch_size).to(device)
    val_data = text_data.batchify(corpus.ids["valid"], tc.eval_batch_size).to(device)
    test_data = text_data.batchify(corpus.ids["test"], tc.test_batch_size).to(device)

    model = build_model(cfg, len(corpus)).to(device)
    opt = make_optimizer(model.parameters(), cfg)
    base_lr = opt.param_groups[0]["lr"]
    rng = np.random.default_rng(cfg.seed)   # segment lengths; its state is checkpointed

    ckpt = Checkpointer(run_dir, cfg.checkpoint.every)
    epoch, pos, step, wandb_id = 0, 0, 0, None
    hidden = model.init_state(tc.batch_size)
    best = {"ppl": float("inf"), "epoch": -1, "state": None}
    plateau_scale, val_history, bad_epochs = 1.0, [], 0
    epoch_loss, epoch_tokens = 0.0, 0   # this epoch's summed training cross-entropy and tokens (per-epoch curve)
    if cfg.resume:
        state = ckpt.load(map_location=device)
        if state is not None:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            epoch, pos, step, best, wandb_id = state["epoch"], state["pos"], state["step"], state["best"], state["wandb_id"]
            plateau_scale, val_history, bad_epochs = state["plateau_scale"], state["val_history"], state["bad_epochs"]
            epoch_loss, epoch_tokens = state["epoch_loss"]
            hidden = state["hidden"]
            rng.bit_generator.state = state["np_rng"]
            set_rng_state(state["rng"])
        elif cfg.resume != "auto":
            raise UserError(f"resume: no checkpoint at {ckpt.path}")

    batches_per_epoch = math.ceil((len(train_data) - 1) / tc.bptt)
    if tc.max_batches_per_epoch:
        batches_per_epoch = min(batches_per_epoch, tc.max_batches_per_epoch)
    tracker = Tracker(cfg, run_dir, total_steps=tc.epochs * batches_per_epoch, start_step=step, wandb_id=wandb_id, ckpt=ckpt)

    def snapshot():
        return {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch, "pos": pos,
                "step": step, "best": best, "hidden": hidden, "plateau_scale": plateau_scale,
                "val_history": val_history, "bad_epochs": bad_epochs, "epoch_loss": [float(epoch_loss), epoch_tokens], "np_rng": rng.bit_generator.state,
                "wandb_id": tracker.wandb_id}

    failed = True
    t0, tokens = time.perf_counter(), 0
    loss_sum, n_sum = torch.zeros((), device=device), 0
    mem_sum: dict[str, float] = {}   # bits over all reversal segments of this run (since start/resume)
    if tc.reversal and not all(hasattr(layer, "cell") and hasattr(layer.cell, "reverse_fixed") for layer in model.layers):
        raise UserError(f"train.reversal=true needs reversible cells (model.cell=revlstm|revgru), got '{cfg.model.cell}'")
    if tc.reversal and (tc.ar_alpha or tc.tar_beta):
        raise UserError("train.reversal=true computes each step's loss inside the reverse sweep and keeps no outputs: "
                        "AR/TAR (train.ar_alpha, train.tar_beta) are not available there (the authors use none)")
    if tc.test_weights not in ("best", "final"):
        raise UserError(f"train.test_weights must be best or final, got '{tc.test_weights}'")
    try:
        with ckpt:
            while epoch < tc.epochs and not stopped_by_lr(tc, base_lr * plateau_scale):
                lr_now = epoch_lr(tc, base_lr, epoch, plateau_scale)
                epoch_loss = torch.as_tensor(epoch_loss, dtype=torch.float64, device=device)
                while pos < len(train_data) - 2:
                    if tc.max_batches_per_epoch and pos >= tc.max_batches_per_epoch * tc.bptt:
                        break
                    seq_len = segment_length(tc.bptt, tc.variable_bptt, rng)
                    for group in opt.param_groups:
                        group["lr"] = lr_now * seq_len / tc.bptt
                    x, y = text_data.get_batch(train_data, pos, seq_len)
                    hidden = model.detach_state(hidden)
                    opt.zero_grad(set_to_none=True)
                    try:
                        if tc.reversal:   # gradients by exact reversal, no stored hidden states
                            loss, hidden, mem = reversible_bptt.lm_step(model, x, y, hidden)
                            check_finite(loss, step + 1, ckpt)
                            for k in ("mem/bits_bptt", "mem/bits_buffer", "mem/bits_info"):
                                mem_sum[k] = mem_sum.get(k, 0.0) + mem[k]
                        else:
                            logits, hidden, (raw, dropped) = model(x, hidden)
                            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.reshape(-1))
                            check_finite(loss, step + 1, ckpt)
                            total = loss
                            if tc.ar_alpha:
                                total = total + tc.ar_alpha * dropped.pow(2).mean()
                            if tc.tar_beta:
                                total = total + tc.tar_beta * (raw[1:] - raw[:-1]).pow(2).mean()
                            total.backward()
                    except FixedPointOverflow as e:
                        raise UserError(f"step {step + 1}: {e}; last good checkpoint: {ckpt.describe()}") from None
                    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), tc.clip) if tc.clip else None
                    opt.step()
                    pos += seq_len
                    step += 1
                    tokens += y.numel()
                    loss_sum += loss.detach()
                    n_sum += 1
                    epoch_loss += loss.detach() * y.numel()
                    epoch_tokens += y.numel()
                    if step % tc.log_every == 0:
                        elapsed = time.perf_counter() - t0
                        mean = loss_sum.item() / n_sum
                        metrics = {"train/loss": mean, "train/ppl": perplexity(mean), "train/lr": lr_now,
                                   "epoch": epoch + min(pos / len(train_data), 1.0),
                                   "perf/tokens_per_s": tokens / max(elapsed, 1e-9)}
                        if grad_norm is not None:
                            metrics["train/grad_norm"] = grad_norm.item()
                        if mem_sum:
                            metrics["mem/saving_actual"] = mem_sum["mem/bits_bptt"] / mem_sum["mem/bits_buffer"]
                            metrics["mem/saving_info"] = mem_sum["mem/bits_bptt"] / mem_sum["mem/bits_info"]
                        tracker.log(metrics, step)
                        loss_sum.zero_()
                        n_sum = 0
                    ckpt.after_step(snapshot, step)
                    tracker.advance(step)

                with eval_weights(opt):
                    val_loss = evaluate(model, val_data, tc.bptt)
                    if val_loss < best["ppl"] and math.isfinite(val_loss):
                        best = {"ppl": val_loss, "epoch": epoch + 1, "state": copy.deepcopy(model.state_dict())}
                val_history.append(val_loss)
                n = tc.polyak_nonmono   # Polyak (start: null) as AWD-LSTM's NT-ASGD: average once validation stalls
                if hasattr(opt, "start_averaging") and len(val_history) > n + 1 and val_loss > min(val_history[:-n - 1]):
                    opt.start_averaging()
                cut, bad_epochs = lr_decay_due(tc, val_history, bad_epochs)
                if cut:
                    plateau_scale *= tc.lr_gamma
                val_ppl = perplexity(val_loss)
                best_ppl = perplexity(best["ppl"])
                train_epoch = float(epoch_loss) / max(epoch_tokens, 1)
                tracker.log({"val/loss": val_loss, "val/ppl": val_ppl, "val/ppl_best": best_ppl,
                             "train/epoch_loss": train_epoch, "train/epoch_ppl": perplexity(train_epoch),
                             "train/epoch_lr": lr_now, "epoch": epoch + 1}, step)
                epoch_loss, epoch_tokens = 0.0, 0
                epoch, pos = epoch + 1, 0
                hidden = model.init_state(tc.batch_size)
                ckpt.save(snapshot(), step)
                if ckpt.should_stop():
                    ckpt.interrupt(snapshot(), step)

        if best["state"] is None:
            raise UserError("no validation pass completed (train.epochs=0?)")
        final_state = copy.deepcopy(model.state_dict())
        if tc.test_weights == "best":   # the best validation weights (AWD-LSTM); "final": the authors of RevRNN
            model.load_state_dict(best["state"])
            test_loss = evaluate(model, test_data, tc.bptt)
        else:
            with eval_weights(opt):
                test_loss = evaluate(model, test_data, tc.bptt)
        model.load_state_dict(final_state)
        summary = tracker.write_summary({
            "val/ppl_best": perplexity(best["ppl"]), "val/loss_best": best["ppl"], "best_epoch": best["epoch"],
            "test/ppl": perplexity(test_loss), "test/loss": test_loss, "test/weights": tc.test_weights,
            "train/epochs": epoch, "train/steps": step, "train/lr_final": base_lr * plateau_scale,
            "train/stopped_by_lr_min": stopped_by_lr(tc, base_lr * plateau_scale), "n_params": sum(p.numel() for p in model.parameters()),
            "optimizer": cfg.optimizer.name, "lr": base_lr, "seed": cfg.seed, "device": str(device),
            **({"alpha": opt.alpha, "k": opt.k} if isinstance(opt, Lookahead) else {}),   # as run (null: defaults)
            "cell": cfg.model.cell, "vocab": len(corpus), "reversal": bool(tc.reversal),
            **({k: mem_sum["mem/bits_bptt"] / mem_sum[f"mem/bits_{b}"] for k, b in
                (("mem/saving_actual", "buffer"), ("mem/saving_info", "info"))} if mem_sum else {}),
        })
        failed = False
        return summary
    finally:
        tracker.close(failed=failed)

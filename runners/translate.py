"""Sequence-to-sequence translation (MacKay et al. 2018, section 5.2): teacher forcing, length-bucketed
batches with padding masks, validation loss / token accuracy, greedy or beam decoding, BLEU.

Data (``data.name``): ``synthetic`` (generated into the run's data root), ``multi30k`` (en -> de),
``iwslt16`` (en -> de as the authors, prepared local folder). BLEU: sacrebleu's corpus BLEU on the detokenised output
(``test/bleu``) and the tokenised, lower-cased BLEU the paper's era reported (``test/bleu_tok``).
Reversible cells (revgru / revlstm) train by reversal (``train.reversal=true``,
algorithms/reversible_bptt.py ``seq2seq_step``) or by ordinary BPTT through the same fixed-point model
(straight-through, ``train.reversal=false``); the runs log the bits their encoder and decoder buffers use against the bits
ordinary BPTT stores, separately, with the explicitly stored attention slice counted on the encoder.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from algorithms.reversible_bptt import seq2seq_step
from models.seq2seq import Seq2Seq
from runners.core import Checkpointer, Tracker, UserError, check_finite, make_optimizer
from runners.translation_data import (Vocab, bucket_batches, check_vocab, multi30k_dir, pad_batch, read_parallel,
                                      tokenize, write_synthetic)

SPLITS = {"synthetic": ("train", "valid", "test"), "multi30k": ("train", "val", "test"),
          "iwslt16": ("train", "valid", "test")}


class Data:
    def __init__(self, dc, project_root: Path):
        root = Path(dc.root) if Path(dc.root).is_absolute() else project_root / dc.root
        if dc.name == "synthetic":
            folder = root / (f"synthetic_translation_v{dc.vocab_size}_n{dc.n_train}-{dc.n_valid}-{dc.n_test}"
                             f"_len{dc.min_len}-{dc.max_len}_seed{dc.seed}")
            if not (folder / "test.tgt").exists():
                write_synthetic(folder, dc.vocab_size, dc.n_train, dc.n_valid, dc.n_test, dc.min_len, dc.max_len, dc.seed)
            ext, moses = ("src", "tgt"), False
        elif dc.name == "multi30k":
            folder, ext, moses = multi30k_dir(root, dc.download), (dc.src_lang, dc.tgt_lang), True
        elif dc.name == "iwslt16":
            folder, ext, moses = root / "iwslt16", (dc.src_lang, dc.tgt_lang), True
        else:
            raise UserError(f"unknown translation data '{dc.name}' (synthetic | multi30k | iwslt16)")
        self.splits = {}
        for name, split in zip(("train", "valid", "test"), SPLITS[dc.name]):
            src, tgt = read_parallel(folder / f"{split}.{ext[0]}", folder / f"{split}.{ext[1]}")
            if dc.get("max_sentences"):
                src, tgt = src[:dc.max_sentences], tgt[:dc.max_sentences]
            langs = (dc.get("src_lang", "en"), dc.get("tgt_lang", "de"))
            self.splits[name] = (tokenize(src, langs[0], moses, dc.lower), tokenize(tgt, langs[1], moses, dc.lower), tgt)
        self.src_vocab = Vocab.build(self.splits["train"][0], dc.min_freq)
        self.tgt_vocab = Vocab.build(self.splits["train"][1], dc.min_freq)
        self.ids = {}
        for name, (s, t, _) in self.splits.items():
            policy = dc.unk if name == "train" else "unk"   # held-out words are <unk> by construction
            self.ids[name] = ([self.src_vocab.encode(x, policy, f"{name} source {i + 1}") for i, x in enumerate(s)],
                              [self.tgt_vocab.encode(x, policy, f"{name} target {i + 1}") for i, x in enumerate(t)])
        self.moses, self.tgt_lang = moses, dc.get("tgt_lang", "de")

    def batches(self, split: str, batch_size: int, rng=None):
        src, tgt = self.ids[split]
        for idx in bucket_batches([len(s) for s in src], batch_size, rng):
            s, sm = pad_batch([src[i] for i in idx])
            t, tm = pad_batch([tgt[i] for i in idx], bos_eos=True)
            yield idx, s, sm, t, tm


def memory_stats(model: Seq2Seq, src_mask, tgt_mask, acct: dict | None = None) -> dict:
    """Bits of ordinary BPTT (32 per hidden unit, state tensor and real token) vs the buffers' bits, the
    encoder charged with the attention memory's hidden part (slice, or every state for ``full``), which
    is stored explicitly. ``acct``: {"enc"|"dec": (buffer bits, information bits)} from training by
    reversal; otherwise the layers' last stacks."""
    out = {}
    k = {"full": model.hidden, "slice": model.k, "emb+slice": model.k}.get(model.attention, 0)
    for side, layers, mask in (("enc", model.enc, src_mask), ("dec", model.dec, tgt_mask[:-1])):
        tokens = int(mask.sum())
        bptt = 32 * tokens * model.hidden * sum(layer.cell.n_states for layer in layers)
        if acct:   # seq2seq_step counts the stored slice on the encoder already
            bits, info = acct[side]
        else:
            extra = 32 * tokens * k if side == "enc" else 0
            bits = sum(layer.last_stack.bits() for layer in layers) + extra
            info = sum(layer.last_stack.info_bits for layer in layers) + extra
        out[f"mem/{side}_saving_actual"] = bptt / max(bits, 1)
        out[f"mem/{side}_saving_info"] = bptt / max(info, 1e-9)
    return out


def bleu(hyps: list[list[str]], refs_raw: list[str], refs_tok: list[list[str]], moses: bool, lang: str) -> dict:
    import sacrebleu

    tok = sacrebleu.corpus_bleu([" ".join(h) for h in hyps], [[" ".join(r) for r in refs_tok]], tokenize="none").score
    if moses:
        from sacremoses import MosesDetokenizer

        detok = MosesDetokenizer(lang=lang)
        sys_out = [detok.detokenize(h) for h in hyps]
        detok_bleu = sacrebleu.corpus_bleu(sys_out, [[r.lower() for r in refs_raw]]).score
    else:
        detok_bleu = tok
    return {"test/bleu": detok_bleu, "test/bleu_tok": tok}


@torch.no_grad()
def evaluate(model, data: Data, split: str, bs: int, device) -> dict:
    model.eval()
    loss = correct = count = 0.0
    for _, s, sm, t, tm in data.batches(split, bs):
        s, sm, t, tm = s.to(device), sm.to(device), t.to(device), tm.to(device)
        logits = model(s, sm, t[:-1], tm[:-1])
        tgt = t[1:]
        loss += F.cross_entropy(logits.reshape(-1, logits.size(-1)), tgt.reshape(-1), ignore_index=0, reduction="sum").item()
        keep = tgt != 0
        correct += ((logits.argmax(-1) == tgt) & keep).sum().item()
        count += keep.sum().item()
    return {f"{split}/loss": loss / count, f"{split}/ppl": math.exp(min(loss / count, 50)), f"{split}/token_acc": correct / count}


@torch.no_grad()
def translate(model, data: Data, split: str, bs: int, device, beam: int, max_len: int):
    model.eval()
    hyps = [None] * len(data.ids[split][0])
    for idx, s, sm, _, _ in data.batches(split, bs):
        s, sm = s.to(device), sm.to(device)
        out = model.beam(s, sm, beam, max_len) if beam > 1 else model.greedy(s, sm, max_len)
        for i, o in zip(idx, out):
            hyps[i] = data.tgt_vocab.decode(o)
    return hyps


def train(cfg, run_dir: Path, device: torch.device, project_root: Path) -> dict:
    tc, mc = cfg.train, cfg.model
    data = Data(cfg.data, project_root)
    try:
        model = Seq2Seq(len(data.src_vocab), len(data.tgt_vocab), mc.emb, mc.hidden, mc.cell, mc.attention,
                        mc.slice_units, mc.max_forget_bits, mc.dropout, mc.layers, mc.positions,
                        mc.init_range, mc.baseline_cell).to(device)
    except ValueError as e:
        raise UserError(str(e)) from None
    opt = make_optimizer(model.parameters(), cfg)
    reversal = bool(tc.get("reversal", False))
    if reversal and not model.reversible:
        raise UserError(f"train.reversal=true needs a reversible cell (revgru | revlstm), not '{mc.cell}'")
    if reversal and mc.attention == "full":
        raise UserError("model.attention=full keeps every encoder state: it cannot train by reversal "
                        "(train.reversal=false trains the same model by BPTT)")
    if tc.loss_norm not in ("sentences", "tokens"):
        raise UserError(f"train.loss_norm must be sentences or tokens, got '{tc.loss_norm}'")
    n_train = len(data.ids["train"][0])
    steps_per_epoch = math.ceil(n_train / tc.batch_size)
    ckpt = Checkpointer(run_dir, cfg.checkpoint.every)
    epoch, batch_i, step, wandb_id = 0, 0, 0, None
    best = {"val": float("inf"), "epoch": 0}
    lr_scale, prev_ppl = 1.0, None   # the authors' schedule: x lr_decay when validation perplexity rises
    base_lr = opt.param_groups[0]["lr"]
    state = ckpt.resume_state(cfg.resume, device)
    if state is not None:
        check_vocab(state["src_vocab"], data.src_vocab, "source")
        check_vocab(state["tgt_vocab"], data.tgt_vocab, "target")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        epoch, batch_i, step, best, wandb_id = (state["epoch"], state["batch"], state["step"], state["best"],
                                                state["wandb_id"])
        lr_scale, prev_ppl = state["lr_scale"], state["prev_ppl"]
    tracker = Tracker(cfg, run_dir, total_steps=tc.epochs * steps_per_epoch, start_step=step, wandb_id=wandb_id, ckpt=ckpt)

    def snapshot():
        return {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch, "batch": batch_i, "step": step, "best": best,
                "lr_scale": lr_scale, "prev_ppl": prev_ppl,
                "wandb_id": tracker.wandb_id, "src_vocab": data.src_vocab.fingerprint(),
                "tgt_vocab": data.tgt_vocab.fingerprint()}

    failed = True
    mem: dict = {}
    last = None   # (source mask, target mask, reversal accounting) of the latest batch, for the memory figures
    try:
        with ckpt:
            while epoch < tc.epochs and base_lr * lr_scale >= (tc.lr_min or 0.0):
                for g in opt.param_groups:
                    g["lr"] = base_lr * lr_scale
                model.train()
                rng = np.random.default_rng(cfg.seed * 1000003 + epoch)
                t0, loss_sum, n = time.perf_counter(), torch.zeros((), device=device), 0
                for i, (_, s, sm, t, tm) in enumerate(data.batches("train", tc.batch_size, rng)):
                    if i < batch_i:      # resumed mid-epoch: the epoch's batch order is seeded, skip the done ones
                        continue
                    s, sm, t, tm = s.to(device), sm.to(device), t.to(device), tm.to(device)
                    opt.zero_grad(set_to_none=True)
                    acct = None
                    norm = float(s.size(1)) if tc.loss_norm == "sentences" else float((t[1:] != 0).sum())
                    if reversal:
                        loss, acct = seq2seq_step(model, s, sm, t, tm, norm)
                    else:
                        logits = model(s, sm, t[:-1], tm[:-1])
                        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), t[1:].reshape(-1), ignore_index=0,
                                               reduction="sum") / norm
                    check_finite(loss, step + 1, ckpt)
                    if not reversal:
                        loss.backward()
                    if tc.clip:
                        torch.nn.utils.clip_grad_norm_(model.parameters(), tc.clip)
                    opt.step()
                    step, batch_i = step + 1, i + 1
                    loss_sum, n = loss_sum + loss.detach(), n + 1
                    last = (sm, tm, acct)
                    if step % tc.log_every == 0:
                        mem = memory_stats(model, *last) if model.reversible else {}
                        tracker.log({"train/loss": loss_sum.item() / n, "epoch": epoch + batch_i / steps_per_epoch,
                                     "perf/sentences_per_s": n * tc.batch_size / max(time.perf_counter() - t0, 1e-9),
                                     **mem}, step)
                    ckpt.after_step(snapshot, step)
                    tracker.advance(step)
                epoch, batch_i = epoch + 1, 0
                val = evaluate(model, data, "valid", tc.eval_batch_size, device)
                if val["valid/loss"] < best["val"]:
                    best = {"val": val["valid/loss"], "epoch": epoch}
                    torch.save(model.state_dict(), run_dir / "best_model.pt")
                if tc.lr_decay and prev_ppl is not None and val["valid/ppl"] > prev_ppl:
                    lr_scale *= tc.lr_decay
                prev_ppl = val["valid/ppl"]
                tracker.log({**val, "epoch": epoch, "train/lr": opt.param_groups[0]["lr"]}, step)
                ckpt.save(snapshot(), step)
                if ckpt.should_stop():
                    ckpt.interrupt(snapshot(), step)

        if tc.test_weights == "best" and (run_dir / "best_model.pt").exists():
            model.load_state_dict(torch.load(run_dir / "best_model.pt", map_location=device, weights_only=True))
        test = evaluate(model, data, "test", tc.eval_batch_size, device)
        hyps = translate(model, data, "test", tc.eval_batch_size, device, cfg.eval.beam, cfg.eval.max_len)
        _, refs_tok, refs_raw = data.splits["test"]
        scores = bleu(hyps, refs_raw, refs_tok, data.moses, data.tgt_lang)
        exact = float(np.mean([h == r for h, r in zip(hyps, refs_tok)]))
        (run_dir / "test_hypotheses.txt").write_text("".join(" ".join(h) + "\n" for h in hyps))
        if model.reversible and last is not None:
            mem = memory_stats(model, *last)
        summary = tracker.write_summary({**test, **scores, "test/exact_match": exact, **mem,
                                         "best_epoch": best["epoch"], "train/epochs": epoch, "train/steps": step,
                                         "train/lr_final": base_lr * lr_scale, "test/weights": tc.test_weights,
                                         "cell": mc.cell, "attention": mc.attention, "layers": mc.layers, "seed": cfg.seed,
                                         "dataset": cfg.data.name, "device": str(device),
                                         "n_params": sum(p.numel() for p in model.parameters())})
        failed = False
        return summary
    finally:
        tracker.close(failed=failed)

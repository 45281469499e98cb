"""The translation model and runner: padded batches leave reversible states and buffers untouched,
beam search of width 1 is greedy decoding, BLEU is sacrebleu's, and bad input is one line."""
import json

import pytest
import torch

from conftest import run_cli
from models.revrnn import RevGRUCell, RevLSTMCell, to_fixed
from models.seq2seq import Seq2Seq
from runners.translate import bleu
from test_cli import QUIET, one_error_line


@pytest.mark.parametrize("cell_cls", [RevGRUCell, RevLSTMCell])
def test_padded_batch_leaves_padded_examples_untouched_and_reverses_exactly(cell_cls):
    torch.manual_seed(0)
    cell = cell_cls(3, 8, 3)
    lengths = [7, 3, 5]
    x = torch.randn(7, 3, 3)
    mask = torch.arange(7)[:, None] < torch.tensor(lengths)[None, :]
    S0 = tuple(to_fixed(torch.randn(3, 8)) for _ in range(cell.n_states))
    stack, S, hist = cell.new_stack(3), S0, []
    for t in range(7):
        S = cell.step_fixed(x[t], S, stack, mask[t][:, None])
        hist.append((tuple(s.clone() for s in S), stack.buf.clone(), len(stack.slabs)))
    for j, n in enumerate(lengths):       # padded steps after example j's last token change nothing of it
        state_n, buf_n, _ = hist[n - 1]
        assert all(torch.equal(a[j], b[j]) for a, b in zip(S, state_n)) and torch.equal(stack.buf[j], buf_n[j])
    assert not torch.equal(hist[0][0][0][1], S0[0][1])       # ... while its real steps did change it
    for t in reversed(range(7)):
        S = cell.reverse_fixed(x[t], S, stack, mask[t][:, None])
    assert all(torch.equal(a, b) for a, b in zip(S, S0)) and stack.empty()


@pytest.mark.parametrize("cell,layers", [("gru", 1), ("lstm", 1), ("revgru", 1), ("revlstm", 1), ("lstm", 2),
                                         ("revlstm", 2)])
def test_beam_of_width_one_is_greedy(cell, layers):
    torch.manual_seed(0)
    model = Seq2Seq(12, 11, emb=8, hidden=8, cell=cell, attention="emb+slice", slice_units=2, dropout=0.0,
                    layers=layers).eval()
    src = torch.randint(4, 12, (6, 3))
    mask = torch.arange(6)[:, None] < torch.tensor([6, 4, 2])[None, :]
    src = src.masked_fill(~mask, 0)
    assert model.beam(src, mask, width=1, max_len=7) == model.greedy(src, mask, max_len=7)


def test_padding_does_not_change_a_sentence_translation():
    torch.manual_seed(1)
    model = Seq2Seq(12, 11, emb=8, hidden=8, cell="revgru", attention="emb+slice", slice_units=2, dropout=0.0).eval()
    src = torch.randint(4, 12, (5, 1))
    padded = torch.cat([src, torch.zeros(3, 1, dtype=torch.long)])
    alone = model.greedy(src, torch.ones(5, 1, dtype=torch.bool), 6)
    with_pad = model.greedy(padded, torch.arange(8)[:, None] < 5, 6)
    assert alone == with_pad


def test_bleu_is_sacrebleu_corpus_bleu():
    hyps = [["a", "cat", "sat", "on", "the", "mat"], ["two", "dogs", "run", "fast", "today"]]
    assert bleu(hyps, [], hyps, moses=False, lang="de")["test/bleu_tok"] == pytest.approx(100.0)
    import sacrebleu

    refs = [["a", "cat", "sat", "on", "a", "mat"], ["two", "dogs", "ran", "fast", "today"]]
    want = sacrebleu.corpus_bleu([" ".join(h) for h in hyps], [[" ".join(r) for r in refs]], tokenize="none").score
    assert bleu(hyps, [], refs, moses=False, lang="de")["test/bleu_tok"] == pytest.approx(want)


def test_unknown_token_policy_is_one_line(tmp_path):
    err = one_error_line(run_cli("experiment=gru_synthetic", "smoke=true", "data.unk=drop", f"data.root={tmp_path}",
                                 f"hydra.run.dir={tmp_path}/r", *QUIET))
    assert "unknown token policy 'drop'" in err


def test_resume_with_a_different_vocabulary_is_one_line(tmp_path):
    args = ["experiment=gru_synthetic", "smoke=true", f"data.root={tmp_path}", *QUIET]
    run_cli(*args, f"hydra.run.dir={tmp_path}/r", check=True)
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["train/epochs"] == 2 and 0 <= summary["test/bleu"] <= 100
    (tmp_path / "r" / "summary.json").unlink()          # as if interrupted after its last checkpoint
    err = one_error_line(run_cli(f"resume={tmp_path}/r", "data.vocab_size=30"))
    assert "different source vocabulary" in err


def _grads(model, fn):
    model.zero_grad(set_to_none=True)
    fn()
    return torch.cat([p.grad.reshape(-1) if p.grad is not None else torch.zeros(p.numel()) for p in model.parameters()])


@pytest.mark.parametrize("cell,attention,layers,dropout", [("revgru", "emb+slice", 1, 0.0), ("revgru", "emb", 1, 0.3),
                                                           ("revlstm", "emb+slice", 1, 0.3), ("revlstm", "slice", 1, 0.0),
                                                           ("revgru", "emb+slice", 2, 0.3), ("revlstm", "slice", 2, 0.3)])
@pytest.mark.parametrize("length", [1, 50])
def test_reversal_gradients_match_autograd(cell, attention, layers, dropout, length):
    """Training by reversal (loss and attention inside the reverse sweep, the slice kept out of the buffer and
    restored from its stored values, the same locked dropout masks) gives BPTT's gradients through the same
    fixed-point model, to float32 rounding."""
    import torch.nn.functional as F
    from algorithms.reversible_bptt import seq2seq_step

    torch.manual_seed(0)
    model = Seq2Seq(15, 13, emb=8, hidden=10, cell=cell, attention=attention, slice_units=3, dropout=dropout,
                    layers=layers, positions="sinusoidal").train()
    B = 3
    src_len = torch.tensor([length, max(1, length - 2), max(1, length // 2)])
    tgt_len = torch.tensor([length, max(1, length // 3), max(1, length - 1)])
    src = torch.randint(4, 15, (length, B)).masked_fill(torch.arange(length)[:, None] >= src_len, 0)
    body = torch.randint(4, 13, (length, B)).masked_fill(torch.arange(length)[:, None] >= tgt_len, 0)
    tgt = torch.cat([torch.full((1, B), 2), body, torch.zeros(1, B, dtype=torch.long)])
    tgt[tgt_len + 1, torch.arange(B)] = 3                                # </s> after each target
    sm, tm = src != 0, tgt != 0

    def plain():
        torch.manual_seed(5)                                             # the same dropout masks both ways
        logits = model(src, sm, tgt[:-1], tm[:-1])
        (F.cross_entropy(logits.reshape(-1, logits.size(-1)), tgt[1:].reshape(-1), ignore_index=0,
                         reduction="sum") / B).backward()

    def reversal():
        torch.manual_seed(5)
        seq2seq_step(model, src, sm, tgt, tm, float(B))

    a = _grads(model, plain)
    b = _grads(model, reversal)
    assert ((a - b).norm() / a.norm()).item() < 1e-5, ((a - b).norm() / a.norm()).item()


def test_full_attention_cannot_train_by_reversal(tmp_path):
    line = one_error_line(run_cli("experiment=revlstm_synthetic", "smoke=true", "model.attention=full",
                                  f"data.root={tmp_path}/data", f"hydra.run.dir={tmp_path}/r", *QUIET))
    assert "cannot train by reversal" in line


def test_sigterm_mid_epoch_then_resume_matches_uninterrupted(tmp_path):
    from sigterm import sigterm_then_resume

    args = ["experiment=revgru_synthetic", "smoke=true", f"data.root={tmp_path}/data", "train.epochs=2",
            "data.n_train=80", "data.max_sentences=80", "checkpoint.every=100", *QUIET]   # 10 batches an epoch
    full, resumed, stopped = sigterm_then_resume(tmp_path, args, total_key="train/steps", min_lines=1)
    assert stopped["batch"] > 0                              # stopped inside an epoch, not at its end
    for k in ("test/loss", "test/bleu", "test/token_acc", "mem/enc_saving_actual", "train/steps"):
        assert resumed[k] == full[k], k


@pytest.mark.parametrize("cell,attention,layers", [("revgru", "emb+slice", 2), ("revlstm", "slice", 1),
                                                   ("revlstm", "emb", 2)])
def test_reversal_step_loss_and_memory_accounting(cell, attention, layers):
    """seq2seq_step returns the summed cross-entropy / norm of the ordinary forward, and charges each side the bits of
    its buffers at their peak (the same fixed-point forward through the layers leaves the same stacks) plus, on the
    encoder, the slices it keeps: 32 bits (int32) per slice unit and real source token."""
    import torch.nn.functional as F
    from algorithms.reversible_bptt import seq2seq_step

    torch.manual_seed(3)
    model = Seq2Seq(15, 13, emb=8, hidden=10, cell=cell, attention=attention, slice_units=3, dropout=0.0,
                    layers=layers).train()
    src = torch.randint(4, 15, (7, 3))
    sm = torch.arange(7)[:, None] < torch.tensor([7, 2, 5])
    src = src.masked_fill(~sm, 0)
    tgt = torch.cat([torch.full((1, 3), 2), torch.randint(4, 13, (5, 3)), torch.full((1, 3), 3)])
    tgt[4:6, 1] = torch.tensor([3, 0])
    tm = tgt != 0
    loss, acct = seq2seq_step(model, src, sm, tgt, tm, 3.0)
    with torch.no_grad():
        logits = model(src, sm, tgt[:-1], tm[:-1])
    want = F.cross_entropy(logits.reshape(-1, 13), tgt[1:].reshape(-1), ignore_index=0, reduction="sum") / 3.0
    assert torch.allclose(loss, want, rtol=1e-5)
    k = 3 if "slice" in attention else 0
    slice_bits = 32 * k * int(sm.sum())
    assert acct["enc"] == (sum(l.last_stack.bits() for l in model.enc) + slice_bits,
                           pytest.approx(sum(l.last_stack.info_bits for l in model.enc) + slice_bits))
    assert acct["dec"] == (sum(l.last_stack.bits() for l in model.dec),
                           pytest.approx(sum(l.last_stack.info_bits for l in model.dec)))
    assert acct["dec"][0] > 0 and acct["enc"][1] > slice_bits


def test_kept_slice_is_int32_when_it_fits():
    from algorithms.reversible_bptt import kept_slice

    assert kept_slice(torch.tensor([[2**31 - 1, -(2**31 - 1)]])).dtype == torch.int32
    for big in (2**31, -2**31):
        v = torch.tensor([[5, big]])
        assert kept_slice(v).dtype == torch.int64 and torch.equal(kept_slice(v), v)
    assert torch.equal(kept_slice(torch.tensor([[7, -9]])).long(), torch.tensor([[7, -9]]))


def test_full_attention_is_refused_by_the_reversal_step():
    from algorithms.reversible_bptt import seq2seq_step

    model = Seq2Seq(15, 13, emb=8, hidden=10, cell="revgru", attention="full", dropout=0.0)
    src, tgt = torch.randint(4, 15, (3, 2)), torch.randint(4, 13, (4, 2))
    with pytest.raises(ValueError, match="^attention 'full' keeps every encoder state: it cannot be trained by "
                                         "reversal$"):
        seq2seq_step(model, src, src != 0, tgt, tgt != 0, 2.0)


@pytest.mark.parametrize("cell", ["revgru", "gru"])
def test_every_tensor_is_made_on_the_inputs_device(cell):
    """Device placement (tests/devices.py): the same loss, gradients, memory accounting and translations from the
    reversal step (initial states, bit stacks, dropout masks, gradient buffers), the forward pass, greedy and beam
    decoding."""
    from devices import assert_same_under_meta_default

    from algorithms.reversible_bptt import seq2seq_step

    torch.manual_seed(3)
    model = Seq2Seq(15, 13, emb=8, hidden=10, cell=cell, attention="emb+slice", slice_units=3, dropout=0.3,
                    layers=2)
    src = torch.randint(4, 15, (7, 3))
    sm = torch.arange(7)[:, None] < torch.tensor([7, 2, 5])
    src = src.masked_fill(~sm, 0)
    tgt = torch.cat([torch.full((1, 3), 2), torch.randint(4, 13, (5, 3)), torch.full((1, 3), 3)])
    tm = tgt != 0

    def run():
        out = []
        model.train()
        if cell == "revgru":
            torch.manual_seed(5)
            model.zero_grad()
            loss, acct = seq2seq_step(model, src, sm, tgt, tm, 3.0)
            out += [loss, acct, [p.grad.clone() for p in model.parameters()]]
        torch.manual_seed(5)
        model.zero_grad()
        model(src, sm, tgt[:-1], tm[:-1]).sum().backward()
        out.append([p.grad.clone() for p in model.parameters()])
        model.eval()
        with torch.no_grad():
            out += [model.greedy(src, sm, max_len=6), model.beam(src, sm, width=3, max_len=6)]
        return out

    assert_same_under_meta_default(run)

"""PTB data handling, the AWD-LSTM model against hand computations, and the LM runner end to end."""
import gzip
import hashlib
import json
import math

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from conftest import run_cli
from fixtures import write_ptb
from models.awd_lstm import AWDLanguageModel, LSTMLayer, embedded_dropout, locked_dropout
from runners import text_data
from runners.core import DataMissingError, UserError
from sigterm import sigterm_then_resume

QUIET = ["logger.mode=disabled", "logger.progress=false"]


def cfg(root, **kw):
    return OmegaConf.create({"root": str(root), "download": False, "verify_md5": False, **kw})


def test_corpus_vocab_ids_and_eos(tmp_path):
    folder = tmp_path / "ptb"
    folder.mkdir()
    (folder / "ptb.train.txt").write_text(" b a <unk> \n a c \n")
    (folder / "ptb.valid.txt").write_text(" c zz \n")
    (folder / "ptb.test.txt").write_text(" a \n")
    corpus = text_data.load(cfg(tmp_path), tmp_path)
    assert corpus.itos == ["b", "a", "<unk>", "<eos>", "c"]          # order of first appearance
    assert corpus.ids["train"].tolist() == [0, 1, 2, 3, 1, 4, 3]
    assert corpus.ids["valid"].tolist() == [4, 2, 3]                   # unseen word -> <unk>
    assert corpus.ids["test"].tolist() == [1, 3]


def test_gz_and_plain_files_read_the_same(tmp_path):
    write_ptb(tmp_path / "a", gz=False)
    write_ptb(tmp_path / "b", gz=True)
    a, b = text_data.load(cfg(tmp_path / "a"), tmp_path), text_data.load(cfg(tmp_path / "b"), tmp_path)
    assert a.itos == b.itos and all(torch.equal(a.ids[s], b.ids[s]) for s in text_data.SPLITS)


def test_md5_mismatch_and_missing_data_are_clear_errors(tmp_path):
    write_ptb(tmp_path)
    with pytest.raises(UserError, match=r"MD5 mismatch for .*ptb.train.txt: expected f26c4b92c5fdc7b3f8c7cdcb991d8420"):
        text_data.load(cfg(tmp_path, verify_md5=True), tmp_path)
    with pytest.raises(DataMissingError, match=r"put ptb.train.txt .* in .*empty/ptb .*raw.githubusercontent.com"):
        text_data.load(cfg(tmp_path / "empty"), tmp_path)


def test_md5_is_of_the_unzipped_text(tmp_path, monkeypatch):
    write_ptb(tmp_path, gz=True)
    folder = tmp_path / "ptb"
    md5 = {s: hashlib.md5(gzip.decompress((folder / f"ptb.{s}.txt.gz").read_bytes())).hexdigest()
           for s in text_data.SPLITS}
    monkeypatch.setattr(text_data, "MD5", md5)
    assert len(text_data.load(cfg(tmp_path, verify_md5=True), tmp_path)) > 5


def test_batchify_and_get_batch_match_naive_streams():
    ids = torch.arange(103)
    data = text_data.batchify(ids, 4)                 # 25 tokens per stream, 3 dropped
    assert data.shape == (25, 4)
    for b in range(4):
        assert data[:, b].tolist() == list(range(25 * b, 25 * b + 25))
    x, y = text_data.get_batch(data, 20, 10)          # clipped at the end: 4 inputs, 4 targets
    assert x.shape == (4, 4) and torch.equal(y, data[21:25]) and torch.equal(x, data[20:24])


def test_locked_and_embedding_dropout_masks():
    torch.manual_seed(0)
    x = torch.ones(7, 3, 50)
    y = locked_dropout(x, 0.5, True)
    assert torch.equal(y, y[:1].expand_as(y))          # same mask at every time step
    assert set(y.unique().tolist()) == {0.0, 2.0}
    emb = torch.nn.Embedding(20, 6)
    words = torch.arange(20).repeat(3, 1)
    out = embedded_dropout(emb, words, 0.5, True)
    rows_zero = (out[0] == 0).all(1)
    assert rows_zero.any() and not rows_zero.all()
    for t in range(3):                                  # a dropped word is dropped wherever it occurs
        assert torch.equal((out[t] == 0).all(1), rows_zero)
    torch.testing.assert_close(out[0][~rows_zero], 2 * emb.weight[~rows_zero])


def naive_lstm(x, h, c, w_ih, w_hh, b_ih, b_hh):
    outs = []
    for t in range(x.size(0)):
        gates = x[t] @ w_ih.T + b_ih + h @ w_hh.T + b_hh
        i, f, g, o = gates.chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        outs.append(h)
    return torch.stack(outs), h, c


def test_weight_dropped_lstm_layer_matches_naive_loop_with_the_dropped_matrix():
    torch.manual_seed(0)
    layer = LSTMLayer(5, 6, weight_drop=0.5).train()
    x = torch.randn(4, 3, 5)
    h0, c0 = layer.init_state(3, "cpu")
    torch.manual_seed(7)
    y, (h, c) = layer(x, (h0, c0))
    torch.manual_seed(7)
    w_hh = F.dropout(layer.rnn.weight_hh_l0, 0.5, training=True)      # the same mask
    assert (w_hh == 0).any()
    ry, rh, rc = naive_lstm(x, h0[0], c0[0], layer.rnn.weight_ih_l0, w_hh, layer.rnn.bias_ih_l0, layer.rnn.bias_hh_l0)
    torch.testing.assert_close(y, ry)
    torch.testing.assert_close(h[0], rh)
    torch.testing.assert_close(c[0], rc)
    y.sum().backward()
    g = layer.rnn.weight_hh_l0.grad
    assert g is not None and (g[w_hh == 0] == 0).all() and (g != 0).any()   # no gradient through dropped weights
    layer.eval()
    ye, _ = layer(x, (h0, c0))
    ry, _, _ = naive_lstm(x, h0[0], c0[0], layer.rnn.weight_ih_l0, layer.rnn.weight_hh_l0,
                          layer.rnn.bias_ih_l0, layer.rnn.bias_hh_l0)
    torch.testing.assert_close(ye, ry)


def test_model_ties_weights_and_shapes():
    m = AWDLanguageModel(30, emb_size=8, hidden_size=12, n_layers=3, cell="gru")
    assert m.decoder.weight is m.encoder.weight
    assert [l.rnn.hidden_size for l in m.layers] == [12, 12, 8]
    logits, state, (raw, dropped) = m(torch.randint(0, 30, (5, 2)), m.init_state(2))
    assert logits.shape == (5, 2, 30) and raw.shape == dropped.shape == (5, 2, 8) and len(state) == 3
    with pytest.raises(ValueError, match="unknown recurrent cell 'revx'"):
        AWDLanguageModel(30, cell="revx")


def test_eval_perplexity_equals_direct_computation(tmp_path):
    from runners.language_model import evaluate
    torch.manual_seed(0)
    m = AWDLanguageModel(11, emb_size=4, hidden_size=5, n_layers=1).eval()
    data = torch.randint(0, 11, (23, 2))
    got = evaluate(m, data, bptt=5)
    with torch.no_grad():   # one pass over the whole stream gives the same (state carried exactly)
        logits, _, _ = m(data[:-1], m.init_state(2))
        ref = F.cross_entropy(logits.reshape(-1, 11), data[1:].reshape(-1)).item()
    assert got == pytest.approx(ref, rel=1e-6)


def test_runner_learns_on_fixture_and_reports_perplexities(tmp_path):
    write_ptb(tmp_path / "data")
    run_cli("experiment=lookahead_ptb_small", "smoke=true", f"data.root={tmp_path}/data", "train.epochs=3",
            "train.max_batches_per_epoch=null", "model.emb_size=32", "model.hidden_size=32",
            "optimizer.lr=0.02", f"hydra.run.dir={tmp_path}/run", *QUIET, check=True)
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    vals = [r["val/ppl"] for r in rows if "val/ppl" in r]
    assert len(vals) == 3 and s["val/ppl_best"] == pytest.approx(min(vals))
    assert s["vocab"] == 13 and s["val/ppl_best"] < 4     # a uniform guess scores 13; the grammar ~2
    assert s["test/ppl"] == pytest.approx(math.exp(s["test/loss"]))


@pytest.mark.parametrize("optimizer", ["lookahead_adam", "polyak"])
def test_sigterm_mid_epoch_then_resume_matches_uninterrupted(tmp_path, optimizer):
    write_ptb(tmp_path / "data")
    args = ["experiment=lookahead_ptb_small", "smoke=true", f"optimizer={optimizer}",
            *(["optimizer.lr=0.5"] if optimizer == "polyak" else []), f"data.root={tmp_path}/data", "train.epochs=3", "train.max_batches_per_epoch=null",
            "train.log_every=1", "checkpoint.every=1000", "threads=1", *QUIET]
    full, resumed, stopped = sigterm_then_resume(tmp_path, args, total_key="train/steps")
    assert stopped["epoch"] == 0 and stopped["pos"] > 0       # cut inside the first epoch
    for key in ["val/ppl_best", "test/ppl", "best_epoch", "train/steps"]:
        assert resumed[key] == full[key], key


@pytest.mark.parametrize("override,message", [
    ("model.max_forget_bits=4", "error: model.max_forget_bits=4: must be one of 1, 2, 3, 5"),
    ("model.hidden_size=201", "error: reversible cells split the hidden state in halves: hidden_size=201 is odd"),
])
def test_reversible_model_bad_input_is_one_line(tmp_path, override, message):
    write_ptb(tmp_path / "data")
    p = run_cli("experiment=revlstm_ptb_small", "smoke=true", override, f"data.root={tmp_path}/data",
                f"hydra.run.dir={tmp_path}/run", *QUIET)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert [ln for ln in p.stderr.splitlines() if ln.startswith("error:")] == [message]


def test_a_diverged_run_keeps_its_summary():
    """A RevLSTM PTB run that diverged (validation loss 1227) lost its summary to math.exp's OverflowError; every
    perplexity is now exp(loss) capped at exp(50), with the loss recorded beside it."""
    from runners.language_model import perplexity

    assert perplexity(1227.1) == math.exp(50.0) and perplexity(float("inf")) == math.exp(50.0)
    assert perplexity(5.75) == math.exp(5.75) and perplexity(50.0) == math.exp(50.0)

"""Parallel-text data for the reversible NMT issue: file formats (Multi30K archives with their checksums,
IWSLT's official tag/XML files), the synthetic task, vocabularies, bucketing and the bad-input errors."""
import hashlib
import io
import tarfile

import numpy as np
import pytest

import runners.translation_data as td
from runners.core import DataMissingError, UserError


def test_synthetic_task_is_a_word_mapping_with_chunk_reversal(tmp_path):
    d = td.write_synthetic(tmp_path / "syn", vocab_size=10, n_train=50, seed=3)
    src, tgt = td.read_parallel(d / "train.src", d / "train.tgt")
    assert len(src) == 50
    mapping = {}
    for s, t in zip(src, tgt):
        s, t = s.split(), t.split()
        assert len(s) == len(t)
        undone = [w for k in range(0, len(t), 3) for w in reversed(t[k:k + 3])]   # reversal is its own inverse
        for a, b in zip(s, undone):
            assert mapping.setdefault(a, b) == b                                   # one fixed word mapping
    assert len(set(mapping.values())) == len(mapping)                               # and it is a bijection


def test_mismatched_and_empty_lines_are_clear_errors(tmp_path):
    (tmp_path / "a.en").write_text("a b\nc d\n")
    (tmp_path / "a.de").write_text("x y\n")
    with pytest.raises(UserError, match="a.en has 2 lines but .*a.de has 1"):
        td.read_parallel(tmp_path / "a.en", tmp_path / "a.de")
    (tmp_path / "b.en").write_text("a b\n \nc\n")
    (tmp_path / "b.de").write_text("x\ny\nz\n")
    with pytest.raises(UserError, match="b.en:2: empty sentence"):
        td.read_parallel(tmp_path / "b.en", tmp_path / "b.de")


def test_vocab_policies_and_fingerprint():
    v = td.Vocab.build([["b", "a", "b"], ["c"]], min_freq=1)
    assert v.itos == ["<pad>", "<unk>", "<s>", "</s>", "b", "a", "c"]
    assert v.encode(["a", "zz"]) == [5, td.UNK]
    with pytest.raises(UserError, match="out-of-vocabulary word 'zz'"):
        v.encode(["a", "zz"], policy="error", where="train.en:1")
    with pytest.raises(UserError, match="unknown token policy 'drop'"):
        v.encode(["a"], policy="drop")
    assert v.decode([td.BOS, 4, 5, td.EOS, 6]) == ["b", "a"]
    other = td.Vocab.build([["b", "a"]])
    td.check_vocab(v.fingerprint(), v, "source")
    with pytest.raises(UserError, match="different source vocabulary"):
        td.check_vocab(v.fingerprint(), other, "source")


def test_moses_tokenisation_and_lowercasing():
    assert td.tokenize(["Two men, walking."], "en") == [["two", "men", ",", "walking", "."]]
    assert td.tokenize(["Zwei Männer"], "de", moses=False, lower=False) == [["Zwei", "Männer"]]


def test_padding_and_buckets():
    x, m = td.pad_batch([[5, 6, 7], [8]], bos_eos=True)
    assert x.T.tolist() == [[td.BOS, 5, 6, 7, td.EOS], [td.BOS, 8, td.EOS, td.PAD, td.PAD]]
    assert m.sum(0).tolist() == [5, 3]
    lengths = list(np.random.default_rng(0).integers(1, 30, 200))
    batches = td.bucket_batches(lengths, 16, np.random.default_rng(1), bucket=4)
    assert sorted(np.concatenate(batches).tolist()) == list(range(200))
    spread = np.mean([np.ptp(np.asarray(lengths)[b]) for b in batches])
    assert spread < 0.5 * np.ptp(lengths)                      # bucketing groups similar lengths
    assert [b.tolist() for b in td.bucket_batches(lengths, 16, None)] == \
        [b.tolist() for b in td.bucket_batches(lengths, 16, None)]


def _tar(path, files):
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_multi30k_offline_error_and_checked_download(tmp_path, monkeypatch):
    with pytest.raises(DataMissingError, match="Multi30K train .*training.tar.gz"):
        td.multi30k_dir(tmp_path, download=False)
    # the download path with local archives standing in for the server; checksums patched to theirs
    archives = {}
    for split, (url, _, files) in td.MULTI30K.items():
        p = tmp_path / "server" / url.rsplit("/", 1)[1]
        p.parent.mkdir(exist_ok=True)
        _tar(p, {f: f"{split} sentence .\n" for f in files})
        archives[url] = p
    monkeypatch.setattr(td, "MULTI30K", {s: (u, hashlib.sha256(archives[u].read_bytes()).hexdigest(), f)
                                         for s, (u, _, f) in td.MULTI30K.items()})
    monkeypatch.setattr(td.urllib.request, "urlretrieve", lambda url, dst: dst.write_bytes(archives[url].read_bytes()))
    d = td.multi30k_dir(tmp_path / "data", download=True)
    assert (d / "val.de").read_text() == "val sentence .\n"
    bad = dict(td.MULTI30K)
    bad["test"] = (bad["test"][0], "0" * 64, bad["test"][2])
    monkeypatch.setattr(td, "MULTI30K", bad)
    (d / "test.en").unlink()
    with pytest.raises(UserError, match="SHA-256 mismatch"):
        td.multi30k_dir(tmp_path / "data", download=True)


def test_iwslt_official_files_are_prepared(tmp_path):
    src = tmp_path / "en-de"
    src.mkdir()
    for lang, words in (("en", ("Hello", "World")), ("de", ("Hallo", "Welt"))):
        (src / f"train.tags.en-de.{lang}").write_text(
            f"<url>http://x</url>\n<talkid>1</talkid>\n{words[0]} there.\n{words[1]} here.\n")
        for name in ("tst2013", "tst2014"):
            (src / f"IWSLT16.TED.{name}.en-de.{lang}.xml").write_text(
                f'<doc>\n<seg id="1"> {words[0]} {name} </seg>\n<seg id="2">{words[1]}</seg>\n</doc>\n')
    td.iwslt_prepare(src, tmp_path / "iwslt16")
    a, b = td.read_parallel(tmp_path / "iwslt16" / "train.en", tmp_path / "iwslt16" / "train.de")
    assert a == ["Hello there.", "World here."] and b == ["Hallo there.", "Welt here."]
    a, _ = td.read_parallel(tmp_path / "iwslt16" / "test.en", tmp_path / "iwslt16" / "test.de")
    assert a == ["Hello tst2014", "World"]           # the authors' test set; tst2013 validates
    a, _ = td.read_parallel(tmp_path / "iwslt16" / "valid.en", tmp_path / "iwslt16" / "valid.de")
    assert a == ["Hello tst2013", "World"]

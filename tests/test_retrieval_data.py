import numpy as np
import pytest
from omegaconf import OmegaConf

from runners import retrieval_data as rd
from runners.core import DataMissingError, UserError


def decode(row):
    return "".join(rd.VOCAB[i] for i in row)


def test_format_matches_paper_example():
    splits = rd.generate(seed=3, n_train=2000, n_valid=300, n_test=300)
    x, y = splits["train"]
    assert x.shape == (2000, 11) and y.shape == (2000,)
    assert len(rd.VOCAB) == 37
    for row, target in zip(x[:500], y[:500]):
        s = decode(row)
        letters, digits = s[0:8:2], s[1:8:2]
        assert all(c in rd.LETTERS for c in letters) and len(set(letters)) == 4  # distinct letters
        assert all(c in rd.DIGITS for c in digits)
        assert s[8:10] == "??" and s[10] in letters
        assert int(digits[letters.index(s[10])]) == target  # the digit paired with the query


def test_targets_cover_all_digits_and_query_positions():
    x, y = rd.generate(seed=0, n_train=5000, n_valid=10, n_test=10)["train"]
    assert set(np.unique(y)) == set(range(10))
    pos = [decode(r)[0:8:2].index(decode(r)[10]) for r in x[:2000]]
    assert set(pos) == {0, 1, 2, 3}


def test_deterministic_from_seed():
    a = rd.generate(seed=7, n_train=1000, n_valid=100, n_test=100)
    b = rd.generate(seed=7, n_train=1000, n_valid=100, n_test=100)
    c = rd.generate(seed=8, n_train=1000, n_valid=100, n_test=100)
    for s in rd.SPLITS:
        assert np.array_equal(a[s][0], b[s][0]) and np.array_equal(a[s][1], b[s][1])
    assert not np.array_equal(a["train"][0], c["train"][0])


def test_no_leakage_between_splits():
    # a tiny alphabet of pairs would collide often; with 1 pair there are only 26*10*1 sequences
    splits = rd.generate(seed=0, n_train=150, n_valid=60, n_test=40, n_pairs=1)
    keys = {s: {decode(r) for r in splits[s][0]} for s in rd.SPLITS}
    assert not keys["train"] & keys["valid"]
    assert not keys["train"] & keys["test"]
    assert not keys["valid"] & keys["test"]
    assert len(splits["valid"][0]) == 60 and len(splits["test"][0]) == 40


def test_file_roundtrip_and_text_format(tmp_path):
    x, y = rd.generate(seed=1, n_train=50, n_valid=5, n_test=5)["train"]
    rd.write_split(tmp_path / "train.txt", x, y)
    first = (tmp_path / "train.txt").read_text().splitlines()[0]
    seq, digit = first.split("\t")
    assert seq == decode(x[0]) and digit == str(y[0])
    x2, y2 = rd.read_split(tmp_path / "train.txt")
    assert np.array_equal(x, x2) and np.array_equal(y, y2)


def test_load_from_files_and_cache(tmp_path):
    cfg = OmegaConf.create(dict(source="generate", root=str(tmp_path), seed=0, n_pairs=4,
                                n_train=300, n_valid=50, n_test=50))
    data = rd.load(cfg, tmp_path)
    folder = next((tmp_path / "associative_retrieval").iterdir())
    assert sorted(p.name for p in folder.iterdir()) == ["test.txt", "train.txt", "valid.txt"]
    cfg2 = OmegaConf.merge(cfg, {"source": "files", "root": str(folder)})
    again = rd.load(cfg2, tmp_path)
    for s in rd.SPLITS:
        assert (data[s][0] == again[s][0]).all() and (data[s][1] == again[s][1]).all()


def test_missing_directory_and_bad_file(tmp_path):
    cfg = OmegaConf.create(dict(source="files", root=str(tmp_path / "nope")))
    with pytest.raises(DataMissingError, match="nope"):
        rd.load(cfg, tmp_path)
    (tmp_path / "bad.txt").write_text("c9k8j3f1??c\t9\nC9k8j3f1??c\t9\n")
    with pytest.raises(UserError, match="unknown characters"):
        rd.read_split(tmp_path / "bad.txt")

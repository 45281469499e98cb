"""The config checks run before torch starts (runners/errors.py): every rule refuses what the code that reads the
value cannot use, accepts what it can, and says so in one line naming the key and the range. Each case below was a
traceback, a hang or a silently wrong run before its rule existed (end-to-end cases: tests/test_bad_input.py)."""
import math

import pytest

from runners.errors import UserError, check_config, list_error, null_refused, value_error

REFUSED = [
    ("seed", 2 ** 32, "seed=4294967296: must be an integer in [0, 4294967295]"),
    ("algo.vf_iters", 0, "algo.vf_iters=0: must be an integer >= 1"),
    ("algo.batch_steps", -1, "algo.batch_steps=-1: must be an integer >= 1"),
    ("algo.vf_kfac.cold_iters", -5, "algo.vf_kfac.cold_iters=-5: must be an integer >= 0"),
    ("algo.kfac.cold_max_grad_norm", -1, "algo.kfac.cold_max_grad_norm=-1: must be a number > 0.0"),
    ("algo.kfac.cold_lr_scale", -0.1, "algo.kfac.cold_lr_scale=-0.1: must be a number >= 0.0"),
    ("algo.kfac.weight_damping", -1e-3, "algo.kfac.weight_damping=-0.001: must be a number >= 0.0"),
    ("algo.kfac.stats_accum", -1, "algo.kfac.stats_accum=-1: must be an integer >= 0"),
    ("algo.vf_l2", -3e-4, "algo.vf_l2=-0.0003: must be a number >= 0.0"),
    ("algo.vf_loss_scale", -1.0, "algo.vf_loss_scale=-1.0: must be a number >= 0.0"),
    ("algo.vf_lr", 0.0, "algo.vf_lr=0.0: must be a number > 0.0"),
    ("train.update_bn_batches", 0, "train.update_bn_batches=0: must be an integer >= 1"),
    ("train.lr_decay", 2.0, "train.lr_decay=2.0: must be a number in (0.0, 1.0]"),
    ("train.lr_decay", 0.0, "train.lr_decay=0.0: must be a number in (0.0, 1.0]"),
    ("train.ae_target_acc", 1.5, "train.ae_target_acc=1.5: must be a number in (0.0, 1.0]"),
    ("train.polyak_nonmono", -1, "train.polyak_nonmono=-1: must be an integer >= 0"),
    ("eval.n_boot", 0, "eval.n_boot=0: must be an integer >= 1"),
    ("data.subset", -100, "data.subset=-100: must be an integer >= 1"),
    ("model.mlp_layers", 0, "model.mlp_layers=0: must be an integer >= 1"),
    ("model.mlp_hidden", -4, "model.mlp_hidden=-4: must be an integer >= 1"),
    ("model.max_forget_bits", 4, "model.max_forget_bits=4: must be one of 1, 2, 3, 5"),
    ("model.max_forget_bits", True, "model.max_forget_bits=True: must be one of 1, 2, 3, 5"),
    ("model.vf_activation", "relu", "model.vf_activation='relu': must be one of elu, tanh"),
    ("model.kind", "gcn", "model.kind='gcn': must be one of grevnet, gnn"),
    ("train.test_weights", "bset", "train.test_weights='bset': must be one of best, final"),
    ("eval.size_rule", "test", "eval.size_rule='test': must be one of random, authors"),
    ("model.flow_self_edges", "yes", "model.flow_self_edges='yes': must be true or false"),
    ("model.flow_self_edges", 1, "model.flow_self_edges=1: must be true or false"),
    ("model.flow_heads", 0, "model.flow_heads=0: must be an integer >= 1"),
    ("optimizer.lookahead.alpha", math.inf, "optimizer.lookahead.alpha=inf: must be a number in [0.0, 1.0]"),
]
ACCEPTED = [("seed", 2 ** 32 - 1), ("seed", 0), ("algo.vf_iters", 1), ("algo.vf_kfac.cold_iters", 0),
            ("algo.kfac.cold_lr_scale", 0.0), ("algo.kfac.weight_damping", 0.0), ("train.lr_decay", 1.0),
            ("train.polyak_nonmono", 0), ("model.max_forget_bits", 5), ("model.max_forget_bits", None),
            ("model.kind", "gnn"), ("train.test_weights", "final"), ("train.ae_target_acc", 1.0),
            ("eval.size_rule", "authors"), ("model.flow_self_edges", True), ("model.flow_heads", None)]


@pytest.mark.parametrize("key,value,message", REFUSED, ids=[f"{k}={v}" for k, v, _ in REFUSED])
def test_refused_values_name_the_key_and_the_range(key, value, message):
    assert value_error(key, value) == message


@pytest.mark.parametrize("key,value", ACCEPTED, ids=[f"{k}={v}" for k, v in ACCEPTED])
def test_values_the_code_can_use_are_accepted(key, value):
    assert value_error(key, value) is None


def test_lists_are_checked_item_by_item():
    assert list_error("train.betas", [0.9, 0.999]) is None and list_error("optimizer.betas", None) is None
    for bad in ([0.9, 1.0], [0.9], 0.9, [0.9, "x"], [0.9, math.nan]):
        assert list_error("train.betas", bad) == f"train.betas={bad!r}: must be a list of 2 numbers in [0.0, 1.0)"
    assert list_error("eval.seeds", []) == "eval.seeds=[]: must be a non-empty list of integers in [0, 4294967295]"
    assert list_error("eval.seeds", [0, 1, 2]) is None and list_error("train.lr_milestones", []) is None
    assert list_error("train.lr_milestones", [0]) == "train.lr_milestones=[0]: must be a list of integers >= 1"
    with pytest.raises(UserError, match=r"^optimizer.betas=0.9: must be a list of 2"):   # a scalar for a list
        check_config({"optimizer": {"betas": 0.9}})


def test_ordered_pairs_and_null():
    with pytest.raises(UserError, match=r"^data.min_len=13 is above data.max_len=12$"):
        check_config({"data": {"min_len": 13, "max_len": 12}})
    check_config({"data": {"min_len": 12, "max_len": 12}})
    # null has no meaning for these quantities; it keeps one where code gives it one (presets, no limit, no clip)
    for key in ("algo.n_envs", "train.steps", "algo.max_grad_norm", "model.hidden_size", "train.lr", "seed"):
        assert null_refused(key), key
    for key in ("optimizer.lr", "optimizer.lookahead.alpha", "optimizer.lookahead.k", "model.max_forget_bits",
                "train.clip", "train.lr_min", "train.stop_at", "optimizer.momentum"):
        assert not null_refused(key), key

"""User-facing errors and the allowed range of every config value, without torch: run.py checks a command
line with these before anything heavy is imported, so a mistyped value costs a second, not a torch start-up."""
from __future__ import annotations

import math

from omegaconf import OmegaConf


# --------------------------------------------------------------------------- errors
class UserError(Exception):
    """An error caused by the user's input; run.py prints it as one line, no traceback."""


class DataMissingError(UserError):
    pass


class NonFiniteLossError(UserError):
    pass


class Interrupted(BaseException):
    """Raised inside a training loop after SIGTERM/SIGINT, once a checkpoint is written, or at once on a
    second signal. A BaseException, so no ``except Exception`` on the way swallows it."""


# --------------------------------------------------------------------------- config values
# Allowed ranges of config values, by full key first, then by the key's last name; a value outside its range
# is one line naming the key and the range (``check_config``). null stays allowed where the default is null.
_INT1 = ("int", 1, None)          # a count or size: >= 1
_INT0 = ("int", 0, None)          # >= 0
_POS = ("num", 0.0, None, "open")  # > 0
_NONNEG = ("num", 0.0, None)      # >= 0
_UNIT = ("num", 0.0, 1.0)         # [0, 1]
_UNIT_OPEN_TOP = ("num", 0.0, 1.0, "right_open")   # [0, 1)
_UNIT_OPEN_BOTTOM = ("num", 0.0, 1.0, "left_open")  # (0, 1]
_SEED = ("int", 0, 2 ** 32 - 1)   # what every seeded generator here takes (torch's limit is 2**64 - 1)
CONFIG_RULES_BY_KEY = {
    "threads": _INT0, "seed": _SEED, "data.seed": _SEED, "checkpoint.every": _INT0, "env.num_threads": _INT0,
    "optimizer.lookahead.k": _INT1, "optimizer.lookahead.alpha": _UNIT,   # [0, 1] as Lookahead() and the reference
    "optimizer.polyak.start": _INT0, "algo.alpha": _UNIT_OPEN_TOP, "data.train_frac": ("num", 0.0, 1.0, "open"),
    "model.slice_units": _INT0, "model.init_range": _POS,
    "model.baseline_cell": ("choice", ("torch", "authors")), "train.warmup_epochs": _INT0,
    "data.pad": _INT0, "data.workers": _INT0, "model.lam": _UNIT,
    "model.max_forget_bits": ("choice", (1, 2, 3, 5)),      # the authors' settings; null: no limit
    "model.vf_activation": ("choice", ("elu", "tanh")), "model.kind": ("choice", ("grevnet", "gnn")),
    "train.test_weights": ("choice", ("best", "final")), "eval.size_rule": ("choice", ("random", "authors")),
    "model.flow_self_edges": ("bool",),
    "train.lr_decay": _UNIT_OPEN_BOTTOM,   # translation: the lr factor when validation worsens (1: no decay)
    "train.ae_target_acc": _UNIT_OPEN_BOTTOM, "eval.n_boot": _INT1, "data.subset": _INT1,
}
CONFIG_RULES_BY_NAME = {
    **{k: _INT1 for k in (
        "eig_every", "stats_every", "n_envs", "n_steps", "crop", "max_len", "max_nodes",
        "max_sentences", "min_freq", "min_len", "n_graphs", "n_pairs", "n_test", "n_train", "n_valid", "resize",
        "vocab_size", "beam", "n_samples", "conv3_channels", "dim", "emb", "emb_size", "embed_dim",
        "encoder_steps", "flow_blocks", "head_hidden", "heads", "hidden", "hidden_size", "inner_steps", "layers",
        "n_layers", "steps", "ae_epochs", "batch_size", "bptt", "epochs", "eval_batch_size", "eval_every",
        "flow_epochs", "log_every", "lr_patience", "lr_nonmono", "max_batches_per_epoch", "test_batch_size",
        "total_timesteps", "k", "stop_at", "vf_iters", "batch_steps", "update_bn_batches", "mlp_layers",
        "mlp_hidden", "flow_heads")},
    **{k: _INT0 for k in ("cold_iters", "stats_accum", "polyak_nonmono")},
    **{k: _POS for k in (
        "lr", "ae_lr", "flow_lr", "vf_lr", "eps", "damping", "kl_clip", "target_kl", "cold_max_grad_norm",
        "temperature", "scale_bound", "clip", "max_grad_norm", "lr_min", "embed_init_std", "eta")},
    **{k: _NONNEG for k in ("eig_eps", "noise_std", "ent_coef", "vf_coef", "vf_fisher_coef", "ar_alpha",
                            "tar_beta", "weight_decay", "weight_damping", "cold_lr_scale", "vf_l2",
                            "vf_loss_scale")},
    **{k: _UNIT for k in ("gamma", "gae_lambda")},
    **{k: _UNIT_OPEN_TOP for k in ("stat_decay", "momentum", "dropout", "dropoute", "dropouth", "dropouti",
                                   "wdrop")},
    "lr_gamma": _UNIT_OPEN_BOTTOM,
}
# null is allowed where the default is null, and where code gives it a meaning (max_forget_bits: no limit; clip: no
# clipping; lr_min, stop_at, max_*: no limit ...); for these quantities it has none, so it is refused
_NOT_NULL = {"n_envs", "n_steps", "batch_steps", "max_grad_norm", "steps", "batch_size", "epochs", "bptt",
             "hidden_size", "hidden", "emb", "dim", "heads", "layers", "total_timesteps", "vf_iters", "gamma",
             "gae_lambda", "seed", "n_train", "n_valid", "n_test", "n_pairs", "damping", "kl_clip", "stat_decay",
             "flow_blocks", "encoder_steps", "n_samples", "n_boot", "train.lr", "algo.lr"}
# (optimizer.lr, .eps, .momentum, lookahead k / alpha: null means the preset's or the optimizer's default)


def null_refused(key: str) -> bool:
    return key in _NOT_NULL or key.rsplit(".", 1)[-1] in _NOT_NULL


_SKIP_PREFIXES = ("smoke_overrides", "optim_presets", "hydra")


def _range_text(rule) -> str:
    if rule[0] == "bool":
        return "true or false"
    if rule[0] == "choice":
        return "one of " + ", ".join(str(v) for v in rule[1])
    kind, lo, hi, *opt = rule
    shape = opt[0] if opt else "closed"
    if kind == "int":
        return f"an integer >= {lo}" if hi is None else f"an integer in [{lo}, {hi}]"
    if hi is None:
        return f"a number > {lo}" if shape == "open" else f"a number >= {lo}"
    left = "(" if shape in ("open", "left_open") else "["
    right = ")" if shape in ("open", "right_open") else "]"
    return f"a number in {left}{lo}, {hi}{right}"


def value_error(key: str, value) -> str | None:
    """Why ``value`` is not allowed for ``key`` (None when it is)."""
    rule = CONFIG_RULES_BY_KEY.get(key) or CONFIG_RULES_BY_NAME.get(key.rsplit(".", 1)[-1])
    if rule is None or value is None:
        return None
    if rule[0] == "choice":
        ok = not isinstance(value, bool) and value in rule[1]
    elif rule[0] == "bool":
        ok = isinstance(value, bool)
    else:
        ok = not _item_error(rule, value)
    return None if ok else f"{key}={value!r}: must be {_range_text(rule)}"


# list values by the key's last name: (required length or None, at least one item?, the rule for every item)
_LIST_RULES = {"betas": (2, True, _UNIT_OPEN_TOP), "seeds": (None, True, _SEED),
               "lr_milestones": (None, False, _INT1)}


def list_error(key: str, value) -> str | None:
    """Why a list value is not allowed for ``key`` (None when it is, or when no list rule names the key)."""
    rule = _LIST_RULES.get(key.rsplit(".", 1)[-1])
    if rule is None or value is None:
        return None
    n, nonempty, item = rule
    what = (f"a list of {n} " if n else "a non-empty list of " if nonempty else "a list of ") + \
        _range_text(item).removeprefix("a ").removeprefix("an ").replace("number", "numbers").replace(
            "integer", "integers")
    if not isinstance(value, (list, tuple)) or (n and len(value) != n) or (nonempty and not value) or \
            any(_item_error(item, v) for v in value):
        return f"{key}={value!r}: must be {what}"
    return None


def _item_error(rule, v) -> bool:
    kind, lo, hi, *opt = rule
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (kind == "int" and not isinstance(v, int)):
        return True
    shape = opt[0] if opt else "closed"
    if not math.isfinite(v):
        return True
    ok = v > lo if shape in ("open", "left_open") else v >= lo
    if hi is not None:
        ok = ok and (v < hi if shape in ("open", "right_open") else v <= hi)
    return not ok


# pairs of keys whose first value must not exceed the second
_ORDERED = (("data.min_len", "data.max_len"),)


def _select(container, key: str):
    node = container
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def check_config(cfg) -> None:
    """Every value of a composed config against its allowed range (``CONFIG_RULES_*``); raises UserError."""
    container = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else cfg

    def walk(node, prefix):
        if isinstance(node, dict):
            for k, v in node.items():
                key = f"{prefix}.{k}" if prefix else str(k)
                if not key.startswith(_SKIP_PREFIXES):
                    walk(v, key)
        elif isinstance(node, list):
            err = list_error(prefix, node)
            if err:
                raise UserError(err)
        else:
            err = value_error(prefix, node) or list_error(prefix, node)   # a scalar where a list belongs too
            if err:
                raise UserError(err)

    walk(container, "")
    for lo_key, hi_key in _ORDERED:
        lo, hi = _select(container, lo_key), _select(container, hi_key)
        if isinstance(lo, (int, float)) and isinstance(hi, (int, float)) and lo > hi:
            raise UserError(f"{lo_key}={lo} is above {hi_key}={hi}")


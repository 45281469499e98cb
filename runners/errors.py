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
CONFIG_RULES_BY_KEY = {
    "threads": _INT0, "seed": _INT0, "data.seed": _INT0, "checkpoint.every": _INT0, "env.num_threads": _INT0,
    "optimizer.lookahead.k": _INT1, "optimizer.lookahead.alpha": _UNIT,   # [0, 1] as Lookahead() and the reference
    "optimizer.polyak.start": _INT0, "algo.alpha": _UNIT_OPEN_TOP, "data.train_frac": ("num", 0.0, 1.0, "open"),
    "model.slice_units": _INT0, "algo.kfac.cold_iters": _INT0, "train.warmup_epochs": _INT0,
    "data.pad": _INT0, "data.workers": _INT0, "model.lam": _UNIT, "model.max_forget_bits": _INT1,
}
CONFIG_RULES_BY_NAME = {
    **{k: _INT1 for k in (
        "critic_iters", "eig_every", "stats_every", "n_envs", "n_steps", "crop", "max_len", "max_nodes",
        "max_sentences", "min_freq", "min_len", "n_graphs", "n_pairs", "n_test", "n_train", "n_valid", "resize",
        "vocab_size", "beam", "n_samples", "conv3_channels", "dim", "emb", "emb_size", "embed_dim",
        "encoder_steps", "flow_blocks", "head_hidden", "heads", "hidden", "hidden_size", "inner_steps", "layers",
        "n_layers", "steps", "ae_epochs", "batch_size", "bptt", "epochs", "eval_batch_size", "eval_every",
        "flow_epochs", "log_every", "lr_patience", "lr_nonmono", "max_batches_per_epoch", "test_batch_size",
        "total_timesteps", "k", "ae_steps", "flow_steps", "stop_at")},
    **{k: _POS for k in (
        "lr", "ae_lr", "flow_lr", "critic_lr", "eps", "damping", "kl_clip", "critic_kl_clip", "target_kl",
        "temperature", "scale_bound", "clip", "max_grad_norm", "lr_min", "embed_init_std", "eta")},
    **{k: _NONNEG for k in ("eig_eps", "noise_std", "ent_coef", "vf_coef", "vf_fisher_coef", "ar_alpha",
                            "tar_beta", "weight_decay", "log_std_init_abs")},
    **{k: _UNIT for k in ("gamma", "gae_lambda")},
    **{k: _UNIT_OPEN_TOP for k in ("stat_decay", "momentum", "dropout", "dropoute", "dropouth", "dropouti",
                                   "wdrop")},
    "lr_gamma": _UNIT_OPEN_BOTTOM,
}
_SKIP_PREFIXES = ("smoke_overrides", "optim_presets", "hydra")


def _range_text(rule) -> str:
    kind, lo, hi, *opt = rule
    shape = opt[0] if opt else "closed"
    if kind == "int":
        return f"an integer >= {lo}"
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
    kind, lo, hi, *opt = rule
    shape = opt[0] if opt else "closed"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind == "int" and not isinstance(value, int)):
        return f"{key}={value!r}: must be {_range_text(rule)}"
    if not math.isfinite(value):
        ok = False
    else:
        ok = value > lo if shape in ("open", "left_open") else value >= lo
        if hi is not None:
            ok = ok and (value < hi if shape in ("open", "right_open") else value <= hi)
    return None if ok else f"{key}={value!r}: must be {_range_text(rule)}"


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
            return
        else:
            err = value_error(prefix, node)
            if err:
                raise UserError(err)

    walk(container, "")

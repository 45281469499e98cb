"""Lookahead (Zhang, Lucas, Hinton, Ba, NeurIPS 2019) and Polyak iterate averaging, as optimizer wrappers.

``Lookahead(inner, k, alpha)``: the inner optimizer moves the fast weights for k steps, then
    slow <- slow + alpha * (fast - slow),   fast <- slow.
Details that public wrappers commonly get wrong, and that the tests in ``tests/test_lookahead.py`` pin:

* The slow weights are a copy of the parameters *at construction*, so the first synchronisation
  already pulls back towards the initial point (lazy creation at the first sync anchors them late).
* ``param_groups`` is the inner optimizer's own list, so LR schedulers (which write
  ``group["lr"]``) and ``add_param_group`` reach the inner optimizer, also after ``load_state_dict``.
* ``state_dict`` carries the inner state, the slow weights, the slow momentum and the step counter,
  so a run resumed mid-cycle continues bit for bit.
* Inner state at a sync (``pullback_momentum``): ``"none"`` keeps it (the authors' code default),
  ``"reset"`` zeroes the momentum buffers, ``"pullback"`` interpolates them like the weights
  (m <- alpha * m + (1 - alpha) * m_slow, m_slow <- m) with a separate copy, never an alias (the authors'
  lookahead_pytorch.py stores the live buffer itself as m_slow, so from the second sync on its "pullback" scales m
  by alpha (2 - alpha); it also handles SGD's buffer only, where ours also pulls back Adam's ``exp_avg``).
  Momentum buffers are the inner state keys in ``MOMENTUM_KEYS`` (SGD's ``momentum_buffer``,
  Adam/AdamW's first moment ``exp_avg``).
* Updates use ``torch._foreach`` ops over all parameters at once; ``fused_sync=True`` compiles the
  sync into one fused loop per tensor (fewer memory passes; see scripts/bench_lookahead.py).
* ``with opt.eval_weights():`` swaps the slow weights in for evaluation and restores the fast ones.
* Works with ``torch.amp.GradScaler``: a step the scaler skips (inf/NaN gradients) never reaches
  ``step()`` (the wrapper does not claim ``_step_supports_amp_scaling``, also around a fused inner
  optimizer), so it moves neither the slow weights nor the k-step counter (tested).
"""
from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch
from torch.optim import Optimizer

MOMENTUM_KEYS = ("momentum_buffer", "exp_avg")
PULLBACK_MODES = ("none", "reset", "pullback")


class _Wrapper(Optimizer):
    """An Optimizer that delegates to an inner one and shares its ``param_groups``.

    Subclassing ``Optimizer`` keeps ``torch.optim.lr_scheduler`` (which type-checks its optimizer)
    and ``GradScaler`` working; the base constructor only sets up hooks, on a placeholder group.
    """

    def __init__(self, optimizer: Optimizer):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"expected a torch.optim.Optimizer, got {type(optimizer).__name__}")
        self._ready = False
        super().__init__([{"params": []}], dict(optimizer.defaults))
        self.optimizer = optimizer
        self.param_groups = optimizer.param_groups   # the same list object: schedulers see one lr
        self.state = optimizer.state
        self._ready = True

    def add_param_group(self, param_group: dict) -> None:
        if not self._ready:                          # the base constructor's placeholder group
            return super().add_param_group(param_group)
        self.optimizer.add_param_group(param_group)
        self._added(self.optimizer.param_groups[-1]["params"])

    def _added(self, params: list[torch.Tensor]) -> None:
        raise NotImplementedError

    def _params(self) -> list[torch.Tensor]:
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    @contextlib.contextmanager
    def _swapped_in(self, values: list[torch.Tensor]) -> Iterator[None]:
        params = self._params()
        with torch.no_grad():
            backup = [p.detach().clone() for p in params]
            torch._foreach_copy_(params, values)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_(params, backup)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.optimizer!r})"


def _sync_body(slow: list[torch.Tensor], fast: list[torch.Tensor], alpha: float) -> None:
    for s, f in zip(slow, fast):
        new = torch.lerp(s, f, alpha)
        s.copy_(new)
        f.copy_(new)


@functools.cache
def _compiled_sync():
    """The sync as one fused loop per tensor (torch.compile): reads slow and fast once and writes
    both, 4 memory passes instead of the 5 of lerp_ + copy_, and no separate copy kernel."""
    return torch.compile(_sync_body, dynamic=False)


class Lookahead(_Wrapper):
    def __init__(self, optimizer: Optimizer, k: int = 5, alpha: float = 0.8, pullback_momentum: str = "none",
                 fused_sync: bool = False):
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"Lookahead k must be an integer >= 1, got {k!r}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"Lookahead alpha must be in [0, 1], got {alpha!r}")
        if pullback_momentum not in PULLBACK_MODES:
            raise ValueError(f"pullback_momentum must be one of {PULLBACK_MODES}, got {pullback_momentum!r}")
        super().__init__(optimizer)
        self.k, self.alpha, self.pullback_momentum = k, float(alpha), pullback_momentum
        self.fused_sync = fused_sync   # torch.compile'd sync (compiles once, ~20 s on a CPU)
        self.steps = 0   # inner steps taken; a sync follows every k-th
        with torch.no_grad():
            self.slow = [p.detach().clone() for p in self._params()]
        self.slow_momentum: dict[int, dict[str, torch.Tensor]] = {}   # param index -> key -> tensor

    def _added(self, params: list[torch.Tensor]) -> None:
        with torch.no_grad():
            self.slow.extend(p.detach().clone() for p in params)

    def step(self, closure=None):
        loss = self.optimizer.step(closure)
        self.steps += 1
        if self.steps % self.k == 0:
            self.sync()
        return loss

    @torch.no_grad()
    def sync(self) -> None:
        """slow += alpha * (fast - slow); fast = slow; then the inner-state option."""
        fast = self._params()
        if self.fused_sync:
            _compiled_sync()(self.slow, fast, self.alpha)
        else:
            torch._foreach_lerp_(self.slow, fast, self.alpha)
            torch._foreach_copy_(fast, self.slow)
        if self.pullback_momentum == "none":
            return
        for key in MOMENTUM_KEYS:
            idx = [i for i, p in enumerate(fast) if key in self.optimizer.state.get(p, {})]
            if not idx:
                continue
            bufs = [self.optimizer.state[fast[i]][key] for i in idx]
            if self.pullback_momentum == "reset":
                torch._foreach_zero_(bufs)
                continue
            slow_bufs = [self.slow_momentum.setdefault(i, {}).setdefault(key, torch.zeros_like(b))
                         for i, b in zip(idx, bufs)]
            torch._foreach_lerp_(slow_bufs, bufs, self.alpha)   # m_slow <- m_slow + alpha (m - m_slow)
            torch._foreach_copy_(bufs, slow_bufs)               # copied into the live buffer, no alias

    def eval_weights(self):
        """Context manager: the parameters hold the slow weights inside, the fast ones after."""
        return self._swapped_in(self.slow)

    def state_dict(self) -> dict:
        return {"inner": self.optimizer.state_dict(),
                "lookahead": {"k": self.k, "alpha": self.alpha, "pullback_momentum": self.pullback_momentum,
                              "steps": self.steps, "slow": [s.clone() for s in self.slow],
                              "slow_momentum": {i: {k: v.clone() for k, v in d.items()}
                                                for i, d in self.slow_momentum.items()}}}

    def load_state_dict(self, state_dict: dict) -> None:
        la = state_dict["lookahead"]
        if len(la["slow"]) != len(self.slow):
            raise ValueError(f"Lookahead state has {len(la['slow'])} slow tensors, the optimizer "
                             f"{len(self.slow)} parameters")
        self.optimizer.load_state_dict(state_dict["inner"])
        # load_state_dict replaces the inner param_groups list; share the new one again
        self.param_groups = self.optimizer.param_groups
        self.state = self.optimizer.state
        self.k, self.alpha, self.pullback_momentum = la["k"], la["alpha"], la["pullback_momentum"]
        self.steps = la["steps"]
        with torch.no_grad():
            for s, v in zip(self.slow, la["slow"]):
                s.copy_(v)
        self.slow_momentum = {int(i): {k: v.to(self.slow[int(i)].device).clone() for k, v in d.items()}
                              for i, d in la["slow_momentum"].items()}


class Polyak(_Wrapper):
    """Polyak-Ruppert averaging: the arithmetic mean of the iterates from the moment averaging starts (the
    paper's "Polyak" baseline around SGD). ``start`` inner steps before averaging starts; ``start=None`` waits
    for ``start_averaging()`` (the runner's trigger: AWD-LSTM's NT-ASGD starts when validation stops improving,
    which is the Polyak row of the Lookahead paper's PTB table). ``eval_weights()`` swaps the average in."""

    def __init__(self, optimizer: Optimizer, start: int | None = 0):
        super().__init__(optimizer)
        self.start, self.steps, self.count = start, 0, 0
        with torch.no_grad():
            self.average = [p.detach().clone() for p in self._params()]

    def _added(self, params: list[torch.Tensor]) -> None:
        with torch.no_grad():
            self.average.extend(p.detach().clone() for p in params)

    def start_averaging(self) -> None:
        """Start averaging now (from the next step on); a no-op once averaging has started."""
        if self.start is None or self.start > self.steps:
            self.start = self.steps

    @property
    def averaging(self) -> bool:
        return self.start is not None and self.steps >= self.start

    def step(self, closure=None):
        loss = self.optimizer.step(closure)
        self.steps += 1
        if self.start is not None and self.steps > self.start:
            self.count += 1
            with torch.no_grad():   # running mean: avg += (p - avg) / n
                torch._foreach_lerp_(self.average, self._params(), 1.0 / self.count)
        return loss

    def eval_weights(self):
        if self.count == 0:      # nothing averaged yet: evaluate the iterate itself
            return contextlib.nullcontext()
        return self._swapped_in(self.average)

    def state_dict(self) -> dict:
        return {"inner": self.optimizer.state_dict(),
                "polyak": {"start": self.start, "steps": self.steps, "count": self.count,
                           "average": [a.clone() for a in self.average]}}

    def load_state_dict(self, state_dict: dict) -> None:
        self.optimizer.load_state_dict(state_dict["inner"])
        self.param_groups, self.state = self.optimizer.param_groups, self.optimizer.state
        pk = state_dict["polyak"]
        self.start, self.steps, self.count = pk["start"], pk["steps"], pk["count"]
        with torch.no_grad():
            for a, v in zip(self.average, pk["average"]):
                a.copy_(v)


def eval_weights(optimizer: Optimizer):
    """The weights to evaluate: slow (Lookahead), averaged (Polyak), else the parameters as they are."""
    fn = getattr(optimizer, "eval_weights", None)
    return fn() if fn is not None else contextlib.nullcontext()


INNER = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}


def build_optimizer(params, ocfg: dict, presets: dict | None = None) -> Optimizer:
    """Build an optimizer from the ``optimizer`` config group.

    ``ocfg`` fields left ``null`` take the experiment's preset for this optimizer name
    (``optim_presets.<name>``), then the defaults below; a value given on the command line wins.
    """
    ocfg = dict(ocfg)
    name = ocfg.get("name")
    preset = dict((presets or {}).get(name) or {})

    def pick(key, default=None):
        v = ocfg.get(key)
        if v is None:
            v = preset.get(key)
        return default if v is None else v

    inner = ocfg.get("inner")
    if inner not in INNER:
        raise ValueError(f"optimizer.inner must be one of {sorted(INNER)}, got {inner!r}")
    lr = pick("lr")
    if lr is None:
        raise ValueError(f"optimizer '{name}': no learning rate (set optimizer.lr or optim_presets.{name}.lr)")
    wd = float(pick("weight_decay", 0.0))
    if inner == "sgd":
        opt = torch.optim.SGD(params, lr=float(lr), momentum=float(pick("momentum", 0.0)), weight_decay=wd,
                              nesterov=bool(pick("nesterov", False)))
    else:
        opt = INNER[inner](params, lr=float(lr), betas=tuple(pick("betas", (0.9, 0.999))),
                           eps=float(pick("eps", 1e-8)), weight_decay=wd)
    la, pk = ocfg.get("lookahead"), ocfg.get("polyak")
    if la is not None:
        la_preset = dict(preset.get("lookahead") or {})
        la = {k: (v if v is not None else la_preset.get(k)) for k, v in dict(la).items()}
        k, alpha = la.get("k"), la.get("alpha")   # null: the authors' defaults (alpha 0.8, k 5)
        return Lookahead(opt, k=5 if k is None else k, alpha=0.8 if alpha is None else float(alpha),
                         pullback_momentum=la.get("pullback_momentum") or "none", fused_sync=bool(la.get("fused")))
    if pk is not None:
        start = dict(pk).get("start")   # null: the runner starts averaging (its trigger)
        return Polyak(opt, start=None if start is None else int(start))
    return opt

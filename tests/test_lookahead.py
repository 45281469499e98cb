"""Lookahead and Polyak wrappers against hand computations."""
import io

import pytest
import torch

from algorithms.lookahead import Lookahead, Polyak, build_optimizer, eval_weights


def make_model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))


def batch(step):
    g = torch.Generator().manual_seed(1000 + step)
    return torch.randn(16, 4, generator=g), torch.randint(0, 3, (16,), generator=g)


def train_steps(model, opt, start, n):
    for s in range(start, start + n):
        x, y = batch(s)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


def params(model):
    return [p.detach().clone() for p in model.parameters()]


INNERS = {
    "sgd": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-3),
    "adam": lambda p: torch.optim.Adam(p, lr=0.01),
}


@pytest.mark.parametrize("inner", sorted(INNERS))
def test_k1_alpha1_equals_inner(inner):
    a, b = make_model(), make_model()
    train_steps(a, INNERS[inner](a.parameters()), 0, 12)
    train_steps(b, Lookahead(INNERS[inner](b.parameters()), k=1, alpha=1.0), 0, 12)
    for x, y in zip(params(a), params(b)):
        assert torch.equal(x, y)


def naive_lookahead_sgd(model, k, alpha, lr, mom, cycles):
    """Independent loop: per-tensor heavy-ball SGD and the Lookahead rule, no torch.optim."""
    ps = [p.detach().clone() for p in model.parameters()]
    slow = [p.clone() for p in ps]
    bufs = [None] * len(ps)
    work = make_model()
    for step in range(cycles * k):
        with torch.no_grad():
            for w, p in zip(work.parameters(), ps):
                w.copy_(p)
        work.zero_grad()
        x, y = batch(step)
        torch.nn.functional.cross_entropy(work(x), y).backward()
        for i, w in enumerate(work.parameters()):
            g = w.grad.detach()
            bufs[i] = g.clone() if bufs[i] is None else mom * bufs[i] + g
            ps[i] = ps[i] - lr * bufs[i]
        if (step + 1) % k == 0:
            for i in range(len(ps)):
                slow[i] = slow[i] + alpha * (ps[i] - slow[i])
                ps[i] = slow[i].clone()
    return ps, slow


def test_first_cycle_matches_hand_formula_and_naive_loop():
    k, alpha = 5, 0.8
    ref, model = make_model(), make_model()
    slow0 = params(model)
    train_steps(ref, torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9), 0, k)   # fast_k
    opt = Lookahead(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), k=k, alpha=alpha)
    train_steps(model, opt, 0, k - 1)
    assert all(torch.equal(s, s0) for s, s0 in zip(opt.slow, slow0))   # anchored at the initial point
    train_steps(model, opt, k - 1, 1)
    for p, s, s0, fk in zip(model.parameters(), opt.slow, slow0, params(ref)):
        expect = s0 + alpha * (fk - s0)
        torch.testing.assert_close(s, expect, rtol=0, atol=1e-7)
        assert torch.equal(p.detach(), s)   # fast reset to slow

    # three more cycles against the naive loop
    model2 = make_model()
    opt2 = Lookahead(torch.optim.SGD(model2.parameters(), lr=0.1, momentum=0.9), k=k, alpha=alpha)
    train_steps(model2, opt2, 0, 4 * k)
    fast_n, slow_n = naive_lookahead_sgd(make_model(), k, alpha, 0.1, 0.9, cycles=4)
    for p, s, fn, sn in zip(model2.parameters(), opt2.slow, fast_n, slow_n):
        torch.testing.assert_close(p.detach(), fn, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(s, sn, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("inner,mode", [("sgd", "none"), ("sgd", "pullback"), ("adam", "reset"), ("adam", "pullback")])
def test_state_dict_mid_cycle_resumes_bit_for_bit(inner, mode):
    k = 5
    a = make_model()
    opt_a = Lookahead(INNERS[inner](a.parameters()), k=k, alpha=0.5, pullback_momentum=mode)
    train_steps(a, opt_a, 0, 7)                       # mid-cycle (7 = k + 2)
    buf = io.BytesIO()
    torch.save({"model": a.state_dict(), "opt": opt_a.state_dict()}, buf)
    train_steps(a, opt_a, 7, 3 * k)

    buf.seek(0)
    state = torch.load(buf)
    b = make_model(seed=123)                          # different init: everything must come from the file
    opt_b = Lookahead(INNERS[inner](b.parameters()), k=3, alpha=0.9)   # and the hyper-parameters too
    b.load_state_dict(state["model"])
    opt_b.load_state_dict(state["opt"])
    assert opt_b.steps == 7 and opt_b.k == k and opt_b.pullback_momentum == mode
    train_steps(b, opt_b, 7, 3 * k)
    for x, y in zip(params(a), params(b)):
        assert torch.equal(x, y)
    for x, y in zip(opt_a.slow, opt_b.slow):
        assert torch.equal(x, y)


def test_pullback_interpolates_a_copy_of_the_momentum():
    model = make_model()
    opt = Lookahead(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), k=2, alpha=0.5,
                    pullback_momentum="pullback")
    train_steps(model, opt, 0, 1)
    p0 = next(model.parameters())
    m_before = opt.optimizer.state[p0]["momentum_buffer"].clone()
    train_steps(model, opt, 1, 1)                     # sync happens here; slow momentum started at 0
    # reconstruct the buffer the inner step produced before the sync: m2 = 0.9 m1 + g2
    ref = make_model()
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    train_steps(ref, ref_opt, 0, 2)
    m2 = ref_opt.state[next(ref.parameters())]["momentum_buffer"]
    live = opt.optimizer.state[p0]["momentum_buffer"]
    slow_m = opt.slow_momentum[0]["momentum_buffer"]
    torch.testing.assert_close(live, 0.5 * m2 + 0.5 * torch.zeros_like(m2))
    assert live.data_ptr() != slow_m.data_ptr()
    live.add_(1.0)                                    # touching the live buffer leaves the copy alone
    torch.testing.assert_close(slow_m, 0.5 * m2)
    assert not torch.equal(m_before, live)


def test_reset_zeroes_momentum_at_sync():
    model = make_model()
    opt = Lookahead(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), k=3, pullback_momentum="reset")
    train_steps(model, opt, 0, 3)
    for p in model.parameters():
        assert torch.count_nonzero(opt.optimizer.state[p]["momentum_buffer"]) == 0


def test_scheduler_reaches_inner_also_after_load():
    model = make_model()
    opt = Lookahead(torch.optim.SGD(model.parameters(), lr=0.1), k=5)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    train_steps(model, opt, 0, 1)
    sched.step()
    assert opt.optimizer.param_groups[0]["lr"] == pytest.approx(0.05)
    # the rate the inner step uses: momentum-free SGD moves by lr * grad
    before = params(model)
    x, y = batch(50)
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    grads = [p.grad.clone() for p in model.parameters()]
    opt.step()
    for p, b, g in zip(model.parameters(), before, grads):
        torch.testing.assert_close(p.detach(), b - 0.05 * g)

    state, sstate = opt.state_dict(), sched.state_dict()
    model2 = make_model()
    opt2 = Lookahead(torch.optim.SGD(model2.parameters(), lr=0.1), k=5)
    sched2 = torch.optim.lr_scheduler.StepLR(opt2, step_size=1, gamma=0.5)
    opt2.load_state_dict(state)
    sched2.load_state_dict(sstate)
    train_steps(model2, opt2, 0, 1)
    sched2.step()
    assert opt2.optimizer.param_groups[0]["lr"] == pytest.approx(0.025)   # saved at 0.05, one more halving
    assert opt2.param_groups is opt2.optimizer.param_groups


def test_add_param_group_gets_slow_weights_and_syncs():
    model = make_model()
    opt = Lookahead(torch.optim.SGD(model[0].parameters(), lr=0.1), k=2, alpha=0.5)
    opt.add_param_group({"params": model[2].parameters(), "lr": 0.2})
    assert len(opt.slow) == 4 and len(opt.param_groups) == 2
    w0 = model[2].weight.detach().clone()
    train_steps(model, opt, 0, 2)
    ref = make_model()
    r = torch.optim.SGD([{"params": ref[0].parameters()}, {"params": ref[2].parameters(), "lr": 0.2}], lr=0.1)
    train_steps(ref, r, 0, 2)
    torch.testing.assert_close(model[2].weight.detach(), w0 + 0.5 * (ref[2].weight.detach() - w0))


def test_eval_weights_swaps_slow_in_and_restores_fast():
    model = make_model()
    opt = Lookahead(torch.optim.Adam(model.parameters(), lr=0.01), k=5)
    train_steps(model, opt, 0, 3)
    fast = params(model)
    with eval_weights(opt):
        for p, s in zip(model.parameters(), opt.slow):
            assert torch.equal(p.detach(), s)
    for p, f in zip(model.parameters(), fast):
        assert torch.equal(p.detach(), f)


def test_grad_scaler_skipped_step_does_not_advance_counter():
    model = make_model()
    opt = Lookahead(torch.optim.SGD(model.parameters(), lr=0.1), k=2)
    scaler = torch.amp.GradScaler("cpu", init_scale=4.0)
    x, y = batch(0)
    loss = torch.nn.functional.cross_entropy(model(x), y)
    scaler.scale(loss).backward()
    next(model.parameters()).grad[0, 0] = float("inf")
    before = params(model)
    scaler.step(opt)
    scaler.update()
    assert opt.steps == 0 and all(torch.equal(a, b) for a, b in zip(before, params(model)))
    assert scaler.get_scale() == 2.0
    opt.zero_grad()
    scaler.scale(torch.nn.functional.cross_entropy(model(x), y)).backward()
    scaler.step(opt)
    scaler.update()
    assert opt.steps == 1


def test_polyak_average_is_mean_of_iterates():
    model = make_model()
    opt = Polyak(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), start=2)
    iterates = []
    for s in range(6):
        train_steps(model, opt, s, 1)
        iterates.append(params(model))
    expect = [torch.stack([it[i] for it in iterates[2:]]).mean(0) for i in range(len(iterates[0]))]
    with eval_weights(opt):
        for p, e in zip(model.parameters(), expect):
            torch.testing.assert_close(p.detach(), e)
    for p, last in zip(model.parameters(), iterates[-1]):
        assert torch.equal(p.detach(), last)


def test_build_optimizer_presets_and_overrides():
    model = make_model()
    presets = {"lookahead_sgd": {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-3, "lookahead": {"alpha": 0.8}}}
    cfg = {"name": "lookahead_sgd", "inner": "sgd", "lr": None, "momentum": None, "weight_decay": None,
           "lookahead": {"k": None, "alpha": None, "pullback_momentum": "none"}, "polyak": None}
    opt = build_optimizer(model.parameters(), cfg, presets)
    assert isinstance(opt, Lookahead) and opt.alpha == 0.8 and opt.k == 5
    g = opt.param_groups[0]
    assert (g["lr"], g["momentum"], g["weight_decay"]) == (0.1, 0.9, 1e-3)
    opt = build_optimizer(model.parameters(), {**cfg, "lr": 0.3}, presets)    # command line wins
    assert opt.param_groups[0]["lr"] == 0.3
    with pytest.raises(ValueError, match="no learning rate"):
        build_optimizer(model.parameters(), {**cfg, "name": "sgd", "lookahead": None}, presets)
    with pytest.raises(ValueError, match="optimizer.inner"):
        build_optimizer(model.parameters(), {**cfg, "inner": "lion"}, presets)
    with pytest.raises(ValueError, match="alpha"):
        Lookahead(torch.optim.SGD(model.parameters(), lr=0.1), alpha=1.5)


def test_fused_sync_matches_the_foreach_sync():
    a, b = make_model(), make_model()
    opt_a = Lookahead(torch.optim.SGD(a.parameters(), lr=0.1, momentum=0.9), k=3, alpha=0.8)
    opt_b = Lookahead(torch.optim.SGD(b.parameters(), lr=0.1, momentum=0.9), k=3, alpha=0.8, fused_sync=True)
    train_steps(a, opt_a, 0, 9)
    train_steps(b, opt_b, 0, 9)
    for x, y, sa, sb in zip(a.parameters(), b.parameters(), opt_a.slow, opt_b.slow):
        torch.testing.assert_close(x, y, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(sa, sb, rtol=1e-6, atol=1e-7)
        assert torch.equal(y.detach(), sb) and y.data_ptr() != sb.data_ptr()


@pytest.mark.parametrize("inner", ["sgd", "adam_fused"])
def test_grad_scaler_skipped_step_leaves_slow_weights_and_counter(inner):
    """k=1: a counted step would sync at once. A step GradScaler skips (inf gradients) must move neither the
    fast nor the slow weights nor the counter, also around a fused inner optimizer (which itself tells the
    scaler it handles inf checks: the wrapper must not inherit that claim)."""
    model = make_model()
    base = torch.optim.SGD(model.parameters(), lr=0.1) if inner == "sgd" else \
        torch.optim.Adam(model.parameters(), lr=0.1, fused=True)
    opt = Lookahead(base, k=1, alpha=0.5)
    assert not getattr(opt, "_step_supports_amp_scaling", False)
    scaler = torch.amp.GradScaler("cpu", init_scale=4.0)
    x, y = batch(0)
    scaler.scale(torch.nn.functional.cross_entropy(model(x), y)).backward()
    next(model.parameters()).grad[0, 0] = float("inf")
    fast, slow = params(model), [s.clone() for s in opt.slow]
    scaler.step(opt)
    scaler.update()
    assert opt.steps == 0
    assert all(torch.equal(a, b) for a, b in zip(fast, params(model)))
    assert all(torch.equal(a, b) for a, b in zip(slow, opt.slow))
    opt.zero_grad()
    scaler.scale(torch.nn.functional.cross_entropy(model(x), y)).backward()
    scaler.step(opt)           # a finite step now counts and syncs
    scaler.update()
    assert opt.steps == 1 and not all(torch.equal(a, b) for a, b in zip(slow, opt.slow))


def test_polyak_starts_on_the_trigger_not_at_initialisation():
    model = make_model()
    opt = Polyak(torch.optim.SGD(model.parameters(), lr=0.1), start=None)
    train_steps(model, opt, 0, 3)
    assert opt.count == 0 and not opt.averaging
    now = params(model)
    assert not all(torch.equal(p, a) for p, a in zip(now, opt.average))   # the copy made at construction
    with eval_weights(opt):             # nothing averaged yet: the iterate itself
        assert all(torch.equal(p.detach(), q) for p, q in zip(model.parameters(), now))
    opt.start_averaging()
    iterates = []
    for s in range(3, 7):
        train_steps(model, opt, s, 1)
        iterates.append(params(model))
    opt.start_averaging()               # a second trigger changes nothing
    assert opt.count == 4 and opt.start == 3
    expect = [torch.stack([it[i] for it in iterates]).mean(0) for i in range(len(iterates[0]))]
    with eval_weights(opt):
        for p, e in zip(model.parameters(), expect):
            torch.testing.assert_close(p.detach(), e)
    again = Polyak(torch.optim.SGD(make_model().parameters(), lr=0.1), start=None)
    again.load_state_dict(opt.state_dict())
    assert again.start == 3 and again.count == 4


def test_language_model_polyak_starts_on_the_nonmonotone_trigger(tmp_path):
    """optimizer=polyak (start: null) in the LM runner: averaging starts at the first epoch whose validation loss
    is worse than the best before the last polyak_nonmono epochs (AWD-LSTM's NT-ASGD), not before."""
    import json

    from conftest import run_cli
    from fixtures import write_ptb

    write_ptb(tmp_path / "data")
    p = run_cli("experiment=lookahead_ptb_small", "optimizer=polyak", "++optim_presets.polyak.lr=30", "smoke=true",
                f"data.root={tmp_path}/data", "train.epochs=6", "train.polyak_nonmono=1", "train.lr_schedule=constant",
                f"hydra.run.dir={tmp_path}/run", "logger.mode=disabled", "logger.progress=false", check=True)
    import torch as _t
    ck = _t.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if "val/loss" in x]
    vals = [r["val/loss"] for r in rows]
    fired = next(i for i in range(2, len(vals)) if vals[i] > min(vals[:i - 1]))   # this fixture's lr 30 overshoots
    pk = ck["optimizer"]["polyak"]
    assert fired < len(vals) - 1                       # the trigger came before the last epoch
    assert pk["start"] == rows[fired]["step"]          # averaging from the end of that epoch on, not from step 0
    assert pk["count"] == pk["steps"] - pk["start"] > 0


def test_batchnorm_statistics_are_recomputed_for_the_averaged_weights():
    """update_bn for Polyak: BN running statistics of the evaluated (averaged) weights equal a cumulative average
    over the training batches computed by hand; the training model's own statistics come back afterwards."""
    from runners.classify import recompute_bn, restore_bn

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    xs = [torch.randn(8, 4) for _ in range(5)]

    class Data:
        def train_batches(self, epoch, start):
            for i, x in enumerate(xs):
                yield i, x, None

    bn = net[1]
    bn.running_mean.fill_(7.0)
    before = (bn.running_mean.clone(), bn.running_var.clone())
    saved = recompute_bn(net, Data(), 0, False, None)
    h = torch.cat([net[0](x) for x in xs]).detach()
    per_batch_means = torch.stack([net[0](x).detach().mean(0) for x in xs])
    torch.testing.assert_close(bn.running_mean, per_batch_means.mean(0))
    per_batch_vars = torch.stack([net[0](x).detach().var(0, unbiased=True) for x in xs])
    torch.testing.assert_close(bn.running_var, per_batch_vars.mean(0))
    assert h.shape[0] == 40 and bn.momentum == 0.1
    restore_bn(net, saved)
    assert torch.equal(bn.running_mean, before[0]) and torch.equal(bn.running_var, before[1])


def _conf_optimizer(name):
    from omegaconf import OmegaConf

    from conftest import ROOT

    return OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "optimizer" / f"{name}.yaml"))


def _check_built(opt, cfg, lr, wd, adam, sgd, la):
    """The optimizer built from ``cfg`` has exactly these hyperparameters (adam: (betas, eps); sgd: (momentum,
    nesterov); la: Lookahead's (k, alpha, pullback, fused)) and is the wrapper the config names."""
    adam_like = cfg["inner"] in ("adam", "adamw")
    assert isinstance(opt, Lookahead) == (cfg.get("lookahead") is not None)
    assert isinstance(opt, Polyak) == (cfg.get("polyak") is not None)
    g = opt.param_groups[0]
    assert g["lr"] == lr and type(g["lr"]) is float and g["weight_decay"] == wd
    if adam_like:
        assert (tuple(g["betas"]), g["eps"]) == adam
    else:
        assert (g["momentum"], g["nesterov"]) == sgd
    if isinstance(opt, Lookahead):
        assert (opt.k, opt.alpha, opt.pullback_momentum, opt.fused_sync) == la


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "polyak", "lookahead_sgd", "lookahead_adam"])
def test_build_optimizer_every_config_file_defaults_presets_and_command_line(name):
    """Every optimizer config as shipped: nothing set -> the documented defaults; a preset -> the preset's values;
    the command line -> its values; for each hyperparameter the optimizer actually built is checked."""
    cfg = _conf_optimizer(name)
    inner = cfg["inner"]
    adam_like = inner in ("adam", "adamw")
    # 1. nothing but the lr: the defaults (SGD: no momentum, no Nesterov; Adam: betas (0.9, 0.999), eps 1e-8;
    # no weight decay; Lookahead: the authors' alpha 0.8, k 5, no momentum pullback, unfused sync)
    nothing = {k: (v if k in ("name", "inner") else None) for k, v in cfg.items()}
    if cfg.get("lookahead") is not None:
        nothing["lookahead"] = {"k": None, "alpha": None, "pullback_momentum": None, "fused": None}
    if cfg.get("polyak") is not None:
        nothing["polyak"] = {"start": None}
    opt = build_optimizer(make_model().parameters(), {**nothing, "lr": 0.01})
    assert type(opt.optimizer if isinstance(opt, (Lookahead, Polyak)) else opt) is {
        "sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[inner]
    _check_built(opt, cfg, 0.01, 0.0, ((0.9, 0.999), 1e-8), (0.0, False), (5, 0.8, "none", False))
    if isinstance(opt, Polyak):
        assert opt.start is None and not opt.averaging
    # 2. presets fill what the config leaves null
    preset = {"lr": 0.2, "weight_decay": 1e-4, **({"betas": (0.8, 0.9), "eps": 1e-6} if adam_like else
                                                  {"momentum": 0.7, "nesterov": True}),
              "lookahead": {"k": 7, "alpha": 0.6, "pullback_momentum": "reset"}}
    base = {k: (None if k in preset and k not in ("nesterov", "lookahead") else v) for k, v in cfg.items()}
    if not adam_like:
        base["nesterov"] = None
    if base.get("lookahead") is not None:
        base["lookahead"] = {"k": None, "alpha": None, "pullback_momentum": None, "fused": None}
    opt = build_optimizer(make_model().parameters(), base, {name: preset})
    _check_built(opt, base, 0.2, 1e-4, ((0.8, 0.9), 1e-6), (0.7, True), (7, 0.6, "reset", False))
    # 3. the command line wins over the preset
    given = {**base, "lr": 0.05, "weight_decay": 2e-4,
             **({"betas": (0.5, 0.6), "eps": 1e-5} if adam_like else {"momentum": 0.3, "nesterov": False})}
    if base.get("lookahead") is not None:
        given["lookahead"] = {"k": 3, "alpha": 0.5, "pullback_momentum": "pullback", "fused": True}
    if base.get("polyak") is not None:
        given["polyak"] = {"start": 11}
    opt = build_optimizer(make_model().parameters(), given, {name: preset})
    _check_built(opt, given, 0.05, 2e-4, ((0.5, 0.6), 1e-5), (0.3, False), (3, 0.5, "pullback", True))
    if isinstance(opt, Polyak):
        assert opt.start == 11
    if isinstance(opt, (Lookahead, Polyak)):   # the wrapper names itself around its inner optimizer's repr
        assert repr(opt) == f"{type(opt).__name__}({opt.optimizer!r})"


def test_polyak_averages_parameters_added_later():
    """A parameter group added after construction is averaged too (from its value when added)."""
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 1)
    opt = Polyak(torch.optim.SGD(a.parameters(), lr=0.1), start=0)
    opt.add_param_group({"params": list(b.parameters())})
    assert len(opt.average) == 4 and all(torch.equal(s, p) for s, p in zip(opt.average[2:], b.parameters()))
    iterates = []
    for _ in range(3):
        opt.zero_grad()
        (b(a(torch.ones(1, 2))) ** 2).sum().backward()
        opt.step()
        iterates.append([p.detach().clone() for p in b.parameters()])
    for i, p in enumerate(b.parameters()):
        torch.testing.assert_close(opt.average[2 + i], torch.stack([it[i] for it in iterates]).mean(0))


def test_wrapper_contracts_defaults_errors_closure_and_groups():
    """What a caller relies on beyond the update rule: the authors' defaults in the class itself, errors that name
    the problem, the closure reaching the inner optimizer, gradients cleared to None, a later group's own slow
    weights, the inner state shared, and eval_weights() on a plain optimizer doing nothing."""
    model = make_model()
    la = Lookahead(torch.optim.SGD(model.parameters(), lr=0.1))
    assert (la.k, la.alpha, la.pullback_momentum, la.fused_sync) == (5, 0.8, "none", False)
    assert Polyak(torch.optim.SGD(model.parameters(), lr=0.1)).start == 0
    with pytest.raises(TypeError, match="expected a torch.optim.Optimizer, got Linear"):
        Lookahead(torch.nn.Linear(2, 2))
    for bad, match in (({"k": 0}, "k must be an integer >= 1, got 0"), ({"k": 2.5}, "got 2.5"),
                       ({"pullback_momentum": "pull"}, "pullback_momentum must be one of")):
        with pytest.raises(ValueError, match=match):
            Lookahead(torch.optim.SGD(model.parameters(), lr=0.1), **bad)
    # the closure reaches the inner optimizer and its loss comes back, for both wrappers
    x, y = torch.randn(6, 4), torch.randint(0, 3, (6,))
    for opt in (Lookahead(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)),
                Polyak(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))):
        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            return loss
        assert torch.is_tensor(opt.step(closure))
        assert opt.state is opt.optimizer.state and len(opt.state) > 0
        opt.zero_grad()
        assert all(p.grad is None for p in model.parameters())
    # groups added one after another: each one's slow weights are its own parameters' values
    a, b, c = torch.nn.Linear(2, 2), torch.nn.Linear(2, 3), torch.nn.Linear(3, 1)
    la = Lookahead(torch.optim.SGD(a.parameters(), lr=0.1))
    la.add_param_group({"params": list(b.parameters())})
    la.add_param_group({"params": list(c.parameters())})
    assert [s.shape for s in la.slow] == [p.shape for m in (a, b, c) for p in m.parameters()]
    # a plain optimizer has no slow or averaged weights: eval_weights() leaves the parameters alone
    plain = torch.optim.SGD(a.parameters(), lr=0.1)
    before = [p.detach().clone() for p in a.parameters()]
    with eval_weights(plain):
        assert all(torch.equal(p, q) for p, q in zip(a.parameters(), before))


def test_lookahead_alpha_bounds_and_state_after_loading():
    """alpha is accepted on the closed interval [0, 1] (alpha 0: the slow weights never move and every k-th step
    resets the fast ones); a wrong state names both counts; after loading, the wrapper's state is the inner
    optimizer's new state and the slow momentum sits on the parameters' device (a 'meta' model loading a CPU
    checkpoint)."""
    model = make_model()
    start = params(model)
    la = Lookahead(torch.optim.SGD(model.parameters(), lr=0.1), k=2, alpha=0.0)
    train_steps(model, la, 0, 4)
    assert all(torch.equal(p.detach(), q) for p, q in zip(model.parameters(), start))
    for bad in (-0.1, 1.1):
        with pytest.raises(ValueError, match=rf"^Lookahead alpha must be in \[0, 1\], got {bad}$"):
            Lookahead(torch.optim.SGD(model.parameters(), lr=0.1), alpha=bad)
    Lookahead(torch.optim.SGD(model.parameters(), lr=0.1), alpha=1.0)
    src = Lookahead(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), k=2, pullback_momentum="pullback")
    train_steps(model, src, 0, 3)
    sd = src.state_dict()
    assert sd["lookahead"]["slow_momentum"]
    with pytest.raises(ValueError, match="^Lookahead state has 4 slow tensors, the optimizer 2 parameters$"):
        Lookahead(torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)).load_state_dict(sd)
    twin = make_model().to("meta")
    dst = Lookahead(torch.optim.SGD(twin.parameters(), lr=0.1, momentum=0.9), k=2, pullback_momentum="pullback")
    dst.load_state_dict(sd)
    assert dst.state is dst.optimizer.state and len(dst.state) == len(list(twin.parameters()))
    assert {v.device.type for d in dst.slow_momentum.values() for v in d.values()} == {"meta"}


def test_the_command_line_accepts_the_alpha_range_the_optimizer_accepts():
    """The config check and Lookahead() agree on alpha: [0, 1] (the reference code's check, 0 <= alpha <= 1); the
    command line used to refuse alpha 0, which the optimizer accepts."""
    from runners.errors import value_error

    for ok in (0.0, 0.5, 1.0, 0, 1):
        assert value_error("optimizer.lookahead.alpha", ok) is None
        Lookahead(torch.optim.SGD(make_model().parameters(), lr=0.1), alpha=ok)
    for bad in (-0.1, 1.5, float("nan")):
        assert value_error("optimizer.lookahead.alpha", bad) == \
            f"optimizer.lookahead.alpha={bad!r}: must be a number in [0.0, 1.0]"
        with pytest.raises(ValueError):
            Lookahead(torch.optim.SGD(make_model().parameters(), lr=0.1), alpha=bad)

import numpy as np
import pytest

from conftest import run_cli
from runners.onpolicy import RunningMeanStd

QUIET = ["logger.mode=disabled", "logger.progress=false", "smoke=true"]


def test_running_mean_std_equals_batch_statistics():
    rng = np.random.default_rng(0)
    chunks = [rng.normal(3.0, 2.0, size=(n, 4)) for n in (5, 17, 1, 40)]
    rms = RunningMeanStd((4,))
    for c in chunks:
        rms.update(c)
    allx = np.concatenate(chunks)
    np.testing.assert_allclose(rms.mean, allx.mean(0), rtol=1e-4)
    np.testing.assert_allclose(rms.var, allx.var(0), rtol=1e-4)
    z = rms.normalize(allx)
    assert z.dtype == np.float32 and abs(z.mean()) < 1e-3


def _one_line(p):
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    (line,) = [ln for ln in p.stderr.splitlines() if ln.startswith("error: ")]
    return line


def test_unknown_environment_id_is_one_line(tmp_path):
    line = _one_line(run_cli("experiment=acktr_halfcheetah", "env.id=HalfCheeta-v5", f"hydra.run.dir={tmp_path}", *QUIET))
    assert "unknown environment id 'HalfCheeta-v5'" in line and "HalfCheetah-v5" in line
    line = _one_line(run_cli("experiment=a2c_pong", "env.game=pongg", f"hydra.run.dir={tmp_path}/b", *QUIET))
    assert "unknown Atari game 'pongg'" in line


def test_gymnasium_atari_backend_smoke(tmp_path):
    p = run_cli("experiment=a2c_breakout", "env.backend=gymnasium", f"hydra.run.dir={tmp_path}", *QUIET)
    assert p.returncode == 0, p.stderr[-2000:]


def _batch(n=64, obs_dim=5, act_dim=2):
    import torch
    g = torch.Generator().manual_seed(0)
    return (torch.randn(n, obs_dim, generator=g), torch.randn(n, act_dim, generator=g),
            torch.randn(n, generator=g), torch.randn(n, generator=g))


def test_acktr_target_kl_adapts_step_size_and_checkpoints_it():
    import torch
    from algorithms.acktr import ACKTR
    from models.actor_critic import MujocoActorCritic
    torch.manual_seed(0)
    for target, direction in ((1e-9, "down"), (1e3, "up")):
        algo = ACKTR(MujocoActorCritic(5, 2), total_updates=10, lr=0.03, target_kl=target, kl_clip=0.01)
        info = algo.update(*_batch())
        assert info["kl_measured"] >= 0 and np.isfinite(float(info["loss/total"]))
        assert (algo.lr_scale < 1) if direction == "down" else (algo.lr_scale > 1)
        again = ACKTR(MujocoActorCritic(5, 2), total_updates=10, lr=0.03, target_kl=target, kl_clip=0.01)
        again.load_state_dict(algo.state_dict())
        assert again.lr_scale == algo.lr_scale and again.updates == 1


def test_a2c_and_acktr_updates_move_parameters():
    import torch
    from algorithms.a2c import A2C
    from algorithms.acktr import ACKTR
    from models.actor_critic import MujocoActorCritic
    for cls in (A2C, ACKTR):
        torch.manual_seed(0)
        model = MujocoActorCritic(5, 2)
        before = [p.detach().clone() for p in model.parameters()]
        algo = cls(model, total_updates=4)
        info = algo.update(*_batch())
        assert all(np.isfinite(float(v)) for v in info.values())
        assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
        if cls is ACKTR:
            assert info["kfac/kl"] <= 0.001 * (1 + 1e-6)


def test_acktr_separate_critic_has_its_own_kfac_and_trust_region():
    import torch
    from algorithms.acktr import ACKTR
    from models.actor_critic import MujocoActorCritic
    torch.manual_seed(0)
    model = MujocoActorCritic(5, 2)
    algo = ACKTR(model, total_updates=10, lr=0.03, critic_lr=0.25, critic_kl_clip=0.3, kl_clip=0.001)
    actor_ids = {id(p) for g in algo.opt.param_groups for p in g["params"]}
    critic_ids = {id(p) for g in algo.critic_opt.param_groups for p in g["params"]}
    assert actor_ids == {id(p) for p in list(model.policy.parameters()) + [model.log_std]}
    assert critic_ids == {id(p) for p in model.value.parameters()}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    info = algo.update(*_batch())
    assert info["kfac/kl"] <= 0.001 * (1 + 1e-6) and algo.critic_opt.last["kl_predicted"] <= 0.3 * (1 + 1e-6)
    assert all(not torch.equal(before[n], p) for n, p in model.named_parameters())
    again = ACKTR(MujocoActorCritic(5, 2), total_updates=10, lr=0.03, critic_lr=0.25, critic_kl_clip=0.3)
    again.load_state_dict(algo.state_dict())
    assert again.critic_opt.steps == 1
    for a, b in zip(algo.critic_opt.layers, again.critic_opt.layers):
        torch.testing.assert_close(a.A, b.A)


def test_acktr_critic_iterations_fit_only_the_critic():
    """critic_iters=k: the policy step is the same as with one critic step (same seed, same batch); the
    critic takes k K-FAC steps, each inside its trust region, and ends with a lower loss on the batch."""
    import torch
    from algorithms.acktr import ACKTR
    from models.actor_critic import MujocoActorCritic

    out = {}
    for k in (1, 5):
        torch.manual_seed(0)
        model = MujocoActorCritic(5, 2)
        algo = ACKTR(model, total_updates=10, lr=0.03, critic_lr=0.25, critic_kl_clip=0.3, critic_iters=k)
        torch.manual_seed(1)
        batch = _batch()
        info = algo.update(*batch)
        obs, _, returns, _ = batch
        with torch.no_grad():
            vf = 0.5 * (returns - model.value(obs).squeeze(-1)).pow(2).mean().item()
        out[k] = (model, algo, vf, info)
    (m1, a1, vf1, _), (m5, a5, vf5, info5) = out[1], out[5]
    for p1, p5 in zip(list(m1.policy.parameters()) + [m1.log_std], list(m5.policy.parameters()) + [m5.log_std]):
        torch.testing.assert_close(p1, p5)
    assert a5.critic_opt.steps == 5 and a1.critic_opt.steps == 1
    assert vf5 < vf1 and a5.critic_opt.last["kl_predicted"] <= 0.3 * (1 + 1e-6)
    assert float(info5["loss/value_last_iter"]) < float(info5["loss/value"])
    import pytest
    with pytest.raises(ValueError, match="critic_iters"):
        ACKTR(MujocoActorCritic(5, 2), total_updates=1, critic_lr=0.25, critic_iters=0)


def test_channels_last_atari_network_gives_the_same_acktr_update():
    """NHWC is a layout, not a model: one ACKTR update (K-FAC factors from hooks included) moves the
    channels_last network to the same parameters as the contiguous one."""
    import torch
    from algorithms.acktr import ACKTR
    from models.actor_critic import AtariActorCritic

    g = torch.Generator().manual_seed(0)
    obs = torch.randint(0, 256, (24, 4, 84, 84), dtype=torch.uint8, generator=g)
    actions, returns = torch.randint(0, 6, (24,), generator=g), torch.randn(24, generator=g)
    params = []
    for cl in (False, True):
        torch.manual_seed(0)
        model = AtariActorCritic(6, conv3_channels=32, hidden=64, channels_last=cl)
        algo = ACKTR(model, total_updates=4, cold_iters=0)
        torch.manual_seed(1)
        algo.update(obs, actions, returns, returns.clone())
        params.append([p.detach().contiguous() for p in model.parameters()])
    assert params[1][0].shape == params[0][0].shape
    for a, b in zip(*params):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def _compose(*overrides):
    from pathlib import Path

    from hydra import compose, initialize_config_dir
    root = Path(__file__).resolve().parents[1]
    with initialize_config_dir(config_dir=str(root / "conf"), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def test_failed_eigendecomposition_names_the_update_and_keeps_the_checkpoint(tmp_path, monkeypatch):
    """eigh failing in float32 and float64 (after one good refresh) stops the run with one line that
    names the update and the last good checkpoint, which stays on disk."""
    from pathlib import Path

    import torch
    from runners.core import UserError
    from runners.onpolicy import train

    cfg = _compose("experiment=acktr_hopper", "algo.n_steps=16", "train.total_timesteps=160", "checkpoint.every=1",
                   "algo.kfac.eig_every=1", "algo.critic_lr=null", "logger.mode=disabled", "logger.progress=false")
    real, calls = torch.linalg.eigh, {"n": 0}

    def failing(M):
        calls["n"] += 1
        if calls["n"] > 6 * 2:              # the first refresh is good: 6 Linear layers x (A, G)
            raise RuntimeError("linalg.eigh: The algorithm failed to converge")
        return real(M)

    monkeypatch.setattr(torch.linalg, "eigh", failing)
    with pytest.raises(UserError) as e:
        train(cfg, tmp_path, torch.device("cpu"), Path(__file__).resolve().parents[1])
    msg = str(e.value)
    assert "eigendecomposition of a K-FAC factor failed at update" in msg and "\n" not in msg
    assert "last good checkpoint" in msg and (tmp_path / "checkpoint.pt").exists()


def test_mujoco_task_without_mujoco_is_one_line(monkeypatch):
    import sys

    from runners.core import UserError
    from runners.onpolicy import make_env

    monkeypatch.setitem(sys.modules, "mujoco", None)       # import mujoco -> ImportError
    cfg = _compose("experiment=acktr_hopper")
    with pytest.raises(UserError, match="Hopper-v5 needs MuJoCo"):
        make_env(cfg.env, 1, 0)

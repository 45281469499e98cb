"""The on-policy runners and algorithms beyond the K-FAC core: Atari environments as baselines builds them, the
continuous-control recipe (z-filter, features, returns, KL-adapted step size), A2C's TF RMSprop, the lr schedule,
checkpointing of the algorithms' state."""
import math
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from conftest import run_cli

QUIET = ["logger.mode=disabled", "logger.progress=false", "smoke=true"]


def _one_line(p):
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    (line,) = [ln for ln in p.stderr.splitlines() if ln.startswith("error: ")]
    return line


def _compose(*overrides):
    from hydra import compose, initialize_config_dir
    root = Path(__file__).resolve().parents[1]
    with initialize_config_dir(config_dir=str(root / "conf"), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def test_unknown_environment_id_is_one_line(tmp_path):
    line = _one_line(run_cli("experiment=acktr_halfcheetah", "env.id=HalfCheeta-v5", f"hydra.run.dir={tmp_path}", *QUIET))
    assert "unknown environment id 'HalfCheeta-v5'" in line and "HalfCheetah-v5" in line
    line = _one_line(run_cli("experiment=a2c_pong", "env.id=ALE/Pongg-v5", f"hydra.run.dir={tmp_path}/b", *QUIET))
    assert "unknown Atari game 'pongg'" in line


def test_ale_vector_backend_smoke(tmp_path):
    p = run_cli("experiment=a2c_breakout", "env.backend=ale_vector", f"hydra.run.dir={tmp_path}", *QUIET)
    assert p.returncode == 0, p.stderr[-2000:]


# --------------------------------------------------------------------------- Atari environments
class _Recorder:
    """Wraps the innermost ALE env to record every action it receives."""

    def __init__(self, env):
        self.actions = []
        inner = env.unwrapped
        real = inner.step

        def step(a):
            self.actions.append(int(a))
            return real(a)

        inner.step = step


def test_a_lost_life_ends_the_episode_then_noop_fire_and_the_game_goes_on():
    """baselines: EpisodicLife ends the learning episode at a lost life; the reset after it is one no-op step
    (the game is not restarted) followed by FireReset's FIRE and action 2."""
    from runners.atari_env import EpisodicLife, FireReset, make_baselines_atari

    env = make_baselines_atari("ALE/Breakout-v5")
    rec = _Recorder(env)
    env.reset(seed=0)
    lives0 = env.unwrapped.ale.lives()
    rng = np.random.default_rng(0)
    for _ in range(5000):
        _, r, term, trunc, info = env.step(int(rng.integers(0, 4)))
        assert r in (-1.0, 0.0, 1.0)
        if term:
            break
    assert term and not trunc and "game_score" not in info         # a life, not the game
    lives = env.unwrapped.ale.lives()
    assert lives == lives0 - 1
    frame = env.unwrapped.ale.getEpisodeFrameNumber()
    rec.actions.clear()
    env.reset()
    # MaxAndSkip repeats each action 4 frames: no-op x4 (EpisodicLife), FIRE x4, action 2 x4 (FireReset)
    assert rec.actions == [0] * 4 + [1] * 4 + [2] * 4
    assert env.unwrapped.ale.getEpisodeFrameNumber() == frame + 12    # the same game went on
    assert env.unwrapped.ale.lives() == lives
    names = []
    e = env
    while hasattr(e, "env"):
        names.append(type(e).__name__)
        e = e.env
    assert names.index("FireReset") < names.index("EpisodicLife") < names.index("GameScore")   # FIRE outside


def test_whole_game_scores_are_unclipped_while_rewards_are_clipped():
    """The same game (seed, actions) with and without reward clipping: the learner's rewards are signs, the
    reported game score is the unclipped sum over the whole game (all lives), in both."""
    from runners.atari_env import make_baselines_atari

    def play(clip):
        env = make_baselines_atari("ALE/SpaceInvaders-v5", clip_rewards=clip)
        env.reset(seed=1)
        rng = np.random.default_rng(1)
        rewards = []
        for _ in range(20000):
            _, r, term, trunc, info = env.step(int(rng.integers(0, 6)))
            rewards.append(r)
            if "game_score" in info:
                return rewards, info["game_score"]
            if term or trunc:
                env.reset()
        raise AssertionError("no game ended")

    clipped, score_c = play(True)
    raw, score_r = play(False)
    assert len(clipped) == len(raw) and set(clipped) <= {-1.0, 0.0, 1.0}
    assert score_c == score_r == pytest.approx(sum(raw))
    assert any(r > 1 for r in raw) and sum(clipped) < score_c     # invaders are worth 5 to 30 points


def test_baselines_backend_gives_single_frames_for_the_runner_to_stack():
    cfg = _compose("experiment=a2c_pong", "smoke=true")
    from runners.onpolicy import make_env

    env = make_env(cfg.env, 2, 0)
    obs, _ = env.reset(seed=0)
    assert np.asarray(obs).shape == (2, 84, 84)   # single frames: the runner stacks them, zeroed on done
    env.close()


class _ShortGame(gym.Env):
    """A stand-in game: reward 2 each step, the game over after ``length`` steps."""

    def __init__(self, length):
        self.length, self.t = length, 0
        self.observation_space = gym.spaces.Box(0, 255, (2,), np.uint8)
        self.action_space = gym.spaces.Discrete(2)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(2, np.uint8), {}

    def step(self, action):
        self.t += 1
        return np.full(2, self.t, np.uint8), 2.0, self.t == self.length, False, {}


def test_ended_games_come_from_the_final_info_of_a_same_step_reset():
    """The runner's vector env resets an ended game within the same step (SAME_STEP autoreset), so the step's
    top-level info is the reset's; each game's unclipped score and length must be read from its final info,
    for the environment that ended, at the step it ended."""
    from runners.atari_env import GameScore
    from runners.onpolicy import ended_games

    env = gym.vector.SyncVectorEnv([lambda n=n: GameScore(_ShortGame(n))
                                    for n in (3, 5)], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    env.reset(seed=0)
    seen = []
    for t in range(10):
        info = env.step(np.zeros(2, np.int64))[-1]
        assert "game_score" not in info   # the reset's info: why the runner reads final_info
        seen += [(t, *g) for g in ended_games(info)]
    assert seen == [(2, 0, 6.0, 3), (4, 1, 10.0, 5), (5, 0, 6.0, 3), (8, 0, 6.0, 3), (9, 1, 10.0, 5)]


def test_a_pong_run_records_its_whole_games(tmp_path):
    """End to end on the real game: a random-ish A2C policy loses a Pong game 21-0 in under 1500 agent steps; the run
    must log it (episode/score -21, unclipped) and report score/mean100, the Table 1 measure."""
    import json

    p = run_cli("experiment=a2c_pong", "algo.n_envs=1", "train.total_timesteps=1500", "train.log_every=1000",
                "checkpoint.every=0", "threads=1", f"hydra.run.dir={tmp_path}", "logger.mode=disabled",
                "logger.progress=false")
    assert p.returncode == 0, p.stderr[-2000:]
    rows = [json.loads(ln) for ln in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    games = [r["episode/score"] for r in rows if "episode/score" in r]
    assert games and games[0] == -21.0
    assert json.loads((tmp_path / "summary.json").read_text())["score/mean100"] == -21.0


# --------------------------------------------------------------------------- A2C
def test_rmsprop_tf_matches_tensorflow_semantics():
    from algorithms.a2c import RMSpropTF

    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(5, dtype=torch.float64))
    opt = RMSpropTF([p], lr=0.1, alpha=0.9, eps=1e-5)
    ms, ref = torch.ones(5, dtype=torch.float64), p.detach().clone()
    for _ in range(3):
        g = torch.randn(5, dtype=torch.float64)
        p.grad = g.clone()
        opt.step()
        ms = 0.9 * ms + 0.1 * g * g                    # TF: accumulator from 1, eps inside the sqrt
        ref = ref - 0.1 * g / torch.sqrt(ms + 1e-5)
        torch.testing.assert_close(p.detach(), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("algo", ["a2c", "acktr"])
def test_lr_decays_linearly_in_agent_steps_as_baselines(algo):
    """baselines' Scheduler: update k (1-based) of T agent steps in batches of n uses lr0 (1 - (k n - 1) / T)."""
    from algorithms.a2c import A2C
    from algorithms.acktr import ACKTR
    from models.actor_critic import AtariActorCritic

    model = AtariActorCritic(4, conv3_channels=32, hidden=16)
    cls, lr0 = (A2C, 7e-4) if algo == "a2c" else (ACKTR, 0.25)
    a = cls(model, total_updates=10, steps_per_update=80, lr=lr0)
    for k in range(1, 11):
        assert a.set_lr() == pytest.approx(lr0 * (1 - (k * 80 - 1) / 800), rel=1e-12)
        a.updates += 1
    assert a.opt.param_groups[0]["lr"] == pytest.approx(lr0 / 800)


# --------------------------------------------------------------------------- continuous control
def test_zfilter_is_welford_with_the_reference_first_sample_rule():
    from runners.continuous import ZFilter

    rng = np.random.default_rng(0)
    xs = rng.normal(3.0, 2.0, size=(50, 3))
    zf = ZFilter((3,), clip=10.0)
    y0 = zf(xs[0])
    np.testing.assert_allclose(y0, (xs[0] - xs[0]) / (np.abs(xs[0]) + 1e-8))   # n = 1: var = mean^2
    for i in range(1, 50):
        y = zf(xs[i])
    mean, std = xs.mean(0), xs.std(0, ddof=1)
    np.testing.assert_allclose(zf.M, mean, rtol=1e-12)
    np.testing.assert_allclose(y, np.clip((xs[-1] - mean) / (std + 1e-8), -10, 10), rtol=1e-10)
    small = ZFilter((3,), clip=0.5)
    outs = np.array([small(x) for x in xs])
    assert np.abs(outs).max() == 0.5 and (np.abs(outs) == 0.5).any()


def test_discount_against_a_direct_sum():
    from runners.continuous import discount

    x = np.array([1.0, -2.0, 0.5, 3.0])
    expect = [sum(0.9 ** (k - t) * x[k] for k in range(t, 4)) for t in range(4)]
    np.testing.assert_allclose(discount(x, 0.9), expect, rtol=1e-12)


def test_kl_adapted_step_size_follows_the_reference_rule():
    from algorithms.acktr_cont import ContinuousACKTR
    from models.actor_critic import GaussianMlpPolicy, ValueMlp

    torch.manual_seed(0)
    algo = ContinuousACKTR(GaussianMlpPolicy(6, 2), ValueMlp(12), lr=0.03, target_kl=0.002)
    obs = torch.randn(40, 6)
    with torch.no_grad():
        d = algo.policy(obs)
    for shift, expect in ((0.0, 0.03 * 1.5), (1.0, 0.03 * 1.5 / 1.5)):
        old = torch.distributions.Independent(torch.distributions.Normal(d.mean + shift, d.stddev), 1)
        algo.adapt_stepsize(old, obs)
        assert algo.stepsize == pytest.approx(expect)
    algo.stepsize = 1.0
    algo.adapt_stepsize(torch.distributions.Independent(torch.distributions.Normal(d.mean, d.stddev), 1), obs)
    assert algo.stepsize == 1.0                          # capped at 1
    algo.stepsize = 1e-8
    old = torch.distributions.Independent(torch.distributions.Normal(d.mean + 5, d.stddev), 1)
    algo.adapt_stepsize(old, obs)
    assert algo.stepsize == 1e-8                         # floored at 1e-8


def test_continuous_update_fits_the_value_function_25_times_then_one_policy_step():
    from algorithms.acktr_cont import ContinuousACKTR
    from models.actor_critic import GaussianMlpPolicy, ValueMlp

    torch.manual_seed(0)
    policy, vf = GaussianMlpPolicy(6, 2), ValueMlp(12)
    algo = ContinuousACKTR(policy, vf)
    X, y = torch.randn(300, 12), torch.randn(300)
    before = algo.vf_loss(X, y).item()
    info = algo.update(torch.randn(300, 6), torch.randn(300, 2), torch.randn(300), X, y)
    assert algo.vopt.steps == 25 and algo.popt.steps == 1
    assert algo.vf_loss(X, y).item() < before and math.isfinite(info["kl_measured"])
    state = algo.state_dict()
    again = ContinuousACKTR(GaussianMlpPolicy(6, 2), ValueMlp(12))
    again.load_state_dict(state)
    assert again.stepsize == algo.stepsize and again.vopt.steps == 25


def test_value_features_are_the_reference_ones(tmp_path):
    """A smoke run of the continuous runner: the value function sees [obs, prev obs, mean, std, t/10, 1]."""
    cfg = _compose("experiment=acktr_hopper", "smoke=true")
    from runners.continuous import build

    policy, vf, _ = build(cfg, 11, 3, torch.device("cpu"))
    assert policy.net[0].in_features == 22 and vf.net[0].in_features == 22 + 6 + 2
    p = run_cli("experiment=acktr_hopper", f"hydra.run.dir={tmp_path}", *QUIET)
    assert p.returncode == 0, p.stderr[-2000:]


@pytest.mark.parametrize("exp", ["a2c_breakout", "acktr_hopper"])
def test_capture_video_records_an_evaluation_episode(tmp_path, exp):
    import json

    import cv2

    p = run_cli(f"experiment={exp}", "algo.capture_video=true", f"hydra.run.dir={tmp_path}", *QUIET)
    assert p.returncode == 0, p.stderr[-2000:]
    s = json.loads((tmp_path / "summary.json").read_text())
    cap = cv2.VideoCapture(str(tmp_path / "eval_episode.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == s["video/frames"] > 1
    ok, frame = cap.read()
    assert ok and frame.shape[2] == 3 and frame.std() > 0           # a rendered picture, not a blank

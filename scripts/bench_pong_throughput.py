"""Pong training throughput (agent steps per second, updates included), side by side in one
process: our A2C and ACKTR (runners/onpolicy.py, ale-py's AtariVectorEnv) against
stable-baselines3's A2C with its standard Atari wrappers (make_atari_env + VecFrameStack).

    pip install stable-baselines3     # for this benchmark only; not a project dependency
    python scripts/bench_pong_throughput.py [--envs 16] [--steps 20000]

All three use 16 environments and 5-step rollouts for A2C (ACKTR: 20-step rollouts, its setting),
the Nature CNN for A2C and the 32-64-32-512 CNN for ACKTR, on the same device and thread count.
``ours_acktr`` is the paper's setting (K-FAC statistics every update, eigendecompositions every 10);
``ours_acktr_stats10`` amortizes them (statistics every 10 updates, eigendecompositions every 20).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def ours(algo: str, envs: int, steps: int, device: str, extra: tuple = ()) -> float:
    from hydra import compose, initialize_config_dir

    from runners.onpolicy import train

    n_steps = 5 if algo == "a2c" else 20
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[
            f"experiment={algo}_pong", f"algo.n_envs={envs}", f"algo.n_steps={n_steps}",
            f"train.total_timesteps={steps}", "logger.mode=disabled", "logger.progress=false",
            "checkpoint.every=0", f"device={device}", "train.log_every=1000000", *extra])
    with tempfile.TemporaryDirectory() as d:
        train(cfg, Path(d), torch.device(device), ROOT)
        rows = [json.loads(x) for x in (Path(d) / "metrics.jsonl").read_text().splitlines()]
        # the runner's own clock starts after the environments and the model are built
        return [r for r in rows if "perf/steps_per_s" in r][-1]["perf/steps_per_s"]


def sb3(envs: int, steps: int, device: str) -> float:
    import ale_py
    import gymnasium as gym
    from stable_baselines3 import A2C
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import VecFrameStack

    gym.register_envs(ale_py)
    env = VecFrameStack(make_atari_env("ALE/Pong-v5", n_envs=envs, seed=0,
                                       env_kwargs=dict(frameskip=1, repeat_action_probability=0.0)), n_stack=4)
    model = A2C("CnnPolicy", env, n_steps=5, device=device, verbose=0)
    t = time.perf_counter()
    model.learn(total_timesteps=steps)
    el = time.perf_counter() - t
    env.close()
    return model.num_timesteps / el


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--envs", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20_000)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    res = {"ours_a2c": ours("a2c", args.envs, args.steps, args.device),
           "ours_acktr": ours("acktr", args.envs, args.steps, args.device),
           "ours_acktr_stats10": ours("acktr", args.envs, args.steps, args.device,
                                      ("algo.kfac.stats_every=10", "algo.kfac.eig_every=20")),
           "sb3_a2c": sb3(args.envs, args.steps, args.device)}
    print(f"# Pong, {args.envs} envs, {args.steps} agent steps each, device={args.device}, "
          f"threads={torch.get_num_threads()}, torch={torch.__version__}")
    for k, v in res.items():
        print(f"{k:<20}{v:10.0f} agent steps/s   {v / res['sb3_a2c']:.2f}x SB3 A2C")
    print(json.dumps(res))


if __name__ == "__main__":
    main()

"""Pong training throughput (agent steps per second, updates included), side by side in one process, the same
environment implementation on both sides: our A2C and ACKTR (runners/onpolicy.py) against stable-baselines3's A2C,
all three on our baselines-faithful gymnasium wrappers (runners/atari_env.py; SB3 in its DummyVecEnv +
VecFrameStack, ours in gymnasium's SyncVectorEnv: both step their environments one after another in Python).
Separately, what ale-py's native multi-threaded vector env adds (env.backend=ale_vector, ours only).

    pip install stable-baselines3     # for this benchmark only; not a project dependency
    python scripts/bench_pong_throughput.py [--envs 16] [--steps 20000]

16 environments, 5-step rollouts for A2C, 20-step for ACKTR (its setting), the Nature CNN for A2C (ours and SB3's
CnnPolicy) and the 32-64-32-512 CNN for ACKTR, the same device and thread count. ``ours_acktr`` is the reference's
setting (K-FAC statistics and an eigendecomposition every update, the latter in a background thread);
``ours_acktr_amortized`` takes statistics every 10 updates and eigendecompositions every 20 (a deviation).
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
from runners.core import hardware  # noqa: E402


def ours(algo: str, envs: int, steps: int, device: str, extra: tuple = (), backend: str = "baselines") -> float:
    from hydra import compose, initialize_config_dir

    from runners.onpolicy import train

    n_steps = 5 if algo == "a2c" else 20
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[
            f"experiment={algo}_pong", f"algo.n_envs={envs}", f"algo.n_steps={n_steps}",
            f"train.total_timesteps={steps}", "logger.mode=disabled", "logger.progress=false",
            "checkpoint.every=0", f"device={device}", "train.log_every=1000000", f"env.backend={backend}", *extra])
    with tempfile.TemporaryDirectory() as d:
        train(cfg, Path(d), torch.device(device), ROOT)
        rows = [json.loads(x) for x in (Path(d) / "metrics.jsonl").read_text().splitlines()]
        # the runner's own clock starts after the environments and the model are built
        return [r for r in rows if "perf/steps_per_s" in r][-1]["perf/steps_per_s"]


def sb3(envs: int, steps: int, device: str) -> float:
    from stable_baselines3 import A2C
    from stable_baselines3.common.vec_env import DummyVecEnv, VecFrameStack, VecTransposeImage

    from runners.atari_env import make_baselines_atari

    def one():
        import gymnasium as gym
        import numpy as np

        env = make_baselines_atari("ALE/Pong-v5")   # our wrappers; SB3 wants a channel axis
        return gym.wrappers.TransformObservation(env, lambda o: o[..., None],
                                                 gym.spaces.Box(0, 255, (84, 84, 1), np.uint8))

    env = VecTransposeImage(VecFrameStack(DummyVecEnv([one] * envs), n_stack=4))
    env.seed(0)
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
    amort = ("algo.kfac.stats_every=10", "algo.kfac.eig_every=20")
    res = {"sb3_a2c": sb3(args.envs, args.steps, args.device),
           "ours_a2c": ours("a2c", args.envs, args.steps, args.device),
           "ours_acktr": ours("acktr", args.envs, args.steps, args.device),
           "ours_acktr_amortized": ours("acktr", args.envs, args.steps, args.device, amort)}
    native = {"ours_a2c_ale_vector": ours("a2c", args.envs, args.steps, args.device, backend="ale_vector"),
              "ours_acktr_ale_vector": ours("acktr", args.envs, args.steps, args.device, backend="ale_vector")}
    print(f"# Pong, {args.envs} envs, {args.steps} agent steps each, device={args.device}, {hardware()}; "
          "our baselines wrappers on both sides")
    print(f"# command: python scripts/bench_pong_throughput.py {' '.join(sys.argv[1:])}")
    for k, v in res.items():
        print(f"{k:<26}{v:10.0f} agent steps/s   {v / res['sb3_a2c']:.2f}x SB3 A2C")
    print("# ale-py's native vector env instead (ours only): what it adds")
    for k, v in native.items():
        base = res[k.replace("_ale_vector", "")]
        print(f"{k:<26}{v:10.0f} agent steps/s   {v / base:.2f}x the same algorithm on the gymnasium wrappers")
    print(json.dumps({**res, **native}))


if __name__ == "__main__":
    main()

"""Rollout throughput of a2po_mamujoco.py against the same subprocess envs stepped with random actions.

Run from the repository root: python benchmark/mamujoco_throughput.py --scenario Humanoid --agent-conf 17x1
Prints random-action env steps/s (before and after the training run, to bracket load drift), the training
rollout's env steps/s (batch / time/sampling_s, first iteration dropped), their ratio, and the per-iteration
sampling/updating split.
"""
import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from helpers import load_script, only_run_dir, read_scalars  # noqa: E402

a2po = load_script("a2po_mamujoco")


def random_steps_per_second(scenario, agent_conf, num_envs, steps):
    env = a2po.make_env(scenario, agent_conf, 1)
    low = np.concatenate([env.action_spaces[a].low for a in env.possible_agents])
    high = np.concatenate([env.action_spaces[a].high for a in env.possible_agents])
    envs = a2po.SubprocVecEnv(num_envs, 0, dict(scenario=scenario, agent_conf=agent_conf, agent_obsk=1))
    envs.reset()
    rng = np.random.default_rng(0)
    start = time.time()
    for _ in range(steps):
        envs.step(rng.uniform(low, high, size=(num_envs, low.size)).astype(np.float32))
    elapsed = time.time() - start
    envs.close()
    return steps * num_envs / elapsed


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--scenario", default="HalfCheetah")
    parser.add_argument("--agent-conf", default="6x1")
    parser.add_argument("--num-envs", type=int, default=4)
    parser.add_argument("--num-steps", type=int, default=1000)
    parser.add_argument("--iterations", type=int, default=3)
    a = parser.parse_args()
    random_before = random_steps_per_second(a.scenario, a.agent_conf, a.num_envs, a.num_steps)
    with tempfile.TemporaryDirectory() as tmp:
        batch = a.num_envs * a.num_steps
        subprocess.run([sys.executable, str(ROOT / "a2po_mamujoco.py"), "--scenario", a.scenario, "--agent-conf",
                        a.agent_conf, "--num-envs", str(a.num_envs), "--num-steps", str(a.num_steps),
                        "--total-timesteps", str(batch * a.iterations), "--eval-episodes", "1",
                        "--eval-interval", str(10 * batch * a.iterations)], cwd=tmp, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        scalars = read_scalars(only_run_dir(tmp))
    random_after = random_steps_per_second(a.scenario, a.agent_conf, a.num_envs, a.num_steps)
    sampling = np.array([v for _, v in scalars["time/sampling_s"]][1:])
    updating = np.array([v for _, v in scalars["time/updating_s"]][1:])
    rollout = batch / sampling.mean()
    random_sps = (random_before + random_after) / 2
    print(f"{a.scenario} {a.agent_conf}, {a.num_envs} workers x {a.num_steps} steps")
    print(f"random actions: {random_before:.0f} / {random_after:.0f} env steps/s (before / after)")
    print(f"training rollout: {rollout:.0f} env steps/s, ratio {rollout / random_sps:.2f}")
    print(f"per iteration: sampling {sampling.mean():.2f} s, updating {updating.mean():.2f} s "
          f"(updating share {updating.mean() / (sampling.mean() + updating.mean()):.0%})")


if __name__ == "__main__":
    main()

"""Rollout throughput of a2po_mamujoco.py against the same subprocess envs stepped with random actions.

Run from the repository root: python benchmark/mamujoco_throughput.py --scenario Humanoid --agent-conf 17x1
Each repeat measures random-action env steps/s before and after a short training run (to bracket load drift)
and the training rollout's env steps/s (batch / time/sampling_s, first iteration dropped; sampling includes
the batched value and log-prob pass after the rollout); it prints their ratio, the per-iteration
sampling/updating split, and the medians over repeats.
"""

import argparse
import os
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
    envs = a2po.SubprocVecEnv(range(num_envs), dict(scenario=scenario, agent_conf=agent_conf, agent_obsk=1))
    envs.reset()
    rng = np.random.default_rng(0)
    start = time.time()
    for _ in range(steps):
        envs.step(rng.uniform(low, high, size=(num_envs, low.size)).astype(np.float32))
    elapsed = time.time() - start
    envs.close()
    return steps * num_envs / elapsed


def measure_once(a):
    """Random actions, a short training run, random actions again; returns (random, rollout, sampling, updating)."""
    random_before = random_steps_per_second(a.scenario, a.agent_conf, a.num_envs, a.num_steps)
    batch = a.num_envs * a.num_steps
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [
                sys.executable,
                str(ROOT / "a2po_mamujoco.py"),
                "--scenario",
                a.scenario,
                "--agent-conf",
                a.agent_conf,
                "--num-envs",
                str(a.num_envs),
                "--num-steps",
                str(a.num_steps),
                "--total-timesteps",
                str(batch * a.iterations),
                "--eval-episodes",
                "1",
                "--eval-interval",
                str(10 * batch * a.iterations),
            ],
            cwd=tmp,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        scalars = read_scalars(only_run_dir(tmp))
    random_after = random_steps_per_second(a.scenario, a.agent_conf, a.num_envs, a.num_steps)
    sampling = np.mean([v for _, v in scalars["time/sampling_s"]][1:])  # the first iteration pays warm-up
    updating = np.mean([v for _, v in scalars["time/updating_s"]][1:])
    return (random_before + random_after) / 2, batch / sampling, sampling, updating


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--scenario", default="HalfCheetah")
    parser.add_argument("--agent-conf", default="6x1")
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--num-steps", type=int, default=500)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3, help="whole measurements; the median ratio is reported")
    a = parser.parse_args()
    os.chdir(tempfile.mkdtemp())  # keep MuJoCo's MUJOCO_LOG.TXT out of the repository
    print(f"{a.scenario} {a.agent_conf}, {a.num_envs} workers x {a.num_steps} steps")
    rows = []
    for r in range(a.repeats):
        rows.append(measure_once(a))
        random_sps, rollout, sampling, updating = rows[-1]
        print(
            f"repeat {r}: random actions {random_sps:.0f} env steps/s, training rollout {rollout:.0f} env steps/s, "
            f"ratio {rollout / random_sps:.2f}; per iteration sampling {sampling:.2f} s, updating {updating:.2f} s "
            f"(updating share {updating / (sampling + updating):.0%})",
            flush=True,
        )
    ratios = [rollout / random_sps for random_sps, rollout, _, _ in rows]
    shares = [updating / (sampling + updating) for _, _, sampling, updating in rows]
    print(f"median ratio {np.median(ratios):.2f}, median updating share {np.median(shares):.0%}")


if __name__ == "__main__":
    main()

"""Rollout throughput of the SMAC scripts on SMAX against the raw env, and the sampling/updating split.

    python benchmark/smax_throughput.py --map-name 3s5z --num-envs 128

1. raw: the scripts' own vmapped SMAX step (observations, state, masks and auto-reset included)
   driven by uniformly random available actions inside one jitted `lax.scan`: the env's ceiling.
2. rollout: `mappo_smac.py` itself (GRU policy and critic, buffer writes) for a few iterations;
   env steps / `time/sampling_s`, first iteration (compilation) excluded.
3. split: wall time per iteration split into sampling and updating with the default settings.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from helpers import load_script, only_run_dir, read_scalars  # noqa: E402


def raw_scan(map_name, num_envs, steps):
    import jax
    import jax.numpy as jnp

    env = load_script("mappo_smac").SMAXVecEnv(map_name, num_envs, seed=0)
    key = jax.random.PRNGKey(0)
    states, obs = env._reset(key)

    @jax.jit
    def run(key, states, avail):
        def body(carry, _):
            key, states, avail = carry
            key, sub = jax.random.split(key)
            actions = jax.random.categorical(sub, jnp.where(avail, 0.0, -1e9))
            key, states, obs, _, _, _ = env._step(key, states, actions)
            return (key, states, obs["avail"]), None

        return jax.lax.scan(body, (key, states, avail), None, length=steps)[0]

    jax.block_until_ready(run(key, states, obs["avail"]))  # compile
    t0 = time.time()
    jax.block_until_ready(run(key, states, obs["avail"]))
    return num_envs * steps / (time.time() - t0)


def script_run(script, flags, iterations):
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            str(ROOT / f"{script}.py"),
            *flags,
            "--eval-interval",
            "10000000000",
            "--eval-episodes",
            "1",
        ]
        subprocess.run(cmd, cwd=tmp, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        run_dir = only_run_dir(tmp)
        scalars = read_scalars(run_dir)
        summary = json.loads((run_dir / "summary.json").read_text())
    sampling = [v for _, v in scalars["time/sampling_s"]][1:]
    updating = [v for _, v in scalars["time/updating_s"]][1:]
    batch = summary["args"]["batch_size"]
    return dict(
        batch=batch,
        sampling_s=sum(sampling) / len(sampling),
        updating_s=sum(updating) / len(updating),
        sampling_sps=batch * len(sampling) / sum(sampling),
        iterations=len(sampling),
        cmd=" ".join(cmd[1:]),
    )


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--map-name", default="3s5z")
    p.add_argument("--num-envs", type=int, default=128)
    p.add_argument("--iterations", type=int, default=4)
    a = p.parse_args()
    raw = raw_scan(a.map_name, a.num_envs, 100)
    steps = a.num_envs * 100 * a.iterations
    ours = script_run(
        "mappo_smac",
        [
            "--map-name",
            a.map_name,
            "--num-envs",
            str(a.num_envs),
            "--num-steps",
            "100",
            "--total-timesteps",
            str(steps),
            "--update-epochs",
            "1",
        ],
        a.iterations,
    )
    print(
        f"{a.map_name}, {a.num_envs} envs: raw scan {raw:.0f} env steps/s; "
        f"mappo_smac rollout {ours['sampling_sps']:.0f} env steps/s = {ours['sampling_sps'] / raw:.2f} of raw"
    )
    default = script_run(
        "mappo_smac", ["--map-name", a.map_name, "--total-timesteps", str(3200 * a.iterations)], a.iterations
    )
    print(
        f"{a.map_name}, default settings ({default['batch']} steps per iteration): "
        f"sampling {default['sampling_s']:.2f} s "
        f"+ updating {default['updating_s']:.2f} s per iteration (mean of {default['iterations']}, first excluded)"
    )

# HAPPO on SMAC (SMAX or StarCraft II). Documented in README.md, section "HAPPO".
"""Heterogeneous-Agent PPO (Kuba et al., 2022) with parameter sharing on the StarCraft Multi-Agent Challenge.

Agents update one after another in a random order; each agent's clipped objective is weighted by
the product M of the ratios of the agents updated before it, so it sees what they changed.
Run: `python happo_smac.py --map-name 3s5z --seed 1` (SMAX, no StarCraft II needed) or add
`--env-backend sc2` to play the real game through smacv2.

Implementation details
1-12. As in mappo_smac.py: `diff mappo_smac.py happo_smac.py` shows only the algorithm.
13. Agent i's loss: L_i = -E_alive[M_i * min(r_i A, clip(r_i, 1 +- eps) A)], M_i = sg(prod_{j in e^i} r_j), detached
   and unclipped, on the rollout's GAE advantages. With parameter sharing (the talk's SMAC table is "w/ PS") one
   update of the shared actor moves every agent, so e^i is all other agents of the same (t, env).
14. Schedule: ceil(update_epochs / num_blocks) outer epochs, each drawing a random order split into `num_blocks`
   blocks; stage s is one pass over the minibatches whose policy loss counts the agents of blocks 1..s, while the
   critic trains on all agents. HARL's HAPPO has separate actors and one pass per agent; the blocks are the A2PO
   code base's schedule for shared parameters.
15. Per-map presets: the baselines' table (README.md, section "MAPPO") with the A2PO code base's `num_blocks`.
"""

# TRY NOT TO MODIFY: imports
import contextlib
import datetime
import json
import math
import multiprocessing as mp
import os
import random
import re
import signal
import sys
import time
import traceback
from collections import defaultdict
from dataclasses import dataclass
from typing import Literal
from unittest import mock

if re.search(r"--env[-_]backend[= ]sc2\b", " ".join(sys.argv[1:])):
    # StarCraft II's s2clientprotocol needs protobuf's pure-Python implementation, chosen before TensorBoard loads
    os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")

import numpy as np
import torch
import torch.nn as nn
import tyro
from torch.utils.tensorboard import SummaryWriter


# TRY NOT TO MODIFY: common arguments
@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]  # the name of this experiment
    seed: int = 1  # seed of the experiment
    torch_deterministic: bool = True  # if toggled, `torch.backends.cudnn.deterministic=True`
    cuda: bool = True  # if toggled, use CUDA when available
    track: bool = False  # if toggled, mirror the TensorBoard logs to Weights and Biases
    wandb_project_name: str = "cooperative-trust-region"  # the wandb project name
    wandb_entity: str | None = None  # the entity (team) of wandb's project
    runs_dir: str = "runs"  # folder that holds one sub-folder per run
    save_model: bool = False  # if toggled, write a resumable checkpoint at every evaluation and at the end
    resume: str | None = None  # path to a checkpoint.pt to continue from (pass the same flags as the original run)
    eval_only: bool = False  # greedy evaluation of the --resume checkpoint into eval.json beside it; trains nothing
    capture_video: bool = False  # each evaluation's first game: SMAX a GIF in the run's videos/, sc2 a replay there
    map_name: str = "3s5z"  # SMAC map (SMAX maps, or any SMAC/SMACv2 map with --env-backend sc2)
    env_backend: Literal["smax", "sc2"] = "smax"  # smax: pure-JAX SMAX, runs anywhere; sc2: StarCraft II (smacv2)
    total_timesteps: int = 10_000_000  # total env steps (summed over parallel envs)
    num_envs: int = 32  # parallel envs (sc2 default: 8)
    num_steps: int = 100  # steps per env per rollout (sc2 default: 400)
    eval_interval: int = 80_000  # env steps between greedy evaluations
    eval_episodes: int = 32  # episodes per evaluation
    learning_rate: float = 5e-4  # actor learning rate
    critic_learning_rate: float = 5e-4  # critic learning rate
    gamma: float = 0.99  # discount factor
    gae_lambda: float = 0.95  # lambda of GAE
    update_epochs: int = 5  # passes over the rollout per iteration
    num_minibatches: int = 1  # minibatches per pass (over chunks of all agents of an env)
    clip_coef: float = 0.2  # PPO clip on the ratio, and on the value change
    ent_coef: float = 0.01  # entropy bonus
    max_grad_norm: float = 10.0  # gradient norm clip
    huber_delta: float = 10.0  # Huber threshold of the value loss
    hidden_dim: int = 64  # width of every hidden layer
    recurrent: bool = True  # GRU actor and critic; `--no-recurrent` for MLPs
    data_chunk_length: int = 10  # length of the sequences the GRU is trained on
    # ALGO LOGIC: algorithm flags
    num_blocks: int = 2  # contiguous blocks the agent order is split into (stages per outer epoch)

    # TRY NOT TO MODIFY: computed after parsing
    batch_size: int = 0  # env steps per rollout (num_envs * num_steps)
    minibatch_size: int = 0  # (env, chunk) sequences per minibatch
    num_iterations: int = 0  # rollout + update iterations


# ALGO LOGIC: per-map presets (the A2PO code base's baseline table), for the flags not given; other maps: defaults
MAP_PRESETS = {
    "3s5z_vs_3s6z": dict(update_epochs=5, gae_lambda=0.90, clip_coef=0.2, recurrent=True),
    "3s_vs_5z": dict(update_epochs=10, gae_lambda=0.95, clip_coef=0.05, recurrent=False),
    "5m_vs_6m": dict(update_epochs=10, gae_lambda=0.93, clip_coef=0.05, recurrent=True),
    "6h_vs_8z": dict(update_epochs=5, gae_lambda=0.99, clip_coef=0.2, recurrent=False),
    "8m_vs_9m": dict(update_epochs=15, gae_lambda=0.95, clip_coef=0.05, recurrent=True),
    "10m_vs_11m": dict(update_epochs=10, gae_lambda=0.97, clip_coef=0.2, recurrent=True),
    "MMM": dict(update_epochs=10, gae_lambda=0.95, clip_coef=0.2, recurrent=True),
    "corridor": dict(update_epochs=5, gae_lambda=0.95, clip_coef=0.2, recurrent=False),
}
for name, blocks in {"3s5z": 3, "3s_vs_5z": 3, "8m_vs_9m": 5, "27m_vs_30m": 3, "MMM": 3}.items():  # 2 elsewhere
    MAP_PRESETS.setdefault(name, {})["num_blocks"] = blocks


def check_algo_args(args, num_agents):
    if not 1 <= args.num_blocks <= num_agents:
        raise SystemExit(f"error: --num-blocks {args.num_blocks} must lie in [1, {num_agents}] on {args.map_name}.")


def surrogate_loss(logratio, advantages, mask, clip_coef):
    """M_i = sg(prod_{j != i} r_j) (unclipped);  L_i = -E_mask[M_i * min(r_i A, clip(r_i, 1 +- eps) A)]."""
    ratio = logratio.exp()
    factor = (logratio.sum(-1, keepdim=True) - logratio).detach().exp()
    ppo = torch.min(ratio * advantages, ratio.clamp(1 - clip_coef, 1 + clip_coef) * advantages)
    clipfrac = masked_mean(((ratio - 1).abs() > clip_coef).float(), mask)
    return -masked_mean(factor * ppo, mask), {"clipfrac": clipfrac, "happo/factor_mean": masked_mean(factor, mask)}


# TRY NOT TO MODIFY: argument handling
BACKEND_PRESETS = {"sc2": dict(num_envs=8, num_steps=400)}
# SMAC's episode limits (SMACv2's for its scenarios), for the maps SMAX models
SMAX_EPISODE_LIMITS = {"3m": 60, "8m": 120, "25m": 150, "2s3z": 120, "3s5z": 150, "5m_vs_6m": 70, "8m_vs_9m": 120}
SMAX_EPISODE_LIMITS.update({"10m_vs_11m": 150, "27m_vs_30m": 180, "3s5z_vs_3s6z": 170, "3s_vs_5z": 250})
SMAX_EPISODE_LIMITS.update({"6h_vs_8z": 150, "smacv2_5_units": 100, "smacv2_10_units": 100, "smacv2_20_units": 100})
SC2_CLASSIC_MAPS = (
    "3m 8m 25m 2s3z 3s5z 5m_vs_6m 8m_vs_9m 10m_vs_11m 27m_vs_30m MMM MMM2 3s5z_vs_3s6z 3s_vs_3z 3s_vs_4z 3s_vs_5z "
    "1c3s5z 2m_vs_1z corridor 6h_vs_8z 2s_vs_1sc so_many_baneling bane_vs_bane 2c_vs_64zg"
).split()
SMACV2_UNITS = {  # race: (unit types, weights, types that may not fill a whole team), as smacv2's sc2_gen_{race}.yaml
    "protoss": (["stalker", "zealot", "colossus"], [0.45, 0.45, 0.1], []),
    "terran": (["marine", "marauder", "medivac"], [0.45, 0.45, 0.1], ["medivac"]),
    "zerg": (["zergling", "baneling", "hydralisk"], [0.45, 0.1, 0.45], ["baneling"]),
}
SMACV2_MAPS = [f"{r}_{size}" for r in SMACV2_UNITS for size in "5_vs_5 10_vs_10 10_vs_11 20_vs_20 20_vs_23".split()]
SC2_INSTALL = (
    "In this repository run pip install --no-deps -r requirements-sc2.txt git+https://github.com/oxwhirl/smacv2.git, "
    "install StarCraft II 4.10 with the SMAC maps and export SC2PATH (README.md, 'StarCraft II backend')"
)


def parse_args(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = tyro.cli(Args, args=argv)
    presets = BACKEND_PRESETS.get(args.env_backend, {}) | MAP_PRESETS.get(args.map_name, {})
    args = tyro.cli(Args, args=argv, default=Args(**presets))  # a preset fills a field only if argv does not set it
    smax, sc2_maps = args.env_backend == "smax", SC2_CLASSIC_MAPS + SMACV2_MAPS
    maps = list(SMAX_EPISODE_LIMITS) if smax else sc2_maps
    if args.map_name not in maps:
        problem = f"unknown map '{args.map_name}'"
        if smax and args.map_name in sc2_maps:
            problem = f"SMAX lacks the units or terrain of '{args.map_name}': run it with --env-backend sc2"
        raise SystemExit(f"error: {problem}. {'SMAX' if smax else 'StarCraft II'} maps: {', '.join(maps)}.")
    chunk, minibatches = args.data_chunk_length, args.num_minibatches
    num_sequences = args.num_envs * args.num_steps // chunk
    if args.num_steps % chunk:
        raise SystemExit(f"error: --num-steps {args.num_steps} is not a multiple of --data-chunk-length {chunk}.")
    if minibatches < 1 or num_sequences % minibatches:
        raise SystemExit(f"error: --num-minibatches {minibatches} does not divide the {num_sequences} sequences.")
    if min(args.num_envs, args.num_steps, args.eval_episodes, args.total_timesteps) < 1:
        raise SystemExit("error: --num-envs, --num-steps, --eval-episodes and --total-timesteps must be positive.")
    if args.eval_only and not args.resume:
        raise SystemExit("error: --eval-only needs --resume path/to/checkpoint.pt.")
    args.batch_size = args.num_envs * args.num_steps
    args.minibatch_size = num_sequences // minibatches
    args.num_iterations = max(1, args.total_timesteps // args.batch_size)
    return args


# TRY NOT TO MODIFY: environments
class SMAXVecEnv:
    """`num_envs` SMAX games in one jitted, vmapped step with auto-reset; arrays come back as numpy."""

    def __init__(self, map_name, num_envs, seed):
        import jax
        import jax.numpy as jnp

        with mock.patch("builtins.print"):  # jaxmarl prints at import which optional environments it lacks
            from jaxmarl.environments.smax import HeuristicEnemySMAX, map_name_to_scenario, register_scenario
            from jaxmarl.environments.smax.smax_env import MAP_NAME_TO_SCENARIO, Scenario

        jax.config.update("jax_compilation_cache_dir", os.path.expanduser("~/.cache/jax_smax"))
        if "8m_vs_9m" not in MAP_NAME_TO_SCENARIO:
            register_scenario("8m_vs_9m", Scenario(jnp.zeros((17,), dtype=jnp.uint8), 8, 9, False, False))
        self.episode_limit = SMAX_EPISODE_LIMITS[map_name]
        env = HeuristicEnemySMAX(scenario=map_name_to_scenario(map_name), max_steps=self.episode_limit)
        n, agents = env.num_allies, env.agents
        self.num_envs, self.num_agents, self.num_actions = num_envs, n, env.action_spaces[agents[0]].n
        # world state = per unit [health, x, y, cooldown, type one-hot] + teams + types: bring to ~[0, 1]
        per_unit = np.ones(len(env.own_features), dtype=np.float32)
        per_unit[1:3] = 1.0 / env.map_width
        per_unit[3] = 1.0 / float(env.unit_type_weapon_cooldowns.max())
        units = env.num_allies + env.num_enemies
        scale = jnp.asarray(np.concatenate([np.tile(per_unit, units), np.ones(units), np.full(units, 1 / 5)]))

        def observe(state):
            obs, avail = (jnp.stack([d[a] for a in agents]) for d in (env.get_obs(state), env.get_avail_actions(state)))
            alive = state.state.unit_alive[:n]
            return dict(obs=obs, state=env.get_world_state(state) * scale, avail=avail.astype(bool), alive=alive)

        def reset_one(key):
            _, state = env.reset(key)
            last = state.enemy_policy_state.last_attacked_enemy.astype(jnp.int32)  # the dtype env.step leaves
            return state.replace(enemy_policy_state=state.enemy_policy_state.replace(last_attacked_enemy=last))

        def step_one(key, state, actions):
            step_key, reset_key = jax.random.split(key)
            _, next_state, rewards, dones, _ = env.step_env(step_key, state, dict(zip(agents, actions)))
            done, alive = dones["__all__"], next_state.state.unit_alive
            won = done & ~alive[n:].any() & alive[:n].any()  # a draw (both teams dead) is not a win
            state = jax.tree.map(lambda r, s: jnp.where(done, r, s), reset_one(reset_key), next_state)
            return state, observe(state), rewards[agents[0]], done, won

        def reset_all(key):
            key, sub = jax.random.split(key)
            states = jax.vmap(reset_one)(jax.random.split(sub, num_envs))
            return key, states, jax.vmap(observe)(states)

        def step_all(key, states, actions):
            key, sub = jax.random.split(key)
            return (key, *jax.vmap(step_one)(jax.random.split(sub, num_envs), states, actions))

        self._reset, self._step = jax.jit(reset_all), jax.jit(step_all)  # benchmark/smax_throughput.py uses both
        self.seed_key, self.env, self.record = jax.random.PRNGKey(seed), env, None
        self.obs_dim, self.state_dim = env.observation_spaces[agents[0]].shape[0], env.state_size

    def reset(self):
        self._key, self._states, obs = self._reset(self.seed_key)  # the seed's games again: evaluations play the same
        return {k: np.array(v) for k, v in obs.items()}

    def step_async(self, actions):
        if self.record is not None:  # for save_video: the key, states and env 0's actions
            self.record.append((self._key, self._states, dict(zip(self.env.agents, actions[0]))))
        self._pending = self._step(self._key, self._states, actions.astype(np.int32))

    def step_wait(self):
        self._key, self._states, obs, reward, done, won = self._pending
        obs = {k: np.array(v) for k, v in obs.items()}  # writable copies for torch
        return obs, np.array(reward, dtype=np.float32), np.array(done), np.array(won)

    def save_video(self, path):
        """Env 0's recorded game drawn by jaxmarl's SMAX renderer: path.gif (frame 2t, 2t+1: env step t's world steps 4
        and 8 of 8) and path.png, the middle frame, which it returns."""
        import imageio.v2 as imageio
        import jax
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        split, w = jax.random.split, self.env.world_steps_per_env_step + 1  # w: the state before, then each world step
        game = [(split(split(k)[1], self.num_envs)[0], jax.tree.map(lambda x: x[0], s), a) for k, s, a in self.record]
        canvas, frames, self.record = FigureCanvasAgg(Figure(figsize=(6, 5))), [], None
        with jax.disable_jit():  # the renderer's jax.lax.cond per unit would compile at every call
            for i, step in enumerate(self.env.expand_state_seq(game)):
                if i % w in (w // 2, w - 1):
                    self.env.init_render(canvas.figure.gca(), jax.tree.map(np.asarray, step), i % w, i // w)
                    frames.append(np.asarray(canvas.buffer_rgba())[..., :3].copy())
        imageio.mimsave(f"{path}.gif", frames, duration=100, loop=0)
        imageio.imwrite(f"{path}.png", frames[len(frames) // 2])
        return frames[len(frames) // 2]

    def close(self):
        pass


def make_sc2_env(map_name, seed):
    """One smacv2 game: a classic SMAC map, or a SMACv2 `race_a_vs_b` scenario as smacv2's sc2_gen_{race}.yaml."""
    from smacv2.env import StarCraft2Env, StarCraftCapabilityEnvWrapper

    if map_name not in SMACV2_MAPS:
        return StarCraft2Env(map_name=map_name, seed=seed)
    race, allies, _, enemies = map_name.split("_")
    units, weights, exceptions = SMACV2_UNITS[race]
    team_gen = dict(dist_type="weighted_teams", unit_types=units, weights=weights, observe=True)
    team_gen["exception_unit_types"] = exceptions
    start = dict(dist_type="surrounded_and_reflect", p=0.5, map_x=32, map_y=32)
    config = dict(n_units=int(allies), n_enemies=int(enemies), team_gen=team_gen, start_positions=start)
    settings = dict(map_name=f"10gen_{race}", seed=seed, use_unit_ranges=True, obs_own_pos=True)
    return StarCraftCapabilityEnvWrapper(capability_config=config, **settings)


def sc2_worker(remote, trainer_end, env_fn, map_name, seed):
    """Serves one game: "reset" and "step" answer with the next observation (auto-reset at an episode end); a game
    that raises is rebuilt with a new seed, its episode ended; other errors are sent back. The game always closes."""
    trainer_end.close()  # this process's copy of the trainer's end would hide the trainer's death
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # at exit the trainer terminates daemon workers
    trainer, env, error = os.getppid(), None, None
    try:
        env = env_fn(map_name, seed)
        remote.send(dict(info=env.get_env_info()))
        while True:
            while not remote.poll(1.0):
                if os.getppid() != trainer:  # killed: forked siblings may hold its end of the pipe open
                    raise EOFError
            msg = remote.recv()
            if msg["cmd"] == "close":
                break
            if msg["cmd"] == "replay":  # smacv2's capability wrapper holds the StarCraft2Env that saves it in .env
                vars(getattr(env, "env", env)).update(replay_dir=msg["dir"], replay_prefix=msg["prefix"])
                env.save_replay()
                continue
            try:
                reward, terminated, info = env.step(msg["actions"]) if msg["cmd"] == "step" else (0.0, False, {})
                if terminated or msg["cmd"] == "reset":
                    env.reset()
                answer = dict(reward=float(reward), done=bool(terminated))
                answer["won"] = bool(terminated and info.get("battle_won", False))
            except Exception:
                print(f"warning: StarCraft II game (seed {seed}) crashed; restarting it and ending its episode.")
                print(traceback.format_exc(), flush=True)
                env.close()
                env, seed = None, seed + 100_000
                env = env_fn(map_name, seed)
                env.reset()
                answer = dict(reward=0.0, done=True, won=False)
            avail = np.asarray(env.get_avail_actions(), dtype=bool)  # SMAC: a dead agent has only no-op (action 0)
            obs, state = np.asarray(env.get_obs(), dtype=np.float32), np.asarray(env.get_state(), dtype=np.float32)
            remote.send(dict(answer, obs=obs, state=state, avail=avail, alive=~avail[:, 0]))
    except (KeyboardInterrupt, EOFError, BrokenPipeError):
        pass
    except Exception:
        error = traceback.format_exc()
    if env is not None:
        env.close()  # smacv2 closes its StarCraft II process here (atexit does not run in a worker)
    if error:
        with contextlib.suppress(OSError):  # the trainer may be gone
            remote.send(dict(error=error))


class SC2VecEnv:
    """One StarCraft II game per subprocess (sc2_worker), all stepped at once."""

    def __init__(self, map_name, num_envs, seed, env_fn=None):
        ctx = mp.get_context("fork")
        self.num_envs, self.workers = num_envs, []
        for i in range(num_envs):
            remote, child = ctx.Pipe()
            args = (child, remote, env_fn or make_sc2_env, map_name, seed + 1000 * i)
            proc = ctx.Process(target=sc2_worker, args=args, daemon=True)
            proc.start()
            child.close()
            self.workers.append((remote, proc))
        info = [self._recv(i) for i in range(num_envs)][0]["info"]
        self.num_agents, self.num_actions = info["n_agents"], info["n_actions"]
        self.episode_limit, self.obs_dim, self.state_dim = info["episode_limit"], info["obs_shape"], info["state_shape"]

    def _recv(self, i):
        try:
            msg = self.workers[i][0].recv()
        except (EOFError, ConnectionError):
            msg = dict(error="the worker process died")
        if "error" in msg:
            raise RuntimeError(f"StarCraft II worker {i} failed:\n{msg['error']}")
        return msg

    def reset(self):
        for remote, _ in self.workers:
            remote.send({"cmd": "reset"})
        return self.step_wait()[0]  # a reset is answered as a step is

    def step_async(self, actions):
        for (remote, _), a in zip(self.workers, actions):
            remote.send({"cmd": "step", "actions": a.tolist()})

    def step_wait(self):
        msgs = [self._recv(i) for i in range(self.num_envs)]
        obs = {k: np.stack([m[k] for m in msgs]) for k in ("obs", "state", "avail", "alive")}
        reward, done, won = (np.array([m[k] for m in msgs]) for k in ("reward", "done", "won"))
        return obs, reward.astype(np.float32), done, won

    def save_video(self, path):
        """StarCraft II's replay of env 0's game (its episodes so far) as path_<time>.SC2Replay; no frame."""
        folder, prefix = os.path.split(os.path.abspath(path))
        self.workers[0][0].send({"cmd": "replay", "dir": folder, "prefix": prefix})

    def close(self):
        for remote, _ in self.workers:
            with contextlib.suppress(OSError):  # a worker that failed has closed its end
                remote.send({"cmd": "close"})
        for _, proc in self.workers:
            proc.join(timeout=10)


def make_envs(args, num_envs, seed):
    if args.env_backend == "smax":
        return SMAXVecEnv(args.map_name, num_envs, seed)
    try:
        import smacv2.env  # noqa: F401
    except ImportError as e:
        raise SystemExit(f"error: --env-backend sc2 needs smacv2 and its dependencies ({e}). {SC2_INSTALL}.") from None
    if not os.path.isdir(os.environ.get("SC2PATH", os.path.expanduser("~/StarCraftII"))):
        raise SystemExit(f"error: StarCraft II not found (SC2PATH is unset or wrong). {SC2_INSTALL}.")
    return SC2VecEnv(args.map_name, num_envs, seed)


def agent_inputs(raw, last_actions, num_actions):
    """Actor: obs + id + one-hot last action (-1: none yet). Critic: (state + obs) * alive, + id (death masking)."""
    obs, alive = torch.as_tensor(raw["obs"]), torch.as_tensor(raw["alive"]).float().unsqueeze(-1)
    num_envs, n = obs.shape[:2]
    ids = torch.eye(n).expand(num_envs, n, n)
    last = nn.functional.one_hot(last_actions.clamp(min=0), num_actions).float() * (last_actions >= 0).unsqueeze(-1)
    state = torch.as_tensor(raw["state"]).unsqueeze(1).expand(num_envs, n, -1)
    critic_x = torch.cat([torch.cat([state, obs], -1) * alive, ids], -1)
    return torch.cat([obs, ids, last], -1), critic_x, torch.as_tensor(raw["avail"]), alive.squeeze(-1)


# TRY NOT TO MODIFY: networks
def layer_init(layer, std=2**0.5):
    nn.init.orthogonal_(layer.weight, std)
    nn.init.zeros_(layer.bias)
    return layer


class RecurrentMLP(nn.Module):
    """LayerNorm -> 2 x (Linear, ReLU, LayerNorm) -> optional GRU + LayerNorm -> linear head."""

    def __init__(self, in_dim, out_dim, hidden, recurrent, head_std):
        super().__init__()
        layers = [nn.LayerNorm(in_dim)]
        for d in (in_dim, hidden):
            layers += [layer_init(nn.Linear(d, hidden)), nn.ReLU(), nn.LayerNorm(hidden)]
        self.base = nn.Sequential(*layers)
        self.gru = nn.GRUCell(hidden, hidden) if recurrent else None
        if recurrent:
            for name, p in self.gru.named_parameters():
                (nn.init.orthogonal_ if "weight" in name else nn.init.zeros_)(p)
            self.gru_norm = nn.LayerNorm(hidden)
        self.head = layer_init(nn.Linear(hidden, out_dim), std=head_std)

    def forward(self, x, h, starts):
        """x (L, B, d), h (B, H) hidden before step 0, starts (L, B) 1 where an episode begins."""
        z = self.base(x)
        if self.gru is not None:
            outs = []
            for t in range(x.shape[0]):
                h = self.gru(z[t], h * (1.0 - starts[t]).unsqueeze(-1))
                outs.append(h)
            z = self.gru_norm(torch.stack(outs))
        return self.head(z), h


def masked_logits(logits, avail):
    return torch.where(avail, logits, torch.full_like(logits, -1e10))


def masked_mean(x, mask):
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


def normalize_advantages(advantages, alive):
    mean = masked_mean(advantages, alive)
    std = masked_mean((advantages - mean) ** 2, alive).sqrt()
    return (advantages - mean) / (std + 1e-5)


# TRY NOT TO MODIFY: value normalisation, value loss and GAE
class ValueNorm(nn.Module):
    """Running mean / mean-square of the returns (beta = 0.99999, debiased, variance floored at 1e-2)."""

    def __init__(self, beta=0.99999, var_floor=1e-2):
        super().__init__()
        self.beta, self.var_floor = beta, var_floor
        for name in ("running_mean", "running_mean_sq", "debiasing_term"):
            self.register_buffer(name, torch.zeros((), dtype=torch.float64))

    def mean_var(self):
        debias = self.debiasing_term.clamp(min=1e-5)
        mean = self.running_mean / debias
        var = (self.running_mean_sq / debias - mean**2).clamp(min=self.var_floor)
        return mean.float(), var.float()

    @torch.no_grad()
    def update(self, x):
        self.running_mean.mul_(self.beta).add_(x.double().mean() * (1 - self.beta))
        self.running_mean_sq.mul_(self.beta).add_((x.double() ** 2).mean() * (1 - self.beta))
        self.debiasing_term.mul_(self.beta).add_(1 - self.beta)

    def normalize(self, x):
        mean, var = self.mean_var()
        return (x - mean) / var.sqrt()

    def denormalize(self, x):
        mean, var = self.mean_var()
        return x * var.sqrt() + mean


def value_loss_fn(new_values, old_values, returns_norm, clip_coef, huber_delta):
    """max(Huber(V - R), Huber(V_clip - R)), V_clip = V_old + clamp(V - V_old, -eps, eps); plain mean."""
    clipped = old_values + (new_values - old_values).clamp(-clip_coef, clip_coef)
    plain = nn.functional.huber_loss(new_values, returns_norm, reduction="none", delta=huber_delta)
    return torch.max(plain, nn.functional.huber_loss(clipped, returns_norm, reduction="none", delta=huber_delta)).mean()


def compute_gae(rewards, values, bootstrap_value, continues, gamma, gae_lambda):
    """GAE(lambda). rewards, continues: (T, E) or (T, E, n); values: (T, E, n); bootstrap_value: (E, n).

    delta_t = r_t + gamma * continues_t * V(t+1) - V(t);  A_t = delta_t + gamma * lambda * continues_t * A_{t+1}.
    Values are denormalised. A time-limit truncation at t is passed as continues_t = 0 with
    gamma * V(final obs) already added to r_t, which bootstraps and cuts the trace at once.
    """
    if rewards.dim() == 2:
        rewards, continues = rewards.unsqueeze(-1), continues.unsqueeze(-1)
    rewards, continues = rewards.expand_as(values), continues.expand_as(values)
    advantages = torch.zeros_like(values)
    next_value, next_adv = bootstrap_value, torch.zeros_like(bootstrap_value)
    for t in reversed(range(values.shape[0])):
        delta = rewards[t] + gamma * continues[t] * next_value - values[t]
        next_adv = delta + gamma * gae_lambda * continues[t] * next_adv
        advantages[t] = next_adv
        next_value = values[t]
    return advantages


# TRY NOT TO MODIFY: rollout storage and sequence minibatches
def to_chunks(x, chunk):
    """(T, E, ...) -> (L, C*E, ...): column c*E + e is env e's steps [c*L, (c+1)*L), so [0] holds the chunks' starts."""
    T, E = x.shape[:2]
    return x.reshape(T // chunk, chunk, E, *x.shape[2:]).transpose(0, 1).reshape(chunk, (T // chunk) * E, *x.shape[2:])


def evaluate_sequences(actor, critic, mb):
    """Re-run actor and critic over (L, B, n) sequences; returns log-probs, entropy and values."""
    L, B, n = mb["actions"].shape
    starts = mb["starts"].unsqueeze(-1).expand(L, B, n).reshape(L, B * n)
    logits, _ = actor(mb["actor_x"].reshape(L, B * n, -1), mb["h_actor"].reshape(B * n, -1), starts)
    values, _ = critic(mb["critic_x"].reshape(L, B * n, -1), mb["h_critic"].reshape(B * n, -1), starts)
    dist = torch.distributions.Categorical(logits=masked_logits(logits.reshape(L, B, n, -1), mb["avail"]))
    return dist.log_prob(mb["actions"]), dist.entropy(), values.reshape(L, B, n)


# TRY NOT TO MODIFY: greedy evaluation and checkpoint files
@torch.no_grad()
def greedy_evaluation(actor, envs, args, device, video=None):
    """Greedy play until every eval env has finished ceil(eval_episodes / num_envs) episodes: their win rate, return and
    count, and with `video` (a path without extension) env 0's first game saved there, and its still frame (SMAX)."""
    E, n, quota = envs.num_envs, envs.num_agents, math.ceil(args.eval_episodes / envs.num_envs)
    raw, counts, ep_return, returns, wins = envs.reset(), np.zeros(E, dtype=int), np.zeros(E), [], []
    envs.record, frame = [] if video else None, None
    h, starts = torch.zeros(E * n, args.hidden_dim, device=device), torch.ones(1, E * n, device=device)
    last = torch.full((E, n), -1, dtype=torch.long)
    while counts.min() < quota:
        actor_x, _, avail, _ = agent_inputs(raw, last, envs.num_actions)
        logits, h = actor(actor_x.view(1, E * n, -1).to(device), h, starts)
        actions = masked_logits(logits.reshape(avail.shape), avail.to(device)).argmax(-1).cpu()
        envs.step_async(actions.numpy())
        raw, reward, done, won = envs.step_wait()
        if video and done[0] and counts[0] == 0:  # env 0's first game is over
            os.makedirs(os.path.dirname(video), exist_ok=True)
            frame = envs.save_video(video)
        ep_return += reward
        returns.extend(ep_return[done & (counts < quota)])
        wins.extend(won[done & (counts < quota)])
        counts += done
        ep_return[done] = 0.0
        last = torch.where(torch.as_tensor(done).unsqueeze(-1), -1, actions)
        starts = torch.as_tensor(done, dtype=torch.float32, device=device).repeat_interleave(n).unsqueeze(0)
    return dict(win_rate=float(np.mean(wins)), episodic_return=float(np.mean(returns)), episodes=len(wins)), frame


if __name__ == "__main__":
    # TRY NOT TO MODIFY: setup
    args = parse_args()
    try:
        ckpt = torch.load(args.resume, weights_only=False) if args.resume else None
    except Exception as e:  # missing, unreadable or not a checkpoint: one line, not a traceback
        raise SystemExit(f"error: cannot read checkpoint {args.resume}: {e}") from None
    for key in ("map_name", "env_backend", "hidden_dim", "recurrent") if ckpt else ():  # the networks' shapes follow
        if (was := ckpt["args"].get(key)) != getattr(args, key):
            raise SystemExit(f"error: the checkpoint has {key} {was}, not {getattr(args, key)}: pass the flags it had.")
    run_name = ckpt["run_name"] if ckpt else f"{args.map_name}__{args.exp_name}__{args.seed}__{int(time.time())}"
    run_dir = os.path.dirname(os.path.abspath(args.resume)) if ckpt else os.path.join(args.runs_dir, run_name)
    for seed_rng in (random.seed, np.random.seed, torch.manual_seed):
        seed_rng(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")
    num_eval_envs = args.eval_episodes if args.env_backend == "smax" else min(args.eval_episodes, args.num_envs)
    eval_envs = make_envs(args, num_eval_envs, args.seed + 10_000)
    envs = eval_envs if args.eval_only else make_envs(args, args.num_envs, args.seed)
    n, A = envs.num_agents, envs.num_actions
    check_algo_args(args, n)
    actor_dim, critic_dim = envs.obs_dim + n + A, envs.state_dim + envs.obs_dim + n
    actor = RecurrentMLP(actor_dim, A, args.hidden_dim, args.recurrent, 0.01).to(device)
    critic = RecurrentMLP(critic_dim, 1, args.hidden_dim, args.recurrent, 1.0).to(device)
    actor_optimizer = torch.optim.Adam(actor.parameters(), lr=args.learning_rate, eps=1e-5)
    critic_optimizer = torch.optim.Adam(critic.parameters(), lr=args.critic_learning_rate, eps=1e-5)
    value_norm = ValueNorm().to(device)
    trained = {"actor": actor, "critic": critic, "value_norm": value_norm}  # what a checkpoint holds, by key
    trained.update(actor_optimizer=actor_optimizer, critic_optimizer=critic_optimizer)
    rngs = dict(python_rng=(random.getstate, random.setstate), numpy_rng=(np.random.get_state, np.random.set_state))
    rngs["torch_rng"] = (torch.get_rng_state, torch.set_rng_state)
    global_step, start_iteration, sampling_total, updating_total, next_eval = 0, 1, 0.0, 0.0, 0
    if ckpt:
        for key, part in trained.items():
            part.load_state_dict(ckpt[key])
        for key, (_, set_state) in rngs.items():
            set_state(ckpt[key])
        global_step, next_eval, start_iteration = ckpt["global_step"], ckpt["next_eval"], ckpt["iteration"] + 1
        sampling_total, updating_total = ckpt["sampling_s"], ckpt["updating_s"]
        print(f"{'loaded' if args.eval_only else 'resumed'} {run_name} from {args.resume} at global_step={global_step}")
    if args.eval_only:  # the checkpoint's greedy policy on the eval games, into eval.json beside it; trains nothing
        video = f"{run_dir}/videos/eval_only_{global_step}" if args.capture_video else None
        result = dict(checkpoint=os.path.abspath(args.resume), global_step=global_step, seed=args.seed)
        result |= greedy_evaluation(actor, eval_envs, args, device, video)[0]
        tail = f"return {result['episodic_return']:.2f} over {result['episodes']} episodes (seed {args.seed})"
        print(f"eval-only {args.resume} step {result['global_step']}: win rate {result['win_rate']:.3f} {tail}")
        with open(f"{run_dir}/eval.json", "w") as f:
            json.dump(result, f, indent=1)
        sys.exit()
    if args.track:
        import wandb

        run = dict(project=args.wandb_project_name, entity=args.wandb_entity, name=run_name, config=vars(args))
        run_id = re.sub(r"[^\w-]", "-", run_name)[-64:]  # a resumed run continues its wandb run
        wandb.init(**run, id=run_id, resume="allow", sync_tensorboard=True, save_code=True)
    writer = SummaryWriter(run_dir)
    table = "\n".join(f"|{k}|{v}|" for k, v in vars(args).items())
    writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{table}")
    T, E, L, H = args.num_steps, args.num_envs, args.data_chunk_length, args.hidden_dim
    shapes = dict(actor_x=[n, actor_dim], critic_x=[n, critic_dim], avail=[n, A], actions=[n], logprobs=[n], values=[n])
    shapes.update(alive=[n], h_actor=[n, H], h_critic=[n, H], starts=[], rewards=[], continues=[])
    dtypes = dict(avail=torch.bool, actions=torch.long)  # the rest are float32
    buf = {k: torch.zeros(T, E, *shape, dtype=dtypes.get(k), device=device) for k, shape in shapes.items()}
    raw, last_actions, starts = envs.reset(), torch.full((E, n), -1, dtype=torch.long), torch.ones(E)
    h_actor, h_critic = torch.zeros(E * n, H, device=device), torch.zeros(E * n, H, device=device)
    ep_return, recent_returns, recent_wins = np.zeros(E), [], []
    final_eval = dict(win_rate=float("nan"), episodic_return=float("nan"))
    start_time, start_step, torch_threads = time.time(), global_step, torch.get_num_threads()
    for iteration in range(start_iteration, args.num_iterations + 1):
        # TRY NOT TO MODIFY: rollout
        t0 = time.time()
        torch.set_num_threads(1)  # the env steps on the other core (3s5z: 6.3k instead of 5.2k env steps/s)
        for step in range(T):
            actor_x, critic_x, avail, alive = agent_inputs(raw, last_actions, A)
            buf["h_actor"][step], buf["h_critic"][step] = h_actor.view(E, n, -1), h_critic.view(E, n, -1)
            with torch.no_grad():
                s = starts.to(device).repeat_interleave(n).unsqueeze(0)
                logits, h_actor = actor(actor_x.view(1, E * n, -1).to(device), h_actor, s)
                dist = torch.distributions.Categorical(logits=masked_logits(logits.view(E, n, A), avail.to(device)))
                actions = dist.sample()
                envs.step_async(actions.cpu().numpy())  # the env steps while the critic runs
                value, h_critic = critic(critic_x.view(1, E * n, -1).to(device), h_critic, s)
            step_data = dict(actor_x=actor_x, critic_x=critic_x, avail=avail, alive=alive, actions=actions)
            step_data.update(starts=starts, logprobs=dist.log_prob(actions), values=value.view(E, n))
            for k, v in step_data.items():
                buf[k][step] = v
            raw, reward, done, won = envs.step_wait()
            global_step += E
            done_t = torch.as_tensor(done)
            buf["rewards"][step], buf["continues"][step] = torch.as_tensor(reward), (~done_t).float()
            last_actions, starts = torch.where(done_t.unsqueeze(-1), -1, actions.cpu()), done_t.float()
            ep_return += reward
            recent_returns.extend(ep_return[done])
            recent_wins.extend(won[done])
            ep_return[done] = 0.0
        with torch.no_grad():
            critic_x = agent_inputs(raw, last_actions, A)[1].view(1, E * n, -1).to(device)
            s = starts.to(device).repeat_interleave(n).unsqueeze(0)
            next_v = value_norm.denormalize(critic(critic_x, h_critic, s)[0].view(E, n))
        sampling_time = time.time() - t0
        torch.set_num_threads(torch_threads)
        # ALGO LOGIC: advantages and the sequential HAPPO update (random order, cumulative blocks)
        t0 = time.time()
        values_denorm = value_norm.denormalize(buf["values"])
        advantages = compute_gae(buf["rewards"], values_denorm, next_v, buf["continues"], args.gamma, args.gae_lambda)
        returns = advantages + values_denorm
        data = {k: to_chunks(v, L)[0] if k in ("h_actor", "h_critic") else to_chunks(v, L) for k, v in buf.items()}
        norm_adv = normalize_advantages(advantages, buf["alive"])
        data.update(advantages=to_chunks(norm_adv, L), returns=to_chunks(returns, L))
        num_sequences = data["h_actor"].shape[0]
        stats = defaultdict(list)
        for i in range(math.ceil(args.update_epochs / args.num_blocks) * args.num_blocks):
            stage = i % args.num_blocks  # every outer epoch draws a random order; its stage s trains blocks 1..s
            if stage == 0:
                order = torch.randperm(n)
            in_stage = torch.zeros(n, device=device)
            in_stage[torch.cat(torch.tensor_split(order, args.num_blocks)[: stage + 1])] = 1.0
            data["alive"] = to_chunks(buf["alive"] * in_stage, L)  # the policy loss counts blocks 1..s only
            perm = torch.randperm(num_sequences)
            for start in range(0, num_sequences, args.minibatch_size):
                idx = perm[start : start + args.minibatch_size]
                mb = {k: (v[idx] if k in ("h_actor", "h_critic") else v[:, idx]).to(device) for k, v in data.items()}
                new_logprob, entropy, new_values = evaluate_sequences(actor, critic, mb)
                logratio = new_logprob - mb["logprobs"]
                pg_loss, info = surrogate_loss(logratio, mb["advantages"], mb["alive"], args.clip_coef)
                entropy_loss = masked_mean(entropy, mb["alive"])
                value_norm.update(mb["returns"])
                target = value_norm.normalize(mb["returns"])
                v_loss = value_loss_fn(new_values, mb["values"], target, args.clip_coef, args.huber_delta)
                (pg_loss - args.ent_coef * entropy_loss + v_loss).backward()
                for net, optimizer in ((actor, actor_optimizer), (critic, critic_optimizer)):
                    nn.utils.clip_grad_norm_(net.parameters(), args.max_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad()
                info["approx_kl"] = masked_mean(logratio.exp() - 1 - logratio, mb["alive"]).detach()
                for k, v in {**info, "policy_loss": pg_loss, "value_loss": v_loss, "entropy": entropy_loss}.items():
                    stats[k].append(v.item())
        updating_time = time.time() - t0
        # TRY NOT TO MODIFY: logging, evaluation and checkpoints
        sampling_total, updating_total = sampling_total + sampling_time, updating_total + updating_time
        sps = int((global_step - start_step) / (time.time() - start_time))
        var_returns = returns.var()
        explained_var = float("nan") if var_returns == 0 else (1 - (returns - values_denorm).var() / var_returns).item()
        train_win = float(np.mean(recent_wins)) if recent_wins else float("nan")
        scalars = [(k if "/" in k else f"losses/{k}", np.mean(v)) for k, v in stats.items()]
        scalars += [("losses/explained_variance", explained_var), ("charts/SPS", sps)]
        scalars += [("charts/learning_rate", actor_optimizer.param_groups[0]["lr"])]
        scalars += [("time/sampling_s", sampling_time), ("time/updating_s", updating_time)]
        if recent_wins:
            scalars += [("charts/episodic_return", np.mean(recent_returns)), ("charts/win_rate", train_win)]
        recent_returns, recent_wins = [], []
        if global_step >= next_eval or iteration == args.num_iterations:
            video = f"{run_dir}/videos/eval_{global_step}" if args.capture_video else None
            final_eval, frame = greedy_evaluation(actor, eval_envs, args, device, video)
            scalars += [(f"eval/{k}", final_eval[k]) for k in ("win_rate", "episodic_return")]
            if frame is not None:  # wandb mirrors it; the GIF is in videos/
                writer.add_image("eval/frame", frame, global_step, dataformats="HWC")
            next_eval = global_step + args.eval_interval
            if args.save_model:
                state = {k: v.state_dict() for k, v in trained.items()} | {k: get() for k, (get, _) in rngs.items()}
                state.update(run_name=run_name, args=vars(args), global_step=global_step, iteration=iteration)
                state.update(next_eval=next_eval, sampling_s=sampling_total, updating_s=updating_total)
                torch.save(state, f"{run_dir}/checkpoint.pt.tmp")
                os.replace(f"{run_dir}/checkpoint.pt.tmp", f"{run_dir}/checkpoint.pt")  # a killed run keeps the last
        for tag, value in scalars:
            writer.add_scalar(tag, value, global_step)
        elapsed = datetime.timedelta(seconds=int(time.time() - start_time))
        eta = datetime.timedelta(seconds=int((args.num_iterations - iteration) * args.batch_size / max(sps, 1)))
        line = f"iter {iteration}/{args.num_iterations} step {global_step} SPS {sps} train {train_win:.3f}"
        times = f"sample {sampling_time:.2f}s update {updating_time:.2f}s elapsed {elapsed} ETA {eta}"
        print(f"{line} eval {final_eval['win_rate']:.3f} {times}", flush=True)
    summary = dict(task=args.map_name, algo=args.exp_name, seed=args.seed, global_step=global_step)
    summary.update(wall_time_s=sampling_total + updating_total, sampling_s=sampling_total, updating_s=updating_total)
    summary.update(final_eval=final_eval, args=vars(args))
    with open(os.path.join(run_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    for resource in (envs, eval_envs, writer):
        resource.close()

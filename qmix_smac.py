# QMIX on SMAC (SMAX or StarCraft II). Documented in README.md, section "QMIX".
"""QMIX (Rashid et al., 2018) with parameter sharing on the StarCraft Multi-Agent Challenge, as in pymarl.

One recurrent network gives every agent a Q-value per action; a mixer, whose weights hypernetworks compute from the
global state and keep non-negative, adds them into a Q_tot monotonic in each agent's Q, so the agents' greedy actions
form the greedy joint action. Q_tot is learnt by double Q-learning on replayed episodes that ε-greedy agents collect.
Run: `python qmix_smac.py --map-name 3s5z --seed 1` (SMAX) or add `--env-backend sc2` to play StarCraft II (smacv2).

Implementation details (pymarl's `qmix.yaml`, `q_learner.py` and `qmix.py` unless stated)
1. pymarl's networks and default init (under the PPO scripts' LayerNorm actor Q_tot diverges): a GRU agent on
   obs + one-hot id + one-hot last action; Linear-ReLU-Linear hypernetworks (width 64, embedding 32).
2. ε-greedy, ε falling linearly from 1.0 to 0.05 over 50k env steps, explores uniformly over the available
   actions; unavailable actions get Q = -1e10 when acting and in the target's argmax.
3. Replay: the last 5000 episodes, padded to the episode limit + 1 (SMAX ends a time-out one step late),
   inputs and states as float16 (half the memory); batches of 32 episodes, the GRU unrolled from their start.
4. Double Q-learning over the filled steps, hard target copies every 200 episodes. Every episode end is
   terminal, as in the PPO scripts (pymarl bootstraps a time-out, but the auto-reset leaves no next state).
5. `reward_scale` is 10 on SMAX, so that the learner's returns reach 20 as SMAC's do (not 2): at SMAX's scale
   overestimation swamps the action differences (no 3m win in 200k env steps). Logged returns are the env's.
6. RMSprop (lr 5e-4, α 0.99, eps 1e-5), gradient norm clipped at 10. 8 envs run continuously; after each
   rollout, `train_steps_per_rollout` steps per `num_envs` episodes finished (pymarl: after each batch of them).
7. The replay buffer is checkpointed only with `--save-buffer`; a resume without it trains after a new batch.
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


# ALGO LOGIC: arguments (the PPO scripts' common arguments where QMIX has them, then QMIX's own)
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
    save_buffer: bool = False  # with --save-model, checkpoints hold the replay buffer too (3m 0.2 GB, 3s5z 3.1 GB)
    map_name: str = "3s5z"  # SMAC map (SMAX maps, or any SMAC/SMACv2 map with --env-backend sc2)
    env_backend: Literal["smax", "sc2"] = "smax"  # `smax`: pure-JAX SMAX, runs anywhere; `sc2`: StarCraft II via smacv2
    total_timesteps: int = 10_000_000  # total env steps (summed over parallel envs)
    num_envs: int = 8  # parallel envs (pymarl's parallel runner: 8)
    num_steps: int = 100  # steps per env per rollout (sc2 default: 400)
    eval_interval: int = 80_000  # env steps between greedy evaluations
    eval_episodes: int = 32  # episodes per evaluation
    learning_rate: float = 5e-4  # learning rate of agent network and mixer
    optimizer: Literal["rmsprop", "adam"] = "rmsprop"  # RMSprop (alpha 0.99, eps 1e-5) as pymarl, or Adam (eps 1e-5)
    gamma: float = 0.99  # discount factor
    max_grad_norm: float = 10.0  # gradient norm clip
    hidden_dim: int = 64  # width of every hidden layer of the agent network
    buffer_size: int = 5000  # episodes the replay buffer holds
    batch_episodes: int = 32  # episodes per gradient step
    train_steps_per_rollout: int = 1  # gradient steps per `num_envs` finished episodes
    target_update_interval: int = 200  # episodes between hard copies into the target networks
    epsilon_start: float = 1.0  # ε of ε-greedy at the start
    epsilon_finish: float = 0.05  # ε after the anneal
    epsilon_anneal_steps: int = 50_000  # env steps over which ε falls linearly
    reward_scale: float | None = None  # factor on the learner's reward (default: 10 on SMAX, 1 on sc2)
    mixing_embed_dim: int = 32  # width of the mixing network
    hypernet_dim: int = 64  # hidden width of the hypernetworks
    data_chunk_length = num_minibatches = 1  # for the shared argument handling: QMIX trains on whole episodes
    batch_size: int = 0  # computed: env steps per rollout (num_envs * num_steps)
    num_iterations: int = 0  # rollout + update iterations


# ALGO LOGIC: per-map presets: none, pymarl runs QMIX with one configuration on every map
MAP_PRESETS = {}


def check_algo_args(args):
    counts = "buffer_size batch_episodes train_steps_per_rollout target_update_interval epsilon_anneal_steps"
    bad = [f"--{name.replace('_', '-')}" for name in counts.split() if getattr(args, name) < 1]
    if bad:
        raise SystemExit(f"error: {', '.join(bad)} must be positive.")
    if args.batch_episodes > args.buffer_size:
        raise SystemExit(f"error: --batch-episodes is larger than --buffer-size {args.buffer_size}.")
    if args.save_buffer and not args.save_model:
        raise SystemExit("error: --save-buffer only adds the buffer to the checkpoints of --save-model; pass both.")


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


# ALGO LOGIC: networks (pymarl's agent and mixer), exploration, episode replay and the double-Q TD loss
class RNNAgent(nn.Module):
    """pymarl's agent network: Linear-ReLU, GRUCell, Linear to one Q-value per action; PyTorch's default init."""

    def __init__(self, in_dim, num_actions, hidden):
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden)
        self.gru = nn.GRUCell(hidden, hidden)
        self.fc2 = nn.Linear(hidden, num_actions)

    def forward(self, x, h, starts):
        """x (L, B, d), h (B, H) hidden before step 0, starts (L, B) 1 where an episode begins -> Q (L, B, A), h."""
        z = torch.relu(self.fc1(x))
        outs = []
        for t in range(x.shape[0]):
            h = self.gru(z[t], h * (1.0 - starts[t]).unsqueeze(-1))
            outs.append(h)
        return self.fc2(torch.stack(outs)), h


# masked_logits and masked_mean: the PPO scripts' text
def masked_logits(logits, avail):
    return torch.where(avail, logits, torch.full_like(logits, -1e10))


def masked_mean(x, mask):
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


class QMixer(nn.Module):
    """Q_tot(Q_1..Q_n, s) with state-generated weights passed through abs: ∂Q_tot/∂Q_i ≥ 0 for every i."""

    def __init__(self, num_agents, state_dim, embed_dim, hypernet_dim):
        super().__init__()
        self.num_agents, self.embed_dim, h = num_agents, embed_dim, hypernet_dim
        self.hyper_w1 = nn.Sequential(nn.Linear(state_dim, h), nn.ReLU(), nn.Linear(h, embed_dim * num_agents))
        self.hyper_b1 = nn.Linear(state_dim, embed_dim)
        self.hyper_w2 = nn.Sequential(nn.Linear(state_dim, h), nn.ReLU(), nn.Linear(h, embed_dim))
        self.hyper_b2 = nn.Sequential(nn.Linear(state_dim, embed_dim), nn.ReLU(), nn.Linear(embed_dim, 1))  # V(s)

    def forward(self, agent_qs, state):
        """agent_qs (..., n), state (..., S) -> Q_tot (...)."""
        shape, state = agent_qs.shape[:-1], state.reshape(-1, state.shape[-1])
        qs = agent_qs.reshape(-1, 1, self.num_agents)
        w1 = self.hyper_w1(state).abs().view(-1, self.num_agents, self.embed_dim)
        hidden = nn.functional.elu(torch.bmm(qs, w1) + self.hyper_b1(state).unsqueeze(1))
        w2 = self.hyper_w2(state).abs().unsqueeze(-1)
        return (torch.bmm(hidden, w2).view(-1) + self.hyper_b2(state).view(-1)).view(shape)


def epsilon_at(step, args):
    """ε falls linearly from epsilon_start to epsilon_finish over epsilon_anneal_steps env steps."""
    decay = (args.epsilon_start - args.epsilon_finish) * step / args.epsilon_anneal_steps
    return max(args.epsilon_finish, args.epsilon_start - decay)


def epsilon_greedy(q, avail, epsilon):
    """Per agent: with probability ε a uniformly random available action, else the argmax over available ones."""
    greedy = masked_logits(q, avail).argmax(-1)
    random_actions = torch.multinomial(avail.reshape(-1, avail.shape[-1]).float(), 1).view(greedy.shape)
    return torch.where(torch.rand(greedy.shape, device=q.device) < epsilon, random_actions, greedy)


class EpisodeReplayBuffer:
    """The last `capacity` finished episodes, padded to `max_len` steps; `fields`: {name: (per-step shape, dtype)}."""

    def __init__(self, capacity, max_len, fields):
        fields = dict(fields, filled=((), torch.float32), terminated=((), torch.float32))
        self.data = {k: torch.zeros(capacity, max_len, *shape, dtype=dtype) for k, (shape, dtype) in fields.items()}
        self.capacity, self.size, self.next = capacity, 0, 0

    def add(self, episode, length):
        """Store steps [0, length) of `episode` ({name: (>= length, ...)}), over the oldest episode once full."""
        i = self.next
        for k, v in self.data.items():
            v[i].zero_()
            if k in episode:
                v[i, :length] = episode[k][:length]
        self.data["filled"][i, :length] = 1.0
        self.data["terminated"][i, length - 1] = 1.0  # every episode end is terminal (detail 5)
        self.next, self.size = (i + 1) % self.capacity, min(self.size + 1, self.capacity)

    def sample(self, batch_episodes):
        """Episodes drawn without replacement, time-major (L, B, ...), cut to the longest of them."""
        idx = torch.randperm(self.size)[:batch_episodes]
        length = int(self.data["filled"][idx].sum(1).max())
        return {k: v[idx, :length].transpose(0, 1) for k, v in self.data.items()}

    def state_dict(self):
        return dict(data=self.data, size=self.size, next=self.next)

    def load_state_dict(self, state):
        for k, v in self.data.items():
            v.copy_(state["data"][k])
        self.size, self.next = state["size"], state["next"]


def double_q_values(q, target_q, avail):
    """Q^-_i(t, argmax over agent i's available a of Q_i(t, a)): the online network picks, the target values."""
    best = masked_logits(q.detach(), avail).argmax(-1, keepdim=True)
    return target_q.gather(-1, best).squeeze(-1)


def qmix_loss(batch, agent, mixer, target_agent, target_mixer, gamma, hidden_dim):
    """Mean over filled steps of (Q_tot(t) - y_t)^2, y_t = r_t + γ (1 - terminated_t) Q_tot^-(t+1); time-major."""
    L, B, n = batch["actions"].shape
    x = batch["actor_x"].float().reshape(L, B * n, -1)
    h0, starts = x.new_zeros(B * n, hidden_dim), x.new_zeros(L, B * n)  # h0 = 0 is every episode's start
    state = batch["state"].float()
    q = agent(x, h0, starts)[0].view(L, B, n, -1)
    q_tot = mixer(q.gather(-1, batch["actions"].unsqueeze(-1)).squeeze(-1), state)
    with torch.no_grad():
        target_q = target_agent(x, h0, starts)[0].view(L, B, n, -1)
        next_q = double_q_values(q[1:], target_q[1:], batch["avail"][1:])
        next_q_tot = torch.cat([target_mixer(next_q, state[1:]), q_tot.new_zeros(1, B)])  # step L-1 is always terminal
        targets = batch["rewards"] + gamma * (1.0 - batch["terminated"]) * next_q_tot
    td_error, filled = q_tot - targets, batch["filled"]
    stats = dict(td_error_abs=td_error.abs(), q_taken_mean=q_tot, target_mean=targets)
    return masked_mean(td_error**2, filled), {k: masked_mean(v, filled) for k, v in stats.items()}


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
    # ALGO LOGIC: setup (the PPO scripts' setup with QMIX's networks, targets, optimiser and replay buffer)
    import copy  # target networks start as copies

    args = parse_args()
    try:
        checkpoint = torch.load(args.resume, weights_only=False) if args.resume else None
    except Exception as e:  # missing, unreadable or not a checkpoint: one line, not a traceback
        raise SystemExit(f"error: cannot read checkpoint {args.resume}: {e}") from None
    for key in ("map_name", "env_backend", "hidden_dim", "mixing_embed_dim", "hypernet_dim") if checkpoint else ():
        if (was := checkpoint["args"].get(key)) != getattr(args, key):
            raise SystemExit(f"error: the checkpoint has {key} {was}, not {getattr(args, key)}: pass the flags it had.")
    new_name = f"{args.map_name}__{args.exp_name}__{args.seed}__{int(time.time())}"
    run_name = checkpoint["run_name"] if checkpoint else new_name
    run_dir = os.path.dirname(os.path.abspath(args.resume)) if checkpoint else os.path.join(args.runs_dir, run_name)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")
    num_eval_envs = args.eval_episodes if args.env_backend == "smax" else min(args.eval_episodes, args.num_envs)
    eval_envs = make_envs(args, num_eval_envs, args.seed + 10_000)
    envs = eval_envs if args.eval_only else make_envs(args, args.num_envs, args.seed)
    n, A = envs.num_agents, envs.num_actions
    check_algo_args(args)
    if args.reward_scale is None:  # detail 5
        args.reward_scale = 10.0 if args.env_backend == "smax" else 1.0
    actor_dim = envs.obs_dim + n + A
    agent = RNNAgent(actor_dim, A, args.hidden_dim).to(device)
    mixer = QMixer(n, envs.state_dim, args.mixing_embed_dim, args.hypernet_dim).to(device)
    target_agent, target_mixer = copy.deepcopy(agent), copy.deepcopy(mixer)
    params = [*agent.parameters(), *mixer.parameters()]
    if args.optimizer == "rmsprop":
        optimizer = torch.optim.RMSprop(params, lr=args.learning_rate, alpha=0.99, eps=1e-5)
    else:
        optimizer = torch.optim.Adam(params, lr=args.learning_rate, eps=1e-5)
    modules = dict(agent=agent, mixer=mixer, target_agent=target_agent, target_mixer=target_mixer, optimizer=optimizer)
    if args.eval_only:  # the checkpoint's greedy agent on the eval games, into eval.json beside it; trains nothing
        agent.load_state_dict(checkpoint["agent"])
        video = f"{run_dir}/videos/eval_only_{checkpoint['global_step']}" if args.capture_video else None
        result = dict(checkpoint=os.path.abspath(args.resume), global_step=checkpoint["global_step"], seed=args.seed)
        result |= greedy_evaluation(agent, eval_envs, args, device, video)[0]
        tail = f"return {result['episodic_return']:.2f} over {result['episodes']} episodes (seed {args.seed})"
        print(f"eval-only {args.resume} step {result['global_step']}: win rate {result['win_rate']:.3f} {tail}")
        with open(f"{run_dir}/eval.json", "w") as f:
            json.dump(result, f, indent=1)
        sys.exit()
    fields = dict(actor_x=((n, actor_dim), torch.float16), state=((envs.state_dim,), torch.float16))  # detail 3
    fields.update(avail=((n, A), torch.bool), actions=((n,), torch.long), rewards=((), torch.float32))
    max_len = envs.episode_limit + 1  # SMAX ends a time-out one step late (it tests the step count before counting)
    buffer = EpisodeReplayBuffer(args.buffer_size, max_len, fields)
    gigabytes = sum(v.numel() * v.element_size() for v in buffer.data.values()) / 1e9
    print(f"replay buffer: {args.buffer_size} episodes x {max_len} steps, {gigabytes:.2f} GB")
    global_step, start_iteration, sampling_total, updating_total, next_eval = 0, 1, 0.0, 0.0, 0
    episodes, last_target_update, gradient_steps = 0, 0, 0
    if checkpoint:
        for key, module in modules.items():
            module.load_state_dict(checkpoint[key])
        random.setstate(checkpoint["python_rng"])
        np.random.set_state(checkpoint["numpy_rng"])
        torch.set_rng_state(checkpoint["torch_rng"])
        global_step, start_iteration = checkpoint["global_step"], checkpoint["iteration"] + 1
        sampling_total, updating_total = checkpoint["sampling_s"], checkpoint["updating_s"]
        next_eval, episodes = checkpoint["next_eval"], checkpoint["episodes"]
        last_target_update, gradient_steps = checkpoint["last_target_update"], checkpoint["gradient_steps"]
        print(f"resumed {run_name} from {args.resume} at global_step={global_step}")
        if checkpoint.get("buffer") is not None:
            buffer.load_state_dict(checkpoint["buffer"])
            print(f"replay buffer restored: {buffer.size} episodes")
        else:
            print("the checkpoint holds no replay buffer (--save-buffer): it refills; training waits for a new batch")
    if args.track:
        import wandb

        wandb_args = dict(project=args.wandb_project_name, entity=args.wandb_entity, config=vars(args), name=run_name)
        wandb_id = re.sub(r"[^\w-]", "-", run_name)[-64:]
        wandb.init(**wandb_args, id=wandb_id, resume="allow", sync_tensorboard=True, save_code=True)
    writer = SummaryWriter(run_dir)
    table = "\n".join(f"|{k}|{v}|" for k, v in vars(args).items())
    writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + table)
    T, E = args.num_steps, args.num_envs
    current = {k: torch.zeros(E, max_len, *shape, dtype=dtype) for k, (shape, dtype) in fields.items()}
    ep_len, env_ids = torch.zeros(E, dtype=torch.long), torch.arange(E)
    raw, last_actions = envs.reset(), torch.full((E, n), -1, dtype=torch.long)
    h, starts = torch.zeros(E * n, args.hidden_dim, device=device), torch.ones(1, E * n, device=device)
    ep_return, recent_returns, recent_wins = np.zeros(E), [], []
    final_eval = dict(win_rate=float("nan"), episodic_return=float("nan"))
    start_time, start_step, torch_threads = time.time(), global_step, torch.get_num_threads()

    for iteration in range(start_iteration, args.num_iterations + 1):
        # ALGO LOGIC: rollout (ε-greedy; every finished episode enters the replay buffer)
        t0, episodes_before = time.time(), episodes
        torch.set_num_threads(1)  # the env steps on the other core, as in the PPO scripts
        for _ in range(T):
            epsilon = epsilon_at(global_step, args)
            actor_x, _, avail, _ = agent_inputs(raw, last_actions, A)
            with torch.no_grad():
                q, h = agent(actor_x.view(1, E * n, -1).to(device), h, starts)
                actions = epsilon_greedy(q.view(E, n, A), avail.to(device), epsilon).cpu()
            envs.step_async(actions.numpy())
            step_data = dict(actor_x=actor_x, state=torch.as_tensor(raw["state"]), avail=avail, actions=actions)
            for k, v in step_data.items():
                current[k][env_ids, ep_len] = v.to(current[k].dtype)
            raw, reward, done, won = envs.step_wait()
            global_step += E
            current["rewards"][env_ids, ep_len] = torch.as_tensor(reward) * args.reward_scale
            ep_len += 1
            ep_return += reward
            for e in np.flatnonzero(done):
                buffer.add({k: v[e] for k, v in current.items()}, int(ep_len[e]))
                episodes += 1
                recent_returns.append(ep_return[e])
                recent_wins.append(float(won[e]))
                ep_return[e], ep_len[e] = 0.0, 0
            last_actions = torch.where(torch.as_tensor(done).unsqueeze(-1), -1, actions)
            starts = torch.as_tensor(done, dtype=torch.float32, device=device).repeat_interleave(n).unsqueeze(0)
        sampling_time = time.time() - t0
        torch.set_num_threads(torch_threads)

        # ALGO LOGIC: double-Q updates of agent and mixer (per `num_envs` finished episodes), target copies
        t0 = time.time()
        rollouts = episodes // E - episodes_before // E  # `num_envs`-episode groups completed in this rollout
        num_updates = rollouts * args.train_steps_per_rollout if buffer.size >= args.batch_episodes else 0
        stats = defaultdict(list)
        for _ in range(num_updates):
            batch = {k: v.to(device) for k, v in buffer.sample(args.batch_episodes).items()}
            loss, info = qmix_loss(batch, agent, mixer, target_agent, target_mixer, args.gamma, args.hidden_dim)
            optimizer.zero_grad()
            loss.backward()
            info["grad_norm"] = nn.utils.clip_grad_norm_(params, args.max_grad_norm)
            optimizer.step()
            gradient_steps += 1
            if episodes - last_target_update >= args.target_update_interval:
                target_agent.load_state_dict(agent.state_dict())
                target_mixer.load_state_dict(mixer.state_dict())
                last_target_update = episodes
            for k, v in {**info, "td_loss": loss}.items():
                stats[k].append(v.item())
        updating_time = time.time() - t0

        # ALGO LOGIC: logging, evaluation and checkpoints (the PPO scripts' with QMIX's losses and state)
        sampling_total, updating_total = sampling_total + sampling_time, updating_total + updating_time
        sps = int((global_step - start_step) / (time.time() - start_time))
        train_win = float(np.mean(recent_wins)) if recent_wins else float("nan")
        scalars = [(f"losses/{k}", np.mean(v)) for k, v in stats.items()]
        scalars += [("charts/SPS", sps), ("charts/epsilon", epsilon), ("qmix/gradient_steps", gradient_steps)]
        scalars += [("charts/learning_rate", optimizer.param_groups[0]["lr"]), ("qmix/buffer_episodes", buffer.size)]
        scalars += [("time/sampling_s", sampling_time), ("time/updating_s", updating_time)]
        if recent_wins:
            scalars += [("charts/episodic_return", np.mean(recent_returns)), ("charts/win_rate", train_win)]
        for tag, value in scalars:
            writer.add_scalar(tag, float(value), global_step)
        recent_returns, recent_wins = [], []
        if global_step >= next_eval or iteration == args.num_iterations:
            video = f"{run_dir}/videos/eval_{global_step}" if args.capture_video else None
            final_eval, frame = greedy_evaluation(agent, eval_envs, args, device, video)
            for k in ("win_rate", "episodic_return"):
                writer.add_scalar(f"eval/{k}", final_eval[k], global_step)
            if frame is not None:  # wandb mirrors it; the GIF is in videos/
                writer.add_image("eval/frame", frame, global_step, dataformats="HWC")
            next_eval = global_step + args.eval_interval
            if args.save_model:
                state = {k: m.state_dict() for k, m in modules.items()}
                state.update(run_name=run_name, args=vars(args), global_step=global_step, iteration=iteration)
                state.update(next_eval=next_eval, sampling_s=sampling_total, updating_s=updating_total)
                state.update(episodes=episodes, last_target_update=last_target_update, gradient_steps=gradient_steps)
                state.update(python_rng=random.getstate(), numpy_rng=np.random.get_state())
                state.update(torch_rng=torch.get_rng_state(), buffer=buffer.state_dict() if args.save_buffer else None)
                torch.save(state, f"{run_dir}/checkpoint.pt.tmp")
                os.replace(f"{run_dir}/checkpoint.pt.tmp", f"{run_dir}/checkpoint.pt")  # a killed run keeps the last
        elapsed = datetime.timedelta(seconds=int(time.time() - start_time))
        eta = datetime.timedelta(seconds=int((args.num_iterations - iteration) * args.batch_size / max(sps, 1)))
        line = f"iter {iteration}/{args.num_iterations} step {global_step} SPS {sps} train {train_win:.3f} "
        line += f"eval {final_eval['win_rate']:.3f} sample {sampling_time:.2f}s update {updating_time:.2f}s "
        print(f"{line}elapsed {elapsed} ETA {eta}", flush=True)

    summary = dict(task=args.map_name, algo=args.exp_name, seed=args.seed, global_step=global_step)
    summary.update(wall_time_s=sampling_total + updating_total, sampling_s=sampling_total, updating_s=updating_total)
    summary.update(final_eval=final_eval, args=vars(args))
    with open(os.path.join(run_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    for resource in (envs, eval_envs, writer):
        resource.close()

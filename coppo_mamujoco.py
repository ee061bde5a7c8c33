# CoPPO (Coordinated PPO) on Multi-Agent MuJoCo. README: "MAPPO, CoPPO, HAPPO and A2PO on MA-MuJoCo".
"""CoPPO (Wu et al., 2021) with one actor and one critic per agent: every agent updates at once, on a joint ratio.

Agent i's ratio is multiplied by the detached product of the other agents' ratios, clipped to 1 +- eps_others,
before PPO's clip, which bounds the change of the joint policy; all actors and critics step together.

Run: python coppo_mamujoco.py --scenario HalfCheetah --agent-conf 6x1 --seed 1

Implementation details (README.md, "MAPPO, CoPPO, HAPPO and A2PO on MA-MuJoCo"):
1-6. As in a2po_mamujoco.py: `diff a2po_mamujoco.py coppo_mamujoco.py` shows only the algorithm.
7. Surrogate: l_i = r_i * clip(sg(prod_{j != i} r_j), 1 +- eps_others); L_i = -E[min(l_i A_i, clip(l_i, 1 +- eps) A_i)].
   The product runs over the other agents of the same (t, env) (summed in log space) and is detached, as in the
   talk and the CoPPO code; the loss sums L_i - ent_coef * H_i over the agents.
8. Flags by role: --others-clip-coef (0.1, inside (0, --clip-coef)) clips the others' product, --clip-coef (0.2)
   the joint ratio l_i; the talk and the CoPPO code call these "outer" and "inner" the other way round from each
   other. The Hopper preset (clip 0.1) sets the others' clip to half of it, 0.05, unless given.
9. Schedule: update_epochs epochs over num_minibatches minibatches of (t, env) samples holding every agent; one
   backward, each actor's and critic's gradient norm clipped on its own (max_grad_norm), every Adam steps.
10. Advantages: GAE per agent (its own critic and ValueNorm, the per-agent rewards after the truncation bootstrap),
   normalised jointly over (t, env, agent) once per update, as the A2PO code base does for all its algorithms.
   Critic i regresses onto GAE_i + V_i (clipped Huber loss, ValueNorm) in the same pass as the actors: no
   critic-only stage.
11. Settings: a2po_mamujoco.py's defaults and Hopper preset, unchanged: the A2PO code base ran its MA-MuJoCo baselines
   with A2PO's settings and 5 epochs, which is the default here (lr 3e-4, eps 0.2, entropy 0, 4000 steps per update).
"""

# TRY NOT TO MODIFY: imports
import datetime
import itertools
import json
import multiprocessing as mp
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass

import farama_notifications
import mujoco
import numpy as np
import torch
import torch.nn as nn
import tyro
from torch.distributions import Normal
from torch.utils.tensorboard import SummaryWriter

farama_notifications.notifications.pop("gymnasium_robotics", None)  # else printed when gymnasium_robotics loads
from gymnasium_robotics import mamujoco_v1  # noqa: E402
from gymnasium_robotics.envs.multiagent_mujoco.obsk import get_parts_and_edges  # noqa: E402


# TRY NOT TO MODIFY: common arguments
@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]  # the name of this experiment
    seed: int = 1  # seed of the experiment
    torch_deterministic: bool = True  # if toggled, `torch.backends.cudnn.deterministic=True`
    cuda: bool = True  # use CUDA when available
    track: bool = False  # if toggled, this experiment will be tracked with Weights and Biases
    wandb_project_name: str = "cooperative-trust-region"  # the wandb's project name
    wandb_entity: str | None = None  # the entity (team) of wandb's project
    capture_video: bool = False  # record the first episode of every evaluation as an mp4 in the run folder's videos/
    runs_dir: str = "runs"  # folder that holds the run folders
    scenario: str = "HalfCheetah"  # robot: Ant, HalfCheetah, Walker2d, Hopper, Humanoid, HumanoidStandup, Swimmer
    agent_conf: str = "6x1"  # partition of the robot's joints into agents, e.g. 2x3, 6x1, 9|8, 17x1
    agent_obsk: int = 1  # each agent observes the joints up to this graph distance from its own
    total_timesteps: int = 10_000_000  # total env steps of the experiment
    learning_rate: float = 3e-4  # the learning rate of the actors
    critic_learning_rate: float = 3e-4  # the learning rate of the critics
    num_envs: int = 8  # the number of parallel envs (one subprocess worker each)
    num_steps: int = 500  # the number of steps per env per rollout
    gamma: float = 0.99  # the discount factor gamma
    gae_lambda: float = 0.95  # the lambda of the advantages (GAE; A2PO: PreOPC)
    num_minibatches: int = 1  # the number of minibatches per pass
    update_epochs: int = 5  # the number of epochs per update (sequential algorithms: per agent)
    clip_coef: float = 0.2  # the surrogate clipping coefficient eps (A2PO: before adaptive clipping) and the value clip
    ent_coef: float = 0.0  # coefficient of the entropy bonus
    max_grad_norm: float = 10.0  # the maximum norm for the gradient clipping
    huber_delta: float = 10.0  # delta of the Huber value loss
    hidden_dim: int = 64  # width of the hidden layers
    obs_norm_clip: float = 10.0  # normalised observations and states are clipped to +- this
    eval_interval: int = 100_000  # env steps between evaluations
    eval_episodes: int = 5  # episodes per evaluation (deterministic mean actions)
    save_model: bool = False  # save checkpoint.pt in the run folder at every evaluation and at the end
    resume: str | None = None  # path to a checkpoint.pt to resume from
    eval_only: bool = False  # evaluate the --resume checkpoint (mean actions), write eval.json beside it, train nothing
    # ALGO LOGIC: algorithm flags
    others_clip_coef: float = 0.1  # clip on the product of the other agents' ratios (the talk's "outer" clip)

    # TRY NOT TO MODIFY: computed after parsing
    batch_size: int = 0  # the batch size (computed in runtime)
    minibatch_size: int = 0  # the mini-batch size (computed in runtime)
    num_iterations: int = 0  # the number of iterations (computed in runtime)


# TRY NOT TO MODIFY: tasks, env workers and observation statistics
# MuJoCo's warnings go to stderr, less the deprecation of 'settotalmass' in gymnasium's own robot models
mujoco.set_mju_user_warning(lambda m: None if "settotalmass" in m else print(f"WARNING: {m}", file=sys.stderr))

# The valid partitions of each robot (sorted)
TASKS = dict(Ant=["2x4", "4x2", "8x1"], HalfCheetah=["2x3", "3x2", "6x1"], Walker2d=["2x3", "3x2", "6x1"])
TASKS.update(Hopper=["3x1"], Humanoid=["17x1", "9|8"], HumanoidStandup=["17x1", "9|8"], Swimmer=["2x1"])
# Partitions gymnasium-robotics does not ship: each agent's joint labels, space-separated (None: one per joint).
CUSTOM_PARTITIONS = {
    ("Ant", "8x1"): None,
    ("HalfCheetah", "3x2"): ["bfoot bshin", "bthigh ffoot", "fshin fthigh"],
    ("Walker2d", "3x2"): ["foot_joint leg_joint", "thigh_joint foot_left_joint", "leg_left_joint thigh_left_joint"],
    ("Walker2d", "6x1"): None,
    ("Humanoid", "17x1"): None,
    ("HumanoidStandup", "17x1"): None,
}


def apply_presets(args, argv):
    """Apply TASK_PRESETS[scenario] to the fields whose flag is not in argv."""
    given = {a[2:].split("=")[0].replace("-", "_") for a in argv if a.startswith("--")}
    for key, value in TASK_PRESETS.get(args.scenario, {}).items():
        if key not in given:
            setattr(args, key, value)
    return args


def check_task(scenario, agent_conf):
    """Clean error (SystemExit) for an unknown scenario or an impossible partition."""
    if scenario not in TASKS:
        tasks = "; ".join(f"{s} {'/'.join(confs)}" for s, confs in TASKS.items())
        raise SystemExit(f"error: unknown MA-MuJoCo scenario '{scenario}'. Valid tasks: {tasks}.")
    if agent_conf not in TASKS[scenario]:
        valid = ", ".join(TASKS[scenario])
        raise SystemExit(f"error: {scenario} has no partition '{agent_conf}'. Valid partitions of {scenario}: {valid}.")


def make_env(scenario, agent_conf, agent_obsk, **kwargs):
    """A MaMuJoCo parallel env; custom partitions are built from get_parts_and_edges(scenario, None)."""
    if (scenario, agent_conf) in CUSTOM_PARTITIONS:
        parts, edges, global_nodes = get_parts_and_edges(scenario, None)
        joints = {node.label: node for node in parts[0]}
        groups = CUSTOM_PARTITIONS[(scenario, agent_conf)] or list(joints)
        partition = [tuple(joints[label] for label in group.split()) for group in groups]
        kwargs["agent_factorization"] = {"partition": partition, "edges": edges, "globals": global_nodes}
    return mamujoco_v1.parallel_env(scenario, agent_conf, agent_obsk=agent_obsk, **kwargs)


def flat_obs(env, obs):
    return np.concatenate([obs[a] for a in env.possible_agents]).astype(np.float32)


def env_seed(seed, iteration, index):
    """A 64-bit env seed hashed from (run seed, first iteration of the process, env index): unrelated streams."""
    return int(np.random.SeedSequence([seed, iteration, index]).generate_state(1, np.uint64)[0])


def env_worker(remote, env_kwargs, seed):
    """Holds one env; a finished episode resets here, sending the global state from before the reset."""
    env, parent = make_env(**env_kwargs), os.getppid()
    agents = env.possible_agents
    splits = np.cumsum([env.action_spaces[a].shape[0] for a in agents])[:-1]
    obs, _ = env.reset(seed=seed)
    remote.send((flat_obs(env, obs), env.state().astype(np.float32)))  # what SubprocVecEnv.reset returns
    ep_return, ep_length = 0.0, 0
    while True:
        while not remote.poll(1.0):
            if os.getppid() != parent:  # the trainer was killed; forked siblings keep the pipe open, so no EOF
                return
        cmd, data = remote.recv()
        if cmd == "step":
            obs, rewards, terms, truncs, _ = env.step(dict(zip(agents, np.split(data, splits))))
            reward, term = rewards[agents[0]], terms[agents[0]]
            trunc = truncs[agents[0]] and not term  # a time limit reached by a fall counts as the fall
            ep_return, ep_length = ep_return + reward, ep_length + 1
            final_state = env.state().astype(np.float32) if trunc else None
            episode = (ep_return, ep_length) if term or trunc else None
            if episode is not None:
                ep_return, ep_length = 0.0, 0
                obs, _ = env.reset()
            remote.send((flat_obs(env, obs), env.state().astype(np.float32), reward, term, trunc, final_state, episode))
        elif cmd == "close":
            return


class SubprocVecEnv:
    """num_envs MaMuJoCo envs, one per subprocess worker, stepped in lockstep."""

    def __init__(self, seeds, env_kwargs):
        ctx = mp.get_context("fork")
        self.remotes, self.processes = [], []
        for seed in seeds:
            parent, child = ctx.Pipe()
            self.remotes.append(parent)
            self.processes.append(ctx.Process(target=env_worker, args=(child, env_kwargs, seed), daemon=True))
            self.processes[-1].start()
            child.close()

    def reset(self):  # each worker sends its first observation once it has reset its env
        obs, states = zip(*[remote.recv() for remote in self.remotes])
        return np.stack(obs), np.stack(states)

    def step(self, actions):
        for remote, action in zip(self.remotes, actions):
            remote.send(("step", action))
        obs, states, rewards, terms, truncs, final_states, episodes = zip(*[remote.recv() for remote in self.remotes])
        rewards = np.array(rewards, dtype=np.float32)
        return np.stack(obs), np.stack(states), rewards, np.array(terms), np.array(truncs), final_states, episodes

    def close(self):
        for remote, proc in zip(self.remotes, self.processes):
            remote.send(("close", None))
            proc.join(timeout=5)


class RunningMeanStd:
    """Running mean/var (parallel update) of a feature vector; normalise and clip to +-clip."""

    def __init__(self, dim, clip):
        self.mean, self.var, self.count, self.clip = np.zeros(dim), np.ones(dim), 1e-4, clip

    def update(self, x):
        batch_mean, batch_var, n = x.mean(0), x.var(0), x.shape[0]
        delta, total = batch_mean - self.mean, self.count + n
        self.mean = self.mean + delta * n / total
        self.var = (self.var * self.count + batch_var * n + delta**2 * self.count * n / total) / total
        self.count = total

    def normalize(self, x):
        return np.clip((x - self.mean) / np.sqrt(self.var + 1e-8), -self.clip, self.clip).astype(np.float32)

    def state_dict(self):
        return {"mean": self.mean, "var": self.var, "count": self.count}

    def load_state_dict(self, d):
        self.mean, self.var, self.count = d["mean"], d["var"], d["count"]


# TRY NOT TO MODIFY: networks
def layer_init(layer, gain):
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


def mlp_body(in_dim, hidden_dim):
    """LayerNorm on the input, then two Linear -> ReLU -> LayerNorm blocks."""
    layers = [nn.LayerNorm(in_dim)]
    for dim in (in_dim, hidden_dim):
        layers += [layer_init(nn.Linear(dim, hidden_dim), np.sqrt(2)), nn.ReLU(), nn.LayerNorm(hidden_dim)]
    return nn.Sequential(*layers)


class Actor(nn.Module):
    """Gaussian policy with a state-independent log-std (init -0.5)."""

    def __init__(self, obs_dim, act_dim, hidden_dim):
        super().__init__()
        self.mean = nn.Sequential(mlp_body(obs_dim, hidden_dim), layer_init(nn.Linear(hidden_dim, act_dim), 0.01))
        self.log_std = nn.Parameter(torch.full((act_dim,), -0.5))

    def dist(self, obs):
        mean = self.mean(obs)
        return Normal(mean, self.log_std.exp().expand_as(mean))


class RolloutActors:
    """The mean actions of all actors in one batched forward (bmm): n small MLPs one by one cost more than the envs.
    Inputs and layers are zero-padded to the largest agent; the input LayerNorm divides by each agent's own width and
    zero weights keep the padding out, so the means equal the actors' up to rounding. Build it after each update."""

    def __init__(self, actors, obs_slices, act_slices):
        widths, act_dims = [s.stop - s.start for s in obs_slices], [s.stop - s.start for s in act_slices]
        d, a, obs_width, device = max(widths), max(act_dims), int(obs_slices[-1].stop), actors[0].log_std.device
        gather = [list(range(s.start, s.stop)) + [obs_width] * (d - w) for s, w in zip(obs_slices, widths)]
        self.gather = torch.tensor(gather, device=device)  # index obs_width: a zero column appended to obs
        self.mask = (self.gather < obs_width).unsqueeze(1)
        self.width = torch.tensor(widths, dtype=torch.float32, device=device)[:, None, None]
        self.act_index = torch.cat([torch.arange(k) + i * a for i, k in enumerate(act_dims)]).to(device)
        self.std = torch.cat([actor.log_std for actor in actors]).exp().detach()

        def stack(tensors):  # (n, *largest shape): each agent's tensor in the leading corner, zeros elsewhere
            out = tensors[0].new_zeros(len(tensors), *np.max([t.shape for t in tensors], 0).tolist())
            for i, t in enumerate(tensors):
                out[i][tuple(slice(0, size) for size in t.shape)] = t
            return (out.unsqueeze(1) if out.dim() == 2 else out).detach()  # vectors as (n, 1, dim): broadcast over E

        # [weight, bias] of each LayerNorm and Linear of the actors' MLP, in order; Linear weights as (n, in, out)
        modules = [ms for ms in zip(*[[*a.mean[0], a.mean[1]] for a in actors]) if not isinstance(ms[0], nn.ReLU)]
        self.layers = [[stack([m.weight.t() for m in ms]), stack([m.bias for m in ms])] for ms in modules]
        self.eps = modules[0][0].eps

    def __call__(self, obs):
        """obs (E, sum d_i), normalised -> mean actions (E, sum a_i) in the flat action layout."""
        (w0, b0), *hidden, (w3, b3) = self.layers
        x = torch.cat([obs, obs.new_zeros(len(obs), 1)], -1)[:, self.gather].transpose(0, 1)  # (n, E, d)
        mean = x.sum(-1, keepdim=True) / self.width  # the input LayerNorm over each agent's own width
        var = (((x - mean) * self.mask) ** 2).sum(-1, keepdim=True) / self.width
        x = (x - mean) / (var + self.eps).sqrt() * w0 + b0
        for (w, b), (g, c) in zip(hidden[0::2], hidden[1::2]):  # Linear -> ReLU -> LayerNorm
            x = torch.relu(torch.baddbmm(b, x, w))
            x = nn.functional.layer_norm(x, x.shape[-1:], eps=self.eps) * g + c
        return torch.baddbmm(b3, x, w3).transpose(0, 1).reshape(len(obs), -1)[:, self.act_index]


class Critic(nn.Module):
    """V_i(global state, one-hot i), in agent i's ValueNorm space."""

    def __init__(self, state_dim, hidden_dim):
        super().__init__()
        self.net = nn.Sequential(mlp_body(state_dim, hidden_dim), layer_init(nn.Linear(hidden_dim, 1), 1.0))

    def forward(self, x):
        return self.net(x).squeeze(-1)


def critic_input(states, agent, num_agents):
    onehot = torch.eye(num_agents, device=states.device)[agent].expand(*states.shape[:-1], -1)
    return torch.cat([states, onehot], -1)


# TRY NOT TO MODIFY: value normalisation, value loss, GAE and the truncation bootstrap
class ValueNorm(nn.Module):
    """Running mean / mean-square of the returns (beta = 0.99999, debiased, variance floored at 1e-2)."""

    def __init__(self, shape=(), beta=0.99999, var_floor=1e-2):
        super().__init__()
        self.beta, self.var_floor = beta, var_floor
        self.register_buffer("running_mean", torch.zeros(shape, dtype=torch.float64))
        self.register_buffer("running_mean_sq", torch.zeros(shape, dtype=torch.float64))
        self.register_buffer("debiasing_term", torch.zeros((), dtype=torch.float64))

    def mean_var(self):
        debias = self.debiasing_term.clamp(min=1e-5)
        mean = self.running_mean / debias
        var = (self.running_mean_sq / debias - mean**2).clamp(min=self.var_floor)
        return mean.float(), var.float()

    @torch.no_grad()
    def update(self, x):
        x = x.detach().double().reshape(-1, *self.running_mean.shape)
        self.running_mean.mul_(self.beta).add_(x.mean(0) * (1 - self.beta))
        self.running_mean_sq.mul_(self.beta).add_((x**2).mean(0) * (1 - self.beta))
        self.debiasing_term.mul_(self.beta).add_(1 - self.beta)

    def normalize(self, x):
        mean, var = self.mean_var()
        return (x - mean) / var.sqrt()

    def denormalize(self, x):
        mean, var = self.mean_var()
        return x * var.sqrt() + mean


def huber(x, delta):
    """Huber loss on both tails: x^2/2 inside |x| <= delta, delta*(|x| - delta/2) outside."""
    a = x.abs()
    return torch.where(a <= delta, 0.5 * x**2, delta * (a - 0.5 * delta))


def value_loss_fn(new_values, old_values, returns_norm, clip_coef, huber_delta):
    """max(Huber(V - R), Huber(V_clip - R)), V_clip = V_old + clamp(V - V_old, -eps, eps); plain mean."""
    clipped = old_values + (new_values - old_values).clamp(-clip_coef, clip_coef)
    return torch.max(huber(new_values - returns_norm, huber_delta), huber(clipped - returns_norm, huber_delta)).mean()


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


def bootstrap_truncation(rewards, terminations, truncations, final_values, gamma):
    """Per-agent rewards (T, E, n) and continues (T, E): at a truncation (not a termination) r_t += gamma *
    V_i(final state); continues_t = 0 at every episode end, so GAE and PreOPC cut the trace there."""
    rewards = rewards.unsqueeze(-1) + gamma * truncations.unsqueeze(-1).float() * final_values
    continues = 1.0 - (terminations | truncations).float()
    return rewards, continues


# ALGO LOGIC: per-task presets (the A2PO code base's) for the flags not given, the flag checks, the surrogate
ALGO = "coppo"  # the algorithm's name in summary.json and checkpoints
TASK_PRESETS = {"Hopper": {"learning_rate": 1e-4, "critic_learning_rate": 1e-4, "clip_coef": 0.1}}
for preset in TASK_PRESETS.values():  # CoPPO: the others' clip at half the clip
    preset["others_clip_coef"] = preset["clip_coef"] / 2


def check_algo_args(args):
    eps, others = args.clip_coef, args.others_clip_coef
    if not 0 < others < eps:
        raise SystemExit(f"error: --others-clip-coef {others} must lie in (0, --clip-coef {eps}), the tighter clip.")


def surrogate_loss(logratio, advantages, clip_coef, others_clip_coef):
    """l_i = r_i * clip(sg(prod_{j != i} r_j), 1 +- eps_others);  L_i = -E[min(l_i A_i, clip(l_i, 1 +- eps) A_i)].
    (B, n) in, (n,) losses out; the others' product is summed in log space over the same sample's other agents."""
    others = (logratio.sum(-1, keepdim=True) - logratio).detach().exp()
    ratio = logratio.exp() * others.clamp(1 - others_clip_coef, 1 + others_clip_coef)
    loss = -torch.min(ratio * advantages, ratio.clamp(1 - clip_coef, 1 + clip_coef) * advantages).mean(0)
    return loss, ((ratio - 1).abs() > clip_coef).float().mean(), others.mean()


# TRY NOT TO MODIFY: offscreen rendering
def pick_gl_backend():
    """The first of egl, osmesa that can render offscreen (probed in a subprocess)."""
    probe = "import mujoco; r = mujoco.Renderer(mujoco.MjModel.from_xml_string('<mujoco/>'), 8, 8); r.render()"
    for backend in ("egl", "osmesa"):
        env = dict(os.environ, MUJOCO_GL=backend)
        if subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True).returncode == 0:
            return backend
    raise SystemExit("error: --capture-video needs offscreen GL: apt-get install libegl1 libegl-mesa0 (or libosmesa6)")


if __name__ == "__main__":
    # TRY NOT TO MODIFY: argument handling
    args = apply_presets(tyro.cli(Args), sys.argv[1:])
    check_task(args.scenario, args.agent_conf)
    check_algo_args(args)
    args.batch_size = args.num_envs * args.num_steps
    args.num_iterations = args.total_timesteps // args.batch_size
    B, M = args.batch_size, args.num_minibatches
    for failed, message in (
        (M < 1 or B % M, f"batch_size {B} (num_envs * num_steps) is not divisible by num_minibatches {M}."),
        (args.num_iterations < 1, f"total_timesteps {args.total_timesteps} < batch_size {B} (num_envs * num_steps)."),
        (args.agent_obsk < 0, "--agent-obsk must be >= 0."),
        (args.eval_only and not args.resume, "--eval-only needs --resume path/to/checkpoint.pt."),
    ):
        if failed:
            raise SystemExit(f"error: {message}")
    args.minibatch_size = B // M
    if args.capture_video:
        try:
            import imageio.v2 as imageio
            import imageio_ffmpeg  # noqa: F401  (the mp4 writer imageio needs)
        except ImportError:
            raise SystemExit("error: --capture-video needs: pip install imageio imageio-ffmpeg") from None
        os.environ["MUJOCO_GL"] = os.environ.get("MUJOCO_GL") or pick_gl_backend()
    task = f"{args.scenario}-{args.agent_conf}".replace("|", "_")
    try:
        checkpoint = torch.load(args.resume, weights_only=False) if args.resume else None
    except Exception as exc:  # missing, unreadable or not a torch file: one line naming the file, no traceback
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise SystemExit(f"error: cannot read checkpoint {args.resume} ({reason}). Pass a checkpoint.pt.") from None
    if checkpoint is not None:  # the same algorithm, task and network shapes, for --resume and --eval-only alike
        c, ours = dict(checkpoint["args"], algo=checkpoint.get("algo", "a2po")), dict(vars(args), algo=ALGO)
        diff = [k for k in ("algo", "scenario", "agent_conf", "agent_obsk", "hidden_dim") if c[k] != ours[k]]
        was, now = (", ".join(f"{k} {d[k]}" for k in diff) for d in (c, ours))
        fix = " ".join(f"{c[k]}_mamujoco.py" if k == "algo" else f"--{k.replace('_', '-')} {c[k]}" for k in diff)
        if diff:
            raise SystemExit(f"error: the checkpoint is for {was}, not {now}: use {fix} (or another checkpoint).")
        run_name, run_dir = checkpoint["run_name"], os.path.dirname(os.path.abspath(args.resume))
    else:
        run_name = f"{task}__{args.exp_name}__{args.seed}__{int(time.time())}"
        run_dir = f"{args.runs_dir}/{run_name}"

    # TRY NOT TO MODIFY: seeding, the evaluation env, one actor, critic, ValueNorm and two optimisers per agent
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")
    torch.set_num_threads(1)  # beside the env workers on 2 cores, a second thread made the updates 25x slower
    env_kwargs = dict(scenario=args.scenario, agent_conf=args.agent_conf, agent_obsk=args.agent_obsk)
    video = dict(render_mode="rgb_array", width=320, height=240) if args.capture_video else {}
    eval_env = make_env(**env_kwargs, **video)
    agents, n = eval_env.possible_agents, len(eval_env.possible_agents)
    obs_dims = [eval_env.observation_spaces[a].shape[0] for a in agents]
    act_dims = [eval_env.action_spaces[a].shape[0] for a in agents]
    obs_slices = [slice(a, b) for a, b in itertools.pairwise(np.cumsum([0] + obs_dims))]
    act_slices = [slice(a, b) for a, b in itertools.pairwise(np.cumsum([0] + act_dims))]
    low, high = (np.concatenate([getattr(eval_env.action_spaces[a], key) for a in agents]) for key in ("low", "high"))
    state_dim = eval_env.state().shape[0]
    if args.capture_video:  # offscreen renders without shadows, reflections and skybox
        viewer = eval_env.single_agent_env.unwrapped.mujoco_renderer._get_viewer("rgb_array")
        for flag in ("SHADOW", "REFLECTION", "SKYBOX"):
            viewer.scn.flags[getattr(mujoco.mjtRndFlag, f"mjRND_{flag}")] = 0
    actors = [Actor(obs_dims[i], act_dims[i], args.hidden_dim).to(device) for i in range(n)]
    critics = [Critic(state_dim + n, args.hidden_dim).to(device) for i in range(n)]
    value_norms = [ValueNorm().to(device) for _ in range(n)]
    actor_optims = [torch.optim.Adam(a.parameters(), lr=args.learning_rate, eps=1e-5) for a in actors]
    critic_optims = [torch.optim.Adam(c.parameters(), lr=args.critic_learning_rate, eps=1e-5) for c in critics]
    obs_rms = RunningMeanStd(sum(obs_dims), args.obs_norm_clip)
    state_rms = RunningMeanStd(state_dim, args.obs_norm_clip)
    global_step, totals = 0, {"wall_time_s": 0.0, "sampling_s": 0.0, "updating_s": 0.0}
    state = dict(actors=actors, critics=critics, value_norms=value_norms, actor_optims=actor_optims)
    state.update(critic_optims=critic_optims, obs_rms=obs_rms, state_rms=state_rms)  # what a checkpoint holds
    rngs = dict(torch=(torch.get_rng_state, torch.set_rng_state), numpy=(np.random.get_state, np.random.set_state))
    rngs.update(python=(random.getstate, random.setstate))
    # TRY NOT TO MODIFY: checkpoints, evaluation and --eval-only (a list in `state` holds one object per agent)
    if checkpoint is not None:
        for key, obj in state.items():
            for x, saved in zip(obj, checkpoint[key]) if isinstance(obj, list) else [(obj, checkpoint[key])]:
                x.load_state_dict(saved)
        for key, (_, set_state) in rngs.items():
            set_state(checkpoint["rng"][key])
        global_step, totals = checkpoint["global_step"], checkpoint["totals"]
        if not args.eval_only:
            print(f"resumed from {args.resume} at global_step {global_step}")

    def save_checkpoint(iteration):
        ckpt = {k: [x.state_dict() for x in v] if isinstance(v, list) else v.state_dict() for k, v in state.items()}
        ckpt["rng"] = {key: get_state() for key, (get_state, _) in rngs.items()}
        ckpt.update(global_step=global_step, iteration=iteration, run_name=run_name, totals=totals, args=vars(args))
        torch.save(dict(ckpt, algo=ALGO), f"{run_dir}/checkpoint.pt.tmp")
        os.replace(f"{run_dir}/checkpoint.pt.tmp", f"{run_dir}/checkpoint.pt")

    def run_evaluation():
        """Mean actions, episode j on an env seeded env_seed(seed, 0, j); --capture-video films the first one."""
        policy, returns, frames = RolloutActors(actors, obs_slices, act_slices), [], []
        for episode in range(args.eval_episodes):
            obs, _ = eval_env.reset(seed=env_seed(args.seed, 0, episode))
            done, total = False, 0.0
            while not done:
                if args.capture_video and episode == 0:
                    frames.append(eval_env.render())
                x = torch.from_numpy(obs_rms.normalize(flat_obs(eval_env, obs)[None])).to(device)
                action = np.clip(policy(x)[0].cpu().numpy(), low, high)
                obs, rewards, terms, truncs, _ = eval_env.step({a: action[s] for a, s in zip(agents, act_slices)})
                total += rewards[agents[0]]
                done = terms[agents[0]] or truncs[agents[0]]
            returns.append(total)
        if frames:
            os.makedirs(f"{run_dir}/videos", exist_ok=True)
            name = f"{run_dir}/videos/{'eval_only' if args.eval_only else 'eval'}_{global_step}.mp4"
            imageio.mimsave(name, frames, fps=eval_env.single_agent_env.metadata["render_fps"], macro_block_size=1)
        if not args.eval_only:
            writer.add_scalar("eval/episodic_return", float(np.mean(returns)), global_step)
        return float(np.mean(returns))

    if args.eval_only:  # the checkpoint's policy and observation statistics; no training envs, no TensorBoard
        ret, tail = run_evaluation(), f"over {args.eval_episodes} episodes (seed {args.seed})"
        print(f"eval-only {args.resume} step {global_step}: return {ret:.1f} {tail}")
        result = dict(checkpoint=os.path.abspath(args.resume), global_step=global_step, seed=args.seed)
        with open(f"{run_dir}/eval.json", "w") as f:
            json.dump({**result, "episodes": args.eval_episodes, "episodic_return": ret}, f, indent=2)
        sys.exit(0)  # the eval env closes with the process
    start_iteration = checkpoint["iteration"] + 1 if checkpoint else 1
    envs = SubprocVecEnv([env_seed(args.seed, start_iteration, e) for e in range(args.num_envs)], env_kwargs)
    if args.track:
        import wandb

        options = dict(sync_tensorboard=True, config=vars(args), name=run_name, monitor_gym=True, save_code=True)
        wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, **options)
    writer = SummaryWriter(run_dir)
    table = "\n".join(f"|{key}|{value}|" for key, value in vars(args).items())
    writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{table}")
    last_eval = run_evaluation() if checkpoint is None else float("nan")
    next_eval = (global_step // args.eval_interval + 1) * args.eval_interval
    T, E, B = args.num_steps, args.num_envs, args.batch_size
    obs_buf = torch.zeros((T, E, sum(obs_dims)), device=device)
    state_buf = torch.zeros((T + 1, E, state_dim), device=device)
    action_buf = torch.zeros((T, E, sum(act_dims)), device=device)
    next_obs_raw, next_state_raw = envs.reset()
    obs_rms.update(next_obs_raw)
    state_rms.update(next_state_raw)
    start_time, start_step, earlier_wall_time = time.time(), global_step, totals["wall_time_s"]
    for iteration in range(start_iteration, args.num_iterations + 1):
        # TRY NOT TO MODIFY: rollout, then the behaviour log-probs and values in one batch (the nets do not move), GAE
        iter_start = time.time()
        env_results, final_states, episode_returns = [], [], []
        policy = RolloutActors(actors, obs_slices, act_slices)
        for step in range(T):
            global_step += E
            obs_buf[step] = torch.from_numpy(obs_rms.normalize(next_obs_raw)).to(device)
            state_buf[step] = torch.from_numpy(state_rms.normalize(next_state_raw)).to(device)
            mean = policy(obs_buf[step])  # no grad: RolloutActors holds detached copies
            action_buf[step] = mean + policy.std * torch.randn_like(mean)
            env_out = envs.step(np.clip(action_buf[step].cpu().numpy(), low, high))
            next_obs_raw, next_state_raw, reward, term, trunc, finals, episodes = env_out
            env_results.append((reward, term, trunc))
            final_states += [(step, e, state_rms.normalize(f)) for e, f in enumerate(finals) if f is not None]
            obs_rms.update(next_obs_raw)
            state_rms.update(next_state_raw)
            for episode_return, episode_length in (episode for episode in episodes if episode is not None):
                episode_returns.append(episode_return)
                writer.add_scalar("charts/episodic_return", episode_return, global_step)
                writer.add_scalar("charts/episodic_length", episode_length, global_step)
        state_buf[T] = torch.from_numpy(state_rms.normalize(next_state_raw)).to(device)
        with torch.no_grad():
            b_obs, b_actions = obs_buf.reshape(B, -1), action_buf.reshape(B, -1)
            dists = [actors[i].dist(b_obs[:, obs_slices[i]]) for i in range(n)]
            logprobs = torch.stack([d.log_prob(b_actions[:, s]).sum(-1) for d, s in zip(dists, act_slices)], -1)
            values_norm = torch.stack([critics[i](critic_input(state_buf, i, n)) for i in range(n)], -1)  # (T+1, E, n)
            values_bar = torch.stack([value_norms[i].denormalize(values_norm[..., i]) for i in range(n)], -1)
            final_values = torch.zeros((T, E, n), device=device)
            if final_states:
                idx_t, idx_e, finals = zip(*final_states)
                finals = torch.from_numpy(np.stack(finals)).to(device)
                final_v = [value_norms[i].denormalize(critics[i](critic_input(finals, i, n))) for i in range(n)]
                final_values[idx_t, idx_e] = torch.stack(final_v, -1)
            reward_buf, term_buf, trunc_buf = (torch.from_numpy(np.stack(x)).to(device) for x in zip(*env_results))
            rewards, continues = bootstrap_truncation(reward_buf, term_buf, trunc_buf, final_values, args.gamma)
            continues = continues.unsqueeze(-1)  # rewards are per agent, so continues broadcast over agents
            values, boot = values_bar[:T], values_bar[T]
            gae = compute_gae(rewards, values, boot, continues, args.gamma, args.gae_lambda)
        sampling_time = time.time() - iter_start
        update_start = time.time()
        # ALGO LOGIC: the simultaneous CoPPO update (every agent on the same minibatches, GAE advantages)
        adv_norm = ((gae - gae.mean()) / (gae.std() + 1e-5)).reshape(B, n)  # jointly over (t, env, agent)
        returns, b_values, old_v = (gae + values).reshape(B, n), values.reshape(B, n), values_norm[:T].reshape(B, n)
        b_state, nets, optims = state_buf[:T].reshape(B, -1), actors + critics, actor_optims + critic_optims
        for _ in range(args.update_epochs):
            for mb in torch.randperm(B, device=device).split(args.minibatch_size):  # every agent's sample of (t, env)
                dists = [actors[i].dist(b_obs[mb, obs_slices[i]]) for i in range(n)]
                logprob = torch.stack([d.log_prob(b_actions[mb, s]).sum(-1) for d, s in zip(dists, act_slices)], -1)
                logratio = logprob - logprobs[mb]
                eps, eps_others = args.clip_coef, args.others_clip_coef
                pg_loss, clipfrac, others_mean = surrogate_loss(logratio, adv_norm[mb], eps, eps_others)
                entropy = torch.stack([d.entropy().sum(-1).mean() for d in dists])
                v_loss = []
                for i, (critic, value_norm) in enumerate(zip(critics, value_norms)):
                    value_norm.update(returns[mb, i])
                    target, v = value_norm.normalize(returns[mb, i]), critic(critic_input(b_state[mb], i, n))
                    v_loss.append(value_loss_fn(v, old_v[mb, i], target, args.clip_coef, args.huber_delta))
                v_loss = torch.stack(v_loss)
                for optim in optims:
                    optim.zero_grad()
                (pg_loss.sum() - args.ent_coef * entropy.sum() + v_loss.sum()).backward()  # agent i: its own terms
                for net, optim in zip(nets, optims):
                    nn.utils.clip_grad_norm_(net.parameters(), args.max_grad_norm)
                    optim.step()
        with torch.no_grad():  # the last minibatch's losses, means over agents
            var = returns.var(0)
            explained_var = torch.where(var > 0, 1 - (returns - b_values).var(0) / var, float("nan")).mean()
            turn_stats = {
                "losses/policy_loss": pg_loss.mean(),
                "losses/value_loss": v_loss.mean(),
                "losses/entropy": entropy.mean(),
                "losses/approx_kl": (logratio.exp() - 1 - logratio).mean(),
                "losses/clipfrac": clipfrac,
                "losses/explained_variance": explained_var,
                "coppo/others_ratio_mean": others_mean,
            }
            stats = [turn_stats]
        # TRY NOT TO MODIFY: record rewards and losses for plotting purposes (stats: dicts of tensors, averaged)
        updating_time = time.time() - update_start
        totals["sampling_s"] += sampling_time
        totals["updating_s"] += updating_time
        totals["wall_time_s"] = earlier_wall_time + time.time() - start_time
        sps = int((global_step - start_step) / (time.time() - start_time))
        scalars = {tag: float(np.mean([turn[tag].item() for turn in stats])) for tag in stats[0]}
        scalars.update({"charts/learning_rate": actor_optims[0].param_groups[0]["lr"], "charts/SPS": sps})
        scalars.update({"time/sampling_s": sampling_time, "time/updating_s": updating_time})
        for tag, value in scalars.items():
            writer.add_scalar(tag, value, global_step)
        if global_step >= next_eval or iteration == args.num_iterations:
            last_eval = run_evaluation()
            next_eval = (global_step // args.eval_interval + 1) * args.eval_interval
            if args.save_model:
                save_checkpoint(iteration)
        train = np.mean(episode_returns) if episode_returns else float("nan")
        elapsed = datetime.timedelta(seconds=int(time.time() - start_time))
        eta = datetime.timedelta(seconds=int((args.num_iterations - iteration) * B / max(sps, 1)))
        line = f"iter {iteration}/{args.num_iterations} step {global_step} SPS {sps} train {train:.3f}"
        line += f" eval {last_eval:.3f} sample {sampling_time:.2f}s update {updating_time:.2f}s elapsed {elapsed}"
        print(f"{line} ETA {eta}", flush=True)

    totals["wall_time_s"] = earlier_wall_time + time.time() - start_time
    summary = dict(task=task, algo=ALGO, seed=args.seed, global_step=global_step)
    with open(f"{run_dir}/summary.json", "w") as f:
        json.dump({**summary, **totals, "final_eval": {"episodic_return": last_eval}, "args": vars(args)}, f, indent=2)
    for resource in (envs, eval_env, writer):
        resource.close()

# CoPPO on Google Research Football: README section "MAPPO, CoPPO, HAPPO and A2PO on Google Research Football".
"""CoPPO (Wu et al., 2021) with separate parameters on Google Research Football: one actor and one critic per agent.

CoPPO clips the joint policy change rather than each agent's own: agent i's ratio is multiplied by the (clipped,
detached) product of the other agents' ratios before the usual PPO clip. All agents update at once.
Every finished game also logs the talk's 5-vs-5 behaviour table (goals, lost, passes, pass rate, assists; see
BehaviourTracker); an evaluation logs its mean.

Run: `bash install_gfootball.sh && python coppo_grf.py --env-name academy_3_vs_1_with_keeper --seed 1`

Implementation details
1-7. As in a2po_grf.py: `diff a2po_grf.py coppo_grf.py` shows only the algorithm.
8. Surrogate: L_i = -E[min(l_i A_i, clip(l_i, 1 +- clip_coef) A_i)], l_i = r_i * clip(sg(prod_{j != i} r_j), 1 +-
   others_clip_coef), the product over the other agents of the same (t, env) sample, summed in log space (a float32
   product can overflow). The flags are named by role, `--others-clip-coef` (0.1, below `--clip-coef`) for the
   others' product, since the talk and the CoPPO code base call the two clips "outer" and "inner" the other way
   round from each other. The update is MAPPO's: each epoch's minibatches hold every agent of their samples; one
   backward of sum_i (L_i - ent_coef * H_i + value loss_i); each network's gradient norm is clipped on its own.
9. Advantages: GAE per agent (its own critic and ValueNorm; a truncation's bootstrap in its reward), normalised
   jointly over (t, env, agent) once per update, as the A2PO code base does for all its algorithms; critic i
   regresses onto GAE_i + V_i with the clipped Huber loss in the same pass as the actor (no critic-only stage).
10. Settings: A2PO's Args defaults and FULL_GAME_PRESET unchanged, as the A2PO code base runs its GRF baselines
   (academy: eps 0.2, entropy 0.01, 10 epochs; full games: eps 0.25, entropy 0.001, gamma 0.995), and the others'
   clip at half the clip: 0.1 on academies (the default), 0.125 on full games (FULL_GAME_PRESET).
"""

# TRY NOT TO MODIFY: imports
import contextlib
import datetime
import io
import json
import multiprocessing as mp
import os
import random
import sys
import time
from dataclasses import dataclass
from multiprocessing.connection import wait as connection_wait

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import tyro
from torch.distributions import Categorical
from torch.utils.tensorboard import SummaryWriter


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
    capture_video: bool = False  # write gfootball's videos of the first eval env's games to runs/<run>/videos
    runs_dir: str = "runs"  # the folder holding the run folders
    env_name: str = "academy_3_vs_1_with_keeper"  # the gfootball scenario
    num_agents: int = 0  # number of controlled left players (0: the scenario's default)
    rewards: str = "scoring,checkpoints"  # gfootball rewards: 'scoring' or 'scoring,checkpoints'
    total_timesteps: int = 10_000_000  # total env steps of the experiment
    learning_rate: float = 5e-4  # the learning rate of the actors
    critic_learning_rate: float = 5e-4  # the learning rate of the critics
    num_envs: int = 8  # the number of parallel games (one subprocess each)
    num_steps: int = 256  # the number of steps per game per rollout
    gamma: float = 0.99  # the discount factor gamma
    gae_lambda: float = 0.95  # the lambda of GAE / PreOPC
    num_minibatches: int = 2  # the number of minibatches per pass
    update_epochs: int = 10  # the epochs of the two-stage update of each agent
    clip_coef: float = 0.2  # the surrogate clipping coefficient eps (also the value clip)
    ent_coef: float = 0.01  # coefficient of the entropy
    max_grad_norm: float = 10.0  # the maximum norm for the gradient clipping
    huber_delta: float = 10.0  # delta of the Huber value loss
    hidden_dim: int = 128  # width of the hidden layers
    eval_interval: int = 200_000  # env steps between greedy evaluations
    eval_episodes: int = 32  # games per evaluation (0: no evaluation)
    save_model: bool = False  # write runs/<run>/checkpoint.pt at every evaluation and at the end
    resume: str | None = None  # path to a checkpoint.pt to continue from
    eval_only: bool = False  # greedy --eval-episodes games of the --resume checkpoint into eval.json; no training
    # ALGO LOGIC: algorithm flags
    others_clip_coef: float = 0.1  # clip on the product of the other agents' ratios (the talk's "outer" clip)
    # TRY NOT TO MODIFY: computed after parsing
    batch_size: int = 0  # the batch size (computed in runtime)
    minibatch_size: int = 0  # the mini-batch size (computed in runtime)
    num_iterations: int = 0  # the number of iterations (computed in runtime)


# TRY NOT TO MODIFY: scenarios, the checkpoint reward and the behaviour metrics
# scenario -> (default number of agents, controllable left players)
SCENARIOS = {"academy_3_vs_1_with_keeper": (3, 4), "academy_counterattack_easy": (4, 11)}
SCENARIOS.update({"academy_counterattack_hard": (4, 11), "academy_pass_and_shoot_with_keeper": (2, 3)})
SCENARIOS.update({"academy_run_pass_and_shoot_with_keeper": (2, 3), "academy_corner": (10, 11), "5_vs_5": (4, 4)})
SCENARIOS.update({"11_vs_11_easy_stochastic": (10, 11), "11_vs_11_stochastic": (10, 11)})
SCENARIOS.update({"11_vs_11_hard_stochastic": (10, 11)})


def checkpoint_reward(raw_obs, score_reward, collected, num_checkpoints=10, reward_per_checkpoint=0.1):
    """gfootball's "checkpoints" reward: +0.1 per distance ring (d = 0.99 down to 0.19 from the opponent goal)
    that agent i's player reaches while it holds the ball, each ring once per game; a goal pays the rings not
    yet collected. `collected` (int array, one per agent) is updated in place."""
    extra = np.zeros(len(raw_obs), dtype=np.float32)
    for i, o in enumerate(raw_obs):
        if score_reward[i] == 1:
            extra[i] = reward_per_checkpoint * (num_checkpoints - collected[i])
            collected[i] = num_checkpoints
            continue
        if o["ball_owned_team"] != 0 or o["ball_owned_player"] != o["active"]:
            continue
        d = ((o["ball"][0] - 1) ** 2 + o["ball"][1] ** 2) ** 0.5
        while collected[i] < num_checkpoints and d <= 0.99 - 0.8 / (num_checkpoints - 1) * collected[i]:
            extra[i] += reward_per_checkpoint
            collected[i] += 1
    return extra


class BehaviourTracker:
    """Per-game behaviour metrics of the left (controlled) team from gfootball raw observations. Owner =
    (ball_owned_team, ball_owned_player) where ball_owned_team != -1; other steps are "free". A change of owner is
    "in play" when game_mode == 0 on the free steps before it and on its own step.
    - completed pass: left player p -> left player q != p, in play (a set piece a teammate takes after a stoppage
      is no pass, and a goal after it no assist).
    - attempted pass: a completed pass, or an interception: left p -> a right player other than the keeper, in play,
      after >= 1 free step. No pass: a change with no free step (a tackle), the keeper taking the ball (a saved
      shot), a stoppage in between (shot, clearance, ball out).
    - pass_rate = completed / attempted (nan without an attempt); goals / lost = increases of score[0] / score[1];
      win = goals > lost over the game. Assist: a goal whose scorer (the last owner before the score changed, a
      left player) got the ball through a completed pass and nobody else owned it since.
    """

    def __init__(self, raw_obs):
        self.score = list(raw_obs["score"])
        self.owner, self.passer, self.free, self.stopped = None, None, False, False
        self.counts = dict(goals=0, lost=0, passes_attempted=0, passes_completed=0, assists=0)

    def step(self, o):
        scored, conceded = o["score"][0] - self.score[0], o["score"][1] - self.score[1]
        self.score = list(o["score"])
        if scored > 0:
            self.counts["goals"] += scored
            self.counts["assists"] += int(self.owner is not None and self.owner[0] == 0 and self.passer is not None)
        self.counts["lost"] += max(conceded, 0)
        team, player = int(o["ball_owned_team"]), int(o["ball_owned_player"])
        if team == -1:
            self.free, self.stopped = True, self.stopped or o["game_mode"] != 0
            return
        if (team, player) != self.owner:
            ours = self.owner is not None and self.owner[0] == 0 and not self.stopped and o["game_mode"] == 0
            completed = ours and team == 0
            intercepted = ours and team == 1 and self.free and o["right_team_roles"][player] != 0
            self.counts["passes_completed"] += int(completed)
            self.counts["passes_attempted"] += int(completed or intercepted)
            self.owner, self.passer = (team, player), self.owner[1] if completed else None
        self.free, self.stopped = False, False

    def summary(self):
        c = self.counts
        rate = c["passes_completed"] / c["passes_attempted"] if c["passes_attempted"] else float("nan")
        return dict(win_rate=float(c["goals"] > c["lost"]), goal_diff=c["goals"] - c["lost"], pass_rate=rate, **c)


# TRY NOT TO MODIFY: environments
class GRFEnv:
    """One gfootball game: simple115v2 obs (n, 115), team reward, truncation flag, behaviour metrics, auto-reset."""

    def __init__(self, env_name, num_agents, rewards, seed, video_dir=None):
        from gfootball.env import config, football_env, wrappers

        random.seed(seed)  # gfootball draws each game's engine seed from python's `random`
        values = {"level": env_name, "players": [f"agent:left_players={num_agents}"]}
        if video_dir:
            values.update(dump_full_episodes=True, write_video=True, tracesdir=video_dir, video_format="webm")
        self.env = football_env.FootballEnv(config.Config(values))
        self.convert = wrappers.Simple115StateWrapper.convert_observation
        self.checkpoints = "checkpoints" in rewards.split(",")

    def reset(self):
        raw = self.env.reset()
        self.tracker = BehaviourTracker(raw[0])
        self.collected, self.episode_return, self.episode_length = np.zeros(len(raw), dtype=np.int64), 0.0, 0
        return self.convert(raw, True)

    def step(self, actions):
        """-> obs (after auto-reset), team reward, done, truncated, final obs (or None), game metrics (or None)."""
        raw, score_reward, done, _ = self.env.step([int(a) for a in actions])
        reward = score_reward + (checkpoint_reward(raw, score_reward, self.collected) if self.checkpoints else 0.0)
        team_reward = float(np.mean(reward))
        self.tracker.step(raw[0])
        self.episode_return += team_reward
        self.episode_length += 1
        obs = self.convert(raw, True)
        if not done:
            return obs, team_reward, False, False, None, None
        truncated = raw[0]["steps_left"] <= 0 and score_reward[0] == 0
        info = dict(self.tracker.summary(), episodic_return=self.episode_return, episodic_length=self.episode_length)
        return self.reset(), team_reward, True, bool(truncated), obs, info


def env_seed(seed, iteration, index):
    """A 64-bit env seed hashed from (run seed, first iteration of the process, env index): distinct triples give
    unrelated streams, so runs with consecutive --seed or a resumed run never replay each other's envs."""
    return int(np.random.SeedSequence([seed, iteration, index]).generate_state(1, np.uint64)[0])


def env_worker(remote, env_kwargs):
    """Subprocess loop serving one GRFEnv over a Pipe: ("reset", None) | ("step", actions) | ("close", None)."""
    env, parent = GRFEnv(**env_kwargs), os.getppid()
    while os.getppid() == parent:  # a killed trainer sends no EOF: its forked siblings keep the pipe open
        if not remote.poll(10.0):
            continue
        cmd, data = remote.recv()
        if cmd == "close":
            break
        remote.send(env.step(data) if cmd == "step" else env.reset())
    remote.close()


class FootballVecEnv:
    """`num_envs` GRFEnv games, one per subprocess worker, each stepped on its own (remotes[e].send, wait, recv)."""

    def __init__(self, seeds, **env_kwargs):
        ctx = mp.get_context("fork")
        self.num_envs, self.remotes, self.procs = len(seeds), [], []
        for e, seed in enumerate(seeds):
            parent, child = ctx.Pipe()
            kwargs = dict(env_kwargs, seed=seed, video_dir=env_kwargs.get("video_dir") if e == 0 else None)
            proc = ctx.Process(target=env_worker, args=(child, kwargs), daemon=True)
            proc.start()
            child.close()
            self.remotes.append(parent)
            self.procs.append(proc)

    def reset(self):
        for remote in self.remotes:
            remote.send(("reset", None))
        return np.stack([remote.recv() for remote in self.remotes])

    def wait(self, envs):
        """The envs among `envs` whose step result has arrived (blocks until there is one)."""
        arrived = connection_wait([self.remotes[e] for e in envs])
        return [e for e in envs if self.remotes[e] in arrived]

    def close(self):
        for remote in self.remotes:
            remote.send(("close", None))
        for proc in self.procs:
            proc.join(timeout=5)


# TRY NOT TO MODIFY: networks
def layer_init(layer, std=2**0.5, bias_const=0.0):
    torch.nn.init.orthogonal_(layer.weight, std)
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer


def mlp(in_dim, hidden_dim, out_dim, out_gain):
    """LayerNorm(input) -> 2 x [Linear -> ReLU -> LayerNorm] -> Linear head."""
    layers = [nn.LayerNorm(in_dim)]
    for d in (in_dim, hidden_dim):
        layers += [layer_init(nn.Linear(d, hidden_dim)), nn.ReLU(), nn.LayerNorm(hidden_dim)]
    return nn.Sequential(*layers, layer_init(nn.Linear(hidden_dim, out_dim), std=out_gain))


def sample_action(logits, noise):
    """Gumbel-max draw from Categorical(logits) with uniform `noise` from the env's own generator, so the draws do
    not depend on which envs happen to be batched together; returns (action, log-prob)."""
    action = (logits - torch.log(-torch.log(noise.clamp(min=1e-20)))).argmax(-1)
    return action, torch.log_softmax(logits, -1).gather(-1, action.unsqueeze(-1)).squeeze(-1)


def actor_inputs(obs, eye):
    """(n, B, 115 + n): agent i's own simple115v2 plus its one-hot id; obs (B, n, 115)."""
    B, n = obs.shape[:2]
    return torch.cat([obs.transpose(0, 1), eye.unsqueeze(1).expand(n, B, n)], -1)


def critic_inputs(obs, eye):
    """(n, B, 115 n + n): all agents' simple115v2 concatenated plus agent i's one-hot id (centralised critic i)."""
    B, n = obs.shape[:2]
    return torch.cat([obs.reshape(1, B, -1).expand(n, B, -1), eye.unsqueeze(1).expand(n, B, n)], -1)


def stack_params(nets):
    """The parameters of n identical MLPs stacked along a leading agent dimension (a detached snapshot)."""
    return [torch.stack(ps).detach() for ps in zip(*[net.parameters() for net in nets])]


def stacked_forward(nets, params, x):
    """nets[i](x[i]) for every i in one pass of batched matmuls, params = stack_params(nets). The rollout's hot
    path: 2n small module calls per step would cost the env workers a good share of the CPU."""
    params = iter(params)
    for layer in nets[0]:
        if isinstance(layer, nn.LayerNorm):
            weight, bias = next(params), next(params)
            x = F.layer_norm(x, layer.normalized_shape, eps=layer.eps) * weight.unsqueeze(1) + bias.unsqueeze(1)
        elif isinstance(layer, nn.Linear):
            weight, bias = next(params), next(params)
            x = torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))
        else:
            x = layer(x)
    return x


# TRY NOT TO MODIFY: value normalisation, value loss and GAE
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


# ALGO LOGIC: CoPPO's presets, flag checks and surrogate (surrogate_loss: the same text in coppo_mamujoco.py)
ALGO = "coppo"  # the algorithm's name in summary.json and checkpoints
# A2PO's full-game GRF settings, which its baselines share (Args defaults: the academy ones), for the flags not given
FULL_GAME_PRESET = dict(total_timesteps=100_000_000, clip_coef=0.25, ent_coef=0.001, gamma=0.995)
FULL_GAME_PRESET["others_clip_coef"] = FULL_GAME_PRESET["clip_coef"] / 2  # CoPPO: the others' clip at half the clip


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


# TRY NOT TO MODIFY: evaluation and argument handling
def aggregate_games(infos):
    """Mean of each per-game metric; pass_rate pooled over the games (sum completed / sum attempted)."""
    out = {k: float(np.mean([g[k] for g in infos])) for k in infos[0] if k != "pass_rate"}
    attempted = sum(g["passes_attempted"] for g in infos)
    out["pass_rate"] = sum(g["passes_completed"] for g in infos) / attempted if attempted else float("nan")
    return out


def evaluate(actors, seeds, env_kwargs, num_episodes, eye, device):
    """Greedy play on new envs (the same games every time) until each has finished its share of the games; means."""
    envs = FootballVecEnv(seeds, **env_kwargs)
    quotas = [num_episodes // envs.num_envs + (e < num_episodes % envs.num_envs) for e in range(envs.num_envs)]
    finished, games, params = [0] * envs.num_envs, [], stack_params(actors)
    obs = torch.tensor(envs.reset(), device=device)
    while any(f < q for f, q in zip(finished, quotas)):
        actions = stacked_forward(actors, params, actor_inputs(obs, eye)).argmax(-1).T
        for e, action in enumerate(actions.cpu().numpy()):
            envs.remotes[e].send(("step", action))
        for e in range(envs.num_envs):
            next_obs, _, _, _, _, info = envs.remotes[e].recv()
            obs[e] = torch.from_numpy(next_obs).to(device)
            if info is not None and finished[e] < quotas[e]:
                finished[e] += 1
                games.append(info)
    envs.close()
    return aggregate_games(games)


def parse_args():
    args = tyro.cli(Args)
    if args.env_name not in SCENARIOS:
        raise SystemExit(f"error: unknown scenario '{args.env_name}'. Valid scenarios: {', '.join(SCENARIOS)}.")
    default, most = SCENARIOS[args.env_name]
    n = args.num_agents = args.num_agents or default
    if not 1 <= n <= most:
        raise SystemExit(f"error: --num-agents {n}: {args.env_name} has {most} controllable players. Use 1..{most}.")
    if args.rewards not in ("scoring", "scoring,checkpoints"):
        raise SystemExit(f"error: --rewards '{args.rewards}' is not supported. Use 'scoring' or 'scoring,checkpoints'.")
    given = {a[2:].split("=")[0].replace("-", "_") for a in sys.argv[1:] if a.startswith("--")}
    for key, value in FULL_GAME_PRESET.items():
        if not args.env_name.startswith("academy") and key not in given:
            setattr(args, key, value)
    check_algo_args(args)
    args.batch_size = args.num_envs * args.num_steps
    if args.num_minibatches < 1 or args.batch_size % args.num_minibatches:
        raise SystemExit(f"error: --num-envs x --num-steps = {args.batch_size} is not divisible by --num-minibatches.")
    args.minibatch_size = args.batch_size // args.num_minibatches
    args.num_iterations = args.total_timesteps // args.batch_size
    if args.num_iterations < 1:
        raise SystemExit(f"error: --total-timesteps {args.total_timesteps} is less than one batch ({args.batch_size}).")
    if args.eval_only and not args.resume:
        raise SystemExit("error: --eval-only needs --resume path/to/checkpoint.pt.")
    if args.eval_only and args.eval_episodes < 1:
        raise SystemExit(f"error: --eval-only needs --eval-episodes >= 1, not {args.eval_episodes}.")
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # gfootball's gym 0.26 prints an "unmaintained" notice
            import gym  # noqa: F401
        import gfootball.env  # noqa: F401
    except ImportError as exc:
        raise SystemExit(f"error: gfootball is not importable ({exc}); run `bash install_gfootball.sh`.") from None
    return args


if __name__ == "__main__":
    # TRY NOT TO MODIFY: setup
    args = parse_args()
    n, T, E = args.num_agents, args.num_steps, args.num_envs
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")
    try:
        ckpt = torch.load(args.resume, map_location=device, weights_only=False) if args.resume else None
    except Exception as exc:  # missing, unreadable or not a torch file: one line naming the file, no traceback
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise SystemExit(f"error: cannot read checkpoint {args.resume} ({reason}); pass a checkpoint.pt.") from None
    if ckpt and "progress" not in ckpt:
        raise SystemExit(f"error: checkpoint {args.resume} is from an older version of this script; start a new run.")
    if ckpt:  # another scenario, agent count, width or algorithm: refused, naming both (no "algo": a2po_grf.py's)
        saved, ours = dict(ckpt["args"], algo=ckpt.get("algo", "a2po")), dict(vars(args), algo=ALGO)
        diff = [k for k in ("env_name", "num_agents", "hidden_dim", "algo") if saved[k] != ours[k]]
        if diff:
            was, now = (", ".join(f"{k} {d[k]}" for k in diff) for d in (saved, ours))
            raise SystemExit(f"error: the checkpoint is for {was}, not {now}: pass its flags (or another checkpoint).")
    run_name = ckpt["run_name"] if ckpt else f"{args.env_name}__{args.exp_name}__{args.seed}__{int(time.time())}"
    run_dir = os.path.dirname(os.path.abspath(args.resume)) if args.eval_only else f"{args.runs_dir}/{run_name}"
    os.makedirs(run_dir, exist_ok=True)
    for seed_rng in (random.seed, np.random.seed, torch.manual_seed):
        seed_rng(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    torch.set_num_threads(1)  # the env workers need the cores; the networks are small
    env_gens = [torch.Generator().manual_seed(args.seed * 100_003 + e) for e in range(E)]  # action noise per env
    start_iteration = ckpt["iteration"] + 1 if ckpt else 1
    env_kwargs = dict(env_name=args.env_name, num_agents=n, rewards=args.rewards)
    train_seeds = [env_seed(args.seed, start_iteration, e) for e in range(E)]
    envs = None if args.eval_only else FootballVecEnv(train_seeds, **env_kwargs)
    videos = f"{run_dir}/videos/eval_only_{ckpt['progress'][0]}" if args.eval_only else f"{run_dir}/videos"
    video_dir = os.path.abspath(videos) if args.capture_video else None
    eval_seeds = [env_seed(args.seed, 0, e) for e in range(min(E, args.eval_episodes))]
    eval_kwargs = dict(env_kwargs, video_dir=video_dir)
    obs_dim, eye = 115, torch.eye(n, device=device)
    actors = nn.ModuleList([mlp(obs_dim + n, args.hidden_dim, 19, 0.01) for _ in range(n)]).to(device)
    critics = nn.ModuleList([mlp(obs_dim * n + n, args.hidden_dim, 1, 1.0) for _ in range(n)]).to(device)
    value_norms = nn.ModuleList([ValueNorm() for _ in range(n)]).to(device)
    nets = nn.ModuleDict(dict(actors=actors, critics=critics, value_norms=value_norms))
    actor_opts = [torch.optim.Adam(a.parameters(), lr=args.learning_rate, eps=1e-5) for a in actors]
    critic_opts = [torch.optim.Adam(c.parameters(), lr=args.critic_learning_rate, eps=1e-5) for c in critics]
    # ALGO LOGIC: no generator of its own (the agents update at once, in no order)
    algo_generators = []
    # TRY NOT TO MODIFY: checkpoints (every state_dict, generator state, progress counter), logging, rollout storage
    stateful, generators = [nets, *actor_opts, *critic_opts], [*algo_generators, torch.default_generator, *env_gens]
    global_step, sampling_total, updating_total, wall_before, last_eval = 0, 0.0, 0.0, 0.0, {}
    if ckpt:
        for obj, state in zip(stateful, ckpt["state_dicts"]):
            obj.load_state_dict(state)
        for gen, state in zip(generators, ckpt["generators"]):
            gen.set_state(state)
        np.random.set_state(ckpt["numpy_rng"])
        random.setstate(ckpt["python_rng"])
        global_step, sampling_total, updating_total, wall_before, last_eval = ckpt["progress"]
    if args.eval_only:  # the run's evaluation (same eval seeds) of the checkpoint's policy, into eval.json
        found = evaluate(actors, eval_seeds, eval_kwargs, args.eval_episodes, eye, device)
        result = dict(checkpoint=os.path.abspath(args.resume), global_step=global_step, seed=args.seed)
        result.update(episodes=args.eval_episodes, **{k: None if np.isnan(v) else v for k, v in found.items()})
        with open(f"{run_dir}/eval.json", "w") as f:
            json.dump(result, f, indent=2)
        line = f"eval-only {args.resume} step {global_step}: win rate {found['win_rate']:.3f} goal difference "
        print(line + f"{found['goal_diff']:.2f} over {args.eval_episodes} episodes (seed {args.seed})", flush=True)
        sys.exit()

    def save_checkpoint(iteration):
        progress = [global_step, sampling_total, updating_total, wall_before + time.time() - start_time, last_eval]
        state = dict(state_dicts=[o.state_dict() for o in stateful], generators=[g.get_state() for g in generators])
        state.update(numpy_rng=np.random.get_state(), python_rng=random.getstate(), progress=progress)
        state.update(iteration=iteration, run_name=run_name, args=vars(args), algo=ALGO)
        torch.save(state, f"{run_dir}/checkpoint.pt.tmp")
        os.replace(f"{run_dir}/checkpoint.pt.tmp", f"{run_dir}/checkpoint.pt")

    if args.track:
        import wandb

        run = dict(project=args.wandb_project_name, entity=args.wandb_entity, name=run_name, config=vars(args))
        wandb.init(**run, sync_tensorboard=True, monitor_gym=True, save_code=True)
    writer = SummaryWriter(run_dir)
    table = "\n".join(f"|{k}|{v}|" for k, v in vars(args).items())
    writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{table}")

    def denormalize(values):
        """Critic outputs (..., n) -> returns scale, each agent with its own ValueNorm."""
        return torch.stack([value_norms[i].denormalize(values[..., i]) for i in range(n)], -1)

    def log_metrics(prefix, metrics, step):
        for key, value in metrics.items():
            if not np.isnan(value):
                writer.add_scalar(f"{prefix}/{key}", value, step)

    # storage (T, E, n, ...); rewards are per agent because a truncation adds agent i's own bootstrap value
    obs_buf = torch.zeros((T, E, n, obs_dim), device=device)
    actions_buf = torch.zeros((T, E, n), dtype=torch.long, device=device)
    logprobs_buf, values_buf, rewards_buf = (torch.zeros((T, E, n), device=device) for _ in range(3))
    continues_buf = torch.zeros((T, E, 1), device=device)  # (T, E, 1) broadcasts against per-agent rewards
    next_obs = torch.tensor(envs.reset(), device=device)
    start_time, start_step = time.time(), global_step
    for iteration in range(start_iteration, args.num_iterations + 1):
        # TRY NOT TO MODIFY: rollout (an env steps as soon as its action is sent; waiting envs are batched), then GAE
        iteration_start, train_games = time.time(), []
        t_env, ready, pending = np.zeros(E, dtype=np.int64), list(range(E)), set()
        actor_params, critic_params = stack_params(actors), stack_params(critics)  # detached: no autograd graph
        while ready or pending:
            if ready:
                idx, t_idx = torch.tensor(ready, device=device), torch.from_numpy(t_env[ready]).to(device)
                o = next_obs[idx]
                obs_buf[t_idx, idx] = o
                noise = torch.stack([torch.rand((n, 19), generator=env_gens[e]) for e in ready], 1).to(device)
                action, logprob = sample_action(stacked_forward(actors, actor_params, actor_inputs(o, eye)), noise)
                actions_buf[t_idx, idx], logprobs_buf[t_idx, idx] = action.T, logprob.T
                values_buf[t_idx, idx] = stacked_forward(critics, critic_params, critic_inputs(o, eye)).squeeze(-1).T
                for e, action in zip(ready, actions_buf[t_idx, idx].cpu().numpy()):
                    envs.remotes[e].send(("step", action))
                pending.update(ready)
            ready = envs.wait(pending)
            for e in ready:
                obs_e, reward, done, trunc, final_obs, info = envs.remotes[e].recv()
                pending.discard(e)
                t, global_step = t_env[e], global_step + 1
                t_env[e] += 1
                rewards_buf[t, e], continues_buf[t, e] = reward, 1.0 - done
                next_obs[e] = torch.from_numpy(obs_e).to(device)
                if trunc:  # time limit: r += gamma * V_i(final obs), continues = 0
                    final = torch.from_numpy(final_obs).to(device).unsqueeze(0)
                    v = stacked_forward(critics, critic_params, critic_inputs(final, eye)).squeeze(-1).T
                    rewards_buf[t, e] += args.gamma * denormalize(v)[0]
                if info is not None:
                    train_games.append(info)
                    log_metrics("charts", info, global_step)
            ready = [e for e in ready if t_env[e] < T]
        sampling_time = time.time() - iteration_start
        sampling_total += sampling_time
        update_start = time.time()
        bootstrap = denormalize(stacked_forward(critics, critic_params, critic_inputs(next_obs, eye)).squeeze(-1).T)
        values_denorm = denormalize(values_buf)
        gae = compute_gae(rewards_buf, values_denorm, bootstrap, continues_buf, args.gamma, args.gae_lambda)
        b_obs = obs_buf.reshape(T * E, n, obs_dim)
        all_actor_in, all_critic_in = actor_inputs(b_obs, eye), critic_inputs(b_obs, eye)
        # ALGO LOGIC: CoPPO with separate parameters, every agent at once (README "CoPPO")
        b_returns = (gae + values_denorm).reshape(T * E, n)
        b_adv = ((gae - gae.mean()) / (gae.std() + 1e-5)).reshape(T * E, n)  # normalised jointly over (t, env, agent)
        b_values, b_actions, b_logprobs = (x.reshape(T * E, n) for x in (values_buf, actions_buf, logprobs_buf))
        stats, others_means = [], []
        for _ in range(args.update_epochs):
            for mb in torch.randperm(args.batch_size, device=device).split(args.minibatch_size):  # all agents' samples
                dists = [Categorical(logits=actors[i](all_actor_in[i, mb])) for i in range(n)]
                logratio = torch.stack([d.log_prob(b_actions[mb, i]) for i, d in enumerate(dists)], -1) - b_logprobs[mb]
                pg_loss, clipfrac, others = surrogate_loss(logratio, b_adv[mb], args.clip_coef, args.others_clip_coef)
                others_means.append(others)
                entropy = torch.stack([d.entropy().mean() for d in dists])
                v_loss = []
                for i in range(n):
                    value_norms[i].update(b_returns[mb, i])
                    new_values = critics[i](all_critic_in[i, mb]).squeeze(-1)
                    target = value_norms[i].normalize(b_returns[mb, i])
                    v_loss.append(value_loss_fn(new_values, b_values[mb, i], target, args.clip_coef, args.huber_delta))
                v_loss = torch.stack(v_loss)
                (pg_loss - args.ent_coef * entropy + v_loss).sum().backward()  # every network: its own loss's gradient
                for net, opt in zip([*actors, *critics], [*actor_opts, *critic_opts]):
                    nn.utils.clip_grad_norm_(net.parameters(), args.max_grad_norm)
                    opt.step()
                    opt.zero_grad()
                with torch.no_grad():
                    approx_kl = (logratio.exp() - 1 - logratio).mean()
                    row = [pg_loss.mean(), v_loss.mean(), entropy.mean(), approx_kl, clipfrac]  # means over agents
                    stats.append(torch.stack(row).tolist())
        with torch.no_grad():  # every critic after the update
            pred = denormalize(stacked_forward(critics, stack_params(critics), all_critic_in).squeeze(-1).T)
            var_y = b_returns.var(0)
            explained = torch.where(var_y > 0, 1 - (b_returns - pred).var(0) / var_y, float("nan")).tolist()
        writer.add_scalar("coppo/others_ratio_mean", torch.stack(others_means).mean().item(), global_step)
        # TRY NOT TO MODIFY: logging, evaluation and checkpoints
        updating_time = time.time() - update_start
        updating_total += updating_time
        sps = int((global_step - start_step) / (time.time() - start_time))
        names = ["policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac", "explained_variance"]
        scalars = dict(zip([f"losses/{k}" for k in names], [*np.mean(stats, 0), float(np.nanmean(explained))]))
        scalars.update({"charts/learning_rate": actor_opts[0].param_groups[0]["lr"], "charts/SPS": sps})
        scalars.update({"time/sampling_s": sampling_time, "time/updating_s": updating_time})
        for tag, value in scalars.items():
            writer.add_scalar(tag, value, global_step)
        crossed = global_step // args.eval_interval > (global_step - E * T) // args.eval_interval
        if eval_seeds and (crossed or iteration == args.num_iterations):
            last_eval = evaluate(actors, eval_seeds, eval_kwargs, args.eval_episodes, eye, device)
            log_metrics("eval", last_eval, global_step)
            if args.save_model:
                save_checkpoint(iteration)
        train = float(np.mean([g["win_rate"] for g in train_games])) if train_games else float("nan")
        win = last_eval.get("win_rate", float("nan"))
        elapsed = datetime.timedelta(seconds=int(time.time() - start_time))
        eta = datetime.timedelta(seconds=int((args.num_iterations - iteration) * args.batch_size / max(sps, 1)))
        line = f"iter {iteration}/{args.num_iterations} step {global_step} SPS {sps} train {train:.3f} eval {win:.3f} "
        print(line + f"sample {sampling_time:.2f}s update {updating_time:.2f}s elapsed {elapsed} ETA {eta}", flush=True)
    if args.save_model:
        save_checkpoint(args.num_iterations)
    wall_time = wall_before + time.time() - start_time
    final_eval = {k: None if np.isnan(v) else v for k, v in last_eval.items()}
    summary = dict(task=args.env_name, algo=ALGO, seed=args.seed, global_step=global_step, wall_time_s=wall_time)
    summary.update(sampling_s=sampling_total, updating_s=updating_total, final_eval=final_eval, args=vars(args))
    with open(f"{run_dir}/summary.json", "w") as f:
        json.dump(summary, f, indent=2)
    envs.close()
    writer.close()

# A2PO on Google Research Football: README section "MAPPO, CoPPO, HAPPO and A2PO on Google Research Football".
"""A2PO with separate parameters on Google Research Football (gfootball): one actor and one critic per agent.

Agents are updated one after another in a semi-greedy order; agent i's advantage is corrected for the agents
already updated (PreOPC), its surrogate sees their joint ratio clipped to 1 +- eps_i/2, and eps_i grows with
its position in the order (Wang et al., ICLR 2023). Every finished game also logs the talk's 5-vs-5 behaviour
table (goals, lost, passes, pass rate, assists; see BehaviourTracker); an evaluation logs its mean.

Run: `bash install_gfootball.sh && python a2po_grf.py --env-name academy_3_vs_1_with_keeper --seed 1`

Implementation details
1. The env is gfootball's FootballEnv itself (its gym wrappers break under gym 0.26, and the behaviour metrics
   need the raw observation), with simple115v2 observations and gfootball's "checkpoints" reward rule.
2. One game per subprocess and no lockstep: a game gets its next action as soon as its result arrives (the
   waiting games share one batched forward of all agents), so none idles behind a slow one (a reset costs ~5
   steps). Gumbel-max draws from per-env noise generators reproduce a seed's actions whatever the arrival order.
3. Agents are the `--num-agents` controlled left players (default: the field players; the 5_vs_5 keeper is not
   controllable), gfootball decides which player each slot drives. Actor i sees its slot's simple115v2 + one-hot
   id, critic i all slots' simple115v2 + one-hot id. No masks: all 19 actions are always available.
4. Team reward = MEAN of the agents' gfootball rewards, so a goal is worth the same whatever the number of agents.
5. The time limit is a truncation (simple115v2 has no clock): r_i += gamma * V_i(final obs), continues = 0.
6. --capture-video: gfootball's 2-D minimap .webm and .dump of eval env 0's games (3-D rendering: < 0.5 steps/s).
7. Resume restarts the games (env state is not saved). Game seeds are env_seed(seed, first iteration of the
   process, env), so no two runs share a game stream; evaluation games env_seed(seed, 0, env) on new envs, so
   every evaluation plays the same games and --eval-only (with the run's flags) replays a run's evaluation.
8. Turn k = 0..n-1: agent i = semi_greedy_pick(k, mean |A|), eps_i = adaptive_clip(eps, k+1, n, c), then
   update_epochs x [critic-only pass, actor+critic pass] with l_i = r_i * clamp(rho, 1 +- eps_i/2). rho, the joint
   ratio of the agents already updated, is a sum of log-ratios (a float32 product can overflow to inf and meet an
   underflow: NaN). PreOPC advantages use the rollout values (the remaining critics have not moved) and are
   normalised jointly over (t, env, agent) as in the A2PO code base, so an agent whose advantages are small next
   to the team's takes a small step; critic i regresses onto agent i's PreOPC returns with its own ValueNorm.
9. The Args defaults are the official A2PO academy settings (epochs not stated: 10, as for 5_vs_5); full games
   take FULL_GAME_PRESET, the A2PO code base's 5-vs-5 settings, for the flags not given on the command line.
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
    clip_c: float = 0.5  # c of the adaptive clip C(eps, k) = eps * c + eps * (1 - c) * k / n
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


# ALGO LOGIC: A2PO's presets, flag checks and pure functions (the pure ones are the same text in every a2po_*.py)
ALGO = "a2po"  # the algorithm's name in summary.json and checkpoints
# the official A2PO GRF settings of full games (the Args defaults are the academy ones), for the flags not given
FULL_GAME_PRESET = dict(total_timesteps=100_000_000, clip_coef=0.25, ent_coef=0.001, gamma=0.995)


def check_algo_args(args):
    if not 0 <= args.clip_c <= 1:
        raise SystemExit(f"error: --clip-c {args.clip_c} is outside [0, 1] (eps_i must grow from eps*c to eps).")


def compute_preopc(rewards, values, bootstrap_value, continues, ratios, gamma, gae_lambda):
    """PreOPC, shapes as compute_gae; ratios (T, E, n): rho, the preceding agents' joint ratio (current / behaviour).
    A_t = delta_t + gamma * lambda * min(1, rho_{t+1}) * continues_t * A_{t+1}; rho_t never enters A_t; rho = 1: GAE."""
    if rewards.dim() == 2:
        rewards, continues = rewards.unsqueeze(-1), continues.unsqueeze(-1)
    rewards, continues = rewards.expand_as(values), continues.expand_as(values)
    trace = gae_lambda * ratios.clamp(max=1.0)  # lambda * min(1, rho_t): weighs A_t inside A_{t-1}
    advantages = torch.zeros_like(values)
    next_value, next_adv, next_trace = bootstrap_value, torch.zeros_like(bootstrap_value), 1.0
    for t in reversed(range(values.shape[0])):
        delta = rewards[t] + gamma * continues[t] * next_value - values[t]
        next_adv = delta + gamma * next_trace * continues[t] * next_adv
        advantages[t] = next_adv
        next_value, next_trace = values[t], trace[t]
    return advantages


def adaptive_clip(clip_coef, position, num_agents, clip_c):
    """C(eps, k) = eps * c + eps * (1 - c) * k / n, k the 1-based position in the update order."""
    return clip_coef * clip_c + clip_coef * (1.0 - clip_c) * position / num_agents


def semi_greedy_pick(position, scores, remaining, generator):
    """Even 0-based position: the remaining agent with the largest score (ties: lowest index); odd: a random one."""
    if position % 2 == 0:
        return max(remaining, key=lambda i: float(scores[i]))
    return remaining[int(torch.randint(len(remaining), (1,), generator=generator))]


def turn_advantages(rewards, values, bootstrap_value, continues, log_rho, gamma, gae_lambda):
    """PreOPC advantages (T, E, n) of every agent for one turn, log_rho (T, E) = log of the joint ratio of the agents
    already updated, and the same advantages normalised jointly over (t, env, agent) as the A2PO code base does."""
    rho = log_rho.exp().unsqueeze(-1).expand_as(values)  # inf or 0 outside the float range: PreOPC uses min(1, rho)
    advantages = compute_preopc(rewards, values, bootstrap_value, continues, rho, gamma, gae_lambda)
    return advantages, (advantages - advantages.mean()) / (advantages.std() + 1e-5)


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
    # ALGO LOGIC: the order generator, seeded by --seed and saved in checkpoints
    order_gen = torch.Generator().manual_seed(args.seed)
    algo_generators = [order_gen]
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
        # ALGO LOGIC: A2PO with separate parameters, agent by agent (README "A2PO")
        log_rho = torch.zeros((T, E), device=device)  # log of the joint ratio of the agents already updated (no grad)
        remaining, order, stats, trace_means, gaps, explained = list(range(n)), [], [], [], [], []
        for k in range(n):
            adv_all, adv_norm = turn_advantages(
                rewards_buf, values_denorm, bootstrap, continues_buf, log_rho, args.gamma, args.gae_lambda
            )
            rho = log_rho.exp()  # only clamped below, so inf and 0 are harmless
            trace_means.append(rho.clamp(max=1.0).mean().item())  # the first turn's, 1, is left out
            i = semi_greedy_pick(k, adv_all.abs().mean((0, 1)), remaining, order_gen)
            eps_i = adaptive_clip(args.clip_coef, k + 1, n, args.clip_c)
            writer.add_scalar(f"a2po/order_k{k + 1}", i, global_step)
            writer.add_scalar(f"a2po/clip_eps_k{k + 1}", eps_i, global_step)
            gaps.append((adv_all[..., i] - gae[..., i]).abs().mean().item())
            actor, critic, value_norm = actors[i], critics[i], value_norms[i]
            b_actor_in, b_critic_in, b_rho = all_actor_in[i], all_critic_in[i], rho.reshape(-1)
            b_returns = adv_all[..., i].reshape(-1) + values_denorm[..., i].reshape(-1)
            b_adv, b_values = adv_norm[..., i].reshape(-1), values_buf[..., i].reshape(-1)
            b_actions, b_logprobs = actions_buf[..., i].reshape(-1), logprobs_buf[..., i].reshape(-1)
            for _ in range(args.update_epochs):
                for train_actor in (False, True):  # a critic-only pass, then an actor+critic pass
                    for mb in torch.randperm(args.batch_size, device=device).split(args.minibatch_size):
                        value_norm.update(b_returns[mb])
                        new_values = critic(b_critic_in[mb]).squeeze(-1)
                        mb_returns = value_norm.normalize(b_returns[mb])
                        v_loss = value_loss_fn(new_values, b_values[mb], mb_returns, args.clip_coef, args.huber_delta)
                        critic_opts[i].zero_grad()
                        v_loss.backward()
                        nn.utils.clip_grad_norm_(critic.parameters(), args.max_grad_norm)
                        critic_opts[i].step()
                        if not train_actor:
                            continue
                        dist = Categorical(logits=actor(b_actor_in[mb]))
                        logratio = dist.log_prob(b_actions[mb]) - b_logprobs[mb]
                        ratio = logratio.exp()
                        # l_i = r_i * clip(rho, 1 +- eps_i/2);  L = -E[min(l A, clip(l, 1 +- eps_i) A)]
                        l_i = ratio * b_rho[mb].clamp(1 - eps_i / 2, 1 + eps_i / 2)
                        pg_loss = -torch.min(l_i * b_adv[mb], l_i.clamp(1 - eps_i, 1 + eps_i) * b_adv[mb]).mean()
                        entropy = dist.entropy().mean()
                        actor_opts[i].zero_grad()
                        (pg_loss - args.ent_coef * entropy).backward()
                        nn.utils.clip_grad_norm_(actor.parameters(), args.max_grad_norm)
                        actor_opts[i].step()
                        approx_kl = ((ratio - 1) - logratio).mean().item()
                        clipfrac = ((l_i - 1).abs() > eps_i).float().mean().item()
                        stats.append([pg_loss.item(), v_loss.item(), entropy.item(), approx_kl, clipfrac])
            with torch.no_grad():
                new_logprob = Categorical(logits=actor(b_actor_in)).log_prob(b_actions)
                log_rho = log_rho + (new_logprob - b_logprobs).reshape(T, E)
                pred = value_norm.denormalize(critic(b_critic_in).squeeze(-1))
                var_y = b_returns.var()
                explained.append((1 - (b_returns - pred).var() / var_y).item() if var_y > 0 else float("nan"))
            order.append(i)
            remaining.remove(i)
        writer.add_scalar("a2po/order_first", order[0], global_step)
        writer.add_scalar("a2po/trace_ratio_mean", float(np.mean(trace_means[1:])) if n > 1 else 1.0, global_step)
        writer.add_scalar("a2po/preopc_gap", float(np.mean(gaps)), global_step)
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

"""Each algorithm's own parts on small hand-made tensors: surrogates, PreOPC, order, adaptive clip."""

import math
import subprocess
import sys

import pytest
import torch
from helpers import ROOT, load_script

R = torch.tensor([1.3, 0.7, 1.05])  # ratios of agents 0, 1, 2 at one (t, env)
A = torch.tensor([1.0, -2.0, 0.5])  # advantages


@pytest.fixture(scope="module")
def scripts():
    return {name: load_script(name) for name in ("mappo_smac", "coppo_smac", "happo_smac", "a2po_smac")}


def call(scripts, name, logratio, adv, mask):
    m = scripts[name]
    extra = {
        "mappo_smac": (0.2,),
        "coppo_smac": (0.2, 0.1),
        "happo_smac": (0.2,),
        "a2po_smac": (torch.tensor([0.2, 0.1, 0.15]),),
    }[name]
    return m.surrogate_loss(logratio.view(1, 1, 3), adv.view(1, 1, 3), mask.view(1, 1, 3), *extra)[0]


@pytest.mark.parametrize(
    "name, expected",
    [
        # each agent alone: min(1.3*1, 1.2*1) = 1.2;  min(0.7*-2, 0.8*-2) = -1.6;  1.05*0.5 = 0.525
        ("mappo_smac", -(1.2 - 1.6 + 0.525) / 3),
        # l_i = r_i * clip(prod_others, 0.9, 1.1): 1.3*0.9 = 1.17 -> 1.17;  0.7*1.1 = 0.77 -> clip 0.8 -> -1.6;
        # 1.05*0.91 = 0.9555 -> 0.477750
        ("coppo_smac", -(1.17 - 1.6 + 0.47775) / 3),
        # M_i = prod_others unclipped (0.735, 1.365, 0.91) times the PPO terms (1.2, -1.6, 0.525)
        ("happo_smac", -(0.735 * 1.2 - 1.365 * 1.6 + 0.91 * 0.525) / 3),
        # eps = (0.2, 0.1, 0.15): g = clip(prod_others, 1 +- eps/2) = (0.9, 1.05, 0.925);
        # l = (1.17, 0.735, 0.97125) -> min(l A, clip(l, 1 +- eps) A) = (1.17, -1.8, 0.485625)
        ("a2po_smac", -(1.17 - 1.8 + 0.485625) / 3),
    ],
)
def test_surrogate_value_by_hand(scripts, name, expected):
    loss = call(scripts, name, R.log(), A, torch.ones(3))
    assert loss.item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("name", ["mappo_smac", "coppo_smac", "happo_smac", "a2po_smac"])
@pytest.mark.parametrize("agent", [0, 1, 2])
def test_gradient_flows_only_through_the_agents_own_log_prob(scripts, name, agent):
    new_logprob = torch.log(torch.tensor([1.02, 0.97, 1.01])).requires_grad_()
    mask = torch.zeros(3)
    mask[agent] = 1.0
    call(scripts, name, new_logprob - 0.0, torch.ones(3), mask).backward()
    grad = new_logprob.grad
    assert grad[agent] != 0, "agent i's own ratio is inside the trust region: it must get a gradient"
    assert (grad[[j for j in range(3) if j != agent]] == 0).all(), "the other agents' product must be detached"


# ---------------------------------------------------------------- A2PO's pure functions
@pytest.fixture(scope="module")
def a2po(scripts):
    return scripts["a2po_smac"]


def test_preopc_equals_gae_when_ratios_are_one(a2po):
    torch.manual_seed(0)
    T, E, n = 17, 3, 4
    rewards, values, boot = torch.randn(T, E), torch.randn(T, E, n), torch.randn(E, n)
    continues = (torch.rand(T, E) > 0.1).float()
    gae = a2po.compute_gae(rewards, values, boot, continues, 0.99, 0.95)
    preopc = a2po.compute_preopc(rewards, values, boot, continues, torch.ones(T, E, n), 0.99, 0.95)
    assert torch.allclose(gae, preopc)


def hand_case(a2po, ratios, continues=(1.0, 1.0, 1.0)):
    rewards = torch.tensor([[1.0], [0.0], [2.0]])
    values = torch.tensor([0.5, 1.0, -1.0]).view(3, 1, 1)
    return a2po.compute_preopc(
        rewards,
        values,
        torch.tensor([[4.0]]),
        torch.tensor(continues).view(3, 1),
        torch.tensor(ratios).view(3, 1, 1),
        0.9,
        0.8,
    ).flatten()


def test_preopc_by_hand_with_ratios_above_and_below_one(a2po):
    # delta = (1.4, -1.9, 6.6);  A2 = 6.6;  A1 = -1.9 + 0.9*0.8*min(1, 0.5)*6.6 = 0.476;
    # A0 = 1.4 + 0.9*0.8*min(1, 2.0)*0.476 = 1.74272
    assert torch.allclose(hand_case(a2po, [0.3, 2.0, 0.5]), torch.tensor([1.74272, 0.476, 6.6]))


def test_ratio_at_t_does_not_enter_a_t(a2po):
    base = hand_case(a2po, [0.3, 2.0, 0.5])
    assert torch.equal(hand_case(a2po, [0.01, 2.0, 0.5]), base), "rho_0 enters no advantage"
    changed = hand_case(a2po, [0.3, 2.0, 0.25])
    assert changed[2] == base[2] and changed[1] != base[1], "rho_2 enters A_1 but not A_2"


def test_preopc_trace_never_crosses_an_episode_end(a2po):
    # the episode ends at t=1: A1 = delta1 = 0 - 1 = -1; A0 = 1.4 + 0.72*(-1) = 0.68; A2 = 6.6
    out = hand_case(a2po, [0.3, 2.0, 0.5], continues=(1.0, 0.0, 1.0))
    assert torch.allclose(out, torch.tensor([0.68, -1.0, 6.6]))
    assert torch.equal(hand_case(a2po, [0.3, 2.0, 0.01], continues=(1.0, 0.0, 1.0))[:2], out[:2])


def test_adaptive_clip_formula(a2po):
    eps, c, n = 0.2, 0.5, 5
    for k in range(1, n + 1):
        assert a2po.adaptive_clip(eps, k, n, c) == pytest.approx(eps * c + eps * (1 - c) * k / n)
    assert a2po.adaptive_clip(eps, n, n, c) == pytest.approx(eps)
    assert a2po.adaptive_clip(eps, 1, 4, 0.5) == pytest.approx(0.125)


@pytest.mark.parametrize("clip_c", ["2", "-0.1"])
def test_clip_c_outside_zero_one_is_rejected(a2po, clip_c):
    with pytest.raises(SystemExit, match=r"^error: --clip-c -?[\d.]+ is outside \[0, 1\][^\n]*$"):
        a2po.check_algo_args(a2po.parse_args(["--map-name", "3m", f"--clip-c={clip_c}"]), 3)
    a2po.check_algo_args(a2po.parse_args(["--map-name", "3m", "--clip-c", "1"]), 3)


def test_semi_greedy_order_is_a_permutation_greedy_at_even_positions(a2po):
    g = torch.Generator().manual_seed(0)
    for n in (1, 2, 3, 8, 27):
        for _ in range(20):
            scores = torch.rand(n, generator=g)
            order = a2po.semi_greedy_order(scores, g)
            assert sorted(order) == list(range(n))
            for p in range(0, n, 2):  # 0-based positions 0, 2, 4, ...: greedy among the remaining agents
                remaining = [i for i in range(n) if i not in order[:p]]
                assert order[p] == max(remaining, key=lambda i: scores[i].item())
    # two agents: the order is the argmax first, never random
    assert {tuple(a2po.semi_greedy_order(torch.tensor([0.3, 0.6]), g)) for _ in range(20)} == {(1, 0)}


def test_semi_greedy_odd_positions_are_uniform_over_the_remaining_agents(a2po):
    g = torch.Generator().manual_seed(1)
    n, draws = 5, 5000
    scores = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0])
    second, fourth = torch.zeros(n), torch.zeros(n)
    for _ in range(draws):
        order = a2po.semi_greedy_order(scores, g)
        assert order[0] == 0
        second[order[1]] += 1
        fourth[order[3]] += 1
    # position 1: uniform over agents 1..4; chi-square with 3 dof, 99.9% quantile 16.27
    chi2 = ((second[1:] - draws / 4) ** 2 / (draws / 4)).sum().item()
    assert second[0] == 0 and chi2 < 16.27, second
    # position 3: uniform over the 2 agents left after the greedy first, a random second and a greedy third
    assert (fourth > 0).sum() >= 3 and fourth.max() / draws < 0.45
    assert math.isclose(fourth.sum().item(), draws)


# ---------------------------------------------------------------- A2PO's update on SMAC
@pytest.mark.parametrize("recurrent", [True, False])
def test_preopc_bootstrap_comes_from_the_current_critic(a2po, recurrent):
    # a rollout of T = 20 steps (chunks of L = 10) with the hidden states stored as the rollout stores them; then the
    # critic's head bias moves by 0.5 (an update): every V(t) of PreOPC, V(T) included, must move with it
    torch.manual_seed(0)
    T, E, n, A, d, L = 20, 3, 2, 4, 6, 10
    args = type("Args", (), dict(data_chunk_length=L, gamma=0.9, gae_lambda=0.8))
    actor, critic = a2po.RecurrentMLP(d, A, 8, recurrent, 0.01), a2po.RecurrentMLP(d, 1, 8, recurrent, 1.0)
    value_norm = a2po.ValueNorm()
    value_norm.update(3.0 + 2.0 * torch.randn(100))
    critic_x, actor_x = torch.randn(T + 1, E, n, d), torch.randn(T, E, n, d)
    starts = (torch.rand(T + 1, E) < 0.1).float()
    starts[0], starts[T - L :] = 1.0, 0.0
    starts[T - 3, 1], starts[T, 2] = 1.0, 1.0  # env 1: an episode starts inside the last chunk; env 2: after it
    seq = starts.repeat_interleave(n, -1)
    with torch.no_grad():
        h_c, h_a = [torch.zeros(E * n, 8)], [torch.zeros(E * n, 8)]
        for t in range(T):
            h_c.append(critic(critic_x[t : t + 1].reshape(1, E * n, d), h_c[-1], seq[t : t + 1])[1])
            h_a.append(actor(actor_x[t : t + 1].reshape(1, E * n, d), h_a[-1], seq[t : t + 1])[1])
        full = critic(critic_x.reshape(T + 1, E * n, d), torch.zeros(E * n, 8), seq)[0].view(T + 1, E, n)
        critic.head.bias += 0.5
    buf = dict(
        actor_x=actor_x,
        critic_x=critic_x[:T],
        avail=torch.ones(T, E, n, A, dtype=torch.bool),
        actions=torch.randint(A, (T, E, n)),
        logprobs=torch.zeros(T, E, n),
        values=torch.zeros(T, E, n),
        alive=torch.ones(T, E, n),
        starts=starts[:T],
        rewards=torch.randn(T, E),
        continues=1.0 - starts[1:],
        h_actor=torch.stack(h_a[:T]).view(T, E, n, 8),
        h_critic=torch.stack(h_c[:T]).view(T, E, n, 8),
    )
    data = {k: a2po.to_chunks(v, L) for k, v in buf.items() if k not in ("h_actor", "h_critic")}
    data.update(h_actor=a2po.to_chunks(buf["h_actor"], L)[0], h_critic=a2po.to_chunks(buf["h_critic"], L)[0])
    adv, values, _ = a2po.preopc_advantages(actor, critic, value_norm, data, buf, critic_x[T], starts[T], args)
    v_bar = value_norm.denormalize(full + 0.5)
    assert torch.allclose(values, v_bar[:T], atol=1e-5)
    continues = buf["continues"][T - 1].unsqueeze(-1)
    assert continues[:2].eq(1).all() and continues[2].eq(0).all()
    expected = buf["rewards"][T - 1].unsqueeze(-1) + 0.9 * continues * v_bar[T] - v_bar[T - 1]
    assert torch.allclose(adv[T - 1], expected, atol=1e-5)


def test_two_stage_critic_flag_and_presets(a2po):
    assert a2po.parse_args(["--map-name", "3m"]).two_stage_critic
    assert a2po.parse_args(["--map-name", "3s5z"]).two_stage_critic
    for map_name in ("3s5z_vs_3s6z", "3s_vs_5z", "6h_vs_8z"):  # off in the A2PO code base's scripts
        assert not a2po.parse_args(["--map-name", map_name]).two_stage_critic
        assert a2po.parse_args(["--map-name", map_name, "--two-stage-critic"]).two_stage_critic
    assert not a2po.parse_args(["--map-name", "3m", "--no-two-stage-critic"]).two_stage_critic


COUNT_OPTIMIZER_STEPS = """
import collections, runpy, sys
from torch.optim.optimizer import register_optimizer_step_post_hook
counts = collections.Counter()
register_optimizer_step_post_hook(lambda opt, a, k: counts.update([opt.param_groups[0]["lr"]]))
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
print("steps", counts[1e-3], counts[2e-3])
"""


@pytest.mark.parametrize("flag, critic_steps_per_actor_step", [("--two-stage-critic", 2), ("--no-two-stage-critic", 1)])
def test_without_the_two_stage_critic_no_critic_only_pass_runs(tmp_path, flag, critic_steps_per_actor_step):
    # 3m, 4 envs x 20 steps, 1 minibatch, 2 epochs in 2 blocks: 2 stages of one actor + critic step each
    flags = [
        "--map-name",
        "3m",
        "--num-envs",
        "4",
        "--num-steps",
        "20",
        "--total-timesteps",
        "80",
        "--eval-episodes",
        "1",
        "--update-epochs",
        "2",
        "--learning-rate",
        "1e-3",
        "--critic-learning-rate",
        "2e-3",
        flag,
    ]
    proc = subprocess.run(
        [sys.executable, "-c", COUNT_OPTIMIZER_STEPS, str(ROOT / "a2po_smac.py"), *flags],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    actor_steps, critic_steps = map(int, proc.stdout.strip().splitlines()[-1].split()[1:])
    assert actor_steps == 2 and critic_steps == critic_steps_per_actor_step * actor_steps

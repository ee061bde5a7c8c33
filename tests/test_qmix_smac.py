"""qmix_smac.py: the mixer's monotonicity, the TD target by hand, action masking, the episode buffer, and
runs of the script (smoke, resume with and without the buffer, bad input). Its learning test is in
tests/test_smac_learning.py, its shared sections in tests/test_smac_shared_sections.py."""

import json

import pytest
import torch
import torch.nn as nn
from helpers import iter_lines, load_script, only_run_dir, read_scalars, run_script


@pytest.fixture(scope="module")
def qmix():
    return load_script("qmix_smac")


# ---------------------------------------------------------------- mixer
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mixer_is_monotonic_in_every_agent_q(qmix, seed):
    torch.manual_seed(seed)
    mixer = qmix.QMixer(num_agents=5, state_dim=7, embed_dim=32, hypernet_dim=64)
    for p in mixer.parameters():  # larger than the default init, so negative raw weights are common
        nn.init.normal_(p, std=1.0)
    agent_qs = (torch.randn(4, 64, 5) * 10).requires_grad_()
    state = torch.randn(4, 64, 7)
    q_tot = mixer(agent_qs, state)
    assert q_tot.shape == (4, 64)
    (grad,) = torch.autograd.grad(q_tot.sum(), agent_qs)
    assert (grad >= 0).all() and (grad > 0).any()
    raw_w1 = mixer.hyper_w1(state.view(-1, 7))
    assert (raw_w1 < 0).any(), "the test must cover negative hypernetwork outputs, which abs makes positive"


def test_mixer_without_abs_would_not_be_monotonic(qmix):
    """The check above can fail: the same network with the abs taken out has negative slopes."""
    torch.manual_seed(0)
    mixer = qmix.QMixer(num_agents=3, state_dim=4, embed_dim=8, hypernet_dim=16)
    agent_qs, state = torch.randn(256, 3, requires_grad=True), torch.randn(256, 4)
    w1 = mixer.hyper_w1(state).view(-1, 3, 8)
    hidden = nn.functional.elu(torch.bmm(agent_qs.unsqueeze(1), w1) + mixer.hyper_b1(state).unsqueeze(1))
    q_tot = torch.bmm(hidden, mixer.hyper_w2(state).unsqueeze(-1)).sum()
    (grad,) = torch.autograd.grad(q_tot, agent_qs)
    assert (grad < 0).any()


def test_mixer_bias_depends_on_the_state(qmix):
    torch.manual_seed(0)
    mixer = qmix.QMixer(num_agents=2, state_dim=3, embed_dim=4, hypernet_dim=8)
    zeros = torch.zeros(2, 2)
    out = mixer(zeros, torch.randn(2, 3))
    assert out[0] != out[1]


# ---------------------------------------------------------------- TD target by hand
class TableAgent(nn.Module):
    """An "agent network" whose Q-values are scale * input + offset, so Q-values can be written by hand."""

    def __init__(self, scale=1.0, offset=0.0):
        super().__init__()
        self.scale, self.offset = scale, nn.Parameter(torch.tensor(offset))

    def forward(self, x, h, starts):
        return self.scale * x + self.offset, h


class SumMixer(nn.Module):
    """Q_tot = sum of the agents' Qs + state[0] (a VDN with a state bias), for hand computation."""

    def forward(self, agent_qs, state):
        return agent_qs.sum(-1) + state[..., 0]


def two_step_episode():
    """One episode of two steps (t=1 terminal) padded with a third, 2 agents, 3 actions; time-major (L, B=1)."""
    q = torch.tensor(
        [
            [[1.0, 2.0, 3.0], [0.5, 0.0, 4.0]],  # t=0
            [[9.0, 1.0, 2.0], [3.0, 5.0, 7.0]],  # t=1: agent 0's best action (0) is unavailable
            [[50.0, 60.0, 70.0], [80.0, 90.0, 99.0]],  # t=2: padding, must not count
        ]
    ).unsqueeze(1)
    avail = torch.tensor([[[1, 1, 1], [1, 1, 1]], [[0, 1, 1], [1, 1, 1]], [[0, 0, 0], [0, 0, 0]]], dtype=torch.bool)
    return dict(
        actor_x=q,
        avail=avail.unsqueeze(1),
        actions=torch.tensor([[[2, 1]], [[1, 2]], [[0, 0]]]),
        state=torch.tensor([[0.5], [1.0], [0.0]]).unsqueeze(1),
        rewards=torch.tensor([[1.0], [2.0], [0.0]]),
        filled=torch.tensor([[1.0], [1.0], [0.0]]),
        terminated=torch.tensor([[0.0], [1.0], [0.0]]),
    )


def test_td_target_by_hand_with_a_terminal_and_a_padded_step(qmix):
    gamma = 0.9
    batch = two_step_episode()
    # the target network reverses the online network's ranking (Q^- = 20 - Q), so double Q-learning, the
    # target's own max and an unmasked argmax all give different targets
    agent, target_agent = TableAgent(), TableAgent(-1.0, 20.0)
    loss, stats = qmix.qmix_loss(batch, agent, SumMixer(), target_agent, SumMixer(), gamma, hidden_dim=4)
    # Q_tot(0) = Q_0(a=2) + Q_1(a=1) + s_0 = 3 + 0 + 0.5 = 3.5;  Q_tot(1) = 1 + 7 + 1.0 = 9.0
    # t=0 target: the online argmax at t=1 over available actions is action 2 for agent 0 (2.0; action 0,
    #   9.0, is unavailable) and action 2 for agent 1 (7.0); the target net values them 20-2 = 18 and
    #   20-7 = 13; the target mixer adds s_1 = 1.0: 32; y_0 = 1 + 0.9 * 32 = 29.8
    # t=1 is terminal: y_1 = r_1 = 2;  t=2 is padding: left out of the mean
    expected = ((3.5 - 29.8) ** 2 + (9.0 - 2.0) ** 2) / 2
    assert loss.item() == pytest.approx(expected)
    assert stats["td_error_abs"].item() == pytest.approx((26.3 + 7.0) / 2)
    assert stats["target_mean"].item() == pytest.approx((29.8 + 2.0) / 2)
    assert stats["q_taken_mean"].item() == pytest.approx((3.5 + 9.0) / 2)
    loss.backward()  # dQ_tot/d offset = 2 agents; d loss = mean over the 2 filled steps of 2 td * 2
    assert agent.offset.grad.item() == pytest.approx(2 * ((3.5 - 29.8) + (9.0 - 2.0)))
    assert target_agent.offset.grad is None, "no gradient through the target"


def test_padded_and_post_terminal_values_never_reach_the_loss(qmix):
    batch = two_step_episode()
    args = (TableAgent(), SumMixer(), TableAgent(-1.0, 20.0), SumMixer(), 0.9)
    loss = qmix.qmix_loss(batch, *args, hidden_dim=4)[0]
    batch["actor_x"][2] = torch.randn(1, 2, 3) * 1e6
    batch["state"][2] = 1e6
    batch["rewards"][2] = 1e6
    assert qmix.qmix_loss(batch, *args, hidden_dim=4)[0].item() == pytest.approx(loss.item())


# ---------------------------------------------------------------- masking, exploration, buffer
def test_unavailable_actions_are_never_chosen_by_acting_or_the_target_max(qmix):
    torch.manual_seed(0)
    q = torch.randn(512, 4, 9) * 10
    avail = torch.rand(512, 4, 9) < 0.3
    avail[..., 4] = True
    q[~avail] += 1000.0  # the unavailable actions have the largest Q-values
    for eps in (0.0, 0.5, 1.0):
        actions = qmix.epsilon_greedy(q, avail, eps)
        assert avail.gather(-1, actions.unsqueeze(-1)).all(), eps
    greedy = qmix.epsilon_greedy(q, avail, 0.0)
    assert torch.equal(greedy, torch.where(avail, q, torch.tensor(-1e30)).argmax(-1))
    index = torch.arange(9.0).expand(512, 4, 9)  # a target network that returns the action index
    picked = qmix.double_q_values(q, index, avail).long()
    assert avail.gather(-1, picked.unsqueeze(-1)).all() and torch.equal(picked, greedy)


def test_epsilon_greedy_explores_uniformly_over_available_actions(qmix):
    torch.manual_seed(0)
    q = torch.zeros(20000, 1, 4)
    q[..., 0] = 1.0
    avail = torch.tensor([True, True, False, True]).expand(20000, 1, 4)
    actions = qmix.epsilon_greedy(q, avail, 0.3).flatten()
    freq = torch.bincount(actions, minlength=4).float() / len(actions)
    # greedy 0.7 on action 0, plus 0.3 / 3 on each available action
    assert freq.tolist() == pytest.approx([0.8, 0.1, 0.0, 0.1], abs=0.015)


def test_epsilon_anneals_linearly_then_stays(qmix):
    args = qmix.parse_args(["--map-name", "3m"])
    assert qmix.epsilon_at(0, args) == 1.0
    assert qmix.epsilon_at(25_000, args) == pytest.approx(0.525)
    assert qmix.epsilon_at(50_000, args) == pytest.approx(0.05) and qmix.epsilon_at(10**7, args) == 0.05


def test_buffer_pads_marks_and_overwrites_the_oldest_episode(qmix):
    buf = qmix.EpisodeReplayBuffer(3, 4, dict(x=((2,), torch.float32)))
    for length in (2, 4, 1, 3):  # the fourth episode replaces the first
        buf.add(dict(x=torch.full((4, 2), float(length))), length)
    assert buf.size == 3 and buf.next == 1
    assert buf.data["x"][0, :, 0].tolist() == [3, 3, 3, 0] and buf.data["filled"][0].tolist() == [1, 1, 1, 0]
    assert buf.data["terminated"][0].tolist() == [0, 0, 1, 0]
    assert buf.data["filled"][2].tolist() == [1, 0, 0, 0] and buf.data["terminated"][2].tolist() == [1, 0, 0, 0]
    torch.manual_seed(0)
    batch = buf.sample(2)
    lengths = batch["filled"].sum(0)
    assert batch["x"].shape == (int(lengths.max()), 2, 2), "time-major, cut to the longest episode drawn"
    assert len(set(batch["x"][0, :, 0].tolist())) == 2, "drawn without replacement"
    restored = qmix.EpisodeReplayBuffer(3, 4, dict(x=((2,), torch.float32)))
    restored.load_state_dict(buf.state_dict())
    assert restored.size == 3 and restored.next == 1 and torch.equal(restored.data["x"], buf.data["x"])


# ---------------------------------------------------------------- runs of the script
SMOKE = [
    "--map-name",
    "3m",
    "--num-envs",
    "4",
    "--num-steps",
    "20",
    "--total-timesteps",
    "240",
    "--eval-episodes",
    "2",
    "--eval-interval",
    "80",
    "--batch-episodes",
    "4",
    "--buffer-size",
    "16",
]


def test_smoke_run_trains_logs_every_key_and_writes_a_summary(tmp_path):
    proc = run_script("qmix_smac", *SMOKE, cwd=tmp_path, timeout=300)
    assert "iter 3/3" in proc.stdout and "replay buffer: 16 episodes x 61 steps" in proc.stdout
    lines = [line[:3] for line in iter_lines(proc.stdout)]
    assert lines == [("1", "3", "80"), ("2", "3", "160"), ("3", "3", "240")], proc.stdout[-2000:]
    assert "eps " not in proc.stdout and "grad_steps" not in proc.stdout, "QMIX's extras go to TensorBoard only"
    run_dir = only_run_dir(tmp_path)
    scalars = read_scalars(run_dir)
    for key in (
        "charts/SPS",
        "charts/epsilon",
        "eval/win_rate",
        "eval/episodic_return",
        "losses/td_loss",
        "losses/td_error_abs",
        "losses/q_taken_mean",
        "losses/target_mean",
        "losses/grad_norm",
        "qmix/gradient_steps",
        "time/sampling_s",
        "time/updating_s",
    ):
        assert key in scalars, f"{key} missing from {sorted(scalars)}"
    assert [s for s, _ in scalars["time/updating_s"]] == [80, 160, 240]
    assert scalars["qmix/gradient_steps"][-1][1] >= 1, "random play on 3m ends more than 4 episodes in 60 steps"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["global_step"] == 240 and 0.0 <= summary["final_eval"]["win_rate"] <= 1.0


RESUME = [
    "--map-name",
    "3m",
    "--num-envs",
    "4",
    "--num-steps",
    "20",
    "--eval-episodes",
    "2",
    "--eval-interval",
    "80",
    "--batch-episodes",
    "4",
    "--buffer-size",
    "16",
    "--save-model",
]


@pytest.mark.parametrize("save_buffer", [True, False])
def test_resume_continues_from_the_checkpoint_with_or_without_the_buffer(tmp_path, save_buffer):
    flags = RESUME + (["--save-buffer"] if save_buffer else [])
    run_script("qmix_smac", *flags, "--total-timesteps", 160, cwd=tmp_path, timeout=300)
    ckpt_path = only_run_dir(tmp_path) / "checkpoint.pt"
    ckpt = torch.load(ckpt_path, weights_only=False)
    assert ckpt["global_step"] == 160 and ckpt["episodes"] >= 4
    assert (ckpt["buffer"] is not None) == save_buffer
    out = run_script(
        "qmix_smac", *flags, "--total-timesteps", 320, "--resume", ckpt_path, cwd=tmp_path, timeout=300
    ).stdout
    assert "at global_step=160" in out
    if save_buffer:
        assert f"replay buffer restored: {min(ckpt['episodes'], 16)} episodes" in out
    else:
        assert "the checkpoint holds no replay buffer (--save-buffer): it refills" in out
    run_dir = only_run_dir(tmp_path)  # the resumed run logs into the same folder
    assert json.loads((run_dir / "summary.json").read_text())["global_step"] == 320
    resumed = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert resumed["iteration"] == ckpt["iteration"] + 2 and resumed["episodes"] > ckpt["episodes"]
    for key in ("agent", "mixer", "target_agent", "target_mixer", "optimizer"):
        assert key in resumed
    steps = sorted({s for s, _ in read_scalars(run_dir)["time/updating_s"]})
    assert 160 in steps and 320 in steps


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--batch-episodes", "64", "--buffer-size", "32"], "is larger than --buffer-size"),
        (["--train-steps-per-rollout", "0"], "must be positive"),
        (["--save-buffer"], "--save-buffer only adds the buffer to the checkpoints of --save-model"),
    ],
)
def test_bad_qmix_flags_are_one_clear_line(flags, message, tmp_path):
    proc = run_script(
        "qmix_smac",
        "--map-name",
        "3m",
        "--num-envs",
        "2",
        "--eval-episodes",
        "2",
        *flags,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert proc.returncode != 0
    assert message in proc.stdout and "Traceback" not in proc.stdout, proc.stdout[-2000:]

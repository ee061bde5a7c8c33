"""a2po_grf.py: pure functions, behaviour metrics, the env wrapper, bad inputs, smoke runs and resume.

gfootball must be installed (`bash install_gfootball.sh`); these tests never skip.
"""

import json
import math
import sys

import numpy as np
import pytest
import torch
from helpers import assert_workers_die_with_trainer, iter_lines, load_script, only_run_dir, read_scalars, run_script

grf = load_script("a2po_grf")
TINY = ["--num-envs", "2", "--num-steps", "64", "--update-epochs", "1", "--hidden-dim", "32"]


# ---------------------------------------------------------------- pure functions
def test_preopc_equals_gae_when_ratios_are_one():
    g = torch.Generator().manual_seed(0)
    T, E, n = 7, 3, 4
    rewards, values = torch.randn(T, E, generator=g), torch.randn(T, E, n, generator=g)
    bootstrap = torch.randn(E, n, generator=g)
    continues = (torch.rand(T, E, generator=g) > 0.3).float()
    gae = grf.compute_gae(rewards, values, bootstrap, continues, 0.99, 0.95)
    preopc = grf.compute_preopc(rewards, values, bootstrap, continues, torch.ones(T, E, n), 0.99, 0.95)
    assert torch.allclose(gae, preopc)
    smaller = grf.compute_preopc(rewards, values, bootstrap, continues, torch.full((T, E, n), 0.5), 0.99, 0.95)
    assert not torch.allclose(gae, smaller)


def test_preopc_hand_computed():
    # gamma 0.9, lambda 0.8; rho = [., 0.5, 2.0] (rho_0 never enters, rho_2 is clipped to 1)
    rewards = torch.tensor([[1.0], [0.0], [2.0]])
    values = torch.tensor([[[0.5]], [[1.0]], [[0.0]]])
    ratios = torch.tensor([[[9.0]], [[0.5]], [[2.0]]])
    adv = grf.compute_preopc(rewards, values, torch.tensor([[3.0]]), torch.ones(3, 1), ratios, 0.9, 0.8)
    a2 = 2 + 0.9 * 3 - 0.0
    a1 = (0 + 0.9 * 0.0 - 1.0) + 0.9 * 0.8 * 1.0 * a2
    a0 = (1 + 0.9 * 1.0 - 0.5) + 0.9 * 0.8 * 0.5 * a1
    assert torch.allclose(adv.flatten(), torch.tensor([a0, a1, a2]))


def test_adaptive_clip_and_semi_greedy_pick():
    assert grf.adaptive_clip(0.2, 1, 4, 0.5) == pytest.approx(0.125)
    assert grf.adaptive_clip(0.2, 4, 4, 0.5) == pytest.approx(0.2)
    assert grf.adaptive_clip(0.25, 2, 4, 0.0) == pytest.approx(0.125)
    g = torch.Generator().manual_seed(0)
    scores = torch.tensor([0.1, 0.9, 0.5, 0.7])
    assert grf.semi_greedy_pick(0, scores, [0, 1, 2, 3], g) == 1  # the first pick is greedy
    assert grf.semi_greedy_pick(2, scores, [0, 2, 3], g) == 3  # even positions: greedy over the remaining
    picks = {grf.semi_greedy_pick(1, scores, [0, 2, 3], g) for _ in range(50)}
    assert picks == {0, 2, 3}  # odd positions: uniform
    assert grf.semi_greedy_pick(0, torch.tensor([0.2, 0.8]), [0, 1], g) == 1  # 2 agents: greedy, then the other
    assert grf.semi_greedy_pick(1, torch.tensor([0.2, 0.8]), [0], g) == 0


def test_turn_advantages_normalise_jointly_over_agents_and_survive_extreme_ratios():
    g = torch.Generator().manual_seed(0)
    T, E = 50, 4
    rewards, continues = torch.randn(T, E, 1, generator=g) * torch.tensor([1.0, 10.0]), torch.ones(T, E, 1)
    values, boot = torch.zeros(T, E, 2), torch.zeros(E, 2)
    log_rho = torch.zeros(T, E)
    adv, norm = grf.turn_advantages(rewards, values, boot, continues, log_rho, 0.99, 0.95)
    assert torch.equal(adv, grf.compute_gae(rewards, values, boot, continues, 0.99, 0.95))
    assert norm.mean().abs() < 1e-5 and norm.std() == pytest.approx(1.0, abs=1e-4)  # over (t, env, agent)
    assert norm[..., 0].std() < 0.2 and norm[..., 1].std() > 1.3  # per agent, both would be 1
    log_rho[: T // 2], log_rho[T // 2 :] = 200.0, -200.0  # exp() leaves float32 both ways
    adv, norm = grf.turn_advantages(rewards, values, boot, continues, log_rho, 0.99, 0.95)
    ratios = torch.ones(T, E, 2)
    ratios[T // 2 :] = 0.0
    assert torch.isfinite(norm).all()
    assert torch.allclose(adv, grf.compute_preopc(rewards, values, boot, continues, ratios, 0.99, 0.95))


def test_env_seeds_never_overlap_across_seeds_resumes_and_evaluation():
    seeds = {}
    for seed in (1, 2, 3):
        for iteration in (0, 1, 2, 101, 102):  # 0: evaluation, 1: a fresh run, the others: resumed runs
            for e in range(64):
                seeds.setdefault(grf.env_seed(seed, iteration, e), []).append((seed, iteration, e))
    assert all(len(owners) == 1 for owners in seeds.values()), [o for o in seeds.values() if len(o) > 1]


def test_stacked_forward_matches_each_module():
    torch.manual_seed(0)
    n, eye = 3, torch.eye(3)
    actors = [grf.mlp(115 + n, 16, 19, 0.01) for _ in range(n)]
    critics = [grf.mlp(115 * n + n, 16, 1, 1.0) for _ in range(n)]
    for net in actors + critics:  # move LayerNorm affine parameters away from their (1, 0) init
        torch.nn.init.normal_(net[0].weight)
        torch.nn.init.normal_(net[3].bias)
    obs = torch.randn(5, n, 115)
    logits = grf.stacked_forward(actors, grf.stack_params(actors), grf.actor_inputs(obs, eye))
    values = grf.stacked_forward(critics, grf.stack_params(critics), grf.critic_inputs(obs, eye))
    for i in range(n):
        own = torch.cat([obs[:, i], eye[i].expand(5, n)], -1)
        joint = torch.cat([obs.reshape(5, -1), eye[i].expand(5, n)], -1)
        assert torch.allclose(logits[i], actors[i](own), atol=1e-5)
        assert torch.allclose(values[i], critics[i](joint), atol=1e-5)


# ---------------------------------------------------------------- behaviour metrics
def raw(team, player, score=(0, 0), mode=0):
    return {
        "ball_owned_team": team,
        "ball_owned_player": player,
        "score": list(score),
        "game_mode": mode,
        "right_team_roles": [0, 1, 1, 1, 1],
    }  # right player 0 is the goalkeeper


def test_behaviour_tracker_hand_made_game():
    t = grf.BehaviourTracker(raw(-1, -1))
    seq = [
        raw(0, 1),
        raw(-1, -1),
        raw(-1, -1),
        raw(0, 2),  # completed pass 1 -> 2
        raw(-1, -1),
        raw(1, 3),  # 2 passes, right 3 intercepts
        raw(0, 1),  # left 1 tackles right 3 (no pass)
        raw(1, 2),  # right 2 tackles left 1 directly: not a pass
        raw(0, 3),
        raw(-1, -1),
        raw(1, 0),  # keeper takes the ball: a saved shot, not a pass
        raw(0, 3),
        raw(-1, -1, mode=5),
        raw(1, 4, mode=5),  # ball out, right throw-in: not a pass
        raw(0, 3),
        raw(-1, -1),
        raw(0, 2),  # completed pass 3 -> 2
        raw(-1, -1),
        raw(-1, -1, score=(1, 0)),  # 2 shoots and scores: goal with assist by 3
        raw(1, 2, score=(1, 0), mode=1),  # kick-off
        raw(-1, -1, score=(1, 1)),  # conceded
    ]
    for o in seq:
        t.step(o)
    s = t.summary()
    assert (s["passes_attempted"], s["passes_completed"], s["goals"], s["lost"], s["assists"]) == (3, 2, 1, 1, 1)
    assert s["pass_rate"] == pytest.approx(2 / 3)
    assert s["win_rate"] == 0.0 and s["goal_diff"] == 0


def test_behaviour_tracker_no_pass_across_a_stoppage():
    t = grf.BehaviourTracker(raw(-1, -1))
    one, two = (1, 0), (2, 0)
    seq = [
        raw(0, 1),
        raw(-1, -1),
        raw(-1, -1, mode=5),
        raw(0, 2, mode=5),  # ball out, left 2 takes the throw-in
        raw(0, 2),
        raw(-1, -1),
        raw(-1, -1, one),  # 2 scores: no assist
        raw(1, 2, one, 1),
        raw(1, 2, one),
        raw(-1, -1, one),
        raw(0, 3, one),  # kick-off; left 3 wins the ball
        raw(-1, -1, one),
        raw(-1, -1, one, 4),
        raw(0, 4, one, 4),  # 3's shot goes out, left 4 takes the corner
        raw(-1, -1, one),
        raw(0, 3, one),
        raw(-1, -1, one),
        raw(-1, -1, two),  # 4 crosses to 3 in play, 3 scores
        raw(1, 1, two, 1),
        raw(1, 1, two),
        raw(0, 1, two, 3),  # kick-off; left 1 is fouled: free kick
        raw(-1, -1, two, 3),
        raw(0, 2, two, 3),  # 2 takes it over before play restarts
    ]
    for o in seq:
        t.step(o)
    s = t.summary()
    assert (s["passes_attempted"], s["passes_completed"], s["goals"], s["assists"]) == (1, 1, 2, 1)


def test_behaviour_tracker_goal_without_assist_and_win():
    t = grf.BehaviourTracker(raw(-1, -1))
    for o in [raw(1, 2), raw(0, 1), raw(-1, -1), raw(-1, -1, score=(1, 0))]:  # won the ball, dribbled, scored
        t.step(o)
    s = t.summary()
    assert (s["goals"], s["assists"], s["win_rate"], s["passes_attempted"]) == (1, 0, 1.0, 0)
    assert math.isnan(s["pass_rate"])
    games = [s, dict(s, passes_attempted=4, passes_completed=1, pass_rate=0.25)]
    assert grf.aggregate_games(games)["pass_rate"] == pytest.approx(0.25)  # pooled over games


# ---------------------------------------------------------------- the env wrapper against gfootball itself
def test_scenario_table_matches_gfootball():
    from gfootball.env import config

    for name, (default, controllable) in grf.SCENARIOS.items():
        assert config.Config({"level": name}).ScenarioConfig().controllable_left_players == controllable, name
        assert 1 <= default <= controllable


def test_checkpoint_reward_matches_gfootball_wrapper():
    from types import SimpleNamespace

    from gfootball.env import wrappers

    env = grf.GRFEnv("academy_3_vs_1_with_keeper", 3, "scoring", seed=3)
    rng = np.random.default_rng(0)
    collected = np.zeros(3, dtype=np.int64)
    shim = SimpleNamespace(_collected_checkpoints={}, _num_checkpoints=10, _checkpoint_reward=0.1)
    env.reset()
    total = 0.0
    for _ in range(300):
        obs, score_reward, done, _ = env.env.step(rng.integers(0, 19, 3).tolist())
        shim.env = SimpleNamespace(unwrapped=SimpleNamespace(observation=lambda obs=obs: obs))
        expected = wrappers.CheckpointRewardWrapper.reward(shim, score_reward.copy())
        ours = score_reward + grf.checkpoint_reward(obs, score_reward, collected)
        assert np.allclose(ours, expected)
        total += float(np.sum(ours))
        if done:
            env.env.reset()
            collected[:], shim._collected_checkpoints = 0, {}
    assert total > 0  # some checkpoints were collected, so the comparison covered them


def test_time_limit_is_a_truncation_with_final_obs():
    env = grf.GRFEnv("5_vs_5", 4, "scoring,checkpoints", seed=1)
    first = env.reset()
    assert first.shape == (4, 115)
    steps, done = 0, False
    while not done and steps < 3100:
        obs, reward, done, truncated, final_obs, info = env.step([0, 0, 0, 0])
        steps += 1
    assert steps == 3001 and info["episodic_length"] == 3001  # game_duration 3000: steps_left goes 3001 -> 0
    assert truncated and final_obs is not None and final_obs.shape == (4, 115)
    assert not np.allclose(obs, final_obs)  # the returned obs is the reset one
    assert set(info) >= {"win_rate", "goals", "lost", "passes_attempted", "passes_completed", "pass_rate", "assists"}


def test_full_game_preset_entropy_and_the_users_flag_wins(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["a2po_grf.py", "--env-name", "5_vs_5"])
    assert grf.parse_args().ent_coef == 0.001  # the A2PO code base's 5-vs-5 setting
    monkeypatch.setattr(sys, "argv", ["a2po_grf.py", "--env-name", "academy_corner"])
    assert grf.parse_args().ent_coef == 0.01
    monkeypatch.setattr(sys, "argv", ["a2po_grf.py", "--env-name", "5_vs_5", "--ent-coef", "0.02"])
    assert grf.parse_args().ent_coef == 0.02


# ---------------------------------------------------------------- bad inputs
@pytest.mark.parametrize(
    "args, message",
    [
        (["--env-name", "academy_nope"], "Valid scenarios: academy_3_vs_1_with_keeper"),
        (["--env-name", "5_vs_5", "--num-agents", "5"], "Use 1..4"),
        (["--num-envs", "3", "--num-steps", "5", "--num-minibatches", "2"], "not divisible"),
        (["--clip-c", "2"], "--clip-c 2.0 is outside [0, 1]"),
        (["--eval-only"], "error: --eval-only needs --resume path/to/checkpoint.pt."),
        (["--eval-only", "--resume", "x.pt", "--eval-episodes", "0"], "--eval-only needs --eval-episodes >= 1, not 0"),
    ],
)
def test_bad_input_exits_with_clear_message(tmp_path, args, message):
    proc = run_script("a2po_grf", *args, cwd=tmp_path, check=False, timeout=120)
    assert proc.returncode != 0
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("error:") and message in last, proc.stdout
    assert "Traceback" not in proc.stdout


@pytest.mark.parametrize("content", [None, b"not a checkpoint"])
def test_missing_or_unreadable_resume_file_is_one_line_naming_it(tmp_path, content):
    path = tmp_path / "broken.pt"
    if content is not None:
        path.write_bytes(content)
    proc = run_script("a2po_grf", "--resume", path, cwd=tmp_path, timeout=120, check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stdout, proc.stdout
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("error: cannot read checkpoint") and str(path) in last, proc.stdout


def test_resume_from_a_checkpoint_of_an_older_version_is_one_line_naming_it(tmp_path):
    path = tmp_path / "old.pt"
    keys = ["nets", "optimizers", "generators", "torch_rng", "numpy_rng", "python_rng", "global_step", "iteration"]
    torch.save(dict.fromkeys(keys, 0) | dict(run_name="old"), path)  # the key layout the first version wrote
    proc = run_script("a2po_grf", "--resume", path, cwd=tmp_path, timeout=120, check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stdout, proc.stdout
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("error: checkpoint") and str(path) in last and "older version" in last, proc.stdout
    assert not (tmp_path / "runs").exists()  # rejected before anything is created


# ---------------------------------------------------------------- smoke runs and resume
GAME_KEYS = [
    "win_rate",
    "goals",
    "lost",
    "goal_diff",
    "passes_attempted",
    "passes_completed",
    "assists",
    "episodic_return",
    "episodic_length",
]
ITER_KEYS = [
    "charts/SPS",
    "charts/learning_rate",
    "losses/policy_loss",
    "losses/value_loss",
    "losses/entropy",
    "losses/approx_kl",
    "losses/clipfrac",
    "losses/explained_variance",
    "time/sampling_s",
    "time/updating_s",
    "a2po/order_first",
    "a2po/trace_ratio_mean",
    "a2po/preopc_gap",
]


def grf_iter_lines(out):
    """The per-iteration lines (helpers.iter_lines); gym's deprecation notice (printed when gfootball imports gym)
    must not be there."""
    assert "unmaintained" not in out and "Gymnasium" not in out, out
    return iter_lines(out)


@pytest.fixture(scope="module")
def academy_run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("academy")
    out = run_script(
        "a2po_grf",
        "--env-name",
        "academy_3_vs_1_with_keeper",
        *TINY,
        "--total-timesteps",
        "256",
        "--eval-episodes",
        "2",
        "--eval-interval",
        "128",
        "--save-model",
        cwd=cwd,
        timeout=300,
    ).stdout
    return cwd, out


def test_smoke_academy_logs_and_summary(academy_run):
    cwd, out = academy_run
    lines = grf_iter_lines(out)
    assert [line[:3] for line in lines] == [("1", "2", "128"), ("2", "2", "256")]
    assert all(line[4] != "nan" for line in lines)  # evaluated at 128 and at 256
    run_dir = only_run_dir(cwd)
    scalars = read_scalars(run_dir)
    expected = ITER_KEYS + [f"charts/{k}" for k in GAME_KEYS] + [f"eval/{k}" for k in GAME_KEYS]
    expected += [f"a2po/{tag}_k{k}" for tag in ("clip_eps", "order") for k in (1, 2, 3)]
    assert not [k for k in expected if k not in scalars], sorted(scalars)
    for step in range(2):  # the update order is a permutation of the agents, its first entry order_first
        order = [scalars[f"a2po/order_k{k}"][step][1] for k in (1, 2, 3)]
        assert sorted(order) == [0, 1, 2] and order[0] == scalars["a2po/order_first"][step][1]
    assert [s for s, _ in scalars["losses/policy_loss"]] == [128, 256]
    assert scalars["a2po/clip_eps_k1"][0][1] == pytest.approx(0.2 * (0.5 + 0.5 / 3))
    assert scalars["a2po/clip_eps_k3"][0][1] == pytest.approx(0.2)
    assert len(scalars["eval/win_rate"]) == 2  # at 128 and at 256
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["task"] == "academy_3_vs_1_with_keeper" and summary["algo"] == "a2po"
    assert summary["global_step"] == 256 and summary["args"]["num_agents"] == 3
    assert summary["args"]["clip_coef"] == 0.2 and summary["args"]["gamma"] == 0.99  # academy preset
    assert set(summary["final_eval"]) >= set(GAME_KEYS) | {"pass_rate"}
    assert summary["sampling_s"] > 0 and summary["updating_s"] > 0


def run_files(run_dir):
    """{path: mtime} of the run folder's files but eval.json and videos/ (what --eval-only may write)."""
    paths = [p for p in run_dir.rglob("*") if p.name != "eval.json" and "videos" not in p.relative_to(run_dir).parts]
    return {p: p.stat().st_mtime_ns for p in paths}


def test_eval_only_replays_the_runs_last_evaluation_and_trains_nothing(academy_run):
    cwd, _ = academy_run
    run_dir = only_run_dir(cwd)
    ckpt = run_dir / "checkpoint.pt"
    before = run_files(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    step = summary["global_step"]
    flags = ["--env-name", "academy_3_vs_1_with_keeper", *TINY, "--eval-episodes", "2", "--seed", "1"]
    out = run_script(
        "a2po_grf", *flags, "--eval-only", "--resume", ckpt, "--capture-video", cwd=cwd, timeout=300
    ).stdout
    assert not grf_iter_lines(out)  # no training iteration
    result = json.loads((run_dir / "eval.json").read_text())
    assert result["checkpoint"] == str(ckpt.resolve()) and (result["global_step"], result["seed"]) == (step, 1)
    assert result["episodes"] == 2 and {k: result[k] for k in summary["final_eval"]} == summary["final_eval"]
    assert set(summary["final_eval"]) >= set(GAME_KEYS)
    scalars = read_scalars(run_dir)
    for key in GAME_KEYS:  # the TensorBoard eval scalars of the run's last step
        assert scalars[f"eval/{key}"][-1] == (step, pytest.approx(result[key])), key
    line = f"eval-only {ckpt} step {step}: win rate {result['win_rate']:.3f} goal difference "
    assert line + f"{result['goal_diff']:.2f} over 2 episodes (seed 1)" in out, out
    assert only_run_dir(cwd) == run_dir and run_files(run_dir) == before  # no new run, no checkpoint or log written
    assert [v for v in (run_dir / "videos" / f"eval_only_{step}").glob("*.webm") if v.stat().st_size > 10_000]


@pytest.mark.parametrize(
    "flags, names, eval_only",
    [  # --eval-only and a plain --resume go through the same check
        (
            ["--env-name", "academy_pass_and_shoot_with_keeper", "--hidden-dim", "32"],
            "env_name academy_3_vs_1_with_keeper, num_agents 3, not "
            "env_name academy_pass_and_shoot_with_keeper, num_agents 2",
            True,
        ),
        (["--env-name", "academy_3_vs_1_with_keeper", "--hidden-dim", "64"], "hidden_dim 32, not hidden_dim 64", False),
    ],
)
def test_a_checkpoint_of_another_task_is_refused_naming_both(academy_run, flags, names, eval_only):
    cwd, _ = academy_run
    ckpt = only_run_dir(cwd) / "checkpoint.pt"
    args = [*flags, "--resume", ckpt] + (["--eval-only"] if eval_only else [])
    proc = run_script("a2po_grf", *args, cwd=cwd, timeout=120, check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stdout, proc.stdout
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("error: the checkpoint is for ") and names in last, proc.stdout


def test_resume_continues_the_same_run_and_captures_video(academy_run):
    cwd, _ = academy_run
    run_dir = only_run_dir(cwd)
    run_script(
        "a2po_grf",
        "--env-name",
        "academy_3_vs_1_with_keeper",
        *TINY,
        "--total-timesteps",
        "384",
        "--eval-episodes",
        "2",
        "--eval-interval",
        "128",
        "--save-model",
        "--resume",
        run_dir / "checkpoint.pt",
        "--capture-video",
        cwd=cwd,
        timeout=300,
    )
    assert only_run_dir(cwd) == run_dir
    videos = [v for v in (run_dir / "videos").glob("*.webm") if v.stat().st_size > 10_000]
    assert videos, "gfootball wrote no video of the evaluation game"
    steps = [s for s, _ in read_scalars(run_dir)["losses/policy_loss"]]
    assert steps == [128, 256, 384]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["global_step"] == 384
    assert torch.load(run_dir / "checkpoint.pt", weights_only=False)["iteration"] == 3


def test_smoke_5_vs_5_with_full_game_preset(tmp_path):
    out = run_script(
        "a2po_grf",
        "--env-name",
        "5_vs_5",
        *TINY,
        "--total-timesteps",
        "128",
        "--eval-episodes",
        "0",
        "--clip-coef",
        "0.3",
        cwd=tmp_path,
        timeout=300,
    ).stdout
    assert "iter 1/1 step 128" in out
    assert grf_iter_lines(out) == [("1", "1", "128", "nan", "nan")]  # no game ends in 64 steps; no evaluation
    run_dir = only_run_dir(tmp_path)
    scalars = read_scalars(run_dir)
    assert not [k for k in ITER_KEYS if k not in scalars], sorted(scalars)
    assert scalars["a2po/clip_eps_k4"][0][1] == pytest.approx(0.3)  # the user's flag wins over the preset
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["args"]["num_agents"] == 4 and summary["args"]["gamma"] == 0.995
    assert summary["final_eval"] == {} and summary["global_step"] == 128


def test_workers_exit_when_the_trainer_is_killed(tmp_path):
    # an idle worker checks its parent every 10 s
    assert_workers_die_with_trainer(
        "a2po_grf",
        "--env-name",
        "academy_3_vs_1_with_keeper",
        *TINY,
        "--eval-episodes",
        "0",
        cwd=tmp_path,
        num_workers=2,
        timeout=30,
    )

"""Tests of the MA-MuJoCo baselines mappo_mamujoco.py, coppo_mamujoco.py and happo_mamujoco.py: each surrogate by hand
on 3 agents, where its gradient goes, a smoke run with resume and --eval-only per script, and bad input. Their shared
sections are a2po_mamujoco.py's (tests/test_family_sections.py); its tests cover those in depth, and the learning test
(tests/test_a2po_mamujoco.py) runs MAPPO next to A2PO."""

import json
import runpy
import sys
from types import SimpleNamespace
from unittest import mock

import numpy as np
import pytest
import torch
from helpers import ROOT, iter_lines, load_script, only_run_dir, read_scalars, run_script

SCRIPTS = ["mappo_mamujoco", "coppo_mamujoco", "happo_mamujoco"]
mappo, coppo, happo = (load_script(name) for name in SCRIPTS)
OWN_TAGS = {"mappo_mamujoco": [], "coppo_mamujoco": ["coppo/others_ratio_mean"]}
OWN_TAGS["happo_mamujoco"] = ["happo/factor_mean", "happo/order_first"]
LOSSES = ["policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac", "explained_variance"]
# Hopper 3x1: three agents, and its preset (lr 1e-4, clip 0.1; CoPPO's others' clip 0.05) applies
SMOKE = ["--scenario", "Hopper", "--agent-conf", "3x1", "--num-envs", 2, "--num-steps", 100, "--eval-episodes", 1]
SMOKE += ["--update-epochs", 2, "--save-model"]

# 2 samples x 3 agents: ratios r and advantages A, worked by hand below with eps = 0.2 (CoPPO: eps_others = 0.1)
R = torch.tensor([[1.1, 0.7, 1.0], [1.5, 0.9, 0.95]])
A = torch.tensor([[1.0, -1.0, 2.0], [-2.0, 0.5, 1.0]])


# ---------------------------------------------------------------- surrogates by hand
def test_mappo_surrogate_by_hand():
    loss, clipfrac = mappo.surrogate_loss(R.log(), A, 0.2)
    # min(r A, clip(r, 0.8, 1.2) A): row 0: 1.1, min(-0.7, -0.8) = -0.8 (clipped), 2.0; row 1: min(-3.0, -2.4) = -3.0,
    # 0.45, 0.95. L_i = -mean over the two samples.
    assert loss.tolist() == pytest.approx([-(1.1 - 3.0) / 2, -(-0.8 + 0.45) / 2, -(2.0 + 0.95) / 2], abs=1e-6)
    assert clipfrac.item() == pytest.approx(2 / 6)  # r = 0.7 and 1.5 lie outside 1 +- 0.2


def test_coppo_surrogate_by_hand():
    loss, clipfrac, others = coppo.surrogate_loss(R.log(), A, 0.2, 0.1)
    # others' products: row 0: 0.7, 1.1, 0.77 -> clipped to 1 +- 0.1: 0.9, 1.1, 0.9 -> l = 0.99, 0.77, 0.9;
    #                   row 1: 0.855, 1.425, 1.35 -> 0.9, 1.1, 1.1 -> l = 1.35, 0.99, 1.045.
    # min(l A, clip(l, 0.8, 1.2) A): row 0: 0.99, min(-0.77, -0.8) = -0.8, 1.8; row 1: min(-2.7, -2.4) = -2.7, 0.495,
    # 1.045.
    assert loss.tolist() == pytest.approx([-(0.99 - 2.7) / 2, -(-0.8 + 0.495) / 2, -(1.8 + 1.045) / 2], abs=1e-6)
    assert clipfrac.item() == pytest.approx(2 / 6)  # l = 0.77 and 1.35
    assert others.item() == pytest.approx((0.7 + 1.1 + 0.77 + 0.855 + 1.425 + 1.35) / 6)  # before the clip
    # with a wide others' clip CoPPO is PPO on the joint ratio; with a zero-width one it is MAPPO
    joint = R.prod(-1, keepdim=True)
    wide = -torch.min(joint * A, joint.clamp(0.8, 1.2) * A).mean(0)
    assert coppo.surrogate_loss(R.log(), A, 0.2, 10.0)[0].tolist() == pytest.approx(wide.tolist(), abs=1e-6)
    assert coppo.surrogate_loss(R.log(), A, 0.2, 0.0)[0].tolist() == pytest.approx(
        mappo.surrogate_loss(R.log(), A, 0.2)[0].tolist(), abs=1e-6
    )


def test_happo_surrogate_by_hand_in_an_order_of_3_agents():
    order, factor, losses = [2, 0, 1], torch.ones(2), {}
    for agent in order:  # M_i: the product of the ratios of the agents updated before i
        losses[agent] = happo.surrogate_loss(R[:, agent].log(), A[:, agent], factor, 0.2)
        factor = factor * R[:, agent]
    # agent 2 first, M = 1: min terms 2.0, 0.95. Agent 0, M = r_2 = (1.0, 0.95): (1.1, -3.0) -> (1.1, -2.85).
    # Agent 1, M = r_2 * r_0 = (1.1, 1.425), unclipped: (-0.8, 0.45) -> (-0.88, 0.64125).
    assert losses[2][0].item() == pytest.approx(-(2.0 + 0.95) / 2)
    assert losses[0][0].item() == pytest.approx(-(1.1 - 2.85) / 2)
    assert losses[1][0].item() == pytest.approx(-(-0.88 + 0.64125) / 2)
    assert [losses[i][1].item() for i in (2, 0, 1)] == pytest.approx([0.0, 0.5, 0.5])


# ---------------------------------------------------------------- where the gradient goes
X = torch.tensor([[1.0, 0.5, -1.0], [-0.5, 1.0, 2.0], [2.0, -1.0, 0.5], [0.3, 0.8, -0.6]])
ADV = torch.tensor([[1.0, -0.5, 0.3], [-1.2, 0.7, 1.1], [0.4, 0.9, -0.8], [2.0, -1.5, 0.6]])


def three_agents():
    """Three separate parameters; agent i's log-ratio theta_i * x_i stays small, inside every clip, so no clamp
    hides a gradient."""
    return [torch.tensor(v, requires_grad=True) for v in (0.01, -0.02, 0.015)]


def logratios(thetas):
    return torch.stack([t * X[:, i] for i, t in enumerate(thetas)], -1)


@pytest.mark.parametrize("script", ["mappo_mamujoco", "coppo_mamujoco"])
def test_simultaneous_gradient_reaches_every_agent_through_its_own_ratio_only(script):
    module = load_script(script)
    extra = (0.1,) if script.startswith("coppo") else ()
    thetas = three_agents()
    logratio = logratios(thetas)
    others = (logratio.sum(-1, keepdim=True) - logratio).exp()
    assert ((others - 1).abs() < 0.1).all() and ((logratio.exp() - 1).abs() < 0.1).all()  # inside every clip
    module.surrogate_loss(logratio, ADV, 0.2, *extra)[0].sum().backward()
    for i in range(3):
        loss_i = module.surrogate_loss(logratios(thetas), ADV, 0.2, *extra)[0][i]  # a fresh graph
        own = torch.autograd.grad(loss_i, thetas, allow_unused=True)
        for j, grad in enumerate(own):  # d L_i / d theta_j = 0 for j != i (CoPPO: the others' product is detached)
            assert (grad is None or grad.item() == 0.0) if j != i else grad.item() != 0.0, (i, j)
        assert thetas[i].grad.item() == pytest.approx(own[i].item())  # the sum's gradient is agent i's own term's


def test_happo_gradient_reaches_only_the_agent_being_updated():
    thetas = three_agents()
    logratio = [t * X[:, i] for i, t in enumerate(thetas)]  # one graph per agent
    factor = (logratio[0] + logratio[2]).exp()  # the agents updated before agent 1, still in the graph
    loss, _ = happo.surrogate_loss(logratio[1], ADV[:, 1], factor, 0.2)
    loss.backward()
    assert thetas[1].grad.item() != 0.0
    assert thetas[0].grad is None and thetas[2].grad is None  # the factor gets no gradient
    # inside the clip L = -mean(M r A), r = exp(theta_1 x_1): dL/dtheta_1 = -mean(M r x_1 A), M a constant
    expected = -(factor * logratio[1].exp() * X[:, 1] * ADV[:, 1]).mean()
    assert thetas[1].grad.item() == pytest.approx(expected.item())


# ---------------------------------------------------------------- runs: train, resume, --eval-only
@pytest.fixture(scope="module", params=SCRIPTS)
def run(request, tmp_path_factory):
    """200 steps with --save-model, then a resume to 400: one shared pair of runs per script."""
    script = request.param
    cwd = tmp_path_factory.mktemp(script)
    first = run_script(script, *SMOKE, "--total-timesteps", 200, cwd=cwd, timeout=240).stdout
    run_dir = only_run_dir(cwd)
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    resume = ["--total-timesteps", 400, "--resume", run_dir / "checkpoint.pt"]
    second = run_script(script, *SMOKE, *resume, cwd=cwd, timeout=240).stdout
    return SimpleNamespace(script=script, cwd=cwd, run_dir=run_dir, first=first, second=second, checkpoint=checkpoint)


def test_smoke_run_logs_the_losses_and_the_algorithms_own_tags(run):
    assert run.run_dir.name.startswith(f"Hopper-3x1__{run.script}__1__")
    scalars = read_scalars(run.run_dir)
    for tag in [f"losses/{name}" for name in LOSSES] + OWN_TAGS[run.script] + ["eval/episodic_return"]:
        assert tag in scalars and all(np.isfinite(v) for _, v in scalars[tag]), tag
    assert not [tag for tag in scalars if tag.startswith("a2po/")]
    assert "charts/episodic_return" in scalars  # an untrained Hopper falls within 100 steps
    if run.script.startswith("happo"):
        assert {int(v) for _, v in scalars["happo/order_first"]} <= {0, 1, 2}
    summary = json.loads((run.run_dir / "summary.json").read_text())
    assert summary["algo"] == run.script.split("_")[0] and summary["task"] == "Hopper-3x1"
    assert [line[:3] for line in iter_lines(run.first)] == [("1", "1", "200")]
    args = run.checkpoint["args"]  # the Hopper preset of the A2PO code base, CoPPO's others' clip at half the clip
    assert (args["learning_rate"], args["critic_learning_rate"], args["clip_coef"]) == (1e-4, 1e-4, 0.1)
    assert args.get("others_clip_coef", 0.05) == pytest.approx(0.05)


def test_resume_continues_global_step_and_the_order_generator(run):
    assert "resumed from" in run.second and [line[:3] for line in iter_lines(run.second)] == [("2", "2", "400")]
    assert only_run_dir(run.cwd) == run.run_dir
    second = torch.load(run.run_dir / "checkpoint.pt", weights_only=False)
    assert run.checkpoint["global_step"] == 200 and second["global_step"] == 400
    assert [s for s, _ in read_scalars(run.run_dir)["time/sampling_s"]] == [200, 400]
    first_actor, second_actor = run.checkpoint["actors"][0], second["actors"][0]
    assert not torch.equal(first_actor["log_std"], second_actor["log_std"])  # the resumed run trained on
    if run.script.startswith("happo"):  # the order generator is saved and has moved on by one draw
        gen = torch.Generator()
        gen.set_state(run.checkpoint["rng"]["order"])
        torch.randperm(3, generator=gen)
        assert torch.equal(gen.get_state(), second["rng"]["order"])
    else:
        assert "order" not in second["rng"]


def test_eval_only_reproduces_the_final_evaluation(run):
    ckpt = run.run_dir / "checkpoint.pt"
    before = {p.name: p.read_bytes() for p in run.run_dir.iterdir() if p.is_file()}
    out = run_script(run.script, *SMOKE, "--eval-only", "--resume", ckpt, cwd=run.cwd, timeout=240).stdout
    result = json.loads((run.run_dir / "eval.json").read_text())
    final = json.loads((run.run_dir / "summary.json").read_text())["final_eval"]["episodic_return"]
    assert result == dict(checkpoint=str(ckpt.resolve()), global_step=400, seed=1, episodes=1, episodic_return=final)
    assert np.float32(final) == np.float32(read_scalars(run.run_dir)["eval/episodic_return"][-1][1])
    assert f"eval-only {ckpt} step 400: return {final:.1f} over 1 episodes (seed 1)" in out and "iter " not in out
    after = {p.name: p.read_bytes() for p in run.run_dir.iterdir() if p.is_file() and p.name != "eval.json"}
    assert after == before and only_run_dir(run.cwd) == run.run_dir  # nothing trained, nothing logged


# ---------------------------------------------------------------- bad input
def main_exits(script, *argv):
    """Run `script`.py's main in this process (its imports are loaded, so no start-up cost) with argv; return the
    message of the SystemExit it must raise. The process-level one-line output is tested in test_a2po_mamujoco.py
    on the same shared sections."""
    with mock.patch.object(sys, "argv", [f"{script}.py", *map(str, argv)]), pytest.raises(SystemExit) as exc:
        runpy.run_path(str(ROOT / f"{script}.py"), run_name="__main__")
    return str(exc.value.code)


def test_a_checkpoint_of_another_task_algorithm_or_width_is_refused(run, monkeypatch):
    monkeypatch.chdir(run.cwd)
    ckpt = run.run_dir / "checkpoint.pt"
    assert run.checkpoint["algo"] == run.script.split("_")[0]
    for flags in (["--eval-only"], []):  # --eval-only and a plain resume alike
        message = main_exits(run.script, "--scenario", "HalfCheetah", "--agent-conf", "2x3", "--resume", ckpt, *flags)
        assert message == (
            "error: the checkpoint is for scenario Hopper, agent_conf 3x1, not scenario HalfCheetah, agent_conf 2x3: "
            "use --scenario Hopper --agent-conf 3x1 (or another checkpoint)."
        )
    message = main_exits(run.script, *SMOKE, "--hidden-dim", 32, "--resume", ckpt)
    assert (
        message
        == "error: the checkpoint is for hidden_dim 64, not hidden_dim 32: use --hidden-dim 64 (or another checkpoint)."
    )
    algo = run.script.split("_")[0]  # A2PO would otherwise miss the order generator of a MAPPO or CoPPO checkpoint
    message = main_exits("a2po_mamujoco", *SMOKE, "--resume", ckpt)
    assert (
        message
        == f"error: the checkpoint is for algo {algo}, not algo a2po: use {algo}_mamujoco.py (or another checkpoint)."
    )
    assert only_run_dir(run.cwd) == run.run_dir


@pytest.mark.parametrize("script", SCRIPTS)
def test_an_unknown_scenario_and_eval_only_without_resume_are_refused(tmp_path, monkeypatch, script):
    monkeypatch.chdir(tmp_path)
    assert main_exits(script, "--scenario", "Pendulum").startswith("error: unknown MA-MuJoCo scenario 'Pendulum'.")
    assert main_exits(script, "--eval-only") == "error: --eval-only needs --resume path/to/checkpoint.pt."
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "flags,message",
    [
        (
            ["--others-clip-coef", 0.2],
            "error: --others-clip-coef 0.2 must lie in (0, --clip-coef 0.2), the tighter clip.",
        ),
        (["--scenario", "Hopper", "--agent-conf", "3x1", "--others-clip-coef", 0.1], "(0, --clip-coef 0.1)"),  # preset
        (["--others-clip-coef", 0], "error: --others-clip-coef 0.0 must lie in (0, --clip-coef 0.2)"),
        (["--clip-coef", 0.05], "error: --others-clip-coef 0.1 must lie in (0, --clip-coef 0.05)"),
    ],
)
def test_coppo_refuses_an_others_clip_not_below_the_clip(tmp_path, monkeypatch, flags, message):
    monkeypatch.chdir(tmp_path)
    assert message in main_exits("coppo_mamujoco", *flags)
    assert not (tmp_path / "runs").exists()


def test_coppo_hopper_preset_halves_the_others_clip_unless_given():
    args = coppo.apply_presets(coppo.Args(scenario="Hopper"), ["--scenario", "Hopper"])
    assert (args.clip_coef, args.others_clip_coef) == (0.1, 0.05)
    given = coppo.Args(scenario="Hopper", others_clip_coef=0.08)
    args = coppo.apply_presets(given, ["--scenario", "Hopper", "--others-clip-coef", "0.08"])
    assert (args.clip_coef, args.others_clip_coef) == (0.1, 0.08)
    assert coppo.apply_presets(coppo.Args(), []).others_clip_coef == 0.1

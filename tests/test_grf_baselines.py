"""mappo_grf.py, coppo_grf.py, happo_grf.py: the surrogates by hand, where their gradients go, a smoke run, resume,
--eval-only and bad input. What they share with a2po_grf.py (env, metrics, networks, checkpoints) is tested in
tests/test_a2po_grf.py; tests/test_family_sections.py checks that it is the same text."""

import json

import pytest
import torch
from helpers import iter_lines, load_script, only_run_dir, read_scalars, run_script

SCRIPTS = ["mappo_grf", "coppo_grf", "happo_grf"]
mappo, coppo, happo = (load_script(name) for name in SCRIPTS)
TINY = ["--env-name", "academy_3_vs_1_with_keeper", "--num-envs", "2", "--num-steps", "64", "--update-epochs", "1"]
TINY += ["--hidden-dim", "32", "--eval-interval", "1000000", "--save-model"]
MODULES = dict(zip(SCRIPTS, (mappo, coppo, happo)))
OWN_TAGS = dict(
    mappo_grf=[], coppo_grf=["coppo/others_ratio_mean"], happo_grf=["happo/factor_mean", "happo/order_first"]
)
LOSSES = ["policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac", "explained_variance"]

# ---------------------------------------------------------------- the surrogates by hand, 3 agents, eps = 0.2
# two samples (rows) of three agents (columns); ratios r = exp(logratio)
R = torch.tensor([[1.1, 0.7, 1.5], [0.9, 1.0, 1.3]])
A = torch.tensor([[1.0, -1.0, 2.0], [-2.0, 0.5, 1.0]])


def test_mappo_surrogate_by_hand():
    loss, clipfrac = mappo.surrogate_loss(R.log(), A, 0.2)
    # agent 0: min(1.1 * 1, 1.1 * 1) = 1.1 and min(0.9 * -2, 0.9 * -2) = -1.8
    # agent 1: r = 0.7 < 0.8 with A = -1: the clipped term -0.8 is the smaller; then 1.0 * 0.5
    # agent 2: r = 1.5 > 1.2 with A = 2: clipped, 2.4; r = 1.3 with A = 1: clipped, 1.2
    expected = torch.tensor([-(1.1 - 1.8) / 2, -(-0.8 + 0.5) / 2, -(2.4 + 1.2) / 2])
    assert torch.allclose(loss, expected)
    assert clipfrac.item() == pytest.approx(3 / 6)  # 0.7, 1.5 and 1.3 lie outside 1 +- 0.2


def test_coppo_surrogate_by_hand():
    loss, clipfrac, others = coppo.surrogate_loss(R.log(), A, 0.2, 0.1)
    # row 0: others' products 0.7 * 1.5 = 1.05, 1.1 * 1.5 = 1.65 -> 1.1, 1.1 * 0.7 = 0.77 -> 0.9
    #   l = 1.1 * 1.05 = 1.155 (A 1), 0.7 * 1.1 = 0.77 (A -1: clipped to 0.8, -0.8), 1.5 * 0.9 = 1.35 (A 2: 1.2 * 2)
    # row 1: others' products 1.3 -> 1.1, 0.9 * 1.3 = 1.17 -> 1.1, 0.9 (inside)
    #   l = 0.9 * 1.1 = 0.99 (A -2), 1.0 * 1.1 = 1.1 (A 0.5), 1.3 * 0.9 = 1.17 (A 1)
    expected = torch.tensor([-(1.155 - 1.98) / 2, -(-0.8 + 0.55) / 2, -(2.4 + 1.17) / 2])
    assert torch.allclose(loss, expected)
    assert clipfrac.item() == pytest.approx(2 / 6)  # l = 0.77 and 1.35
    assert others.item() == pytest.approx((1.05 + 1.65 + 0.77 + 1.3 + 1.17 + 0.9) / 6)  # before the clip


def test_happo_surrogate_by_hand_in_update_order():
    # order 0, 1, 2: M_0 = 1, M_1 = r_0, M_2 = r_0 * r_1 (the agents updated before), unclipped
    adv = A[:, 0]
    factors = [torch.ones(2), R[:, 0], R[:, 0] * R[:, 1]]
    losses = [happo.surrogate_loss(R[:, i].log(), adv, factors[i], 0.2) for i in range(3)]
    # agent 0: min(1.1, 1.1) and min(-1.8, -1.8)
    assert losses[0][0].item() == pytest.approx(-(1.1 - 1.8) / 2)
    # agent 1: M = [1.1, 0.9]; r = 0.7 (A 1): min(0.7, 0.8) = 0.7; r = 1.0 (A -2): -2
    assert losses[1][0].item() == pytest.approx(-(1.1 * 0.7 + 0.9 * -2.0) / 2)
    # agent 2: M = [0.77, 0.9]; r = 1.5 (A 1): clipped to 1.2; r = 1.3 (A -2): min(-2.6, -2.4) = -2.6
    assert losses[2][0].item() == pytest.approx(-(0.77 * 1.2 + 0.9 * -2.6) / 2)
    assert [c.item() for _, c in losses] == [0.0, 0.5, 1.0]


# ---------------------------------------------------------------- where the gradient goes
def three_agents():
    thetas = [torch.tensor([0.05, -0.3], requires_grad=True) for _ in range(3)]  # one log-ratio per sample
    with torch.no_grad():
        thetas[1] += torch.tensor([0.1, 0.02])
        thetas[2] -= torch.tensor([0.02, 0.2])
    return thetas, torch.stack(thetas, -1)


@pytest.mark.parametrize("module", [mappo, coppo], ids=["mappo", "coppo"])
def test_simultaneous_every_agent_gets_the_gradient_of_its_own_term_only(module):
    extra = (0.1,) if module is coppo else ()  # CoPPO's others' clip
    adv = torch.tensor([[1.0, -0.5, 2.0], [0.7, 1.5, -1.0]])
    thetas, logratio = three_agents()
    loss = module.surrogate_loss(logratio, adv, 0.2, *extra)[0]
    assert loss.shape == (3,)
    for i in range(3):  # d loss_i / d theta_j = 0 for j != i (CoPPO: the others' product is detached)
        grads = torch.autograd.grad(loss[i], thetas, retain_graph=True, allow_unused=True)
        assert grads[i].abs().sum() > 0
        assert all(g is None or not g.any() for j, g in enumerate(grads) if j != i)
    loss.sum().backward()  # the update's one backward: every agent gets exactly its own term's gradient
    for i in range(3):
        fresh, stacked = three_agents()
        own = torch.autograd.grad(module.surrogate_loss(stacked, adv, 0.2, *extra)[0][i], fresh[i])[0]
        assert torch.allclose(thetas[i].grad, own)


def test_happo_gradient_reaches_only_the_agent_being_updated():
    thetas, _ = three_agents()
    factor = (thetas[0] + thetas[1]).exp()  # M of agent 2 from the agents before it, built with a graph on purpose
    loss, _ = happo.surrogate_loss(thetas[2], torch.tensor([1.0, -0.5]), factor, 0.2)
    loss.backward()
    assert thetas[2].grad.abs().sum() > 0
    assert thetas[0].grad is None and thetas[1].grad is None  # the factor is detached


# ---------------------------------------------------------------- smoke run, resume and --eval-only
@pytest.fixture(scope="module", params=SCRIPTS)
def trained(request, tmp_path_factory):
    """One iteration with --save-model, then a resume for one more that ends with an evaluation of 2 games:
    (script, cwd, outputs of the two runs)."""
    script, cwd = request.param, tmp_path_factory.mktemp(request.param)
    first = run_script(script, *TINY, "--total-timesteps", "128", "--eval-episodes", "0", cwd=cwd, timeout=300).stdout
    ckpt, flags = only_run_dir(cwd) / "checkpoint.pt", [*TINY, "--total-timesteps", "256", "--eval-episodes", "2"]
    second = run_script(script, *flags, "--resume", ckpt, cwd=cwd, timeout=300).stdout
    return script, cwd, first, second


def test_smoke_run_and_resume(trained):
    script, cwd, first, second = trained
    assert "unmaintained" not in first + second  # gym's notice when gfootball imports it
    assert [line[:3] for line in iter_lines(first)] == [("1", "1", "128")]
    assert [line[:3] for line in iter_lines(second)] == [("2", "2", "256")]  # global_step continues
    run_dir = only_run_dir(cwd)  # the resumed run writes to the same folder
    scalars = read_scalars(run_dir)
    for tag in [f"losses/{k}" for k in LOSSES] + OWN_TAGS[script]:
        assert [s for s, _ in scalars[tag]] == [128, 256], tag
    assert [s for s, _ in scalars["eval/win_rate"]] == [256] and [s for s, _ in scalars["eval/goal_diff"]] == [256]
    assert not [
        t for t in scalars if t.split("/")[0] in ("a2po", "mappo", "coppo", "happo") and t not in OWN_TAGS[script]
    ]
    if script == "happo_grf":  # the agents updated first moved, so the later ones saw M != 1
        assert all(v != 1.0 for _, v in scalars["happo/factor_mean"])
        assert {v for _, v in scalars["happo/order_first"]} <= {0.0, 1.0, 2.0}
    if script == "coppo_grf":
        assert all(0.5 < v < 2.0 and v != 1.0 for _, v in scalars["coppo/others_ratio_mean"])
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["algo"] == script.split("_")[0] and summary["global_step"] == 256
    assert summary["args"]["clip_coef"] == 0.2 and summary["args"]["update_epochs"] == 1
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert ckpt["algo"] == script.split("_")[0] and ckpt["iteration"] == 2


def test_eval_only_reproduces_the_last_evaluation(trained):
    script, cwd, _, _ = trained
    run_dir = only_run_dir(cwd)
    ckpt, mtime = run_dir / "checkpoint.pt", (run_dir / "checkpoint.pt").stat().st_mtime_ns
    out = run_script(
        script, *TINY, "--eval-episodes", "2", "--eval-only", "--resume", ckpt, cwd=cwd, timeout=300
    ).stdout
    assert not iter_lines(out) and f"eval-only {ckpt} step 256: win rate " in out
    result = json.loads((run_dir / "eval.json").read_text())
    final = json.loads((run_dir / "summary.json").read_text())["final_eval"]
    assert (result["global_step"], result["episodes"], result["seed"]) == (256, 2, 1)
    assert {k: result[k] for k in final} == final and "episodic_length" in final
    assert read_scalars(run_dir)["eval/episodic_length"][-1] == (256, pytest.approx(final["episodic_length"]))
    assert only_run_dir(cwd) == run_dir and ckpt.stat().st_mtime_ns == mtime  # trained nothing, saved nothing


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("script", SCRIPTS)
def test_unknown_scenario(script, monkeypatch):
    monkeypatch.setattr("sys.argv", [f"{script}.py", "--env-name", "academy_nope"])
    with pytest.raises(SystemExit, match="error: unknown scenario 'academy_nope'"):
        MODULES[script].parse_args()


@pytest.mark.parametrize("flags", [["--others-clip-coef", "0.2"], ["--clip-coef", "0.05"], ["--others-clip-coef", "0"]])
def test_coppo_others_clip_must_be_the_tighter_one(flags, monkeypatch):
    monkeypatch.setattr("sys.argv", ["coppo_grf.py", *flags])
    with pytest.raises(SystemExit, match=r"error: --others-clip-coef .* must lie in \(0, --clip-coef"):
        coppo.parse_args()


def test_coppo_full_game_preset_halves_the_clip_for_the_others(monkeypatch):
    monkeypatch.setattr("sys.argv", ["coppo_grf.py", "--env-name", "5_vs_5"])
    args = coppo.parse_args()
    assert (args.clip_coef, args.others_clip_coef) == (0.25, 0.125)
    monkeypatch.setattr("sys.argv", ["coppo_grf.py", "--env-name", "5_vs_5", "--others-clip-coef", "0.05"])
    assert coppo.parse_args().others_clip_coef == 0.05  # the user's flag wins


def test_a_checkpoint_of_another_scenario_and_algorithm_is_refused_naming_both(trained):
    script, cwd, _, _ = trained
    ckpt = only_run_dir(cwd) / "checkpoint.pt"
    algo, other = script.split("_")[0], SCRIPTS[(SCRIPTS.index(script) + 1) % 3]
    flags = ["--env-name", "academy_corner", "--hidden-dim", "32", "--eval-only", "--resume", ckpt]
    proc = run_script(other, *flags, cwd=cwd, timeout=120, check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stdout, proc.stdout
    last = proc.stdout.strip().splitlines()[-1]
    was = f"env_name academy_3_vs_1_with_keeper, num_agents 3, algo {algo}"
    now = f"env_name academy_corner, num_agents 10, algo {other.split('_')[0]}"
    assert last.startswith(f"error: the checkpoint is for {was}, not {now}: "), proc.stdout

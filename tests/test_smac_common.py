"""What every SMAC script shares: GAE, ValueNorm, masking, the env wrappers, errors, checkpoints.

Each test runs against all four SMAC scripts that exist, so a shared part that breaks in one file
breaks its test (tests/test_smac_shared_sections.py separately proves the texts are identical).
"""

import json
import os
import signal
import subprocess
import sys
import time
import types

import numpy as np
import pytest
import torch
from helpers import ROOT, is_running, iter_lines, load_script, only_run_dir, read_scalars, run_script

SCRIPTS = [s for s in ("mappo_smac", "coppo_smac", "happo_smac", "a2po_smac") if (ROOT / f"{s}.py").exists()]


@pytest.fixture(scope="module")
def mappo():
    return load_script("mappo_smac")


# ---------------------------------------------------------------- compute_gae by hand
def test_gae_matches_hand_computation_with_an_episode_end(mappo):
    gamma, lam = 0.9, 0.5
    rewards = torch.tensor([[1.0], [0.0], [2.0]])  # T=3, E=1
    values = torch.tensor([[[0.5]], [[1.0]], [[-1.0]]])  # (T, E, n=1)
    bootstrap = torch.tensor([[4.0]])
    continues = torch.tensor([[1.0], [0.0], [1.0]])  # the episode ends at t=1
    # t=2: delta = 2 + 0.9*4 - (-1) = 6.6; A2 = 6.6
    # t=1: delta = 0 + 0 - 1 = -1; A1 = -1 (no trace across the end)
    # t=0: delta = 1 + 0.9*1 - 0.5 = 1.4; A0 = 1.4 + 0.9*0.5*(-1) = 0.95
    adv = mappo.compute_gae(rewards, values, bootstrap, continues, gamma, lam)
    assert torch.allclose(adv.squeeze(), torch.tensor([0.95, -1.0, 6.6]))


def test_gae_broadcasts_team_reward_over_agents(mappo):
    rewards, continues = torch.ones(4, 2), torch.ones(4, 2)
    values = torch.randn(4, 2, 3)
    bootstrap = torch.randn(2, 3)
    adv = mappo.compute_gae(rewards, values, bootstrap, continues, 0.99, 0.95)
    per_agent = torch.stack(
        [
            mappo.compute_gae(
                rewards.unsqueeze(-1),
                values[..., i : i + 1],
                bootstrap[:, i : i + 1],
                continues.unsqueeze(-1),
                0.99,
                0.95,
            )[..., 0]
            for i in range(3)
        ],
        -1,
    )
    assert adv.shape == (4, 2, 3) and torch.allclose(adv, per_agent)


def test_gae_with_lambda_one_is_the_discounted_return_minus_value(mappo):
    T, gamma = 6, 0.97
    rewards = torch.rand(T, 1)
    values = torch.rand(T, 1, 1)
    adv = mappo.compute_gae(rewards, values, torch.zeros(1, 1), torch.ones(T, 1), gamma, 1.0)
    mc = torch.tensor([sum(gamma**k * rewards[t + k, 0] for k in range(T - t)) for t in range(T)])
    assert torch.allclose(adv[:, 0, 0], mc - values[:, 0, 0], atol=1e-5)


# ---------------------------------------------------------------- ValueNorm and losses
def test_value_norm_tracks_mean_and_std_and_inverts(mappo):
    torch.manual_seed(0)
    vn = mappo.ValueNorm()
    for _ in range(200):
        vn.update(torch.randn(512) * 3.0 + 5.0)
    mean, var = vn.mean_var()
    assert abs(mean.item() - 5.0) < 0.1 and abs(var.sqrt().item() - 3.0) < 0.1
    x = torch.randn(10) * 7
    assert torch.allclose(vn.denormalize(vn.normalize(x)), x, atol=1e-4)


def test_value_norm_variance_floor(mappo):
    vn = mappo.ValueNorm()
    for _ in range(10):
        vn.update(torch.full((64,), 2.0))
    _, var = vn.mean_var()
    assert var.item() == pytest.approx(1e-2)


def test_huber_value_loss_takes_the_max_of_plain_and_clipped(mappo):
    old, ret = torch.tensor([0.0]), torch.tensor([1.0])
    # moving towards the return beyond the clip: the clipped error (0.8) is larger -> 0.5*0.8^2
    assert mappo.value_loss_fn(torch.tensor([0.9]), old, ret, 0.2, 10.0).item() == pytest.approx(0.32)
    # both tails of the Huber: |x| > delta is linear, delta * (|x| - delta / 2) = 150 at x = +-20
    values = torch.tensor([-20.0, 20.0])
    assert mappo.value_loss_fn(values, values, torch.zeros(2), 0.2, 10.0).item() == pytest.approx(150.0)


def test_unavailable_actions_are_never_sampled(mappo):
    torch.manual_seed(0)
    logits = torch.randn(4096, 6) * 5
    avail = torch.rand(4096, 6) > 0.5
    avail[:, 4] = True
    actions = torch.distributions.Categorical(logits=mappo.masked_logits(logits, avail)).sample()
    assert avail.gather(1, actions.unsqueeze(1)).all()


# ---------------------------------------------------------------- env wrappers
def test_smax_wrapper_shapes_win_detection_and_death_masking(mappo):
    env = mappo.SMAXVecEnv("3m", 4, seed=0)
    raw = env.reset()
    assert raw["obs"].shape == (4, 3, env.obs_dim) and raw["avail"].shape == (4, 3, env.num_actions)
    assert raw["state"].max() <= 1.0 + 1e-6, "the critic's state must be scaled"
    rng = np.random.default_rng(0)
    dones, steps = 0, 0
    while dones < 4 and steps < 200:
        avail = raw["avail"]
        actions = np.array([[rng.choice(np.flatnonzero(a)) for a in env_avail] for env_avail in avail])
        env.step_async(actions)
        raw, reward, done, won = env.step_wait()
        assert not (won & ~done).any(), "a win is only reported on an episode end"
        dones += done.sum()
        steps += 1
    assert dones >= 4, "random play on 3m must end episodes within the 60-step limit"
    dead = ~raw["alive"]
    actor_x, critic_x, _, _ = mappo.agent_inputs(raw, torch.zeros(4, 3, dtype=torch.long), env.num_actions)
    if dead.any():
        e, i = np.argwhere(dead)[0]
        assert torch.count_nonzero(critic_x[e, i]) == 1, "a dead agent's critic input is its id alone"
    assert actor_x.shape[-1] == env.obs_dim + 3 + env.num_actions


def test_8m_vs_9m_is_registered(mappo):
    env = mappo.SMAXVecEnv("8m_vs_9m", 1, seed=0)
    assert env.num_agents == 8 and env.num_actions == 5 + 9


class FakeStarCraft2Env:
    """A stand-in that follows smacv2's documented API; its first incarnation crashes at step 3."""

    def __init__(self, map_name, seed):
        self.seed, self.t, self.n, self.a = seed, 0, 2, 7

    def get_env_info(self):
        return dict(n_agents=self.n, n_actions=self.a, episode_limit=5, obs_shape=4, state_shape=6)

    def reset(self):
        self.t = 0

    def get_obs(self):
        return [np.full(4, self.t, dtype=np.float32)] * self.n

    def get_state(self):
        return np.full(6, self.t, dtype=np.float32)

    def get_avail_actions(self):
        alive = [0, 1, 1, 1, 1, 1, 1]
        dead = [1, 0, 0, 0, 0, 0, 0]
        return [alive, dead if self.t >= 2 else alive]  # agent 1 dies at t=2

    def step(self, actions):
        self.t += 1
        if self.t == 3 and self.seed < 100_000:
            raise RuntimeError("the game crashed")
        terminated = self.t >= 5
        return 1.0, terminated, {"battle_won": terminated and self.seed % 2 == 0}

    def close(self):
        pass


def test_sc2_workers_follow_smacv2_api_and_restart_a_crashed_game(mappo, capfd):
    envs = mappo.SC2VecEnv("3m", 2, seed=0, env_fn=FakeStarCraft2Env)
    try:
        assert (envs.num_agents, envs.num_actions, envs.obs_dim, envs.state_dim) == (2, 7, 4, 6)
        raw = envs.reset()
        assert raw["alive"].all()
        for _ in range(2):
            envs.step_async(np.zeros((2, 2), dtype=int))
            raw, reward, done, won = envs.step_wait()
        assert (raw["alive"] == [[True, False], [True, False]]).all(), "dead = only no-op available"
        envs.step_async(np.zeros((2, 2), dtype=int))
        raw, reward, done, won = envs.step_wait()  # both games crash at t=3
        assert done.all() and not won.any() and (reward == 0).all()
        assert capfd.readouterr().out.count("crashed; restarting it and ending its episode") == 2
        assert (raw["obs"] == 0).all(), "a restarted game starts a fresh episode"
        for _ in range(5):
            envs.step_async(np.zeros((2, 2), dtype=int))
            raw, reward, done, won = envs.step_wait()
        assert done.all() and (reward == 1).all()
    finally:
        envs.close()


class UnrestartableGame(FakeStarCraft2Env):
    """Crashes at step 3, like its parent, and its replacement (a new seed) fails to start."""

    def __init__(self, map_name, seed):
        if seed >= 100_000:
            raise RuntimeError("StarCraft II did not start")
        super().__init__(map_name, seed)


def test_sc2_a_crash_warns_and_a_failed_restart_is_one_clear_error(mappo, capfd):
    envs = mappo.SC2VecEnv("3m", 1, seed=0, env_fn=UnrestartableGame)
    try:
        envs.reset()
        with pytest.raises(RuntimeError, match="StarCraft II worker 0 failed") as error:
            for _ in range(3):
                envs.step_async(np.zeros((1, 2), dtype=int))
                envs.step_wait()
        assert "StarCraft II did not start" in str(error.value)
        assert "warning: StarCraft II game (seed 0) crashed" in capfd.readouterr().out
    finally:
        envs.close()


def test_sc2_reset_starts_a_new_episode_in_every_game(mappo):
    envs = mappo.SC2VecEnv("3m", 2, seed=100_000, env_fn=FakeStarCraft2Env)  # these seeds never crash
    try:
        envs.reset()
        for _ in range(4):  # mid-episode (the stand-in's episodes last 5 steps), agent 1 dead
            envs.step_async(np.zeros((2, 2), dtype=int))
            envs.step_wait()
        raw = envs.reset()
        assert (raw["obs"] == 0).all() and raw["alive"].all()
        envs.step_async(np.zeros((2, 2), dtype=int))
        raw, reward, done, won = envs.step_wait()
        assert (raw["obs"] == 1).all() and not done.any(), "after reset() every game is at step 1 of a new episode"
    finally:
        envs.close()


def test_smacv2_scenarios_get_smacv2s_published_settings(mappo, monkeypatch):
    made = []

    def recorder(kind):
        return lambda **kwargs: made.append((kind, kwargs))

    for name in ("smacv2", "smacv2.env", "smacv2.env.starcraft2", "smacv2.env.starcraft2.wrapper"):
        module = types.ModuleType(name)  # a stand-in smacv2 whose envs record what they are given
        module.StarCraft2Env, module.StarCraftCapabilityEnvWrapper = recorder("classic"), recorder("capability")
        monkeypatch.setitem(sys.modules, name, module)
    # smacv2/examples/configs/sc2_gen_{race}.yaml: env args, then the capability config's team_gen
    published = {
        "protoss": (["stalker", "zealot", "colossus"], [0.45, 0.45, 0.1], None),
        "terran": (["marine", "marauder", "medivac"], [0.45, 0.45, 0.1], ["medivac"]),
        "zerg": (["zergling", "baneling", "hydralisk"], [0.45, 0.1, 0.45], ["baneling"]),
    }
    for race, (units, weights, exceptions) in published.items():
        mappo.make_sc2_env(f"{race}_10_vs_11", seed=7)
        kind, kwargs = made.pop()
        config = kwargs.pop("capability_config")
        assert kind == "capability"
        assert kwargs == dict(map_name=f"10gen_{race}", seed=7, use_unit_ranges=True, obs_own_pos=True)
        assert (config["n_units"], config["n_enemies"]) == (10, 11)
        team_gen = config["team_gen"]
        assert (team_gen["dist_type"], team_gen["unit_types"], team_gen["weights"]) == (
            "weighted_teams",
            units,
            weights,
        )
        assert team_gen["observe"] and (team_gen.get("exception_unit_types") or None) == exceptions
        assert config["start_positions"] == dict(dist_type="surrounded_and_reflect", p=0.5, map_x=32, map_y=32)
    mappo.make_sc2_env("3s5z", seed=7)
    assert made.pop() == ("classic", dict(map_name="3s5z", seed=7)), "classic maps keep SMAC's defaults"


TRAINER = """
import os, sys, time
sys.path[:0] = [{tests!r}, {root!r}]
from helpers import load_script
from test_smac_common import FakeStarCraft2Env

class Game(FakeStarCraft2Env):
    def close(self):
        open(os.path.join({out!r}, f"closed.{{os.getpid()}}"), "w").close()

m = load_script("mappo_smac")
envs = [m.SC2VecEnv("3m", 2, seed=100_000, env_fn=Game) for _ in range(2)]  # like the train and eval envs
for e in envs:
    e.reset()
print(*[proc.pid for e in envs for _, proc in e.workers], flush=True)
{end}
"""


PROTOCOL_TRAINER = """
import sys
sys.argv[1:] = ["--env-backend", "sc2"]
sys.path[:0] = [{tests!r}, {root!r}]
from helpers import load_script

m = load_script("mappo_smac")  # imports torch and TensorBoard, as a trainer does
from test_smac_common import FakeStarCraft2Env

def game(map_name, seed):  # in the forked worker, as smacv2 does: StarCraft II's protocol modules
    from pysc2 import maps, run_configs
    from pysc2.lib import protocol, units
    from s2clientprotocol import common_pb2, debug_pb2, raw_pb2, sc2api_pb2

    request = sc2api_pb2.Request(ping=sc2api_pb2.RequestPing())
    assert sc2api_pb2.Request.FromString(request.SerializeToString()) == request
    return FakeStarCraft2Env(map_name, seed)

envs = m.SC2VecEnv("3m", 1, seed=100_000, env_fn=game)
envs.reset()
envs.close()
writer = m.SummaryWriter({out!r})
writer.add_scalar("charts/SPS", 1.0, 0)
writer.close()
print("trainer and worker ok")
"""


def test_sc2_protocol_modules_load_in_a_worker_after_the_trainer_loaded_tensorboard(tmp_path):
    """requirements-sc2.txt's pysc2 and s2clientprotocol next to requirements.txt's protobuf and TensorBoard."""
    code = PROTOCOL_TRAINER.format(tests=str(ROOT / "tests"), root=str(ROOT), out=str(tmp_path))
    env = {k: v for k, v in os.environ.items() if k != "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION"}
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120
    )
    assert proc.returncode == 0 and "trainer and worker ok" in proc.stdout, proc.stdout[-3000:]
    assert read_scalars(tmp_path)["charts/SPS"] == [(0, 1.0)]


@pytest.mark.parametrize("end", ["kill -9", "exception"])
def test_sc2_workers_close_their_games_and_exit_with_the_trainer(end, tmp_path):
    code = TRAINER.format(
        tests=str(ROOT / "tests"),
        root=str(ROOT),
        out=str(tmp_path),
        end="time.sleep(600)" if end == "kill -9" else "raise RuntimeError('the trainer fails')",
    )
    with open(tmp_path / "stderr", "w") as stderr:
        trainer = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=stderr, text=True)
    pids = [int(p) for p in trainer.stdout.readline().split()]
    try:
        assert len(pids) == 4, (tmp_path / "stderr").read_text()
        if end == "kill -9":
            trainer.send_signal(signal.SIGKILL)
        trainer.wait(timeout=60)
        deadline = time.time() + 15
        while any(map(is_running, pids)) and time.time() < deadline:
            time.sleep(0.2)
        assert not any(map(is_running, pids)), f"workers outlived the trainer ({end})"
        closed = sorted(int(p.suffix[1:]) for p in tmp_path.glob("closed.*"))
        assert closed == sorted(pids), "every worker closes its game before it exits"
    finally:
        for pid in filter(is_running, pids):
            os.kill(pid, signal.SIGKILL)


# ---------------------------------------------------------------- bad input, presets
SHARED_ERRORS = [  # from the shared argument handling and make_envs: every SMAC script, QMIX too
    (["--map-name", "nonexistent_map"], "unknown map 'nonexistent_map'"),
    (["--map-name", "MMM2"], "--env-backend sc2"),
    (
        ["--env-backend", "sc2", "--map-name", "3m"],
        "pip install --no-deps -r requirements-sc2.txt git+https://github.com/oxwhirl/smacv2.git",
    ),
]
PPO_ERRORS = [  # flags QMIX does not have (it trains on whole episodes)
    (["--num-steps", "95"], "not a multiple of --data-chunk-length"),
    (["--num-minibatches", "7"], "does not divide"),
]


@pytest.mark.parametrize(
    "script, flags, message",
    [(s, f, m) for s in SCRIPTS + ["qmix_smac"] for f, m in SHARED_ERRORS]
    + [(s, f, m) for s in SCRIPTS for f, m in PPO_ERRORS],
)
def test_bad_input_is_one_clear_line(script, flags, message, tmp_path):
    proc = run_script(script, *flags, cwd=tmp_path, timeout=120, check=False)
    assert proc.returncode != 0
    assert message in proc.stdout and "Traceback" not in proc.stdout, proc.stdout[-2000:]


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("content", [None, b"not a checkpoint"], ids=["missing", "unreadable"])
def test_a_bad_resume_file_is_one_clear_line_naming_it(script, content, tmp_path):
    path = tmp_path / "checkpoint.pt"
    if content is not None:
        path.write_bytes(content)
    proc = run_script(script, "--map-name", "3m", "--resume", path, cwd=tmp_path, timeout=120, check=False)
    lines = proc.stdout.strip().splitlines()
    assert proc.returncode != 0 and "Traceback" not in proc.stdout, proc.stdout[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: cannot read checkpoint") and str(path) in lines[0], lines


@pytest.mark.parametrize("script", SCRIPTS)
def test_map_presets_fill_only_what_the_user_did_not_give(script, monkeypatch):
    module = load_script(script)
    preset = module.MAP_PRESETS["5m_vs_6m"]
    name, value = next(iter(preset.items()))
    args = module.parse_args(["--map-name", "5m_vs_6m"])
    assert getattr(args, name) == value
    flag = "--" + name.replace("_", "-")
    given = 3 if isinstance(value, int) and not isinstance(value, bool) else 0.123
    args = module.parse_args(["--map-name", "5m_vs_6m", flag, str(given)])
    assert getattr(args, name) == given


# ---------------------------------------------------------------- smoke, logging, checkpoints
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
    "--update-epochs",
    "2",
]


@pytest.mark.parametrize("script", SCRIPTS)
def test_smoke_run_logs_every_key_and_writes_a_summary(script, tmp_path):
    proc = run_script(script, *SMOKE, cwd=tmp_path, timeout=300)
    assert "iter 3/3" in proc.stdout
    assert [line[:3] for line in iter_lines(proc.stdout)] == [("1", "3", "80"), ("2", "3", "160"), ("3", "3", "240")]
    assert "ubmoduled environments" not in proc.stdout, "jaxmarl's start-up notice is silenced"
    run_dir = only_run_dir(tmp_path)
    scalars = read_scalars(run_dir)
    for key in (
        "charts/SPS",
        "eval/win_rate",
        "eval/episodic_return",
        "losses/policy_loss",
        "losses/value_loss",
        "losses/entropy",
        "losses/approx_kl",
        "losses/clipfrac",
        "losses/explained_variance",
        "time/sampling_s",
        "time/updating_s",
    ):
        assert key in scalars, f"{key} missing from {sorted(scalars)}"
    assert [s for s, _ in scalars["time/updating_s"]] == [80, 160, 240]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["global_step"] == 240 and 0.0 <= summary["final_eval"]["win_rate"] <= 1.0


def test_resume_after_a_kill_continues_from_the_checkpoint(tmp_path):
    common = [
        "--map-name",
        "3m",
        "--num-envs",
        "4",
        "--num-steps",
        "20",
        "--eval-episodes",
        "2",
        "--eval-interval",
        "160",
        "--save-model",
    ]
    args = [*common, "--total-timesteps", "100000"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "mappo_smac.py"), *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            ckpts = list((tmp_path / "runs").glob("*/checkpoint.pt")) if (tmp_path / "runs").exists() else []
            if ckpts and torch.load(ckpts[0], weights_only=False)["global_step"] >= 160:
                break
            time.sleep(0.5)
        else:
            pytest.fail("no checkpoint at step >= 160 within 240 s")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    ckpt = torch.load(ckpts[0], weights_only=False)
    saved_step = ckpt["global_step"]
    target = saved_step + 160
    out = run_script(
        "mappo_smac", *common, "--total-timesteps", target, "--resume", ckpts[0], cwd=tmp_path, timeout=240
    ).stdout
    assert f"at global_step={saved_step}" in out
    run_dir = only_run_dir(tmp_path)  # the resumed run logs into the same folder
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["global_step"] == target
    steps = sorted({s for s, _ in read_scalars(run_dir)["time/updating_s"]})
    assert saved_step in steps and target in steps
    resumed = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert resumed["global_step"] == target and resumed["iteration"] == ckpt["iteration"] + 2


AGENTS = {
    "3m": 3,
    "8m": 8,
    "5m_vs_6m": 5,
    "8m_vs_9m": 8,
    "10m_vs_11m": 10,
    "27m_vs_30m": 27,
    "3s5z": 8,
    "3s5z_vs_3s6z": 8,
    "3s_vs_5z": 3,
    "6h_vs_8z": 6,
    "MMM": 10,
    "MMM2": 10,
    "corridor": 6,
    "2c_vs_64zg": 2,
}


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_preset_is_a_valid_configuration(script):
    module = load_script(script)
    for map_name in module.MAP_PRESETS:
        args = module.parse_args(["--map-name", map_name, "--env-backend", "sc2"])
        module.check_algo_args(args, AGENTS[map_name])  # raises SystemExit on an impossible preset


def test_last_action_is_one_hot_and_empty_at_episode_start(mappo):
    raw = dict(
        obs=np.zeros((1, 2, 4), np.float32),
        state=np.zeros((1, 3), np.float32),
        avail=np.ones((1, 2, 5), bool),
        alive=np.ones((1, 2), bool),
    )
    actor_x, _, _, _ = mappo.agent_inputs(raw, torch.tensor([[-1, 2]]), 5)
    assert actor_x[0, 0, -5:].tolist() == [0, 0, 0, 0, 0]
    assert actor_x[0, 1, -5:].tolist() == [0, 0, 1, 0, 0]
    assert actor_x[0, 1, 4:6].tolist() == [0, 1], "one-hot agent id after the obs"


def test_track_mirrors_to_wandb_offline(tmp_path):
    run_script(
        "mappo_smac",
        "--map-name",
        "3m",
        "--num-envs",
        "4",
        "--num-steps",
        "20",
        "--total-timesteps",
        "80",
        "--eval-episodes",
        "2",
        "--track",
        cwd=tmp_path,
        timeout=300,
        env={"WANDB_MODE": "offline"},
    )
    runs = list((tmp_path / "wandb").glob("offline-run-*3m__mappo_smac__1__*"))
    assert len(runs) == 1 and list(runs[0].glob("run-*.wandb")), "wandb must have recorded the run offline"


# ---------------------------------------------------------------- one protocol for the baselines
BASELINES = [s for s in ("mappo_smac", "coppo_smac", "happo_smac") if s in SCRIPTS]
A2PO_OWN_EPOCHS = {"3s5z", "3s_vs_5z", "6h_vs_8z", "MMM"}  # where the A2PO code base gives A2PO other epochs


def effective_args(script, map_name):
    args = vars(load_script(script).parse_args(["--map-name", map_name, "--env-backend", "sc2"]))
    return {k: v for k, v in args.items() if k != "exp_name"}


@pytest.mark.parametrize("map_name", sorted(AGENTS))
def test_the_baselines_share_one_protocol_and_a2po_differs_only_where_its_code_base_does(map_name):
    runs = {script: effective_args(script, map_name) for script in [*BASELINES, "a2po_smac"]}
    reference = runs["happo_smac"]
    for script, args in runs.items():
        shared = sorted(set(args) & set(reference))
        differ = {k: (args[k], reference[k]) for k in shared if args[k] != reference[k]}
        allowed = {"update_epochs"} if script == "a2po_smac" and map_name in A2PO_OWN_EPOCHS else set()
        assert set(differ) <= allowed, f"{script} differs from happo_smac on {map_name}: {differ}"
    coppo = runs["coppo_smac"]
    assert coppo["others_clip_coef"] == pytest.approx(coppo["clip_coef"] / 2), "CoPPO's others-clip is half the clip"

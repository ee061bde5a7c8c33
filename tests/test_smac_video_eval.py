"""--capture-video and --eval-only of the SMAC scripts (README.md, "Watch what it learned"): the SMAX animation and
its frame <-> env step mapping, StarCraft II's replay through the smacv2 stand-in, and the evaluation of a checkpoint,
which must reproduce the run's last evaluation and train nothing. The shared code is mappo_smac.py's (a test keeps the
other SMAC scripts' copies identical); the runs cover mappo_smac.py and QMIX, whose setup and logging are their own."""

import json
import types
from pathlib import Path

import imageio.v2 as imageio
import pytest
from helpers import load_script, only_run_dir, read_scalars, run_script
from PIL import Image, ImageSequence
from test_smac_common import FakeStarCraft2Env


@pytest.fixture(scope="module")
def mappo():
    return load_script("mappo_smac")


def greedy_actor(mappo, envs):
    return mappo.RecurrentMLP(envs.obs_dim + envs.num_agents + envs.num_actions, envs.num_actions, 8, True, 0.01)


def test_smax_video_is_env_0s_first_game_at_two_frames_per_env_step(mappo, tmp_path):
    envs = mappo.SMAXVecEnv("3m", 2, seed=10_001)
    actor, args, dones = greedy_actor(mappo, envs), types.SimpleNamespace(hidden_dim=8, eval_episodes=4), []
    step_wait = envs.step_wait

    def counting_step_wait():  # env 0's done flags, to know its first game's length
        out = step_wait()
        dones.append(bool(out[2][0]))
        return out

    envs.step_wait = counting_step_wait
    plain, no_frame = mappo.greedy_evaluation(actor, envs, args, "cpu")
    assert envs.record is None and no_frame is None, "without a video nothing is recorded"
    assert plain["episodes"] == 4
    dones.clear()
    result, frame = mappo.greedy_evaluation(actor, envs, args, "cpu", str(tmp_path / "videos" / "eval_7"))
    assert result == plain, "every evaluation plays the same seeded games"
    length = dones.index(True) + 1  # env steps of env 0's first game
    assert sorted(p.name for p in (tmp_path / "videos").iterdir()) == ["eval_7.gif", "eval_7.png"], "one game"
    frames = imageio.mimread(tmp_path / "videos" / "eval_7.gif", memtest=False)
    with Image.open(tmp_path / "videos" / "eval_7.gif") as gif:  # the GIF writer merges a frame equal to the last
        durations = [gif.info["duration"] for _ in ImageSequence.Iterator(gif)]
    assert len(durations) == len(frames) and sum(durations) == 2 * length * 100, "2 frames of 0.1 s per env step"
    assert len({f.tobytes() for f in frames}) >= length, "the picture changes at every env step"
    still = imageio.imread(tmp_path / "videos" / "eval_7.png")
    assert still.shape == frames[0].shape == frame.shape and (still == frame).all()
    assert envs.record is None, "the recording ends with the video"


class ReplayGame(FakeStarCraft2Env):
    """The smacv2 stand-in with StarCraft2Env's replay settings; save_replay leaves a marker file per call."""

    resets = 0

    def reset(self):
        super().reset()
        self.resets += 1

    def save_replay(self):
        marker = f"{self.replay_prefix}.seed{self.seed}.resets{self.resets}.t{self.t}"
        Path(self.replay_dir, marker).write_text("")


def test_sc2_saves_env_0s_replay_once_after_its_first_evaluation_game(mappo, tmp_path):
    envs = mappo.SC2VecEnv("3m", 2, seed=100_000, env_fn=ReplayGame)  # these seeds never crash
    videos = tmp_path / "runs" / "3m__mappo_smac__1__1" / "videos"
    try:
        args = types.SimpleNamespace(hidden_dim=8, eval_episodes=4)
        _, frame = mappo.greedy_evaluation(greedy_actor(mappo, envs), envs, args, "cpu", str(videos / "eval_9"))
        envs.reset()  # the worker has handled every message
    finally:
        envs.close()
    assert frame is None
    # worker 0 (seed 100000), after the game's first episode (reset, 5 steps, auto-reset) and before the second
    assert [p.name for p in videos.iterdir()] == ["eval_9.seed100000.resets2.t0"]


# ---------------------------------------------------------------- --eval-only on a tiny run's checkpoint
TINY = ["--map-name", "3m", "--num-envs", "4", "--num-steps", "20", "--total-timesteps", "80", "--eval-episodes", "3"]
OWN = {"mappo_smac": [], "qmix_smac": ["--batch-episodes", "4", "--buffer-size", "16"]}


@pytest.fixture(scope="module", params=sorted(OWN))
def trained(request, tmp_path_factory):
    """A tiny run with checkpoints and videos: (script, its flags, cwd, run folder)."""
    script, cwd = request.param, tmp_path_factory.mktemp(request.param)
    flags = [*TINY, *OWN[script], "--seed", "2"]
    run_script(script, *flags, "--save-model", "--capture-video", cwd=cwd)
    return script, flags, cwd, only_run_dir(cwd)


def test_eval_only_reproduces_the_last_evaluation_and_trains_nothing(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    script, flags, cwd, run_dir = trained
    ckpt, events = run_dir / "checkpoint.pt", sorted(run_dir.glob("events.*"))
    saved, summary = ckpt.read_bytes(), json.loads((run_dir / "summary.json").read_text())
    proc = run_script(script, *flags, "--eval-only", "--resume", ckpt, "--capture-video", cwd=cwd)
    result = json.loads((run_dir / "eval.json").read_text())
    assert result == dict(summary["final_eval"], checkpoint=str(ckpt.resolve()), global_step=80, seed=2, episodes=3)
    line = f"eval-only {ckpt} step 80: win rate {result['win_rate']:.3f} return {result['episodic_return']:.2f}"
    assert f"{line} over 3 episodes (seed 2)" in proc.stdout.splitlines()
    scalars = read_scalars(run_dir)
    for tag in ("win_rate", "episodic_return"):
        assert scalars[f"eval/{tag}"][-1] == (80, pytest.approx(result[tag], rel=1e-6))
    assert "iter " not in proc.stdout and only_run_dir(cwd) == run_dir and ckpt.read_bytes() == saved
    assert sorted(run_dir.glob("events.*")) == events, "no TensorBoard writes"
    acc = EventAccumulator(str(run_dir), size_guidance={"images": 0})
    acc.Reload()
    assert [e.step for e in acc.Images("eval/frame")] == [80], "training logs each evaluation's still frame"
    videos = run_dir / "videos"
    names = sorted(p.name for p in videos.iterdir())
    assert names == [f"{s}_80.{e}" for s in ("eval", "eval_only") for e in ("gif", "png")]
    train, again = (imageio.mimread(videos / f"eval{s}_80.gif", memtest=False) for s in ("", "_only"))
    assert len(train) == len(again) and all((a == b).all() for a, b in zip(train, again)), "the same game"


@pytest.mark.parametrize("mode", ["--eval-only", "--resume"])
@pytest.mark.parametrize("flag", [["--map-name", "2s3z"], ["--map-name", "3m", "--hidden-dim", "32"]])
def test_a_checkpoint_of_another_map_or_width_is_refused_naming_both(trained, mode, flag):
    script, _, cwd, run_dir = trained
    if mode == "--resume" and script == "qmix_smac":
        pytest.skip("one script suffices for the plain --resume: QMIX's check is the same loop as for --eval-only")
    flags = [*flag, "--resume", run_dir / "checkpoint.pt"] + ["--eval-only"] * (mode == "--eval-only")
    proc = run_script(script, *flags, cwd=cwd, timeout=120, check=False)
    assert proc.returncode != 0 and only_run_dir(cwd) == run_dir, proc.stdout[-2000:]
    key, was, now = ("map_name", "3m", "2s3z") if flag[1] == "2s3z" else ("hidden_dim", 64, 32)
    line = f"error: the checkpoint has {key} {was}, not {now}: pass the flags it had."
    assert proc.stdout.strip().splitlines() == [line]


def test_eval_only_needs_a_checkpoint(mappo):
    """parse_args is the shared argument handling of every SMAC script, QMIX's too."""
    with pytest.raises(SystemExit, match=r"^error: --eval-only needs --resume path/to/checkpoint.pt.$"):
        mappo.parse_args(["--map-name", "3m", "--eval-only"])

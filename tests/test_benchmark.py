"""benchmark/: the report step on synthetic TensorBoard logs (hand-computed tables, IQM, times), the
launcher's skip/resume logic, bounded parallelism and Slurm path on a fake script, a dry run of every
preset whose commands the training scripts accept, and one tiny real launch + report end to end."""

import importlib.util
import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tyro
from helpers import ROOT, load_script
from torch.utils.tensorboard import SummaryWriter


def load_benchmark(name):
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", ROOT / "benchmark" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


launch = load_benchmark("launch")
report = load_benchmark("report")


def fake_run(runs_dir, task, exp_name, seed, scalars, finished=True, unix_time=1_700_000_000):
    """A run folder as the scripts write it: TensorBoard scalars {tag: [(step, value)]}, summary.json if finished."""
    d = Path(runs_dir) / f"{task}__{exp_name}__{seed}__{unix_time}"
    writer = SummaryWriter(str(d))
    for tag, points in scalars.items():
        for step, value in points:
            writer.add_scalar(tag, value, step)
    writer.close()
    if finished:
        (d / "summary.json").write_text(json.dumps(dict(task=task, algo=exp_name, seed=seed)))
    return d


def win_run(runs_dir, task, exp_name, seed, final, **kw):
    """SMAC-like run: an early eval at 0.0 (must not count) and the final eval `final` at step 200."""
    return fake_run(
        runs_dir,
        task,
        exp_name,
        seed,
        {
            "eval/win_rate": [(0, 0.0), (100, 0.3), (200, final)],
            "eval/episodic_return": [(0, 0.1), (100, 0.5), (200, 1.5)],
        },
        **kw,
    )


# ---------------------------------------------------------------- report: tables by hand
@pytest.fixture(scope="module")
def smac_report(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    finals = {
        ("3m", "mappo_smac-smax-1M"): [0.5, 0.75, 1.0],
        ("3m", "a2po_smac-smax-1M"): [1.0, 1.0, 1.0],
        ("3s5z", "mappo_smac-smax-1M"): [0.25, 0.25, 0.5],
        ("3s5z", "a2po_smac-smax-1M"): [0.5, 0.5, 0.75],
    }
    for (task, exp), values in finals.items():
        for seed, v in enumerate(values, 1):
            win_run(runs, task, exp, seed, v, unix_time=1_700_000_100)
    win_run(runs, "3m", "mappo_smac-smax-1M", 1, 0.0, unix_time=1_700_000_000)  # older finished duplicate of seed 1
    win_run(runs, "3m", "mappo_smac-smax-1M", 4, 0.0, finished=False)  # killed run: left out
    out = tmp_path_factory.mktemp("out")
    assert report.main(["--runs-dir", str(runs), "--out", str(out), "--bootstrap-samples", "200"]) == 0
    return out


def test_win_rate_table_median_std_bold_and_overall(smac_report):
    table = (smac_report / "smac_win_rate.md").read_text()
    # 3s5z mappo [25, 25, 50]: median 25, std sqrt(((−1/12)^2*2 + (1/6)^2)/3) = 11.8; 3s5z comes first (talk order)
    assert "| Task | MAPPO | A2PO | seeds |" in table
    assert "| 3s5z | 25.0 (11.8) | **50.0 (11.8)** | 3 |" in table
    assert "| 3m | 75.0 (20.4) | **100.0 (0)** | 3 |" in table  # [50, 75, 100]: std 20.41
    assert "| overall | 50.0 (16.1) | **75.0 (5.89)** | 2 maps |" in table
    assert table.index("| 3s5z |") < table.index("| 3m |")
    data = json.loads((smac_report / "results.json").read_text())["smac_win_rate"]["smax"]
    assert data["3m"]["mappo"] == {"median": 75.0, "std": pytest.approx(20.412, abs=1e-3), "n": 3}


def test_qmix_is_the_fifth_column_in_the_talks_order(tmp_path):
    for exp, final in (
        ("qmix_smac-smax-1M", 0.25),
        ("a2po_smac-smax-1M", 1.0),
        ("mappo_smac-smax-1M", 0.5),
        ("happo_smac-smax-1M", 0.75),
        ("coppo_smac-smax-1M", 0.5),
    ):
        win_run(tmp_path / "runs", "3m", exp, 1, final)
    report.main(["--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "--bootstrap-samples", "50"])
    table = (tmp_path / "out" / "smac_win_rate.md").read_text()
    assert "| Task | MAPPO | CoPPO | HAPPO | A2PO | QMIX | seeds |" in table
    assert "| 3m | 50.0 (0) | 50.0 (0) | 75.0 (0) | **100.0 (0)** | 25.0 (0) | 1 |" in table


def test_qmix_joins_the_smac_win_rate_presets_but_not_the_speed_preset():
    for preset in ("smac-quick", "smac-paper"):
        cells = launch.preset_cells(preset)
        assert [c.script for c in cells if c.task == "3s5z" and c.seed == 1 and c.tag == "smax"] == [
            "mappo_smac",
            "coppo_smac",
            "happo_smac",
            "a2po_smac",
            "qmix_smac",
        ]
    assert "qmix_smac" not in {c.script for c in launch.preset_cells("speed")}  # no epochs to equalise


def test_every_report_file_has_the_provenance_header(smac_report):
    import subprocess

    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    for name in ("report.md", "smac_win_rate.md", "aggregate_iqm.md", "curves.md"):
        text = (smac_report / name).read_text()
        assert f"- commit: `{head}" in text and "- command: `python benchmark/report.py --runs-dir" in text, name
        assert "CPUs" in text and "- machine:" in text, name
    assert "1 (task, exp_name, seed) without a finished run left out" in (smac_report / "report.md").read_text()


def test_learning_curve_pngs_and_their_median_and_band(smac_report):
    for name in ("smac_smax_3m.png", "smac_smax_3s5z.png", "../aggregate_iqm.png"):
        assert (smac_report / "curves" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    steps = np.array([0, 10, 20])
    series = [
        (steps, np.array([0.0, 0.2, 0.4])),
        (steps, np.array([0.0, 0.4, 0.8])),
        (steps, np.array([0.0, 0.6, 1.0])),
        (np.array([0, 10]), np.array([0.0, 0.3])),
    ]  # a shorter run: no extrapolation past its end
    grid, med, q1, q3 = report.curve_stats(series)
    assert grid.tolist() == [0, 10, 20]
    assert (
        np.allclose(med, [0.0, 0.35, 0.8]) and np.allclose(q1, [0.0, 0.275, 0.6]) and np.allclose(q3, [0.0, 0.45, 0.9])
    )


def test_iqm_and_stratified_bootstrap_by_hand(smac_report):
    # sorted: 0 .25 .5 .5 | .5 .75 1 1 -> trim 2 each side -> mean(.5, .5, .5, .75) = 0.5625
    point, lo, hi = report.iqm_with_ci([[0.0, 0.25, 0.5, 1.0], [0.5, 0.5, 0.75, 1.0]], n_resamples=500)
    assert point == pytest.approx(0.5625) and 0.0 <= lo <= point <= hi <= 1.0 and hi > lo
    # stratified: each task keeps its 4 runs, so the resampled set is always four 0s and four 1s -> IQM 0.5
    # exactly (resampling the pooled 8 scores instead would move it)
    assert report.iqm_with_ci([[0.0] * 4, [1.0] * 4], n_resamples=500) == (0.5, 0.5, 0.5)
    assert np.isnan(report.iqm_with_ci([[0.3], [0.5, 0.7]])[1])  # one seed: no CI
    agg = json.loads((smac_report / "results.json").read_text())["aggregate_iqm"]["smac/smax"]
    # mappo: 0.25 .25 .5 .5 .75 1 -> trim 1 each side -> mean(.25, .5, .5, .75) = 0.5
    assert agg["mappo"]["iqm"] == pytest.approx(0.5) and agg["mappo"]["tasks"] == 2 and agg["mappo"]["runs"] == 6
    assert agg["a2po"]["iqm"] == pytest.approx(0.8125)  # .5 .5 .75 1 1 1 -> mean(.5, .75, 1, 1)


def test_training_time_table_normalised_to_mappo(tmp_path):
    def timed(exp, sampling, updating):
        steps = [3200 * (i + 1) for i in range(len(sampling))]
        fake_run(
            tmp_path / "runs",
            "3s5z",
            exp,
            1,
            {
                "time/sampling_s": list(zip(steps, sampling)),
                "time/updating_s": list(zip(steps, updating)),
                "eval/win_rate": [(steps[-1], 0.0)],
            },
        )

    timed("mappo_smac-smax-32k", [10.0, 1.0, 1.0], [5.0, 0.5, 0.5])  # first iteration (compile) left out: 2 + 1
    timed("a2po_smac-smax-32k", [10.0, 1.2, 1.2], [5.0, 1.05, 1.05])  # 2.4 + 2.1 = 4.5 = 1.50 x MAPPO
    # the speed preset's GRF run: no evaluation at all, only A2PO -> absolute times, no curve, no return table
    fake_run(
        tmp_path / "runs",
        "5_vs_5",
        "a2po_grf-20k",
        1,
        {"time/sampling_s": [(1, 9.0), (2, 60.0), (3, 60.0)], "time/updating_s": [(1, 9.0), (2, 30.0), (3, 30.0)]},
    )
    out = tmp_path / "out"
    report.main(["--runs-dir", str(tmp_path / "runs"), "--out", str(out)])
    table = (out / "training_time.md").read_text()
    row = "| 3s5z (smax) | 1.00 (0.67+0.33)<br>3s (2s+1s) | 1.50 (0.80+0.70)<br>4s (2s+2s) | 2 |"
    assert row + " 1.00 / 1.02 / 1.10 / 1.30 |" in table  # the talk's figures beside ours
    assert "| 5_vs_5 | – | 3m00s (2m00s+1m00s) | 2 |" in table
    assert not (out / "mamujoco_return.md").exists() and sorted(p.name for p in (out / "curves").iterdir()) == [
        "smac_smax_3s5z.png"
    ]
    data = json.loads((out / "results.json").read_text())["training_time"]["3s5z (smax)"]["a2po"]
    assert data["normalised"] == pytest.approx(1.5) and data["sampling_s"] == pytest.approx(2.4)


def test_grf_behaviour_table_uses_the_final_evaluation_only(tmp_path):
    def grf(exp, seed, goals, lost, rate_at_end):
        scalars = {
            "eval/win_rate": [(100, 0.0), (200, 1.0)],
            "eval/goals": [(100, 0.0), (200, goals)],
            "eval/lost": [(200, lost)],
            "eval/assists": [(200, 0.5)],
            "eval/passes_completed": [(200, 3.0)],
            "eval/pass_rate": [(100, 0.9)] + ([(200, rate_at_end)] if rate_at_end is not None else []),
        }
        fake_run(tmp_path / "runs", "5_vs_5", exp, seed, scalars)

    grf("a2po_grf-1M", 1, 9.0, 1.0, 0.6)
    grf("a2po_grf-1M", 2, 7.0, 1.0, None)  # no pass attempted in the last eval: NaN, not the older 0.9
    grf("mappo_grf-1M", 1, 2.0, 0.5, 0.2)
    grf("mappo_grf-1M", 2, 2.0, 0.5, 0.2)
    out = tmp_path / "out"
    report.main(["--runs-dir", str(tmp_path / "runs"), "--out", str(out)])
    table = (out / "grf_behaviour.md").read_text()
    assert "| Goal | 2.00 (0.00) | **8.00 (1.00)** |" in table
    assert "| Lost | **0.50 (0.00)** | 1.00 (0.00) |" in table  # lower is better
    assert "| Pass rate % | 20.00 (0.00) | **60.00 (0.00)** |" in table
    assert "| 5_vs_5 | **100.0 (0)** | **100.0 (0)** | 2 |" in (out / "grf_win_rate.md").read_text()


def test_grf_behaviour_table_has_the_talks_layout_for_the_four_algorithms(tmp_path):
    for algo, goals in (("a2po", 9.0), ("happo", 2.7), ("mappo", 2.0), ("coppo", 4.4)):  # any launch order
        metrics = ("win_rate", "goals", "lost", "assists", "passes_completed", "pass_rate")
        fake_run(tmp_path / "runs", "5_vs_5", f"{algo}_grf-1M", 1, {f"eval/{m}": [(100, goals)] for m in metrics})
    report.main(["--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "out")])
    table = (tmp_path / "out" / "grf_behaviour.md").read_text()
    assert "| Metric | MAPPO | CoPPO | HAPPO | A2PO |" in table
    assert "| Goal | 2.00 (0.00) | 4.40 (0.00) | 2.70 (0.00) | **9.00 (0.00)** |" in table
    assert "| Lost | **2.00 (0.00)** | 4.40 (0.00) | 2.70 (0.00) | 9.00 (0.00) |" in table


def test_mamujoco_grf_and_speed_presets_run_the_four_algorithms_on_every_task():
    for preset in ("mamujoco-quick", "mamujoco-paper", "grf-quick", "grf-paper", "speed"):
        cells = launch.preset_cells(preset)
        for task in {c.task for c in cells}:
            algos = [c.script.split("_")[0] for c in cells if c.task == task and c.seed == 1]
            assert algos == ["mappo", "coppo", "happo", "a2po"], (preset, task)
            assert len({c.extra for c in cells if c.task == task}) == 1, "the same flags for every algorithm"
    speed = {c.task for c in launch.preset_cells("speed")}
    assert {"Humanoid-9_8", "Ant-4x2", "Humanoid-17x1", "5_vs_5", "3s5z", "27m_vs_30m"} == speed  # the talk's rows


def test_training_time_is_normalised_to_mappo_on_each_task_next_to_the_talks(tmp_path):
    for algo, update in (("mappo", 1.0), ("coppo", 1.5), ("happo", 2.0), ("a2po", 3.0)):
        steps, sampling, updating = [4000, 8000, 12000], [9.0, 2.0, 2.0], [9.0, update, update]
        scalars = {"time/sampling_s": list(zip(steps, sampling)), "time/updating_s": list(zip(steps, updating))}
        fake_run(tmp_path / "runs", "Humanoid-17x1", f"{algo}_mamujoco-40k", 1, scalars)
    report.main(["--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "out")])
    table = (tmp_path / "out" / "training_time.md").read_text()
    assert "| Task | MAPPO | CoPPO | HAPPO | A2PO | iterations timed | talk (MAPPO / CoPPO / HAPPO / A2PO) |" in table
    row = next(line for line in table.splitlines() if line.startswith("| Humanoid-17x1 |"))
    cells = [c.split("<br>")[0] for c in row.split(" | ")[1:5]]  # MAPPO: 4 + 2 = 6 s; CoPPO 4 + 3 = 7 s, ...
    assert cells == ["1.00 (0.67+0.33)", "1.17 (0.67+0.50)", "1.33 (0.67+0.67)", "1.67 (0.67+1.00)"]
    assert row.endswith("| 2 | 1.00 / 1.41 / 1.39 / 1.60 |")


def test_sc2_and_smax_runs_get_separate_tables_and_aggregates(tmp_path):
    for seed, (sc2, smax) in enumerate([(1.0, 0.5), (0.75, 0.25)], 1):
        win_run(tmp_path / "runs", "3s5z", "mappo_smac-sc2-10M", seed, sc2)
        win_run(tmp_path / "runs", "3s5z", "mappo_smac-smax-10M", seed, smax)
    win_run(tmp_path / "runs", "MMM", "mappo_smac-sc2-5M", 1, 1.0)
    out = tmp_path / "out"
    report.main(["--runs-dir", str(tmp_path / "runs"), "--out", str(out)])
    sc2, smax = (out / "smac_win_rate_sc2.md").read_text(), (out / "smac_win_rate_smax.md").read_text()
    assert "| MMM | **100.0 (0)** | 1 |" in sc2 and "| 3s5z | **87.5 (12.5)** | 2 |" in sc2
    assert "| overall | **93.8 (6.25)** | 2 maps |" in sc2  # MMM (5M) and 3s5z (10M) are one sc2 table
    assert "| 3s5z | **37.5 (12.5)** | 2 |" in smax and "MMM" not in smax
    agg = json.loads((out / "results.json").read_text())["aggregate_iqm"]
    assert agg["smac/smax"]["mappo"]["iqm"] == pytest.approx(0.375) and agg["smac/sc2"]["mappo"]["tasks"] == 2
    assert sorted(p.name for p in (out / "curves").iterdir()) == [
        "smac_sc2_3s5z.png",
        "smac_sc2_MMM.png",
        "smac_smax_3s5z.png",
    ]


# ---------------------------------------------------------------- launcher
def test_skip_finished_and_resume_logic(tmp_path):
    cell = launch.Cell("mappo_smac", "3m", ("--map-name", "3m"), 1, 300_000, tag="smax")
    assert cell.exp_name == "mappo_smac-smax-300k" and launch.budget_label(10_000_000) == "10M"
    assert launch.cell_state(cell, tmp_path / "missing") == ("new", None)
    fake = lambda name: (tmp_path / name).mkdir()  # noqa: E731
    fake("3m__mappo_smac-smax-300k__10__1700000000")  # seed 10, not seed 1
    fake("3m__mappo_smac-smax-1M__1__1700000000")  # another budget
    fake("3m__coppo_smac-smax-300k__1__1700000000")  # another algorithm
    for name in (
        "3m__mappo_smac-smax-300k__10__1700000000",
        "3m__mappo_smac-smax-1M__1__1700000000",
        "3m__coppo_smac-smax-300k__1__1700000000",
    ):
        (tmp_path / name / "summary.json").write_text("{}")
    assert launch.cell_state(cell, tmp_path) == ("new", None)
    killed = tmp_path / "3m__mappo_smac-smax-300k__1__1700000100"
    killed.mkdir()
    (killed / "checkpoint.pt").write_bytes(b"x")
    assert launch.cell_state(cell, tmp_path) == ("resume", killed / "checkpoint.pt")
    assert launch.command(cell, tmp_path, killed / "checkpoint.pt")[-2:] == ["--resume", str(killed / "checkpoint.pt")]
    (killed / "summary.json").write_text("{}")
    assert launch.cell_state(cell, tmp_path) == ("done", killed)


PRESET_SIZES = {
    "smac-quick": 45,
    "smac-paper": 500,
    "mamujoco-quick": 168,
    "mamujoco-paper": 280,
    "grf-quick": 24,
    "grf-paper": 40,
    "speed": 24,
}


def test_dry_run_of_every_preset_lists_commands_the_scripts_accept(tmp_path, capsys):
    assert set(PRESET_SIZES) == set(launch.PRESETS)
    scripts = {}
    for preset, size in PRESET_SIZES.items():
        assert launch.main([preset, "--dry-run", "--runs-dir", str(tmp_path / preset)]) == 0
        lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("python ")]
        assert len(lines) == size, preset
        assert len({line for line in lines}) == size  # every cell distinct
        for line in lines:
            words = shlex.split(line)
            argv, script = words[2:], words[1][: -len(".py")]
            if script not in scripts:
                scripts[script] = load_script(script)
            if script.endswith("_smac"):
                args = scripts[script].parse_args(argv)  # checks map and backend too
                assert args.map_name in line
            else:
                tyro.cli(scripts[script].Args, args=argv)
    # a finished cell drops out of the dry run
    fake_run(tmp_path / "speed", "3s5z", "mappo_smac-smax-32k", 1, {"eval/win_rate": [(0, 0.0)]})
    launch.main(["speed", "--dry-run", "--runs-dir", str(tmp_path / "speed")])
    out = capsys.readouterr().out
    assert "24 runs, 1 finished, 23 to run" in out
    assert "mappo_smac.py --map-name 3s5z" not in out and "mappo_smac.py --map-name 27m_vs_30m" in out


def test_smac_paper_grid_is_the_talks_maps_and_budgets():
    cells = launch.preset_cells("smac-paper")
    sc2 = {c.task: c.total_timesteps for c in cells if c.tag == "sc2"}
    smax = {c.task for c in cells if c.tag == "smax"}
    assert (
        len(sc2) == 12 and sc2["MMM"] == 5_000_000 and sc2["6h_vs_8z"] == 15_000_000 and sc2["corridor"] == 10_000_000
    )
    assert smax == set(sc2) - {"MMM", "MMM2", "corridor", "2c_vs_64zg"}
    assert smax <= set(load_script("mappo_smac").SMAX_EPISODE_LIMITS)
    assert {c.seed for c in cells} == {1, 2, 3, 4, 5}
    speed = [c for c in launch.preset_cells("speed") if c.task == "3s5z"]
    assert len(speed) == 4 and len({c.extra for c in speed}) == 1 and "--update-epochs" in speed[0].extra


FAKE_SCRIPT = """
import json, os, sys, time
a = dict(zip(sys.argv[1::2], sys.argv[2::2]))
with open(os.path.join(os.path.dirname(__file__), "spans.txt"), "a") as f:
    f.write(f"start {time.time()}\\n")
time.sleep(0.4)
with open(os.path.join(os.path.dirname(__file__), "spans.txt"), "a") as f:
    f.write(f"end {time.time()}\\n")
if a["--seed"] == "3":
    sys.exit("error: seed 3 fails")
d = os.path.join(a["--runs-dir"], f'{a["--map-name"]}__{a["--exp-name"]}__{a["--seed"]}__{int(time.time())}')
os.makedirs(d)
open(os.path.join(d, "summary.json"), "w").write("{}")
"""


def test_eta_weights_cells_by_their_env_steps():
    assert launch.eta(60.0, 100, 400) == "0:03:00"  # a quarter of the steps in a minute: three minutes left
    assert launch.eta(60.0, 400, 400) == "0:00:00"


def test_local_backend_bounds_parallel_runs_and_reports_failures(tmp_path, capsys):
    (tmp_path / "mappo_smac.py").write_text(FAKE_SCRIPT)
    runs = tmp_path / "runs"
    cells = [launch.Cell("mappo_smac", "3m", ("--map-name", "3m"), s, 100, tag="smax") for s in (1, 2, 3, 4, 5)]
    results = launch.run_local([(c, None) for c in cells], runs, max_parallel=2, root=tmp_path)
    assert sorted((c.seed, ok) for c, ok, _ in results) == [(1, True), (2, True), (3, False), (4, True), (5, True)]
    assert "seed 3 fails" in launch.log_path(cells[2], runs).read_text()
    events = sorted(
        (float(t), kind) for kind, t in (line.split() for line in (tmp_path / "spans.txt").read_text().splitlines())
    )
    running, peak = 0, 0
    for _, kind in events:
        running += 1 if kind == "start" else -1
        peak = max(peak, running)
    assert peak == 2  # never more than --max-parallel, and it did run two at once
    assert [launch.cell_state(c, runs)[0] for c in cells] == ["done", "done", "new", "done", "done"]
    progress = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[")]
    assert [line.split("; ")[1].split(",")[0] for line in progress] == [f"{i}/5 cells done" for i in range(1, 6)]
    assert progress[-1].endswith("ETA 0:00:00") and all(re.search(r"ETA \d+:\d\d:\d\d$", line) for line in progress)


def test_slurm_backend_submits_through_submitit(tmp_path):
    pytest.importorskip("submitit")
    (tmp_path / "mappo_smac.py").write_text(FAKE_SCRIPT)
    runs = tmp_path / "runs"
    cells = [launch.Cell("mappo_smac", "3m", ("--map-name", "3m"), s, 100, tag="smax") for s in (1, 2)]
    opts = SimpleNamespace(
        slurm_cluster="debug",
        slurm_job_name="t",
        slurm_time_min=5,
        slurm_cpus=1,
        slurm_gpus=0,
        slurm_mem_gb=1,
        slurm_partition=None,
    )
    jobs = launch.run_slurm([(c, None) for c in cells], runs, 2, opts, root=tmp_path)
    for job in jobs:
        job.result()
    assert [launch.cell_state(c, runs)[0] for c in cells] == ["done", "done"]


# ---------------------------------------------------------------- end to end: a tiny real run
def test_tiny_launch_resumes_and_reports_end_to_end(tmp_path, capsys):
    if not (ROOT / "mappo_smac.py").exists():
        pytest.skip("mappo_smac.py missing")
    runs, out = tmp_path / "runs", tmp_path / "out"
    argv = [
        "smac-quick",
        "--tasks",
        "3m",
        "--algos",
        "mappo",
        "--seeds",
        "1",
        "--total-timesteps",
        "80",
        "--runs-dir",
        str(runs),
        "--",
        "--num-envs",
        "4",
        "--num-steps",
        "20",
        "--eval-episodes",
        "2",
    ]
    start = time.time()
    assert launch.main(argv) == 0, capsys.readouterr().out
    folders = [d for d in runs.iterdir() if d.name.startswith("3m__mappo_smac-smax-80-")]
    assert len(folders) == 1 and (folders[0] / "summary.json").is_file()
    assert json.loads((runs / "launches.jsonl").read_text().splitlines()[0])["preset"] == "smac-quick"
    assert launch.main(argv) == 0  # a second launch finds it finished and runs nothing
    assert "1 finished, 0 to run" in capsys.readouterr().out
    assert len([d for d in runs.iterdir() if d.name.startswith("3m__")]) == 1
    assert report.main(["--runs-dir", str(runs), "--out", str(out)]) == 0
    assert "| 3m | **" in (out / "smac_win_rate.md").read_text()
    assert "runs launched from commit(s)" in (out / "report.md").read_text()
    assert time.time() - start < 120


def test_report_copies_itself_into_a_readme_between_markers(smac_report, tmp_path):
    readme = tmp_path / "docs" / "README.md"
    readme.parent.mkdir()
    readme.write_text(
        "# Bench\n\n## Latest results\n\n<!-- report:smac -->\nold table\n<!-- /report:smac -->\n\nafter\n"
    )
    out = tmp_path / "smac"
    runs = smac_report.parent / "runs_for_readme"
    win_run(runs, "3m", "mappo_smac-smax-1M", 1, 0.5)
    win_run(runs, "3m", "a2po_smac-smax-1M", 1, 1.0)
    argv = ["--runs-dir", str(runs), "--out", str(out), "--bootstrap-samples", "50", "--readme", str(readme)]
    for _ in range(2):  # a second report replaces the first instead of adding to it
        assert report.main(argv) == 0
    text = readme.read_text()
    assert "old table" not in text and text.count("<!-- report:smac -->") == 1 and text.endswith("\n\nafter\n")
    assert text.count("### Benchmark report") == 1 and "#### SMAC win rate %" in text  # headings moved down two
    assert "| 3m | 50.0 (0) | **100.0 (0)** | 1 |" in text and "- commit: `" in text and "- machine:" in text
    assert "](../smac/curves/smac_smax_3m.png)" in text  # links point at the report folder from the README
    # only some parts, each with its own provenance header
    assert report.main(argv + ["--readme-parts", "smac_win_rate", "aggregate_iqm"]) == 0
    text = readme.read_text()
    assert "### SMAC win rate %" in text and "### Aggregate IQM" in text and "Learning curves" not in text
    assert text.count("- command: `python benchmark/report.py") == 2
    for part in ("win_rates", "training_time"):  # a typo; a part this report did not write (no timing logged)
        with pytest.raises(SystemExit, match=f"{part}: this report wrote no such part.*Parts written: .*smac_win_rate"):
            report.main(argv + ["--readme-parts", part])
    readme.write_text("no markers\n")
    with pytest.raises(SystemExit, match="needs one line '<!-- report:smac -->' followed by"):
        report.main(argv)


def test_commit_is_flagged_for_code_changes_but_not_for_the_reports_own_outputs(tmp_path):
    def git(*a):
        return subprocess.run(["git", *a], cwd=tmp_path, check=True, capture_output=True, text=True).stdout.strip()

    git("init", "-q")
    (tmp_path / "benchmark" / "results").mkdir(parents=True)
    for name in ("a2po_smac.py", "benchmark/README.md", "benchmark/results/report.md"):
        (tmp_path / name).write_text("v1\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    head = git("rev-parse", "HEAD")
    (tmp_path / "benchmark" / "README.md").write_text("v2\n")  # what report.py --readme writes
    (tmp_path / "benchmark" / "results" / "report.md").write_text("v2\n")
    (tmp_path / "notes.txt").write_text("untracked\n")
    assert launch.git_commit(tmp_path) == head
    assert launch.git_commit(tmp_path / "benchmark") == head  # pathspecs are from the top, not the cwd
    (tmp_path / "a2po_smac.py").write_text("v2\n")  # the code that makes the numbers
    assert launch.git_commit(tmp_path) == f"{head} (with uncommitted changes)"
    assert launch.git_commit(tmp_path / "benchmark") == f"{head} (with uncommitted changes)"

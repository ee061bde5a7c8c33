# Benchmark launcher: runs a preset grid of (script, task, seed, budget). README: benchmark/README.md.
"""Run a named grid of training runs, a bounded number at a time, locally or as a Slurm job array.

Every grid cell gets a deterministic --exp-name (script, backend, budget), so a cell counts as done as soon
as runs_dir holds a folder `{task}__{exp_name}__{seed}__{unix_time}` with a summary.json in it; a relaunch
skips those and the interrupted sweep resumes (from the cell's last checkpoint.pt where one exists).

Run from anywhere:
    python benchmark/launch.py smac-quick --max-parallel 1            # local, one run at a time
    python benchmark/launch.py smac-paper --backend slurm --slurm-partition gpu --dry-run
    python benchmark/launch.py smac-quick --tasks 3m --algos mappo --seeds 1 -- --num-envs 8   # flags after --
                                                                                              # go to every run
Implementation details
1. Local backend: a thread pool of --max-parallel workers, each blocking on one `subprocess.run`; the
   training scripts are separate processes, so the GIL is not in the way. Each run's stdout+stderr go to
   runs_dir/logs/{task}__{exp_name}__{seed}.log (appended to on a retry).
2. Slurm backend: submitit (one job array, `slurm_array_parallelism` = --max-parallel); each job is
   `bash -c "cd ROOT && exec python SCRIPT ARGS >> LOG 2>&1"` through submitit's CommandFunction, so no
   Python object of this file has to be unpickled on the compute node.
3. Every run gets --save-model, so a run that was killed leaves a checkpoint.pt (written at each eval);
   the relaunch continues it with --resume instead of starting over. Its run folder keeps its name.
4. Flags given after `--` are added to every run and a short hash of them to the exp_name, so runs with
   other settings never count as finished runs of the preset.
5. Each launch appends one JSON line (commit, command, machine, preset, backend) to runs_dir/launches.jsonl;
   report.py names those commits in its header.
"""

import argparse
import datetime
import hashlib
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

ALGOS = ["mappo", "coppo", "happo", "a2po"]  # the talk's column order; SMAC adds QMIX
PPO_SMAC_ALGOS = [f"{a}_smac" for a in ALGOS]
SMAC_ALGOS = PPO_SMAC_ALGOS + ["qmix_smac"]  # the talk's column order
# The talk's SMAC maps and budgets (REFERENCE.md): 10M env steps, 5M on MMM, 15M on 6h_vs_8z.
PAPER_SMAC_MAPS = {
    "MMM": 5_000_000,
    "3s_vs_5z": 10_000_000,
    "2c_vs_64zg": 10_000_000,
    "3s5z": 10_000_000,
    "5m_vs_6m": 10_000_000,
    "8m_vs_9m": 10_000_000,
    "10m_vs_11m": 10_000_000,
    "6h_vs_8z": 15_000_000,
    "3s5z_vs_3s6z": 10_000_000,
    "MMM2": 10_000_000,
    "27m_vs_30m": 10_000_000,
    "corridor": 10_000_000,
}
# Maps SMAX can model (no medivac, colossus, baneling, terrain): MMM, MMM2, corridor, 2c_vs_64zg are out.
SMAX_MAPS = {
    "3m",
    "8m",
    "25m",
    "2s3z",
    "3s5z",
    "5m_vs_6m",
    "8m_vs_9m",
    "10m_vs_11m",
    "27m_vs_30m",
    "3s5z_vs_3s6z",
    "3s_vs_5z",
    "6h_vs_8z",
    "smacv2_5_units",
    "smacv2_10_units",
    "smacv2_20_units",
}
# smac-quick: sized to finish in well under two hours on 2 cores (--max-parallel 2 --threads-per-run 1).
# 5m_vs_6m is left out: no algorithm won there within 1M steps (the talk trains it for 10M).
QUICK_SMAC_MAPS = {"3m": 200_000, "2s3z": 300_000, "3s5z": 300_000}
# The 14 MA-MuJoCo tasks of the A2PO code base.
MAMUJOCO_TASKS = [
    ("Ant", "2x4"),
    ("Ant", "4x2"),
    ("Ant", "8x1"),
    ("HalfCheetah", "2x3"),
    ("HalfCheetah", "3x2"),
    ("HalfCheetah", "6x1"),
    ("Walker2d", "2x3"),
    ("Walker2d", "3x2"),
    ("Walker2d", "6x1"),
    ("Hopper", "3x1"),
    ("Humanoid", "9|8"),
    ("Humanoid", "17x1"),
    ("HumanoidStandup", "9|8"),
    ("HumanoidStandup", "17x1"),
]
SPEED_MAMUJOCO = [("Humanoid", "9|8"), ("Ant", "4x2"), ("Humanoid", "17x1")]  # the talk's training-time rows
GRF_QUICK = ["academy_3_vs_1_with_keeper", "academy_pass_and_shoot_with_keeper"]
GRF_PAPER = ["5_vs_5", "11_vs_11_stochastic"]  # the talk's full-game scenarios (behaviour table: 5_vs_5)
# speed: identical rollout and epochs for the four PPO algorithms (the training-time table; QMIX has no epochs).
SPEED_SMAC = [
    "--num-envs",
    "32",
    "--num-steps",
    "100",
    "--update-epochs",
    "5",
    "--eval-episodes",
    "4",
    "--eval-interval",
    "1000000000",
]


@dataclass(frozen=True)
class Cell:
    """One run of the grid."""

    script: str  # file stem in the repository root, e.g. "mappo_smac"
    task: str  # the task part of the run-folder name: SMAC map, "Humanoid-9_8", GRF env name
    task_args: tuple  # flags that pick the task, e.g. ("--map-name", "3m", "--env-backend", "smax")
    seed: int
    total_timesteps: int
    extra: tuple = ()  # further flags (preset's, then the user's)
    tag: str = ""  # variant shown in exp_name, e.g. the SMAC backend
    user_hash: str = ""  # hash of the user's extra flags ("" if none)

    @property
    def exp_name(self):
        return "-".join(p for p in (self.script, self.tag, budget_label(self.total_timesteps), self.user_hash) if p)

    def args(self, runs_dir, resume=None):
        out = [
            *self.task_args,
            "--seed",
            str(self.seed),
            "--total-timesteps",
            str(self.total_timesteps),
            "--exp-name",
            self.exp_name,
            "--runs-dir",
            str(runs_dir),
            "--save-model",
            *self.extra,
        ]
        return out + (["--resume", str(resume)] if resume else [])


def budget_label(n):
    """10_000_000 -> '10M', 300_000 -> '300k', 80 -> '80'."""
    for div, unit in ((1_000_000, "M"), (1_000, "k")):
        if n >= div and n % div == 0:
            return f"{n // div}{unit}"
    return str(n)


def smac_cells(maps, backend, seeds, algos=SMAC_ALGOS, extra_fn=lambda budget: ()):
    return [
        Cell(a, m, ("--map-name", m, "--env-backend", backend), s, b, tuple(extra_fn(b)), backend)
        for m, b in maps.items()
        for a in algos
        for s in seeds
    ]


def mamujoco_cells(tasks, budget, seeds, extra=(), algos=ALGOS):
    return [
        Cell(
            f"{a}_mamujoco",
            f"{sc}-{conf}".replace("|", "_"),
            ("--scenario", sc, "--agent-conf", conf),
            s,
            budget,
            extra,
        )
        for sc, conf in tasks
        for a in algos
        for s in seeds
    ]


def grf_cells(envs, budget, seeds, extra=(), algos=ALGOS):
    return [Cell(f"{a}_grf", e, ("--env-name", e), s, budget, tuple(extra)) for e in envs for a in algos for s in seeds]


def preset_cells(name, seeds=None):
    """The grid of a named preset; `seeds` (a list) replaces the preset's seeds."""

    def pick(default):
        return list(seeds) if seeds else list(range(1, default + 1))

    if name == "smac-quick":
        return smac_cells(QUICK_SMAC_MAPS, "smax", pick(3), extra_fn=lambda b: ("--eval-interval", str(b // 20)))
    if name == "smac-paper":
        return smac_cells(PAPER_SMAC_MAPS, "sc2", pick(5)) + smac_cells(
            {m: b for m, b in PAPER_SMAC_MAPS.items() if m in SMAX_MAPS}, "smax", pick(5)
        )
    if name == "mamujoco-quick":
        return mamujoco_cells(MAMUJOCO_TASKS, 300_000, pick(3), ("--eval-interval", "30000", "--eval-episodes", "2"))
    if name == "mamujoco-paper":
        return mamujoco_cells(MAMUJOCO_TASKS, 10_000_000, pick(5))
    if name == "grf-quick":
        return grf_cells(GRF_QUICK, 500_000, pick(3), ("--eval-interval", "50000", "--eval-episodes", "20"))
    if name == "grf-paper":
        return grf_cells(GRF_PAPER, 100_000_000, pick(5))
    if name == "speed":
        # The talk's training-time table: the four algorithms with identical rollouts and epochs, 10 iterations each
        # (report.py drops the first, which holds JAX compilation and worker start-up), no evaluation to speak of.
        # MA-MuJoCo and GRF keep the scripts' own rollouts (4000 and 2048 steps per iteration).
        no_eval = ("--update-epochs", "5", "--eval-episodes", "1", "--eval-interval", "1000000000")
        return (
            smac_cells(
                {"3s5z": 32_000, "27m_vs_30m": 32_000}, "smax", pick(1), PPO_SMAC_ALGOS, extra_fn=lambda b: SPEED_SMAC
            )
            + mamujoco_cells(SPEED_MAMUJOCO, 40_000, pick(1), no_eval)
            + grf_cells(["5_vs_5"], 20_480, pick(1), ("--update-epochs", "5", "--eval-episodes", "0"))
        )
    raise SystemExit(f"error: unknown preset '{name}'. Presets: {', '.join(PRESETS)}.")


PRESETS = {
    "smac-quick": "SMAX 3m (200k), 2s3z and 3s5z (300k), 5 algorithms (4 PPO + QMIX), 3 seeds (about 2 h on 2 cores)",
    "smac-paper": "the talk's 12 maps on StarCraft II (sc2) + the 8 of them SMAX has, 5 algorithms, 5 seeds, 5-15M",
    "mamujoco-quick": "MAPPO, CoPPO, HAPPO and A2PO on the 14 MA-MuJoCo tasks, 3 seeds, 300k steps",
    "mamujoco-paper": "MAPPO, CoPPO, HAPPO and A2PO on the 14 MA-MuJoCo tasks, 5 seeds, 10M steps",
    "grf-quick": "MAPPO, CoPPO, HAPPO and A2PO on GRF academy 3_vs_1_with_keeper and pass_and_shoot_with_keeper, "
    "3 seeds, 500k steps",
    "grf-paper": "MAPPO, CoPPO, HAPPO and A2PO on GRF full games 5_vs_5 and 11_vs_11_stochastic, 5 seeds, 100M steps",
    "speed": "training-time table: MAPPO, CoPPO, HAPPO and A2PO with identical rollouts and epochs (10 iterations, "
    "1 seed) on SMAX 3s5z and 27m_vs_30m, Humanoid 9|8, Ant 4x2, Humanoid 17x1 and GRF 5_vs_5",
}


def run_folders(runs_dir, task, exp_name, seed):
    """Run folders of one cell, oldest first: names `{task}__{exp_name}__{seed}__{unix_time}`."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    found = []
    for d in runs_dir.iterdir():
        parts = d.name.split("__")
        if d.is_dir() and len(parts) == 4 and parts[:3] == [task, exp_name, str(seed)] and parts[3].isdigit():
            found.append((int(parts[3]), d))
    return [d for _, d in sorted(found)]


def cell_state(cell, runs_dir):
    """('done', folder) if a folder has summary.json; ('resume', checkpoint) if a killed run left one;
    ('new', None) otherwise."""
    folders = run_folders(runs_dir, cell.task, cell.exp_name, cell.seed)
    for d in reversed(folders):
        if (d / "summary.json").is_file():
            return "done", d
    for d in reversed(folders):
        if (d / "checkpoint.pt").is_file():
            return "resume", d / "checkpoint.pt"
    return "new", None


def command(cell, runs_dir, resume=None, python=sys.executable, root=ROOT):
    return [python, str(Path(root) / f"{cell.script}.py"), *cell.args(runs_dir, resume)]


def thread_env(threads):
    """Environment variables that pin a run's BLAS/OpenMP/XLA thread pools (0: leave them alone)."""
    if threads <= 0:
        return {}
    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    if threads == 1:
        env["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    return env


def log_path(cell, runs_dir):
    return Path(runs_dir) / "logs" / f"{cell.task}__{cell.exp_name}__{cell.seed}.log"


def eta(elapsed, steps_done, steps_total):
    """Time left at the rate so far, weighting each cell by its env steps: h:mm:ss."""
    return str(datetime.timedelta(seconds=round(elapsed * (steps_total - steps_done) / max(steps_done, 1))))


def run_local(jobs, runs_dir, max_parallel, root=ROOT, threads=0):
    """Run [(cell, resume)] with at most `max_parallel` at a time; returns [(cell, ok, seconds)]."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", **thread_env(threads))

    def run_one(cell, resume):
        path = log_path(cell, runs_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        start = time.time()
        with open(path, "a") as log:
            rc = subprocess.run(
                command(cell, runs_dir, resume, root=root), cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT
            ).returncode
        return cell, rc == 0 and cell_state(cell, runs_dir)[0] == "done", time.time() - start

    results, start = [], time.time()
    steps_total, steps_done = sum(cell.total_timesteps for cell, _ in jobs), 0
    pool = ThreadPoolExecutor(max_workers=max_parallel)
    try:
        futures = [pool.submit(run_one, cell, resume) for cell, resume in jobs]
        for i, fut in enumerate(as_completed(futures), 1):
            cell, ok, seconds = fut.result()
            results.append((cell, ok, seconds))
            steps_done += cell.total_timesteps
            print(
                f"[{i}/{len(jobs)}] {'done' if ok else 'FAILED'} {cell.task} {cell.exp_name} seed {cell.seed} "
                f"({seconds:.0f} s){'' if ok else ', log: ' + str(log_path(cell, runs_dir))}; "
                f"{i}/{len(jobs)} cells done, ETA {eta(time.time() - start, steps_done, steps_total)}",
                flush=True,
            )
    except KeyboardInterrupt:  # Ctrl-C reaches the runs too (same process group); start no queued run
        pool.shutdown(wait=True, cancel_futures=True)
        raise SystemExit("interrupted: run the same command again to resume") from None
    pool.shutdown()
    return results


def run_slurm(jobs, runs_dir, max_parallel, opts, root=ROOT, threads=0):
    """Submit [(cell, resume)] as one submitit job array; returns the submitit jobs."""
    try:
        import submitit
    except ImportError:
        raise SystemExit("error: the slurm backend needs submitit. pip install submitit") from None
    executor = submitit.AutoExecutor(folder=str(Path(runs_dir) / "slurm" / "%j"), cluster=opts.slurm_cluster)
    params = dict(
        name=opts.slurm_job_name,
        timeout_min=opts.slurm_time_min,
        cpus_per_task=opts.slurm_cpus,
        gpus_per_node=opts.slurm_gpus,
        mem_gb=opts.slurm_mem_gb,
        slurm_array_parallelism=max_parallel,
    )
    if opts.slurm_partition:
        params["slurm_partition"] = opts.slurm_partition
    executor.update_parameters(**params)
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in thread_env(threads).items())
    functions = []
    for cell, resume in jobs:
        path = log_path(cell, runs_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        line = (
            f"cd {shlex.quote(str(root))} && {env + ' ' if env else ''}PYTHONUNBUFFERED=1 exec "
            f"{shlex.join(command(cell, runs_dir, resume, root=root))} >> {shlex.quote(str(path))} 2>&1"
        )
        functions.append(submitit.helpers.CommandFunction(["bash", "-c", line], verbose=False))
    with executor.batch():
        submitted = [executor.submit(fn) for fn in functions]
    for (cell, _), job in zip(jobs, submitted):
        print(f"submitted {job.job_id}: {cell.task} {cell.exp_name} seed {cell.seed}", flush=True)
    return submitted


# What report.py itself writes: changes there say nothing about the code that made the numbers,
# and would otherwise flag every report after the first one of a session.
REPORT_OUTPUTS = ("benchmark/results", "benchmark/README.md")


def git_commit(root=ROOT):
    """HEAD, flagged when tracked files other than the report's own outputs differ from it."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        dirty = subprocess.run(
            [
                "git",
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                ":(top)",
                *(f":(top,exclude){p}" for p in REPORT_OUTPUTS),
            ],
            cwd=root,
            capture_output=True,
            text=True,
        ).stdout.strip()
        return out.stdout.strip() + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def machine():
    return f"{platform.platform()}, {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def parse(argv):
    user_extra = []
    if "--" in argv:
        i = argv.index("--")
        argv, user_extra = argv[:i], argv[i + 1 :]
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        epilog="Flags after `--` are passed to every run. Presets: "
        + "; ".join(f"{k}: {v}" for k, v in PRESETS.items()),
    )
    p.add_argument("preset", choices=list(PRESETS), help="which grid to run")
    p.add_argument("--runs-dir", default=None, help="run folders go here (default: benchmark/runs/PRESET)")
    p.add_argument("--backend", choices=["local", "slurm"], default="local", help="run here, or submit to Slurm")
    p.add_argument("--max-parallel", type=int, default=1, help="runs at a time (slurm: array parallelism)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds to run instead of the preset's")
    p.add_argument("--tasks", nargs="+", default=None, help="only these tasks (run-folder names, e.g. 3m Hopper-3x1)")
    p.add_argument("--algos", nargs="+", default=None, help="only these algorithms (mappo coppo happo a2po qmix)")
    p.add_argument("--backends", nargs="+", default=None, help="only these SMAC backends (smax sc2)")
    p.add_argument("--total-timesteps", type=int, default=None, help="budget of every run instead of the preset's")
    p.add_argument(
        "--threads-per-run",
        type=int,
        default=0,
        help="pin each run's OpenMP/MKL/XLA threads (0: leave alone; 1 suits --max-parallel 2 on 2 cores)",
    )
    p.add_argument("--dry-run", action="store_true", help="print the commands of the pending runs and exit")
    p.add_argument("--slurm-partition", default=None, help="slurm partition")
    p.add_argument("--slurm-time-min", type=int, default=48 * 60, help="slurm time limit per run, minutes")
    p.add_argument("--slurm-cpus", type=int, default=8, help="CPUs per run")
    p.add_argument("--slurm-gpus", type=int, default=0, help="GPUs per run")
    p.add_argument("--slurm-mem-gb", type=float, default=16, help="memory per run, GB")
    p.add_argument("--slurm-job-name", default="coop-trust-region", help="slurm job name")
    p.add_argument(
        "--slurm-cluster",
        default="slurm",
        choices=["slurm", "local", "debug"],
        help="submitit cluster: 'slurm', or 'local'/'debug' to try the submission path without Slurm",
    )
    p.add_argument("--wait", action="store_true", help="slurm: wait for the jobs and report failures")
    opts = p.parse_args(argv)
    opts.user_extra = user_extra
    if opts.max_parallel < 1:
        raise SystemExit("error: --max-parallel must be at least 1.")
    return opts


def select(cells, opts):
    if opts.tasks:
        cells = [c for c in cells if c.task in opts.tasks]
    if opts.algos:
        cells = [c for c in cells if c.script.split("_")[0] in opts.algos or c.script in opts.algos]
    if opts.backends:
        cells = [c for c in cells if c.tag in opts.backends]
    if opts.total_timesteps:
        cells = [Cell(**{**c.__dict__, "total_timesteps": opts.total_timesteps}) for c in cells]
    if opts.user_extra:
        h = hashlib.sha1(" ".join(opts.user_extra).encode()).hexdigest()[:6]
        cells = [Cell(**{**c.__dict__, "extra": c.extra + tuple(opts.user_extra), "user_hash": h}) for c in cells]
    if not cells:
        raise SystemExit(
            "error: the filters (--tasks/--algos/--backends) leave no run. Check the names with --dry-run."
        )
    return cells


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    opts = parse(argv)
    runs_dir = Path(opts.runs_dir or ROOT / "benchmark" / "runs" / opts.preset).resolve()
    cells = select(preset_cells(opts.preset, opts.seeds), opts)
    states = [(c, *cell_state(c, runs_dir)) for c in cells]
    done = [c for c, s, _ in states if s == "done"]
    jobs = [(c, where if s == "resume" else None) for c, s, where in states if s != "done"]
    steps = sum(c.total_timesteps for c, _ in jobs)
    print(
        f"# preset {opts.preset}: {len(cells)} runs, {len(done)} finished, {len(jobs)} to run "
        f"({steps / 1e6:.2f}M env steps), runs dir {runs_dir}",
        flush=True,
    )
    if opts.dry_run:
        print(f"# commands run from {ROOT}")
        for cell, resume in jobs:
            print(
                shlex.join(["python", *command(cell, runs_dir, resume, python="python")[1:]]).replace(
                    str(ROOT) + "/", ""
                )
            )
        return 0
    if not jobs:
        return 0
    runs_dir.mkdir(parents=True, exist_ok=True)
    with open(runs_dir / "launches.jsonl", "a") as f:
        f.write(
            json.dumps(
                dict(
                    time=time.strftime("%Y-%m-%d %H:%M:%S"),
                    commit=git_commit(),
                    machine=machine(),
                    command=shlex.join(["python", "benchmark/launch.py", *argv]),
                    preset=opts.preset,
                    backend=opts.backend,
                    runs=len(jobs),
                )
            )
            + "\n"
        )
    if opts.backend == "local":
        results = run_local(jobs, runs_dir, opts.max_parallel, threads=opts.threads_per_run)
        failed = [c for c, ok, _ in results if not ok]
    else:
        submitted = run_slurm(jobs, runs_dir, opts.max_parallel, opts, threads=opts.threads_per_run)
        if not opts.wait:
            print(f"# {len(submitted)} jobs submitted; relaunch the same command after they end to retry failures")
            return 0
        failed = []
        for (cell, _), job in zip(jobs, submitted):
            try:
                job.result()
            except Exception:  # noqa: BLE001 (submitit re-raises the job's failure; the log has the details)
                failed.append(cell)
        failed = [c for c in failed if cell_state(c, runs_dir)[0] != "done"]
    print(f"# {len(jobs) - len(failed)} runs finished, {len(failed)} failed", flush=True)
    for c in failed:
        print(f"FAILED {c.task} {c.exp_name} seed {c.seed}: {log_path(c, runs_dir)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""What several test files share: load a script as a module, run it, read its logs, check its workers."""

import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BANNER = re.compile(r"^\s*# (TRY NOT TO MODIFY|ALGO LOGIC): (.*)$")


def sections(name):
    """{(kind, title): text} for every banner of `name`.py; the text runs to the next banner."""
    out, key, lines = {}, None, []
    for line in (ROOT / f"{name}.py").read_text().splitlines():
        m = BANNER.match(line)
        if m:
            if key:
                out[key] = "\n".join(lines)
            key, lines = (m.group(1), m.group(2)), []
        elif key:
            lines.append(line)
    out[key] = "\n".join(lines)
    return out


def load_script(name):
    """Import `name`.py from the repository root without running its training loop."""
    path = ROOT / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def run_script(name, *args, cwd, timeout=600, env=None, check=True):
    """Run `python name.py args...` in `cwd`; return the CompletedProcess (stdout+stderr merged)."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline", **(env or {})}
    proc = subprocess.run(
        [sys.executable, str(ROOT / f"{name}.py"), *map(str, args)],
        cwd=cwd,
        env=full_env,
        timeout=timeout,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{name}.py {' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stdout[-6000:]}")
    return proc


def parent_pid(pid):
    """The parent pid of a live process, None once it has exited (zombies count as exited)."""
    try:
        state, ppid = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[:2]
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None if state in "ZX" else int(ppid)


def is_running(pid):
    """True while the process lives (an exited, unreaped zombie is not running)."""
    return parent_pid(pid) is not None


def assert_workers_die_with_trainer(name, *args, cwd, num_workers, timeout):
    """Start `python name.py args...`, wait for its `num_workers` child processes, `kill -9` the trainer and
    assert that every one of its workers has exited within `timeout` seconds (leftovers are killed)."""
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / f"{name}.py"), *map(str, args)],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline, workers = time.time() + 180, []
        while len(workers) < num_workers:
            assert proc.poll() is None and time.time() < deadline, f"{name}.py did not start {num_workers} workers"
            time.sleep(0.5)
            workers = [
                int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and parent_pid(p.name) == proc.pid
            ]
        time.sleep(3.0)  # the trainer is stepping them now
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.time() + timeout
    while any(is_running(pid) for pid in workers) and time.time() < deadline:
        time.sleep(0.2)
    alive = [pid for pid in workers if is_running(pid)]
    for pid in alive:
        os.kill(pid, signal.SIGKILL)
    assert not alive, f"{len(alive)} of {len(workers)} workers outlived the killed trainer by {timeout} s"


def read_scalars(run_dir):
    """All scalars of a TensorBoard run folder: {tag: [(step, value), ...]}."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def only_run_dir(cwd):
    """The single run folder a script wrote under cwd/runs."""
    runs = sorted((Path(cwd) / "runs").iterdir())
    assert len(runs) == 1, f"expected one run folder, found {[r.name for r in runs]}"
    return runs[0]


TIME = r"(?:\d+ days?, )?\d+:\d\d:\d\d"
ITER_LINE = re.compile(  # the per-iteration line every script prints (README.md, "Run")
    r"iter (\d+)/(\d+) step (\d+) SPS \d+ train (nan|-?\d+\.\d{3}) eval (nan|-?\d+\.\d{3}) "
    rf"sample \d+\.\d\ds update \d+\.\d\ds elapsed {TIME} ETA {TIME}"
)


def iter_lines(out):
    """(iteration, iterations, step, train, eval) of every per-iteration line in `out`; each must match ITER_LINE."""
    lines = [line for line in out.splitlines() if line.startswith("iter ")]
    assert all(ITER_LINE.fullmatch(line) for line in lines), lines
    return [ITER_LINE.fullmatch(line).groups() for line in lines]

"""The one module shared by the tests: load a script as a module, run it, read its logs."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


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
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", WANDB_MODE="offline", **(env or {}))
    proc = subprocess.run(
        [sys.executable, str(ROOT / f"{name}.py"), *map(str, args)],
        cwd=cwd, env=full_env, timeout=timeout, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{name}.py {' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stdout[-6000:]}")
    return proc


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

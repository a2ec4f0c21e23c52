"""Start the worker directly, the way the supervisor does, for the engine tests.

The run directory comes from `fake_runs.make_run_dir` with the resolved profile in it; the worker
runs tests/data/engine/worker_main.py (training.worker's main with the test tasks registered),
under torchrun for ddp (nproc > 0) or as one plain process.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

from tests.support.fake_runs import make_run_dir
from tests.support.locations import DATA, ROOT
from training.profile import parse_profile
from training.rundir import RUN_DIR_ENV, RunPaths
from training.rundir.events_file import read_all
from training.supervise.launch import free_port

WORKER_MAIN = DATA / "engine" / "worker_main.py"
_serial = itertools.count(1)


def make_run(runs_dir: Path, toml_text: str, name: str = "engine") -> RunPaths:
    """A fresh run directory holding `toml_text`, resolved the way the supervisor writes profile.toml."""
    profile = parse_profile(toml_text, path=f"{name}.toml")
    while True:
        run_id = f"{name}-{next(_serial)}"
        if not (Path(runs_dir) / run_id).exists():
            break
    return make_run_dir(runs_dir, run_id, profile_toml=profile.to_toml(), profile_name=profile.name,
                        mode=profile.launch.mode, state="starting", supervisor_log=None)


def worker_argv(paths: RunPaths, nproc: int = 0) -> list[str]:
    """torchrun for ddp (nproc > 0), a plain process otherwise."""
    if nproc:
        return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
                "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{free_port()}",
                str(WORKER_MAIN), str(paths.root)]
    return [sys.executable, str(WORKER_MAIN), str(paths.root)]


def worker_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})
    env.update(extra)
    return env


def start(paths: RunPaths, nproc: int = 0, **env: str) -> subprocess.Popen:
    """Start in the background; output goes to logs/launch.log (a pipe nobody reads could fill up)."""
    log = open(paths.logs / "launch.log", "ab")
    try:
        return subprocess.Popen(worker_argv(paths, nproc), cwd=ROOT,
                                env=worker_env(**{RUN_DIR_ENV: str(paths.root), **env}),
                                stdout=log, stderr=subprocess.STDOUT)
    finally:
        log.close()


def launch_log(paths: RunPaths) -> str:
    try:
        return (paths.logs / "launch.log").read_text(errors="replace")
    except OSError:
        return ""


def run(paths: RunPaths, nproc: int = 0, timeout: float = 60, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(worker_argv(paths, nproc), cwd=ROOT, env=worker_env(**{RUN_DIR_ENV: str(paths.root), **env}),
                          capture_output=True, text=True, timeout=timeout)


def events(paths: RunPaths, kind: str | None = None) -> list[dict]:
    return [e for e in read_all(paths.events) if kind is None or e["kind"] == kind]

"""Helpers for the engine tests: make a run directory and start the worker like the supervisor does."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from training.events import read_all
from training.profile import parse_profile
from training.rundir import RUN_DIR_ENV, RunPaths, create_run_dir

ROOT = Path(__file__).resolve().parents[3]
WORKER_MAIN = Path(__file__).resolve().parent / "worker_main.py"


def make_run(runs_dir: Path, toml_text: str, name: str = "engine") -> RunPaths:
    profile = parse_profile(toml_text, path=f"{name}.toml")
    paths = create_run_dir(runs_dir, name)
    paths.profile.write_text(profile.to_toml())
    return paths


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")

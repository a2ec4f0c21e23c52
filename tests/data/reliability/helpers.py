"""Shared helpers for tests/test_reliability_*.py: waiting, process accounting, profiles.

Process accounting never trusts one source: `recorded()` reads run.json (pid + create_time, the
way traindeck itself identifies its processes), and `processes_of()` scans the whole process
table for anything whose command line or environment mentions the runs directory, so a process
traindeck forgot to record is found too.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from training import process_group as pg
from training import runs
from training.events import read_all
from training.profile import Profile, parse_profile
from training.rundir import RunPaths, RunState, list_run_dirs, read_run_json

ROOT = Path(__file__).resolve().parents[3]
DATA = Path(__file__).resolve().parent
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else None


def wait_for(predicate, timeout: float, what: str, poll: float = 0.1):
    """Poll until `predicate()` is truthy (returned) or fail after `timeout` s (generous on a loaded box)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(poll)


def profile(body: str, name: str = "rel") -> Profile:
    """A profile from TOML text; relative script paths resolve in tests/data/reliability."""
    return parse_profile(f'name = "{name}"\n' + body, path=str(DATA / f"{name}.toml"))


def custom(script: str, mode: str = "single", args: list[str] | None = None, grace: float = 2.0,
           extra: str = "", nproc: int = 2, name: str = "rel") -> Profile:
    nproc_line = f"nproc_per_node = {nproc}\nbackend = \"gloo\"" if mode == "ddp" else ""
    return profile(f"""
[launch]
mode = "{mode}"
{nproc_line}
stop_grace_s = {grace}
[train]
script = "{DATA / script}"
args = {json.dumps(list(args or []))}
[telemetry]
interval_s = 0.5
{extra}
""", name=name)


def builtin(mode: str = "single", epochs: int = 1, steps: int = 0, samples: int = 4096, hidden: int = 16,
            features: int = 32, log_every: int = 5, extra: str = "", name: str = "rel", grace: float = 3.0) -> Profile:
    nproc_line = "nproc_per_node = 2\nbackend = \"gloo\"" if mode == "ddp" else ""
    steps_line = f"steps_per_epoch = {steps}" if steps else ""
    return profile(f"""
[launch]
mode = "{mode}"
{nproc_line}
stop_grace_s = {grace}
[train]
task = "tiny"
epochs = {epochs}
batch_size = 16
lr = 0.01
log_every = {log_every}
{steps_line}
[task]
samples = {samples}
features = {features}
hidden = {hidden}
[telemetry]
interval_s = 0.5
{extra}
""", name=name)


# ---- process accounting -----------------------------------------------------------------------

def recorded(paths: RunPaths) -> list[pg.ProcRef]:
    """Every process run.json names: supervisor, launcher, workers and their children."""
    data = read_run_json(paths)
    refs = [pg.ProcRef.from_json(data.get("supervisor"), "supervisor"),
            pg.ProcRef.from_json(data.get("launcher"), "launcher")]
    refs += [pg.ProcRef.from_json(p) for p in data.get("processes") or []]
    return list(dict.fromkeys(r for r in refs if r is not None and r.create_time))


def assert_gone(refs: list[pg.ProcRef], timeout: float = 10.0) -> None:
    assert refs, "no processes recorded"
    left = pg.wait_gone(refs, timeout)
    assert not left, f"processes left behind: {left}"


def processes_of(root: Path) -> list[psutil.Process]:
    """Live (non-zombie) processes whose command line or environment mentions `root`."""
    needle = str(Path(root).resolve())
    found = []
    me = os.getpid()
    for p in psutil.process_iter(["pid", "cmdline", "environ", "status"]):
        if p.pid == me or p.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        cmd = " ".join(p.info["cmdline"] or [])
        env = p.info["environ"] or {}
        if needle in cmd or needle in env.get("TRAINDECK_RUN_DIR", "") or needle in env.get("TRAINDECK_RUNS_DIR", ""):
            found.append(p)
    return found


def assert_no_processes_of(root: Path, timeout: float = 10.0) -> None:
    """Nothing anywhere in the process table belongs to `root` (waits out exits in progress)."""
    deadline = time.monotonic() + timeout
    while True:
        left = processes_of(root)
        if not left:
            return
        if time.monotonic() >= deadline:
            desc = []
            for p in left:
                try:
                    desc.append(f"{p.pid} {' '.join(p.cmdline())[:200]}")
                except psutil.Error:
                    pass
            if desc:
                raise AssertionError("processes left behind:\n" + "\n".join(desc))
            return
        time.sleep(0.2)


def listeners(port: int) -> list:
    """Sockets in LISTEN state on `port` (any address, any process)."""
    return [c for c in psutil.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port]


def bound(port: int, pids: set[int]) -> list:
    """Any socket of `pids` (LISTEN or connected) on local `port`."""
    return [c for c in psutil.net_connections(kind="inet") if c.laddr and c.laddr.port == port
            and c.pid in pids]


def statuses(paths: RunPaths) -> list[dict]:
    return [e for e in read_all(paths.events) if e.get("kind") == "status"]


def events(paths: RunPaths, kind: str | None = None) -> list[dict]:
    return [e for e in read_all(paths.events) if kind is None or e.get("kind") == kind]


def wait_step(paths: RunPaths, min_step: int, timeout: float = 90.0) -> int:
    """Wait until the run is live and its summary shows step >= min_step; fail fast if it ended."""
    def ready():
        s = runs.run_summary(paths)
        if not s.live:
            log = paths.supervisor_log.read_text(errors="replace") if paths.supervisor_log.exists() else ""
            raise AssertionError(f"run ended early: {s}\n{log[-3000:]}")
        return s.step if (s.step or 0) >= min_step else None
    return wait_for(ready, timeout, f"{paths.id} at step >= {min_step}", poll=0.2)


def wait_done(paths: RunPaths, timeout: float = 60.0) -> runs.RunSummary:
    wait_for(lambda: not runs.run_summary(paths).live, timeout, f"{paths.id} to end", poll=0.2)
    return runs.run_summary(paths)


def tmp_files(root: Path) -> list[Path]:
    return [p for p in Path(root).rglob("*") if p.name.endswith(".tmp")]


def kill_everything_of(root: Path) -> None:
    for p in processes_of(root):
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass


@pytest.fixture
def runs_dir(tmp_path, monkeypatch):
    """A private runs dir; OMP_NUM_THREADS=1 for every child; nothing of it survives the test."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("TRAINDECK_TEST_STEP_DELAY_S", raising=False)
    d = tmp_path / "runs"
    d.mkdir(mode=0o700)
    yield d
    for paths in list_run_dirs(d):
        try:
            if runs.is_live(paths):
                runs.stop_run(paths, grace_s=0.5)
        except Exception:  # noqa: BLE001 - cleanup must reach the sweep below
            pass
    kill_everything_of(d)


def sigkill(ref: pg.ProcRef) -> None:
    """SIGKILL a recorded process, only if it is still the same process (pid + create_time)."""
    p = pg.resolve(ref)
    assert p is not None, f"{ref} is not alive"
    p.send_signal(signal.SIGKILL)


def state_of(paths: RunPaths) -> RunState:
    return runs.run_summary(paths).state

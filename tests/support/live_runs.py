"""Waiting on, and reading, real runs that a test started."""

from __future__ import annotations

from pathlib import Path

from tests.support.waiting import wait_for
from traindeck.heartbeat import read_heartbeats
from training.console import runs
from training.console import stop as stopping
from training.profile import Profile
from training.rundir import RunPaths, RunState
from training.rundir.events_file import read_all


def events(paths: RunPaths, kind: str | None = None) -> list[dict]:
    return [e for e in read_all(paths.events) if kind is None or e.get("kind") == kind]


def health_firings(paths: RunPaths | Path) -> list[dict]:
    """Every firing of a [health] rule in a run: `health` events, and the watchdog's hang and
    straggler warnings (`log` events that carry their rule; its all-clear carries none)."""
    paths = paths if isinstance(paths, RunPaths) else RunPaths(Path(paths))
    return [e for e in events(paths) if e.get("kind") == "health" or (e.get("kind") == "log" and e.get("rule"))]


def assert_no_health_alarms(paths: RunPaths | Path) -> None:
    """No false alarms: a healthy run (the suite's full-length cpu-profile runs) fires no rule."""
    fired = health_firings(paths)
    assert not fired, "a healthy run fired health rules:\n" + "\n".join(
        f"  {e.get('rule')} at step {e.get('step')}: {e.get('message')}" for e in fired)


def statuses(paths: RunPaths) -> list[dict]:
    return events(paths, "status")


def state_of(paths: RunPaths) -> RunState:
    return runs.run_summary(paths).state


def heartbeat_steps(paths: RunPaths) -> dict[int, int]:
    return {rank: int(hb["step"]) for rank, hb in read_heartbeats(paths.root).items()}


def supervisor_log(paths: RunPaths) -> str:
    try:
        return paths.supervisor_log.read_text(errors="replace")
    except OSError:
        return ""


def wait_step(paths: RunPaths, min_step: int, timeout: float = 90.0) -> int:
    """Wait until the run is live and its summary shows step >= min_step; fail fast if it ended."""
    def ready():
        s = runs.run_summary(paths)
        if not s.live:
            raise AssertionError(f"run ended early: {s}\n{supervisor_log(paths)[-3000:]}")
        return s.step if (s.step or 0) >= min_step else None
    return wait_for(ready, timeout, f"{paths.id} at step >= {min_step}", poll=0.2)


def wait_running(paths: RunPaths, min_step: int = 1, timeout: float = 40.0) -> None:
    """Wait for state `running` at step >= min_step (a run that already ended fails at once)."""
    def ready():
        s = runs.run_summary(paths)
        assert s.live or s.state is RunState.RUNNING, f"run ended early: {s}\n{supervisor_log(paths)}"
        return s.state is RunState.RUNNING and (s.step or 0) >= min_step
    wait_for(ready, timeout, f"{paths.id} to be running at step >= {min_step}", poll=0.1)


def wait_done(paths: RunPaths, timeout: float = 60.0) -> runs.RunSummary:
    wait_for(lambda: not runs.run_summary(paths).live, timeout, f"{paths.id} to end", poll=0.2, paths=paths)
    return runs.run_summary(paths)


def stop_quietly(paths: RunPaths) -> None:
    """Stop a run if it is still live (cleanup after a test that failed half-way)."""
    if runs.is_live(paths):
        stopping.stop_run(paths, grace_s=1.0)


def run_to_end(profile: Profile, runs_dir: Path, timeout: float = 60.0) -> tuple[RunPaths, runs.RunSummary]:
    """Start a real run and wait for it to end; a run still live when the wait fails is stopped."""
    paths = runs.start_run(profile, runs_dir)
    try:
        return paths, wait_done(paths, timeout=timeout)
    finally:
        stop_quietly(paths)


def tmp_files(root: Path) -> list[Path]:
    return [p for p in Path(root).rglob("*") if p.name.endswith(".tmp")]

"""Helpers for the end-to-end tests that start real runs (watchdog, stack dump, controls)."""

from __future__ import annotations

import time

from training import runs
from training.heartbeat import read_heartbeats
from training.profile import Profile, load_profile
from training.rundir import RunPaths


def cpu_profile(epochs: int = 50, steps_per_epoch: int = 200, step_delay_s: float = 0.02,
                log_every: int = 5, overrides: list[str] | None = None) -> Profile:
    """The built-in `cpu` profile (ddp, 2 gloo ranks, tiny MLP) with tiny sizes and enough steps to
    act on it while it runs. The step delay is the worker's documented test knob: without it a
    step of the tiny model takes about a millisecond and the run is over before a request lands."""
    profile = load_profile("cpu", [f"train.epochs={epochs}", f"train.steps_per_epoch={steps_per_epoch}",
                                   f"train.log_every={log_every}", "train.batch_size=8", "task.samples=512",
                                   "task.features=8", "task.hidden=8", "telemetry.interval_s=0.5",
                                   "launch.stop_grace_s=2", *(overrides or [])])
    profile.launch.env = dict(profile.launch.env, OMP_NUM_THREADS="1",
                              TRAINDECK_TEST_STEP_DELAY_S=str(step_delay_s))
    return profile


def wait_for(predicate, timeout: float, paths: RunPaths | None = None, what: str = "", poll: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    detail = ""
    if paths is not None:
        try:
            detail = "\n" + paths.supervisor_log.read_text()[-3000:]
        except OSError:
            pass
    raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}{detail}")


def heartbeat_steps(paths: RunPaths) -> dict[int, int]:
    return {rank: int(hb["step"]) for rank, hb in read_heartbeats(paths.root).items()}


def stop_quietly(paths: RunPaths) -> None:
    if runs.is_live(paths):
        runs.stop_run(paths, grace_s=1.0)

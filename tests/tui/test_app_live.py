"""The console driving real runs: pick a profile and start it, see a checkpoint, stop a run.

Slow (real supervisor, torchrun and CPU workers): marked `slow`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.fake_nvml import zero_devices
from tests.support.waiting import await_for
from training.monitor.gpu import GpuBackend
from training.profile import load_profile
from training.rundir import RunPaths, read_json
from tui.app import make_app
from tui.screens.confirm_dialog import ConfirmDialog
from tui.screens.picker import PickerScreen
from tui.screens.run_screen import RunScreen
from tui.widgets import EventLog

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

TINY_CPU = """\
name = "tiny-cpu"
description = "cpu profile cut down for the console tests"

[hardware]
gpus = 0

[launch]
mode = "ddp"
nproc_per_node = 2
backend = "gloo"
stop_grace_s = 5

[train]
task = "tiny"
epochs = 1
batch_size = 64
log_every = 2

[task]
samples = 512
"""


def event_text(screen: RunScreen) -> str:
    return "\n".join(strip.text for strip in screen.query_one(EventLog).lines)


async def test_pick_start_and_reach_a_checkpoint(tmp_path: Path):
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "tiny-cpu.toml").write_text(TINY_CPU)
    app = make_app(runs_dir=tmp_path / "runs", profiles_dir=profiles, gpu_backend=GpuBackend(nvml=zero_devices()))
    async with app.run_test(size=(100, 30)) as pilot:
        await await_for(pilot, lambda: isinstance(app.screen, PickerScreen) and app.screen.preflight_ready, 60, step=0.25)
        await pilot.press("enter")
        await await_for(pilot, lambda: isinstance(app.screen, RunScreen), 60, step=0.25)
        screen = app.screen
        await pilot.press("2")  # the Events tab
        await await_for(pilot, lambda: "checkpoint last.pt" in event_text(screen), 240, step=0.25)
        await await_for(pilot, lambda: screen.model.state == "finished", 120, step=0.25)
        assert "exit: finished" in event_text(screen) or screen.query_one(EventLog).shown_exit
        # CPU ranks are shown as CPU workers, never as GPUs.
        assert screen.query("GpuPanel") and all(p.device.kind == "cpu" for p in screen.query("GpuPanel"))


async def test_start_profile_then_stop_from_the_console(tmp_path: Path):
    profile = load_profile("cpu", overrides=["train.epochs=50", "task.samples=512", "launch.stop_grace_s=5"])
    app = make_app(runs_dir=tmp_path / "runs", profile=profile, argv=["--profile", "cpu"],
                   gpu_backend=GpuBackend(nvml=zero_devices()))
    async with app.run_test(size=(100, 30)) as pilot:
        await await_for(pilot, lambda: isinstance(app.screen, RunScreen), 60, step=0.25)
        screen = app.screen
        await await_for(pilot, lambda: screen.model.state == "running" and screen.model.step > 0, 240, step=0.25)
        await pilot.press("s")
        await await_for(pilot, lambda: isinstance(app.screen, ConfirmDialog), 10, step=0.25)
        await pilot.press("y")
        await await_for(pilot, lambda: screen.model.state == "stopped", 120, step=0.25)
        paths = RunPaths(screen.paths.root)
    assert (read_json(paths.exit_json) or {}).get("state") == "stopped"


async def test_profile_from_cli_with_overrides_reaches_checkpoint(tmp_path: Path):
    """The brief's tiny run: load_profile("cpu", overrides=[epochs=1, samples=512])."""
    profile = load_profile("cpu", overrides=["train.epochs=1", "task.samples=512"])
    app = make_app(runs_dir=tmp_path / "runs", profile=profile, gpu_backend=GpuBackend(nvml=zero_devices()))
    async with app.run_test(size=(100, 30)) as pilot:
        await await_for(pilot, lambda: isinstance(app.screen, RunScreen), 60, step=0.25)
        screen = app.screen
        await pilot.press("2")
        await await_for(pilot, lambda: "checkpoint" in event_text(screen), 240, step=0.25)
        await await_for(pilot, lambda: not screen.model.live, 120, step=0.25)
        await pilot.press("q")  # finished: quits without asking
        await await_for(pilot, lambda: not app.is_running, 10, step=0.25)

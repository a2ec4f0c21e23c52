"""SVG snapshots of the picker and the run screen at 80x24 and 160x48.

Fed from the recorded runs in tests/data/runs (tests/support/recorded_runs.py) with the fake
8x B200 NVML, a fixed preflight (the real one reports free disk and a random free port) and a
frozen clock, so they are stable. Update with `pytest tests/tui/test_snapshots.py --snapshot-update`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.fake_nvml import eight_b200
from tests.support.locations import RECORDED_RUNS
from tests.support.recorded_runs import SNAPSHOT_NOW
from tests.support.waiting import await_for
from training.console.preflight import Check, PreflightReport, gpu_check
from training.monitor.gpu import GpuBackend
from training.rundir import RunPaths
from tui.app import make_app
from tui.screens.picker import PickerScreen
from tui.screens.run_screen import RunScreen

RUNS = RECORDED_RUNS
SIZES = [(80, 24), (160, 48)]


def fixed_preflight(backend):
    def preflight(profile, runs_dir):
        report = PreflightReport(profile)
        report.checks = [gpu_check(profile, backend),
                         Check("disk", True, "512.0 GiB free for checkpoints under runs"),
                         Check("port", True, "free rendezvous port 29500 on 127.0.0.1 (picked anew for every run)")]
        report.command = f"python -m torch.distributed.run --nproc-per-node {profile.launch.nproc_per_node} " \
                         f"-m training.worker runs/<new>-{profile.name}"
        return report
    return preflight


def picker_app(tmp_path: Path):
    backend = GpuBackend(nvml=eight_b200())
    app = make_app(runs_dir=tmp_path / "runs", gpu_backend=backend)
    app.preflight = fixed_preflight(backend)
    return app


def run_app(run_id: str):
    return make_app(runs_dir=RUNS, attach=RunPaths(RUNS / run_id), gpu_backend=GpuBackend(nvml=eight_b200()),
                    clock=lambda: SNAPSHOT_NOW)


async def picker_ready(pilot) -> None:
    app = pilot.app
    await await_for(pilot, lambda: isinstance(app.screen, PickerScreen) and app.screen.preflight_ready, timeout=15)
    await pilot.pause(0.2)


def _logs_at_their_end(screen) -> bool:
    """Every shown event log has scrolled to its newest line (RichLog scrolls after its next
    layout, a moment after the lines arrive: a loaded box drew the log half-way once)."""
    from tui.widgets import EventLog

    return all(log.scroll_y >= log.max_scroll_y for log in screen.query(EventLog) if log.display and log.size.height)


async def run_ready(pilot) -> None:
    app = pilot.app
    await await_for(pilot, lambda: isinstance(app.screen, RunScreen) and app.screen.loaded
                    and (app.screen.telemetry_seen or not app.screen.model.live), timeout=15)
    await await_for(pilot, lambda: _logs_at_their_end(app.screen), timeout=15, what="the event logs at their end")
    await _settled(pilot)


async def _settled(pilot, timeout: float = 15.0) -> None:
    """Until two screenshots 0.2 s apart are the same: a fixed pause was not always enough on a
    loaded box (the side log drawn half-way, a batch not yet folded in)."""
    import time

    deadline = time.monotonic() + timeout
    previous = None
    while time.monotonic() < deadline:
        await pilot.pause(0.2)
        current = pilot.app.export_screenshot()
        if current == previous:
            return
        previous = current


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_picker(snap_compare, tmp_path, size):
    assert snap_compare(picker_app(tmp_path), terminal_size=size, run_before=picker_ready)


def test_picker_8gpu_profile(snap_compare, tmp_path):
    async def select_gnn(pilot):
        await picker_ready(pilot)
        screen = pilot.app.screen
        options = screen.query_one("#profile-list")
        options.highlighted = options.get_option_index("8xb200-gnn")
        await picker_ready(pilot)

    assert snap_compare(picker_app(tmp_path), terminal_size=(120, 40), run_before=select_gnn)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_run_screen_8gpu(snap_compare, size):
    assert snap_compare(run_app("20261124-090000-8xb200-gnn"), terminal_size=size, run_before=run_ready)


def test_run_screen_cpu_finished(snap_compare):
    assert snap_compare(run_app("20261123-140000-cpu"), terminal_size=(80, 24), run_before=run_ready)


def test_run_screen_failed_events(snap_compare):
    async def events_tab(pilot):
        await run_ready(pilot)
        await pilot.press("2")
        await pilot.pause(0.3)

    assert snap_compare(run_app("20261123-100000-4x2080ti"), terminal_size=(100, 30), run_before=events_tab)

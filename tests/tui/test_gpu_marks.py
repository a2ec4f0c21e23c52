"""The run screen tells simulated GPUs from real ones and calls only the run's own GPUs idle
(issue 15, items 9 and 6)."""

from __future__ import annotations

import json

from tests.support.waiting import await_for
from tui import headless
from tui.screens.run_screen import RunScreen
from tui.widgets import GpuPanel
from tui.widgets.gpu_grid import GpuGrid
from tui.widgets.gpu_panel import DeviceView

GNN = "20261124-090000-8xb200-gnn"
SIZE = (100, 30)


def _rewrite_telemetry(run_dir, change) -> None:
    path = run_dir / "telemetry.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    path.write_text("".join(json.dumps(change(line)) + "\n" for line in lines))


async def _loaded(pilot) -> RunScreen:
    await await_for(pilot, lambda: isinstance(pilot.app.screen, RunScreen) and pilot.app.screen.loaded)
    screen = pilot.app.screen
    await await_for(pilot, lambda: screen.telemetry_seen)
    await pilot.pause(0.1)
    return screen


async def test_fake_nvml_telemetry_is_marked_simulated_and_real_is_not(recorded_app, recorded_runs_dir):
    async with recorded_app(GNN).run_test(size=SIZE) as pilot:
        grid = (await _loaded(pilot)).query_one(GpuGrid)
        assert not grid.has_class("-simulated") and not grid.border_title

    def fake(line):
        line["source"] = "fake-nvml"
        return line

    _rewrite_telemetry(recorded_runs_dir / GNN, fake)
    async with recorded_app(GNN).run_test(size=SIZE) as pilot:
        grid = (await _loaded(pilot)).query_one(GpuGrid)
        assert grid.has_class("-simulated") and "simulated GPUs" in str(grid.border_title)


async def test_a_quiet_gpu_that_hosts_no_rank_of_the_run_is_not_idle(recorded_app, recorded_runs_dir):
    # GPU 6 of the recorded run is quiet while training: idle while it hosts rank 6 ...
    def by_uuid(line):
        for gpu in line.get("gpus") or []:
            gpu["ranks"] = [] if gpu["index"] == 6 else [gpu["index"]]
            gpu["processes"] = [] if gpu["index"] == 6 else gpu["processes"]
        return line

    # ... but the run's heartbeats name no rank on it (3xb200-video on an 8-GPU box): not idle.
    _rewrite_telemetry(recorded_runs_dir / GNN, by_uuid)
    async with recorded_app(GNN).run_test(size=SIZE) as pilot:
        screen = await _loaded(pilot)
        panels = {p.device.index: p for p in screen.query(GpuPanel)}
        assert panels[6].device.ranks == () and panels[6].device.util < 5
        assert not panels[6].has_class("-idle")
        assert panels[0].device.ranks == (0,)


def test_headless_says_simulated():
    gpus = [{"index": 0, "util": 90, "mem_used_mib": 1024, "mem_total_mib": 2048, "temp_c": 50, "throttle": []}]
    assert headless.fmt_telemetry({"source": "fake-nvml", "gpus": gpus}).startswith("simulated gpu 0 ")
    assert headless.fmt_telemetry({"source": "nvml", "gpus": gpus}).startswith("gpu 0 ")


def test_a_gpu_at_its_power_cap_is_not_marked_throttling():
    # Issue 30, item 11: a B200 at its power cap under normal load was warn-coloured all day; the
    # health rule counts sw_power_cap only when asked (health.throttle_power_cap), the panel never.
    def device(*reasons):
        return DeviceView.from_gpu({"index": 0, "util": 99, "power_w": 998.0, "power_limit_w": 1000.0,
                                    "throttle": list(reasons)})

    assert not device("sw_power_cap").throttling
    assert not device("gpu_idle", "sync_boost", "display_clock_setting").throttling
    assert device("sw_power_cap", "hw_thermal_slowdown").throttling and device("hw_power_brake_slowdown").throttling

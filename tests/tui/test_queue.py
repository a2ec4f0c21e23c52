"""The GPU queue in the console (issue 20): the picker's key starts a profile queued, and a queued
run shows its place and what it waits for in the run screen's header and the runs screen."""

from __future__ import annotations

from textual.widgets import DataTable

from tests.fixtures.fake_nvml import shared_2080ti
from tests.support.fake_runs import make_run_dir, supervisor_record, synthetic_profile_toml
from tests.support.picker import on_the_picker, picker_app, record_starts
from tests.support.waiting import await_for
from training.monitor.gpu import GpuBackend
from tui.app import make_app
from tui.screens.run_screen import RunScreen
from tui.screens.runs_screen import RunsScreen
from tui.widgets import RunHeader

WAITING_FOR = "GPU 0 held by pid 4190001, outside this container, 9.5 GiB"
SIZE = (160, 30)


async def test_the_picker_key_w_starts_the_profile_queued_on_a_busy_box(tmp_path, monkeypatch):
    started = record_starts(monkeypatch, lambda profile, kw: kw)
    app = picker_app(tmp_path, "4x2080ti", shared_2080ti())
    async with app.run_test(size=(100, 30)) as pilot:
        await on_the_picker(pilot, app)
        assert "Start queued" in "".join(str(b.description) for b in app.screen.BINDINGS)
        await pilot.press("w")  # busy GPUs 0 and 2: `s` would be refused, `w` waits in line
        await await_for(pilot, lambda: started, what="the queued start")
    assert started[0]["queue"] is True and started[0]["argv"][-1] == "--queue"


async def test_a_queued_run_shows_its_place_and_what_it_waits_for(tmp_path):
    runs_dir = tmp_path / "runs"
    paths = make_run_dir(runs_dir, "20260101-000000-synthetic", profile_toml=synthetic_profile_toml(4),
                         state="queued", supervisor=supervisor_record(), queue=True,
                         gpu_queue={"place": 2, "waiting_for": WAITING_FOR, "since": 1.0, "t": 2.0})
    app = make_app(runs_dir=runs_dir, attach=paths, gpu_backend=GpuBackend(nvml=shared_2080ti()))
    async with app.run_test(size=SIZE) as pilot:
        await await_for(pilot, lambda: isinstance(app.screen, RunScreen) and app.screen.loaded)
        header = app.screen.query_one(RunHeader)
        await await_for(pilot, lambda: "queued: #2" in header.render().plain, what="the queued header")
        text = header.render().plain
        assert text.lstrip().startswith("queued ") and f"queued: #2, waiting for {WAITING_FOR}" in text
        assert header.has_class("-queued")
        app.push_screen(RunsScreen(runs_dir))
        await await_for(pilot, lambda: isinstance(app.screen, RunsScreen) and app.screen.loaded)
        row = [str(c) for c in app.screen.query_one(DataTable).get_row_at(0)]
        assert row[1] == "queued" and row[-1] == f"#2, waiting for {WAITING_FOR}"

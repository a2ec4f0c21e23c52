"""The compare screen (issue 34): marked runs on the runs screen, `c`, both curves and the diff;
and its SVG snapshot at 120x36 over fixed fake runs (tests/support/compared_runs.py) with a frozen
clock. Update with `pytest tests/tui/test_compare.py --snapshot-update`."""

from __future__ import annotations

from textual.widgets import DataTable

from tests.support.compared_runs import compared_runs
from tests.support.recorded_runs import SNAPSHOT_NOW
from tests.support.waiting import await_for
from tui.app import make_app
from tui.screens.compare_screen import CompareScreen
from tui.screens.run_screen import RunScreen
from tui.screens.runs_screen import RunsScreen
from tui.widgets.compare_plot import ComparePlot

CONFIGS = [{"lr": 0.001, "batch_size": 64}, {"lr": 0.003, "batch_size": 64}, {"lr": 0.003, "batch_size": 128}]


async def test_marking_two_runs_compares_them(tmp_path, backend):
    runs_dir = tmp_path / "runs"
    runs = compared_runs(runs_dir, CONFIGS)
    # show_runs: how `run.py --sweep` opens the console in a terminal (on the runs screen).
    app = make_app(runs_dir=runs_dir, gpu_backend=backend, clock=lambda: SNAPSHOT_NOW, show_runs=True)
    async with app.run_test(size=(120, 36)) as pilot:
        await await_for(pilot, lambda: isinstance(app.screen, RunsScreen) and app.screen.loaded)
        # Newest first: the cursor starts on runs[2]; mark it and the next (runs[1]).
        await pilot.press("space", "space")
        assert app.screen.marked == {str(runs[2].root), str(runs[1].root)}
        await pilot.press("c")
        await await_for(pilot, lambda: isinstance(app.screen, CompareScreen) and app.screen.loaded)
        screen = app.screen
        curves = screen.query_one(ComparePlot).curves(80)
        assert sorted(label for _, label, _, _ in curves) == ["batch_size=128", "batch_size=64"]
        assert all(len(xs) > 10 for _, _, xs, _ in curves)
        diff = screen.query_one("#compare-diff", DataTable)
        assert [str(diff.get_row_at(i)[0]) for i in range(diff.row_count)] == ["train.batch_size"]
        table = screen.query_one("#compare-table", DataTable)
        assert table.row_count == 2
        first = [str(c) for c in table.get_row_at(0)]
        assert first[0].startswith("●*") and first[1] == "1"  # ranked, the best marked
        await pilot.press("o")  # sorted by the run id now
        ids = [str(table.get_row_at(i)[2]) for i in range(2)]
        assert ids == sorted(ids)
        await pilot.press("enter")
        await await_for(pilot, lambda: isinstance(app.screen, RunScreen))


def test_compare_screen_snapshot(snap_compare, tmp_path, backend):
    runs_dir = tmp_path / "runs"
    runs = compared_runs(runs_dir, CONFIGS)
    app = make_app(runs_dir=runs_dir, gpu_backend=backend, clock=lambda: SNAPSHOT_NOW)

    async def compared(pilot):
        app.push_screen(CompareScreen(runs, clock=lambda: SNAPSHOT_NOW))
        await await_for(pilot, lambda: isinstance(app.screen, CompareScreen) and app.screen.loaded)
        # Until two screenshots 0.2 s apart agree: the tables size their columns after a layout.
        previous = None
        for _ in range(50):
            await pilot.pause(0.2)
            current = app.export_screenshot()
            if current == previous:
                break
            previous = current

    assert snap_compare(app, terminal_size=(120, 36), run_before=compared)

"""run.py --refresh SECONDS and --low-bandwidth reach the run screen through make_app (issue 17).
Pilot on the recorded 8-GPU run; no timing: the settings the screen took are read back."""

from __future__ import annotations

import pytest
from textual.color import Color

import run as run_py
from tests.tui.test_app import GNN, wait_run_loaded
from tui.screens.run_screen import HEADER_REFRESH_S, LOW_BANDWIDTH_PLOT_S, PLOT_REFRESH_S
from tui.widgets import GpuPanel
from tui.widgets._render import _SPARKS  # "█" is also a bar's; the other seven are the sparkline's


async def test_default_screen_keeps_its_refresh_and_sparklines(recorded_app):
    app = recorded_app(GNN)
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await wait_run_loaded(pilot)
        assert screen._plot_redraw.interval == PLOT_REFRESH_S
        assert screen._header_redraw.interval == HEADER_REFRESH_S
        assert not app.no_color and app.cell_diff is not None
        assert any(ch in p.render().plain for p in screen.query(GpuPanel) for ch in _SPARKS[:-1])


async def test_refresh_seconds_slows_header_panels_and_plot(recorded_app):
    app = recorded_app(GNN, refresh=3.0)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await wait_run_loaded(pilot)
        assert screen._header_redraw.interval == 3.0
        assert screen._plot_redraw.interval == 3.0
        assert screen._grid_redraw.interval == 3.0
        assert all(p.device is not None for p in screen.query(GpuPanel))  # the first sample shows at once


async def test_low_bandwidth_is_monochrome_without_sparklines_and_a_slow_plot(recorded_app):
    app = recorded_app(GNN, low_bandwidth=True)
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await wait_run_loaded(pilot)
        assert app.no_color
        assert screen._plot_redraw.interval == LOW_BANDWIDTH_PLOT_S
        panels = list(screen.query(GpuPanel))
        assert panels and all(not p.sparklines for p in panels)
        assert not any(ch in p.render().plain for p in panels for ch in _SPARKS[:-1])
        # No colour reaches the terminal: every segment of the screen is colourless.
        strips = app.screen._compositor.render_strips()
        filtered = []
        for strip in strips:
            for line_filter in app.get_line_filters():
                strip = strip.apply_filter(line_filter, Color(0, 0, 0))
            filtered.append(strip)
        assert all(seg.style is None or ((seg.style.color is None or seg.style.color.is_default)
                                         and (seg.style.bgcolor is None or seg.style.bgcolor.is_default))
                   for strip in filtered for seg in strip)


@pytest.mark.parametrize("argv, expected", [
    (["--attach", GNN, "--refresh", "2.5"], {"refresh": 2.5, "low_bandwidth": False}),
    (["--attach", GNN, "--low-bandwidth"], {"refresh": None, "low_bandwidth": True}),
])
def test_run_py_passes_the_flags_to_make_app(monkeypatch, recorded_runs_dir, argv, expected):
    import tui.app

    got = {}

    class Stub:
        def run(self):
            return 0

    def fake_make_app(**kwargs):
        got.update(kwargs)
        return Stub()

    monkeypatch.setattr(tui.app, "make_app", fake_make_app)
    monkeypatch.setattr(run_py, "_interactive", lambda: True)
    monkeypatch.setattr("training.console.stop.reap_orphans", lambda runs_dir, **_: None)
    assert run_py.main(argv + ["--runs-dir", str(recorded_runs_dir)]) == 0
    assert {k: got[k] for k in expected} == expected
    assert got["attach"].id == GNN


def test_refresh_must_be_a_sane_number_of_seconds(capsys):
    with pytest.raises(SystemExit):
        run_py.build_parser().parse_args(["--refresh", "0"])
    with pytest.raises(SystemExit):
        run_py.build_parser().parse_args(["--refresh", "soon"])

"""The GPU panels and the loss plot repaint only the lines that changed (issue 17). What they
paint must stay what a full redraw paints: after every new sample or point, each painted line
equals the same line drawn from scratch, and a change that touches one line refreshes one line."""

from __future__ import annotations

from textual.app import App, ComposeResult
from textual.visual import Visual, visualize

from training.rundir.series import SeriesStore
from tui.widgets import GpuPanel, LossPlot
from tui.widgets.gpu_panel import DeviceView


def _cells(strip) -> list[tuple[str, str]]:
    return [(ch, str(seg.style.copy().clear_meta_and_links()) if seg.style else "")
            for seg in strip for ch in seg.text]


def _screen(strips) -> list[list[tuple[str, str]]]:
    """Cells by line, without the trailing blank lines (the widget's padding draws those)."""
    lines = [_cells(s) for s in strips]
    while lines and all(ch == " " for ch, _ in lines[-1]):
        lines.pop()
    return lines


def _gpu(util: float, temp: float, mem: float = 40_000, history: tuple = ()) -> DeviceView:
    return DeviceView.from_gpu({"index": 0, "name": "NVIDIA B200", "util": util, "mem_used_mib": mem,
                                "mem_total_mib": 183_000, "temp_c": temp, "power_w": 700, "power_limit_w": 1000,
                                "sm_clock_mhz": 1900, "sm_clock_max_mhz": 1965, "ranks": [0]}, history=history)


class PanelApp(App):
    CSS = "GpuPanel { height: 7; border: round white; }"

    def compose(self) -> ComposeResult:
        yield GpuPanel(_gpu(50, 60), id="panel")


async def test_a_panel_repaints_the_changed_lines_and_paints_what_a_full_redraw_does():
    app = PanelApp()
    async with app.run_test(size=(50, 10)) as pilot:
        panel = app.query_one(GpuPanel)
        await pilot.pause()
        history: tuple = ()
        for i, (util, temp, mem) in enumerate([(51, 60, 40_000), (51, 61, 40_000), (97, 88, 90_000), (3, 40, 1_000)]):
            history = (*history, util)
            panel.device = _gpu(util, temp, mem, history)
            await pilot.pause()
            width, height = panel.content_size
            fresh = Visual.to_strips(panel, visualize(panel, panel.render()), width, height, panel.visual_style)
            painted = [panel.render_line(y) for y in range(height)]
            assert _screen(painted) == _screen(fresh), f"sample {i}"

        # One changed number: one line refreshed, not the panel.
        refreshed: list = []
        original = panel.refresh
        panel.refresh = lambda *regions, **kw: (refreshed.append(regions), original(*regions, **kw))[1]
        panel.device = _gpu(3, 41, 1_000, history)  # only the temperature line changes
        assert len(refreshed) == 1 and len(refreshed[0]) == 1 and refreshed[0][0].height == 1


class PlotApp(App):
    CSS = "LossPlot { width: 70; height: 20; }"

    def compose(self) -> ComposeResult:
        yield LossPlot(id="plot")


async def test_the_plot_paints_after_new_points_what_a_full_redraw_does():
    app = PlotApp()
    async with app.run_test(size=(80, 24)) as pilot:
        plot = app.query_one(LossPlot)
        store = plot.store = SeriesStore()
        step = 0
        for batch in range(4):
            for _ in range(50):
                step += 1
                store.add("train", "loss", step, 2.0 / (1 + step * 0.01), epoch=step // 100)
            plot.version += 1
            await pilot.pause()
            painted = [plot.render_line(y) for y in range(plot.size.height)]
            fresh = Visual.to_strips(plot, visualize(plot, plot.render()), plot.size.width, plot.size.height,
                                     plot.visual_style)
            assert _screen(painted) == _screen(fresh), f"batch {batch}"
        assert any("loss" in "".join(ch for ch, _ in _cells(s)) for s in painted)

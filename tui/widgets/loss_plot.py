"""The loss plot: train/val loss and every loss component, downsampled to the plot's width.

The screen owns the `SeriesStore` and hands it down (`plot.store = ...`), then bumps `version`
when new points arrive. Everything the user can change is a reactive: which series are shown,
x by step or epoch, linear or log y, EMA smoothing. Each redraw asks the store for a view of
about the plot's width, so drawing costs the same at 10^2 or 10^6 steps.

Health firings (training.monitor.health) are `markers`: (step, rule) pairs the screen sets from
the run model, drawn as red vertical lines with the rule's name at the top (plotext's vline and
text) when x is the step and the step is within the drawn range.

Drawing (issue 17: the plot was the run screen's costliest paint, ~25 ms a redraw): plotext lays
out its character matrix, and the widget turns that matrix into Strips itself, a run of cells per
colour, instead of plotext's ANSI text decoded back by Rich (`render()`, which textual-plotext
uses and the tests still call, draws the same plot that way). Only the rows that differ from the
last drawing are repainted: with bounds that stay put (nice_bounds), a new point changes the
rows it crosses, not the plot.
"""

from __future__ import annotations

from typing import Any

import plotext._utility as plotext_utility
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.reactive import reactive
from textual.strip import Strip
from textual.visual import Visual, visualize
from textual_plotext import PlotextPlot

from training.rundir.series import Key, SeriesStore
from tui.formats import format_tick, nice_bounds
from tui.widgets._painted_lines import PaintsChangedLines

SMOOTHING_STEPS = (0.0, 0.6, 0.9)
LEGEND_CKPT_MIN_HEIGHT = 20
MARKER_COLOUR = "red"
MAX_MARKERS = 20  # the newest; more would hide the curves
# plotext colour names, assigned in series order so a series keeps its colour.
COLOURS = ("cyan", "orange", "green", "magenta", "yellow", "blue", "red", "white")


def series_label(key: Key) -> str:
    """Short legend labels: "loss", "val loss", "conflict" (a train loss component), "val acc"."""
    split, name = key
    if split == "train":
        return name[len("loss/"):] if name.startswith("loss/") else name
    return f"{split} {name}"


def default_shown(key: Key) -> bool:
    """Losses are on one scale; accuracy, lr and throughput would flatten them."""
    _, name = key
    return name == "loss" or name.startswith("loss/")


class LossPlot(PaintsChangedLines, PlotextPlot):
    store: SeriesStore | None = None

    # repaint=False: each watcher redraws and repaints the rows that changed (show_changes).
    version: reactive[int] = reactive(0, repaint=False)
    shown: reactive[frozenset[Key] | None] = reactive(None, repaint=False)
    """Series to draw; None means the default (losses and their components)."""
    x_axis: reactive[str] = reactive("step", repaint=False)
    log_y: reactive[bool] = reactive(False, repaint=False)
    smoothing: reactive[float] = reactive(0.0, repaint=False)
    checkpoints: reactive[tuple[tuple[int | None, int | None, bool], ...]] = reactive((), repaint=False)
    """(step, epoch, best) of each checkpoint, marked on the plot's top edge."""
    markers: reactive[tuple[tuple[int, str], ...]] = reactive((), repaint=False)
    """Health firings to mark: (step, rule), oldest first."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._cell_styles: dict[str, Style] = {}  # plotext's colours (as ANSI) -> the style drawn

    def validate_x_axis(self, value: str) -> str:
        return value if value in ("step", "epoch") else "step"

    def validate_smoothing(self, value: float) -> float:
        return min(0.99, max(0.0, float(value)))

    def watch_version(self) -> None:
        self.show_changes()

    def watch_shown(self) -> None:
        self.show_changes()

    def watch_x_axis(self) -> None:
        self.show_changes()

    def watch_log_y(self) -> None:
        self.show_changes()

    def watch_smoothing(self) -> None:
        self.show_changes()

    def watch_checkpoints(self) -> None:
        self.show_changes()

    def watch_markers(self) -> None:
        self.show_changes()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._cell_styles.clear()  # the theme (the plot's background and text) may have changed
        self.forget_painted()

    def _register_theme(self, app_theme_name: str) -> None:
        self.forget_painted()
        super()._register_theme(app_theme_name)

    # ---- drawing (PaintsChangedLines) ------------------------------------------------------------
    def draw_lines(self) -> list[Strip]:
        """The plot at the widget's size, a Strip per row, from plotext's matrix (what `render()`
        draws through ANSI text, without the text)."""
        self._plan()
        plt, (width, height) = self._plot, self.size
        plt.plotsize(width, height)  # as PlotextPlot.render sets it up
        plt._set_size(width, height)
        plt.theme(self._get_plotext_theme_name(self.app.theme))
        # plotext's Figure.build() without its last step (the ANSI canvas).
        plt._set_sizes()
        plt._build_matrix()
        matrix = plt.monitor.matrix
        return [self._row_strip(matrix, row) for row in reversed(matrix.Rows)]

    def _row_strip(self, matrix: Any, row: int) -> Strip:
        markers, fgs, styles, bgs = matrix.marker[row], matrix.fullground[row], matrix.style[row], matrix.background[row]
        segments: list[Segment] = []
        start, colours = 0, (fgs[0], styles[0], bgs[0]) if markers else None
        for col in range(1, len(markers)):
            here = (fgs[col], styles[col], bgs[col])
            if here != colours:
                segments.append(Segment("".join(markers[start:col]), self._cell_style(colours)))
                start, colours = col, here
        if markers:
            segments.append(Segment("".join(markers[start:]), self._cell_style(colours)))
        return Strip(segments)

    def _cell_style(self, colours: tuple[Any, Any, Any]) -> Style:
        """The style a cell of these plotext colours has when the ANSI text is drawn (found once
        per colour by drawing one such cell the default way: the same styles, the same bytes)."""
        ansi = plotext_utility.colors_to_ansi(*colours)
        style = self._cell_styles.get(ansi)
        if style is None:
            probe = Text.from_ansi(f"{ansi}x{plotext_utility.ansi_end}")
            strips = Visual.to_strips(self, visualize(self, probe), 1, 1, self.visual_style)
            style = next((seg.style for seg in strips[0] if seg.text), None) if strips else None
            style = self._cell_styles[ansi] = style or self.rich_style
        return style

    def visible_markers(self, xs: list[float]) -> list[tuple[int, str]]:
        """The markers inside the drawn x range (by step only: a firing names no epoch)."""
        if self.x_axis != "step" or not xs:
            return []
        lo, hi = min(xs), max(xs)
        return [(step, rule) for step, rule in self.markers[-MAX_MARKERS:] if lo <= step <= hi]

    def visible_keys(self) -> list[Key]:
        if self.store is None:
            return []
        names = self.store.names()
        if self.shown is None:
            return [k for k in names if default_shown(k)]
        return [k for k in names if k in self.shown]

    def settings_text(self) -> str:
        smooth = f"EMA {self.smoothing:g}" if self.smoothing else "raw"
        # The keys that change them, here rather than in the footer (80 columns hold no more).
        return f"x: {self.x_axis} (x) · y: {'log' if self.log_y else 'linear'} (l) · {smooth} (m)"

    def render(self):
        """The plot as textual-plotext draws it (plotext's ANSI text); the widget itself paints
        through render_line and draw_lines."""
        self._plan()
        return super().render()

    def _plan(self) -> None:
        """Hand plotext this plot's series, bounds, ticks and marks."""
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        width = max(10, self.size.width - 12)  # the y tick labels take part of the width
        keys = self.visible_keys()
        all_keys = self.store.names() if self.store else []
        drawn_x: list[float] = []
        drawn: list[float] = []
        for key in keys:
            xs, ys = self.store.view(key, width, x=self.x_axis, smoothing=self.smoothing, log_y=self.log_y)
            if not xs:
                continue
            colour = COLOURS[all_keys.index(key) % len(COLOURS)]
            marker = "braille" if len(xs) > 2 else "dot"
            plt.plot(xs, ys, label=series_label(key), color=colour, marker=marker)
            drawn.extend(ys)
            drawn_x.extend((xs[0], xs[-1]))
        plt.title(self.settings_text())
        plt.xlabel(self.x_axis)
        if not drawn:
            message = "no metrics yet" if not all_keys else "no series selected (t to choose)"
            plt.text(message, 0.5, 0.5, alignment="center")
            plt.xlim(0, 1)
            plt.ylim(0, 1)
            return
        # Bounds widened to nice tick multiples: they stay put while points arrive inside them,
        # so a new point moves a few cells, not the whole plot.
        x_lo, x_hi, x_step = nice_bounds(min(drawn_x), max(drawn_x), integer=self.x_axis == "step")
        plt.xlim(x_lo, x_hi)
        plt.xticks(*_ticks(x_lo, x_hi, x_step))
        # One tick per two rows of the plot area at most (plotext drops a tick that shares a row).
        y_lo, y_hi, y_step = nice_bounds(min(drawn), max(drawn), count=max(3, min(5, (self.size.height - 6) // 2)))
        plt.ylim(y_lo, y_hi)
        ticks, labels = _ticks(y_lo, y_hi, y_step)
        if self.log_y:  # the plot holds log10(y); label the ticks with y itself
            labels = [format_tick(10 ** v) if 10 ** v >= 1 else f"{10 ** v:.2g}" for v in ticks]
        plt.yticks(ticks, labels)
        self._mark_checkpoints(x_lo, x_hi, y_hi)
        for step, rule in self.visible_markers(drawn_x):
            plt.vline(step, color=MARKER_COLOUR)
            plt.text(rule, step, y_hi, color=MARKER_COLOUR, alignment="left")

    def _mark_checkpoints(self, x_lo: float, x_hi: float, y_top: float) -> None:
        """A ▼ on the top edge at each checkpoint's step (or epoch); the best ones in yellow. In the
        legend only when the plot is tall enough for it (plotext drops a legend that does not fit)."""
        use_step = self.x_axis == "step"
        legend = self.size.height >= LEGEND_CKPT_MIN_HEIGHT
        for best, colour, label in ((False, "gray", "ckpt"), (True, "yellow", "best ckpt")):
            xs = [float(step if use_step else epoch) for step, epoch, b in self.checkpoints
                  if b == best and (step if use_step else epoch) is not None
                  and x_lo <= (step if use_step else epoch) <= x_hi]
            if xs:
                self.plt.scatter(xs, [y_top] * len(xs), marker="▼", color=colour, label=label if legend else None)

    @staticmethod
    def next_smoothing(current: float) -> float:
        for value in SMOOTHING_STEPS:
            if value > current + 1e-9:
                return value
        return SMOOTHING_STEPS[0]


def _ticks(lo: float, hi: float, step: float) -> tuple[list[float], list[str]]:
    n = int(round((hi - lo) / step))
    values = [lo + i * step for i in range(n + 1)]
    return values, [format_tick(v, step) for v in values]


__all__ = ["LossPlot", "SMOOTHING_STEPS", "series_label", "default_shown"]

"""The compare screen's plot: one series (train loss by default) of every compared run, overlaid.

The screen hands the comparison down (`plot.comparison = ...`) and bumps `version` when the live
runs have new points; `series` and `x_axis` are what the user picks. A colour per run, in the
comparison's row order (the table's swatches use the same, `run_colour`); the legend names each
run by what differs in its config (Comparison.label). Each run's curve is its series store's view
of about the plot's width, so drawing 50 runs of 10^6 points costs 50 short views.
"""

from __future__ import annotations

from typing import Any

from textual.reactive import reactive
from textual_plotext import PlotextPlot

from training.rundir.series import Key
from tui.formats import nice_bounds
from tui.widgets.loss_plot import series_label

X_AXES = ("step", "epoch", "time")
# plotext's names and Rich's for the same colours (the table's swatch matches its curve).
PALETTE = (("cyan", "cyan"), ("orange", "dark_orange"), ("green", "green"), ("magenta", "magenta"),
           ("yellow", "yellow"), ("blue", "blue"), ("red", "red"), ("white", "white"))
MAX_LEGEND = 12  # more names than this hide the curves: the table's swatches name the rest


def run_colour(index: int) -> tuple[str, str]:
    """(plotext colour, Rich colour) of the index-th compared run."""
    return PALETTE[index % len(PALETTE)]


class ComparePlot(PlotextPlot):
    comparison: Any = None  # training.console.compare.Comparison, set by the screen

    version: reactive[int] = reactive(0)
    series: reactive[Key] = reactive(("train", "loss"))
    x_axis: reactive[str] = reactive("step")

    def validate_x_axis(self, value: str) -> str:
        return value if value in X_AXES else "step"

    def keys(self) -> list[Key]:
        """Every series some compared run has, losses first (the store's order)."""
        if self.comparison is None:
            return []
        seen: dict[Key, None] = {}
        for row in self.comparison.rows:
            for key in row.folded.store.names():
                seen.setdefault(key, None)
        return list(seen)

    def curves(self, width: int) -> list[tuple[int, str, list[float], list[float]]]:
        """(run index, legend label, xs, ys) of each run that has the series; x by time is seconds
        since the run was created (runs started hours apart still overlay)."""
        out = []
        if self.comparison is None:
            return out
        for i, row in enumerate(self.comparison.rows):
            xs, ys = row.folded.store.view(self.series, width, x=self.x_axis)
            if not xs:
                continue
            if self.x_axis == "time":
                t0 = row.created if row.created is not None else xs[0]
                xs = [x - t0 for x in xs]
            out.append((i, self.comparison.label(row), xs, ys))
        return out

    def render(self):
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        curves = self.curves(max(10, self.size.width - 12))
        x_name = {"time": "wall time (s since start)"}.get(self.x_axis, self.x_axis)
        plt.title(f"{series_label(self.series)} · x: {self.x_axis} (x) · series (s)")
        plt.xlabel(x_name)
        if not curves:
            plt.text("no run has this series yet", 0.5, 0.5, alignment="center")
            plt.xlim(0, 1)
            plt.ylim(0, 1)
            return super().render()
        legend = len(curves) <= MAX_LEGEND
        all_x = [x for _, _, xs, _ in curves for x in (xs[0], xs[-1])]
        all_y = [y for _, _, _, ys in curves for y in ys]
        for i, label, xs, ys in curves:
            plt.plot(xs, ys, label=label if legend else None, color=run_colour(i)[0],
                     marker="braille" if len(xs) > 2 else "dot")
        x_lo, x_hi, _ = nice_bounds(min(all_x), max(all_x), integer=self.x_axis == "step")
        y_lo, y_hi, _ = nice_bounds(min(all_y), max(all_y))
        plt.xlim(x_lo, x_hi)
        plt.ylim(y_lo, y_hi)
        return super().render()


__all__ = ["ComparePlot", "X_AXES", "run_colour"]

"""Runs side by side (issue 34): the chosen series of every run overlaid, the table, the config diff.

Opened from the runs screen (mark runs with space, a sweep marks all of its runs, then `c`). The
comparison loads in a worker (one series snapshot read per run: training.console.compare), and
while any run is live a timer re-arms a refresh that folds only what the live runs wrote since.

Keys: x cycles x (step, epoch, wall time), s cycles the series, o sorts by the next column (a
click on a column's header sorts by it; again: the other way), Enter opens the run under the
cursor, Escape goes back.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static
from textual.worker import Worker, WorkerState

from training.rundir import RunPaths
from tui import messages
from tui.widgets.compare_plot import X_AXES, ComparePlot, run_colour

POLL_S = 2.0
COLUMNS = ("", "rank", "run", "state", "best", "epoch", "train loss", "samples/s", "duration", "health")
STATE_STYLES = {"running": "bold green", "starting": "green", "queued": "dim green", "finished": "cyan",
                "failed": "bold red", "stopped": "yellow"}


def _sort_value(column: int, rank: int, row: Any) -> Any:
    """What a column sorts by (numbers as numbers; a missing one after every number)."""
    values = {1: rank, 2: row.id, 3: row.state, 4: row.best, 5: row.best_epoch, 6: row.final_loss,
              7: row.samples_per_s, 8: row.duration_s, 9: row.incidents}
    value = values.get(column, rank)
    return (value is None, value if value is not None else 0)


class CompareScreen(Screen):
    AUTO_FOCUS = "#compare-table"  # its cursor is what Enter opens
    BINDINGS = [
        Binding("x", "cycle_x", "x axis"),
        Binding("s", "cycle_series", "Series"),
        Binding("o", "sort_next", "Sort"),
        Binding("enter", "open", "Open", show=True),
        Binding("escape,b", "back", "Back"),
        Binding("q", "app.quit", "Quit"),
    ]

    @dataclass
    class Loaded(Message):
        comparison: Any

        def can_replace(self, message: Message) -> bool:
            return isinstance(message, CompareScreen.Loaded)

    def __init__(self, runs: list[RunPaths], clock: Callable[[], float] = time.time, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.runs = list(runs)
        self.clock = clock
        self.comparison: Any = None
        self.loaded = False
        self.sort_column = 1
        self.sort_reverse = False

    def compose(self) -> ComposeResult:
        yield Static(Text.assemble(("traindeck", "bold"), "  compare  ", (f"{len(self.runs)} runs", "dim")),
                     id="compare-title")
        yield ComparePlot(id="compare-plot")
        with Horizontal(id="compare-bottom"):
            yield DataTable(id="compare-table", cursor_type="row", zebra_stripes=True)
            yield DataTable(id="compare-diff", cursor_type="none", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        self._load()

    # ---- I/O in workers -------------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="compare", exit_on_error=False)
    def _load(self) -> None:
        from training.console.compare import load_comparison

        comparison = self.comparison
        if comparison is None:
            comparison = load_comparison(self.runs, now=self.clock())
        else:
            comparison.refresh(self.clock())
        self.post_message(self.Loaded(comparison))

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group != "compare" or event.state not in (WorkerState.SUCCESS, WorkerState.ERROR):
            return
        if event.state == WorkerState.ERROR:
            self.notify(f"comparing runs: {event.worker.error}", severity="error")
        if self.comparison is None or any(r.live for r in self.comparison.rows):
            self.set_timer(POLL_S, self._load)  # live runs keep updating

    def on_compare_screen_loaded(self, message: Loaded) -> None:
        self.comparison = message.comparison
        plot = self.query_one(ComparePlot)
        plot.comparison = self.comparison
        plot.version += 1
        self._fill_table()
        self._fill_diff()
        self.loaded = True

    # ---- what is shown --------------------------------------------------------------------------
    def _fill_table(self) -> None:
        from training.console.compare import table_rows

        table = self.query_one("#compare-table", DataTable)
        cursor_key = None
        if table.row_count:
            cursor_key = table.coordinate_to_cell_key((table.cursor_row, 0)).row_key.value
        comparison = self.comparison
        _, cells = table_rows(comparison)
        # The columns anew, each as wide as its label and cells: the monitored metric's name is
        # known only now, and columns that grow as rows arrive can leave the header drawn narrower.
        labels = [*COLUMNS[:4], comparison.monitor, *COLUMNS[5:]]
        table.clear(columns=True)
        for i, label in enumerate(labels):
            widest = max((len(c[i]) if i else 2 for c in cells), default=0)  # the swatch: 2 cells
            table.add_column(label, key=str(i), width=max(len(label), widest))
        ranked = comparison.ranked()
        index = {id(r): i for i, r in enumerate(comparison.rows)}
        entries = sorted(zip(ranked, cells, range(1, len(ranked) + 1), strict=True),
                         key=lambda e: _sort_value(self.sort_column, e[2], e[0]), reverse=self.sort_reverse)
        for row, cell, _rank in entries:
            swatch = Text("●" + ("*" if cell[0] else " "), style=run_colour(index[id(row)])[1])
            state = Text(row.state, STATE_STYLES.get(row.state, ""))
            table.add_row(swatch, *cell[1:3], state, *(Text(c, justify="right") for c in cell[4:10]),
                          key=str(row.paths.root))
        if cursor_key is not None:
            try:
                table.move_cursor(row=table.get_row_index(cursor_key))
            except Exception:  # noqa: BLE001 - the row is gone
                pass

    def _fill_diff(self) -> None:
        diff = self.query_one("#compare-diff", DataTable)
        comparison = self.comparison
        keys = comparison.differing_keys()
        rows = [(key, ", ".join(dict.fromkeys(r.config.get(key, "-") for r in comparison.rows))) for key in keys] \
            or [("(none)", "every run has the same config")]
        # Columns made anew with their widths known: columns that grow as rows arrive left the
        # header drawn at the old widths now and then (a snapshot under load caught it).
        diff.clear(columns=True)
        for label, key, index in (("differs", "key", 0), ("values", "values", 1)):
            diff.add_column(label, key=key, width=max(len(label), *(len(row[index]) for row in rows)))
        for key, values in rows:
            diff.add_row(key, values, key=key if keys else "-")

    # ---- keys -----------------------------------------------------------------------------------
    def action_cycle_x(self) -> None:
        plot = self.query_one(ComparePlot)
        plot.x_axis = X_AXES[(X_AXES.index(plot.x_axis) + 1) % len(X_AXES)]

    def action_cycle_series(self) -> None:
        plot = self.query_one(ComparePlot)
        keys = plot.keys()
        if keys:
            plot.series = keys[(keys.index(plot.series) + 1) % len(keys)] if plot.series in keys else keys[0]

    def action_sort_next(self) -> None:
        self.sort_column = self.sort_column % (len(COLUMNS) - 1) + 1
        self.sort_reverse = False
        if self.comparison is not None:
            self._fill_table()

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        column = int(event.column_key.value or 1)
        self.sort_reverse = not self.sort_reverse if column == self.sort_column else False
        self.sort_column = max(1, column)
        if self.comparison is not None:
            self._fill_table()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "compare-table":
            self.post_message(messages.OpenRun(RunPaths(Path(event.row_key.value))))

    def action_open(self) -> None:
        table = self.query_one("#compare-table", DataTable)
        if table.row_count:
            key = table.coordinate_to_cell_key((table.cursor_row, 0)).row_key.value
            self.post_message(messages.OpenRun(RunPaths(Path(key))))

    def action_back(self) -> None:
        self.app.pop_screen()

"""Every run in the runs directory, newest first: state, profile, progress, last loss (a queued
run: its place in line and what it waits for, in the note). Enter opens one (live or finished) on the run screen.

A sweep's runs are grouped under the sweep's own row (its state, how many of its points have
started, the keys it sweeps). Space marks a run (on a sweep's row: every run of it), `c` compares
the marked runs (or the one under the cursor with none marked) on the compare screen."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static
from textual.worker import Worker, WorkerState

from training.rundir import RunPaths
from tui import messages

POLL_S = 2.0
STATE_STYLES = {"running": "bold green", "starting": "green", "queued": "dim green", "finished": "cyan", "failed": "bold red",
                "stopped": "yellow"}


class RunsScreen(Screen):
    BINDINGS = [
        Binding("enter", "open", "Open", show=True),
        Binding("space", "mark", "Mark"),
        Binding("c", "compare", "Compare"),
        Binding("escape,b", "back", "Back"),
        Binding("q", "app.quit", "Quit"),
    ]

    @dataclass
    class RunsListed(Message):
        summaries: list[Any]
        # Each sweep: (its SweepStatus, the paths of its runs as text, point order).
        sweeps: list[tuple[Any, list[str]]] = field(default_factory=list)

        def can_replace(self, message: Message) -> bool:
            return isinstance(message, RunsScreen.RunsListed)

    def __init__(self, runs_dir: Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.runs_dir = Path(runs_dir)
        self.loaded = False
        self.marked: set[str] = set()  # run directories, as the table's row keys
        self.sweep_rows: dict[str, list[str]] = {}  # a sweep row's key -> its runs' row keys

    def compose(self) -> ComposeResult:
        yield Static(Text.assemble(("traindeck", "bold"), "  runs  ", (str(self.runs_dir), "dim")),
                     id="runs-title")
        yield DataTable(id="runs-table", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_column("run", key="run")
        table.add_column("state", key="state")
        table.add_column("profile", key="profile")
        table.add_column("mode", key="mode")
        table.add_column("progress", key="progress")
        table.add_column("last loss", key="loss")
        table.add_column("note", key="note")
        self._list_runs()

    @work(thread=True, exclusive=True, group="runs", exit_on_error=False)
    def _list_runs(self) -> None:
        from training.console.runs import list_runs
        from training.console.sweeps import sweep_status
        from training.rundir.sweep_dir import list_sweep_dirs, sweep_runs

        sweeps = []
        for sweep in list_sweep_dirs(self.runs_dir):
            runs = sweep_runs(self.runs_dir, sweep.id)
            sweeps.append((sweep_status(sweep, runs=runs), [str(r.root) for r in runs]))
        self.post_message(self.RunsListed(list_runs(self.runs_dir), sweeps))

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group != "runs" or event.state not in (WorkerState.SUCCESS, WorkerState.ERROR):
            return
        if event.state == WorkerState.ERROR:
            self.notify(f"listing runs: {event.worker.error}", severity="error")
        self.set_timer(POLL_S, self._list_runs)

    def on_runs_screen_runs_listed(self, message: RunsListed) -> None:
        table = self.query_one(DataTable)
        cursor = table.cursor_row
        current = None
        if table.row_count and 0 <= cursor < table.row_count:
            current = table.coordinate_to_cell_key((cursor, 0)).row_key.value
        table.clear()
        self.sweep_rows = {}
        in_sweep = {path: status for status, paths in message.sweeps for path in paths}
        by_path = {str(s.path): s for s in message.summaries}
        shown: set[str] = set()
        for status, paths in message.sweeps:
            if not any(p in by_path for p in paths):
                self._add_sweep_row(table, status, [])
        for s in message.summaries:
            key = str(s.path)
            if key in shown:
                continue
            status = in_sweep.get(key)
            if status is not None:  # the sweep's row, then all its runs, where its newest run is
                group = [p for p in next(paths for st, paths in message.sweeps if st is status) if p in by_path]
                self._add_sweep_row(table, status, group)
                for path in sorted(group, key=lambda p: by_path[p].id, reverse=True):
                    self._add_run_row(table, by_path[path], indent=True)
                    shown.add(path)
                continue
            self._add_run_row(table, s)
            shown.add(key)
        if not message.summaries:
            self.notify(f"no runs in {self.runs_dir} yet", timeout=3)
        if current is not None:
            try:
                table.move_cursor(row=table.get_row_index(current))
            except Exception:  # the run directory is gone
                pass
        self.loaded = True

    def _add_sweep_row(self, table: DataTable, status: Any, runs: list[str]) -> None:
        key = f"sweep:{status.id}"
        self.sweep_rows[key] = runs
        marked = bool(runs) and all(r in self.marked for r in runs)
        table.add_row(Text(status.id, "bold reverse" if marked else "bold"),
                      Text(status.state, STATE_STYLES.get(status.state, "")), "sweep", "",
                      f"{status.started}/{status.points} started", "",
                      f"{' x '.join(status.keys)}; {status.runs_live} live, {status.pending} waiting", key=key)

    def _add_run_row(self, table: DataTable, s: Any, indent: bool = False) -> None:
        state = getattr(s.state, "value", str(s.state))
        progress = f"epoch {s.epoch if s.epoch is not None else '-'}/{s.epochs or '?'}"
        if s.step is not None:
            progress += f"  step {s.step:,}"
        loss = "" if s.last_loss is None else f"{s.last_loss:.4g}"
        # A queued run's note: its place in line and what it waits for.
        note = " ".join(x for x in ("rehearsal" if s.rehearsal else "", s.note, s.waiting,
                                    f"rc {s.returncode}" if s.returncode not in (None, 0) else "") if x)
        # A marked run stands out (reverse); its text stays its id.
        name = Text(("  " if indent else "") + s.id, "reverse" if str(s.path) in self.marked else "")
        table.add_row(name, Text(state, STATE_STYLES.get(state, "")), s.profile, s.mode, progress,
                      Text(loss, justify="right"), note, key=str(s.path))

    def _cursor_key(self) -> str | None:
        table = self.query_one(DataTable)
        if not table.row_count:
            return None
        return table.coordinate_to_cell_key((table.cursor_row, 0)).row_key.value

    def action_mark(self) -> None:
        """Space: mark or unmark the run under the cursor; on a sweep's row, all of its runs."""
        key = self._cursor_key()
        if key is None:
            return
        keys = self.sweep_rows.get(key, [key])
        if all(k in self.marked for k in keys):
            self.marked.difference_update(keys)
        else:
            self.marked.update(keys)
        self._show_marks()
        self.query_one(DataTable).action_cursor_down()

    def _show_marks(self) -> None:
        table = self.query_one(DataTable)
        for row_key in list(table.rows):
            key = row_key.value
            cell = table.get_cell(row_key, "run")
            runs = self.sweep_rows.get(key)
            on = all(r in self.marked for r in runs) and bool(runs) if runs is not None else key in self.marked
            base = "bold" if runs is not None else ""
            table.update_cell(row_key, "run", Text(str(cell), f"{base} reverse".strip() if on else base))
        count = len(self.marked)
        self.query_one("#runs-title", Static).update(Text.assemble(
            ("traindeck", "bold"), "  runs  ", (str(self.runs_dir), "dim"),
            (f"  {count} marked (c compares)" if count else "", "bold")))

    def action_compare(self) -> None:
        runs = sorted(self.marked)
        if not runs:
            key = self._cursor_key()
            runs = self.sweep_rows.get(key, [key]) if key is not None else []
        if not runs:
            self.notify("mark runs with space first (a sweep's row marks all of its runs)", timeout=4)
            return
        self.post_message(messages.CompareRuns([RunPaths(Path(r)) for r in runs]))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self._open(event.row_key.value)

    def action_open(self) -> None:
        key = self._cursor_key()
        if key is not None:
            self._open(key)

    def _open(self, key: str) -> None:
        if key in self.sweep_rows:  # a sweep's row opens its comparison
            if self.sweep_rows[key]:
                self.post_message(messages.CompareRuns([RunPaths(Path(r)) for r in self.sweep_rows[key]]))
            return
        self.post_message(messages.OpenRun(RunPaths(Path(key))))

    def action_back(self) -> None:
        self.app.pop_screen()

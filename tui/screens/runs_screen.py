"""Every run in the runs directory, newest first: state, profile, progress, last loss (a queued
run: its place in line and what it waits for, in the note). Enter opens one (live or finished) on the run screen."""

from __future__ import annotations

from dataclasses import dataclass
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
        Binding("escape,b", "back", "Back"),
        Binding("q", "app.quit", "Quit"),
    ]

    @dataclass
    class RunsListed(Message):
        summaries: list[Any]

        def can_replace(self, message: Message) -> bool:
            return isinstance(message, RunsScreen.RunsListed)

    def __init__(self, runs_dir: Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.runs_dir = Path(runs_dir)
        self.loaded = False

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

        self.post_message(self.RunsListed(list_runs(self.runs_dir)))

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
        for s in message.summaries:
            state = getattr(s.state, "value", str(s.state))
            progress = f"epoch {s.epoch if s.epoch is not None else '-'}/{s.epochs or '?'}"
            if s.step is not None:
                progress += f"  step {s.step:,}"
            loss = "" if s.last_loss is None else f"{s.last_loss:.4g}"
            # A queued run's note: its place in line and what it waits for.
            note = " ".join(x for x in ("rehearsal" if s.rehearsal else "", s.note, s.waiting,
                                        f"rc {s.returncode}" if s.returncode not in (None, 0) else "") if x)
            table.add_row(s.id, Text(state, STATE_STYLES.get(state, "")), s.profile, s.mode, progress,
                          Text(loss, justify="right"), note, key=str(s.path))
        if not message.summaries:
            self.notify(f"no runs in {self.runs_dir} yet", timeout=3)
        if current is not None:
            try:
                table.move_cursor(row=table.get_row_index(current))
            except Exception:  # the run directory is gone
                pass
        self.loaded = True

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.post_message(messages.OpenRun(RunPaths(Path(event.row_key.value))))

    def action_open(self) -> None:
        table = self.query_one(DataTable)
        if table.row_count:
            key = table.coordinate_to_cell_key((table.cursor_row, 0)).row_key.value
            self.post_message(messages.OpenRun(RunPaths(Path(key))))

    def action_back(self) -> None:
        self.app.pop_screen()

"""The run's story: checkpoints (best marked, size, write time), epochs, validation, warnings,
state changes, and a failure with the failing rank's first error lines (from exit.json).
The watchdog's hang and straggler warnings (and its all-clear) carry a badge naming the rank,
its step and how long, styled by the event-log--hang/straggler/recovered component classes; a
[health] rule that fired carries a HEALTH badge (event-log--health).

Times are shown relative to the run's start (+m:ss), so the log reads the same from any
time zone and in snapshots.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from rich.text import Text
from textual.widgets import RichLog

from training.rundir.records import ExitRecord
from tui.describe import Line, describe
from tui.formats import format_duration

# Lines an event log holds, however long the run: what a scroll back shows (each line is one
# event's Strip, about 1-2 KB at 160 columns). The series snapshot keeps as many story events
# (training.rundir.snapshot.MAX_STORY) so an attach fills the log as following did.
EVENT_LOG_MAX_LINES = 5000


class EventLog(RichLog):
    COMPONENT_CLASSES = {
        "event-log--hang", "event-log--hang-text",
        "event-log--straggler", "event-log--straggler-text",
        "event-log--recovered", "event-log--recovered-text",
        "event-log--health", "event-log--health-text",
    }

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("wrap", True)
        kwargs.setdefault("max_lines", EVENT_LOG_MAX_LINES)
        super().__init__(**kwargs)
        # RichLog keeps every write in a deque until the widget is first sized: the log in the
        # Events tab nobody opened never is, and it held a copy of every event's line for the whole
        # run (about 1 KB an event: the attached console's growth in issue 35). Writes beyond
        # max_lines would be cut when it is sized anyway; so they are as they come.
        self._deferred_renders = deque(maxlen=self.max_lines)
        self.start_t: float | None = None
        self.shown_exit = False

    # RichLog scrolls to its end when a line is written, by the height it has then. A layout change
    # after the last write (the series list shown beside it, a horizontal scrollbar that appears,
    # a terminal resize) changes the height and left a log that follows the run short of its newest
    # lines until the next event: follow the end again whenever the size changes.
    def on_resize(self) -> None:
        self._follow_end()

    def watch_show_horizontal_scrollbar(self) -> None:
        self._follow_end()

    def _follow_end(self) -> None:
        if self.auto_scroll:
            self.scroll_end(animate=False, immediate=False, x_axis=False)

    def _stamp(self, event: dict[str, Any]) -> Text:
        t = event.get("t")
        if self.start_t is None or not isinstance(t, (int, float)):
            return Text("      ", style="dim")
        return Text(f"+{format_duration(t - self.start_t):>6} ", style="dim")

    def add_events(self, events: list[dict[str, Any]], epochs: int = 0) -> None:
        for event in events:
            line = describe(event, epochs)
            if line is not None:
                self.write(self._stamp(event) + self.styled(line))

    def styled(self, line: Line) -> Text:
        """The describer's pieces with their styles ("@name": one of this widget's component classes)."""
        text = Text()
        for piece in line:
            if piece.style.startswith("@"):
                text.append(piece.text, self.get_component_rich_style(piece.style[1:], partial=True))
            else:
                text.append(piece.text, piece.style)
        return text

    def add_orphaned(self, pid: str, run_id: str) -> None:
        """run.json still says live, but the supervisor is gone and wrote no exit.json."""
        self.write(Text(f"exit: failed  the supervisor (pid {pid}) is gone without writing exit.json; the run "
                        f"is orphaned. Clean up with: run.py --stop {run_id}", "bold red"))

    def add_exit(self, info: ExitRecord) -> None:
        """The end of the run, once; a failure names the rank and its first error lines."""
        if self.shown_exit:
            return
        self.shown_exit = True
        style = "bold green" if info.state == "finished" else ("bold red" if info.state == "failed" else "bold yellow")
        head = Text(f"exit: {info.state or '?'}", style)
        if info.returncode is not None:
            head.append(f"  return code {info.returncode}")
        if info.failed_rank is not None:
            head.append(f"  failing rank {info.failed_rank}", "bold red")
        if info.message:
            head.append(f"  {info.message}", "dim")
        self.write(head)
        for line in info.error[:12]:
            self.write(Text("    " + line, "red"))
        if info.hint:
            self.write(Text("    hint: " + info.hint, "yellow"))

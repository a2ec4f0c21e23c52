"""Per-rank logs: pick a source (a rank's log, the supervisor's, a stack dump) and follow it.

The widget only shows lines; the screen's worker tails the chosen file and hands lines down.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Log, Select


class RankLog(Vertical):
    @dataclass
    class SourceSelected(Message):
        path: Path | None

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._sources: list[tuple[str, Path]] = []

    def compose(self) -> ComposeResult:
        yield Select[str]([], prompt="no logs yet", allow_blank=True, id="rank-log-source")
        yield Log(max_lines=5000, auto_scroll=True, id="rank-log-lines")

    @property
    def selected(self) -> Path | None:
        value = self.query_one(Select).value
        return Path(value) if isinstance(value, str) else None

    def set_sources(self, sources: list[tuple[str, Path]]) -> None:
        """Offer these (label, path) sources; the first is chosen when nothing is yet."""
        if sources == self._sources:
            return
        self._sources = sources
        select = self.query_one(Select)
        current = select.value
        select.set_options([(label, str(path)) for label, path in sources])
        values = {str(path) for _, path in sources}
        if isinstance(current, str) and current in values:
            select.value = current
        elif sources:
            select.value = str(sources[0][1])

    def select(self, path: Path) -> None:
        """Show this source (one of the offered ones): the new stack dump, say."""
        if any(p == path for _, p in self._sources):
            self.query_one(Select).value = str(path)

    def on_select_changed(self, event: Select.Changed) -> None:
        event.stop()
        self.query_one(Log).clear()
        self.post_message(self.SourceSelected(Path(event.value) if isinstance(event.value, str) else None))

    def add_lines(self, lines: list[str], reset: bool = False) -> None:
        log = self.query_one(Log)
        if reset:
            log.clear()
        if lines:
            log.write_lines(lines)

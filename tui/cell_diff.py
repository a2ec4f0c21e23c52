"""Send the terminal only the cells that changed (curses/mosh style).

Textual re-sends every line fragment of a refreshed region, whether or not the terminal already
shows it: a GPU row whose only change is one digit costs the whole row, with its colours. Over
SSH that is most of the console's traffic (BENCHMARKS.md, issue 17). `CellDiff` keeps a shadow
of what the terminal shows (character and style per cell) and turns each compositor update into
cursor moves and the changed runs only; runs separated by a few unchanged cells are merged, a
cursor move costs more than a few characters.

The shadow is "unknown" at start, after a resize and after the app resumes from a suspend (the
shell drew over the screen): unknown cells are always sent. Fragments with wide characters
(East Asian, some emoji) are sent whole and leave their cells unknown.
"""

from __future__ import annotations

from rich.cells import cell_len
from rich.color import ColorSystem
from rich.console import Console
from rich.segment import ControlType, Segment
from rich.style import Style
from textual._compositor import ChopsUpdate, CompositorUpdate, LayoutUpdate
from textual.strip import Strip

MERGE_GAP = 6  # unchanged cells between two changed runs below which one run is sent
_UNKNOWN = None


def _move(x: int, y: int) -> str:
    return f"\x1b[{y + 1};{x + 1}H"


class CellDiff:
    def __init__(self) -> None:
        self.size: tuple[int, int] | None = None
        self.rows: list[list[tuple[str, Style | None] | None]] = []
        self.sent_cells = 0  # for tests and benchmarks
        self.skipped_cells = 0
        self._sgr = [""]

    def reset(self, size: tuple[int, int] | None = None) -> None:
        """Forget what the terminal shows (every cell is sent again)."""
        self.size = size
        self.rows = [[_UNKNOWN] * size[0] for _ in range(size[1])] if size else []

    def render(self, update: CompositorUpdate, console: Console, size: tuple[int, int]) -> str:
        """The terminal sequences that bring the screen from the shadow to `update`."""
        if size != self.size:
            self.reset(size)
        color_system = console._color_system or ColorSystem.TRUECOLOR
        out: list[str] = []
        self._sgr = [""]  # the SGR the terminal has now ("" = reset)
        for x, y, segments in _fragments(update, console):
            self._fragment(x, y, segments, out, color_system)
        if self._sgr[0]:
            out.append("\x1b[0m")
        return "".join(out)

    def _reset_sgr(self, out: list[str]) -> None:
        if self._sgr[0]:
            out.append("\x1b[0m")
            self._sgr[0] = ""

    def _fragment(self, x: int, y: int, segments: list[Segment], out: list[str], color_system) -> None:
        width, height = self.size or (0, 0)
        if not 0 <= y < height or not 0 <= x < width:
            self._reset_sgr(out)
            out.append(_move(x, y) + "".join(Strip.render_style(s.style, s.text, color_system) if s.style
                                             else s.text for s in segments))
            return
        row = self.rows[y]
        cells: list[tuple[str, Style | None]] = []
        for text, style, _ in segments:
            if cell_len(text) != len(text):  # wide characters: send the fragment whole
                n = sum(cell_len(s.text) for s in segments)
                row[x:x + n] = [_UNKNOWN] * len(row[x:x + n])
                self._reset_sgr(out)
                out.append(_move(x, y) + "".join(Strip.render_style(s.style, s.text, color_system) if s.style
                                                 else s.text for s in segments))
                self.sent_cells += n
                return
            cells.extend((ch, style) for ch in text)
        n = min(len(cells), width - x)
        cells = cells[:n]
        old = row[x:x + n]
        if old == cells:
            self.skipped_cells += n
            return
        i = 0
        while i < n:
            if old[i] == cells[i]:
                i += 1
                continue
            start = end = i  # a changed run, extended over short unchanged gaps
            j = i
            while j < n:
                if old[j] != cells[j]:
                    end = j + 1
                elif j - end >= MERGE_GAP:
                    break
                j += 1
            out.append(_move(x + start, y))
            out.append(_styled(cells[start:end], color_system, self._sgr))
            row[x + start:x + end] = cells[start:end]
            self.sent_cells += end - start
            self.skipped_cells += start - i
            i = end


def _styled(cells: list[tuple[str, Style | None]], color_system, current: list[str]) -> str:
    """The cells' text with an SGR only where the style changes from the one the terminal has
    (`current[0]`, updated): no reset after every run, as Textual's own output does."""
    parts: list[str] = []
    run: list[str] = []
    style = cells[0][1]

    def flush() -> None:
        text = "".join(run)
        if style is not None and style._link:  # a hyperlink: Textual's own rendering (ends reset)
            if current[0]:
                parts.append("\x1b[0m")
            parts.append(Strip.render_style(style, text, color_system))
            current[0] = ""
            return
        ansi = "" if style is None else (style._ansi if style._ansi is not None
                                         else Strip.render_ansi(style, color_system))
        if ansi != current[0]:
            parts.append(f"\x1b[0;{ansi}m" if ansi else "\x1b[0m")
            current[0] = ansi
        parts.append(text)

    for ch, s in cells:
        if s != style:
            flush()
            run, style = [], s
        run.append(ch)
    flush()
    return "".join(parts)


def _fragments(update: CompositorUpdate, console: Console):
    """(x, y, segments) of each fragment the update writes after a cursor move."""
    x = y = 0
    segments: list[Segment] = []
    started = False
    for segment in update.__rich_console__(console, console.options):
        if segment.control:
            for code in segment.control:
                if code[0] == ControlType.CURSOR_MOVE_TO:
                    if started and segments:
                        yield x, y, segments
                    x, y = code[1], code[2]
                    segments, started = [], True
            continue
        if segment.text == "\n":
            continue
        segments.append(segment)
    if started and segments:
        yield x, y, segments


class DiffedUpdate(CompositorUpdate):
    """A compositor update rendered through a `CellDiff` (App._display calls render_segments)."""

    def __init__(self, update: CompositorUpdate, diff: CellDiff, size: tuple[int, int]) -> None:
        self.update, self.diff, self.size = update, diff, size

    def render_segments(self, console: Console) -> str:
        return self.diff.render(self.update, console, self.size)

    def __rich_console__(self, console, options):  # not used by the app; the plain update
        yield from self.update.__rich_console__(console, options)


def diffable(update: object) -> bool:
    return isinstance(update, (LayoutUpdate, ChopsUpdate))

"""Send the terminal only the cells that changed (curses/mosh style).

Textual re-sends every line fragment of a refreshed region, whether or not the terminal already
shows it: a GPU row whose only change is one digit costs the whole row, with its colours. Over
SSH that is most of the console's traffic (BENCHMARKS.md, issue 17). `CellDiff` keeps a shadow
of what the terminal shows (character and style per cell) and turns each compositor update into
cursor moves and the changed runs only; runs separated by a few unchanged cells are merged, a
cursor move costs more than a few characters. A style change sends only what changed from the
terminal's current style (a new foreground, say, not a reset and every attribute again), or a
reset and the whole style when that is shorter or an attribute must be turned off.

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


def _move_from(cursor: tuple[int, int] | None, x: int, y: int) -> str:
    """The shortest move to (x, y): along the row from a known cursor (CSI n C / D), else absolute."""
    if cursor is not None and cursor[1] == y:
        dx = x - cursor[0]
        if dx == 0:
            return ""
        step = f"\x1b[{abs(dx) if abs(dx) > 1 else ''}{'C' if dx > 0 else 'D'}"
        absolute = _move(x, y)
        return step if len(step) < len(absolute) else absolute
    return _move(x, y)


class CellDiff:
    def __init__(self) -> None:
        self.size: tuple[int, int] | None = None
        self.rows: list[list[tuple[str, Style | None] | None]] = []
        self.sent_cells = 0  # for tests and benchmarks
        self.skipped_cells = 0
        self._sgr = [""]
        self._cursor: tuple[int, int] | None = None  # where the last run left it (None: unknown)

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
        self._cursor = None  # Textual moves it between frames
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
            self._cursor = None
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
                self._cursor = None
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
            out.append(_move_from(self._cursor, x + start, y))
            out.append(_styled(cells[start:end], color_system, self._sgr))
            # At the last column the terminal holds a pending wrap: count the cursor as unknown.
            self._cursor = (x + end, y) if x + end < width else None
            row[x + start:x + end] = cells[start:end]
            self.sent_cells += end - start
            self.skipped_cells += start - i
            i = end


# ---- SGR: from the terminal's current style to the next one, in as few bytes as it takes ------

def _sgr_state(ansi: str) -> tuple[str | None, str | None, frozenset[str]]:
    """(foreground, background, attributes) of an SGR parameter string as Rich writes one
    ("1;38;2;63;167;214;40"); colours as their parameters, None for the terminal's default."""
    params = ansi.split(";") if ansi else []
    fg = bg = None
    flags: set[str] = set()
    i = 0
    while i < len(params):
        p = params[i]
        if p in ("38", "48") and i + 1 < len(params):
            n = 3 if params[i + 1] == "5" else 5  # 38;5;N or 38;2;R;G;B
            value = ";".join(params[i:i + n])
            i += n
            if p == "38":
                fg = value
            else:
                bg = value
            continue
        code = int(p) if p.isdigit() else 0
        if code == 0:
            fg = bg = None
            flags.clear()
        elif 30 <= code <= 37 or 90 <= code <= 97:
            fg = p
        elif 40 <= code <= 47 or 100 <= code <= 107:
            bg = p
        else:
            flags.add(p)
        i += 1
    return fg, bg, frozenset(flags)


_TRANSITIONS: dict[tuple[str, str], str] = {}


def sgr_transition(current: str, new: str) -> str:
    """The escape sequence that takes the terminal from SGR state `current` to `new` ("" for
    none): only the parameters that change when nothing needs turning off, else a reset first."""
    key = (current, new)
    found = _TRANSITIONS.get(key)
    if found is not None:
        return found
    if current == new:
        out = ""
    else:
        full = f"\x1b[0;{new}m" if new else "\x1b[0m"
        (fg0, bg0, flags0), (fg1, bg1, flags1) = _sgr_state(current), _sgr_state(new)
        out = full
        if flags0 <= flags1:  # no attribute to turn off
            params = sorted(flags1 - flags0)
            if fg1 != fg0:
                params.append(fg1 or "39")
            if bg1 != bg0:
                params.append(bg1 or "49")
            step = f"\x1b[{';'.join(params)}m" if params else ""
            out = step if len(step) < len(full) else full
    if len(_TRANSITIONS) < 4096:  # a screen has a few dozen styles; the bound is for safety
        _TRANSITIONS[key] = out
    return out


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
            parts.append(sgr_transition(current[0], ansi))
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

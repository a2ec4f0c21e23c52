"""tui.cell_diff: the terminal gets only the cells that changed, and ends up showing exactly what
Textual's own output would have shown. A tiny terminal (cursor moves, SGR, characters) replays
both streams; seeded random updates, no timing."""

from __future__ import annotations

import random
import re

from rich.console import Console
from rich.segment import Segment
from rich.style import Style
from textual._compositor import LayoutUpdate
from textual.geometry import Region
from textual.strip import Strip

from tui.cell_diff import CellDiff

TOKEN = re.compile(r"\x1b\[(\d+);(\d+)H|\x1b\[([0-9;]*)m|\x1b\[(\d*)([CD])|(.)", re.S)
STYLES = [None, Style(color="red"), Style(bold=True), Style(color="#3FA7D6", bgcolor="black"),
          Style(color="#3FA7D6", bgcolor="#202020"), Style(color="red", bgcolor="#202020", underline=True),
          Style(color="color(200)", bgcolor="black", bold=True, dim=True)]


def apply_sgr(state: dict[str, str], params: str) -> dict[str, str]:
    """What a terminal does with ESC [ params m: each parameter changes the current style."""
    state, ps, i = dict(state), params.split(";"), 0
    while i < len(ps):
        p = ps[i]
        if p in ("38", "48"):
            n = 3 if ps[i + 1] == "5" else 5
            state["fg" if p == "38" else "bg"] = ";".join(ps[i + 1:i + n])
            i += n
            continue
        code = int(p or 0)
        if code == 0:
            state = {}
        elif code in (39, 49):
            state.pop("fg" if code == 39 else "bg", None)
        elif 30 <= code <= 37 or 90 <= code <= 97:
            state["fg"] = p
        elif 40 <= code <= 47 or 100 <= code <= 107:
            state["bg"] = p
        else:
            state[p] = "on"
        i += 1
    return state


class Terminal:
    def __init__(self, w: int, h: int) -> None:
        self.cells = [[(" ", "")] * w for _ in range(h)]
        self.x = self.y = 0
        self.state: dict[str, str] = {}

    def feed(self, data: str) -> None:
        for m in TOKEN.finditer(data):
            if m.group(1):
                self.y, self.x = int(m.group(1)) - 1, int(m.group(2)) - 1
            elif m.group(3) is not None:
                self.state = apply_sgr(self.state, m.group(3))
            elif m.group(5):  # cursor forward / back along the row
                n = int(m.group(4) or 1)
                self.x += n if m.group(5) == "C" else -n
            elif m.group(6) != "\n":
                self.cells[self.y][self.x] = (m.group(6), repr(sorted(self.state.items())))
                self.x += 1


def console() -> Console:
    return Console(width=40, height=10, color_system="truecolor", force_terminal=True)


def update(rng: random.Random, w: int, h: int, alphabet: str = "0123456789 ab") -> LayoutUpdate:
    x, y = rng.randrange(w), rng.randrange(h)
    rw, rh = rng.randint(1, w - x), rng.randint(1, h - y)
    lines = []
    for _ in range(rh):
        segs, left = [], rw
        while left:
            n = rng.randint(1, left)
            segs.append(Segment("".join(rng.choice(alphabet) for _ in range(n)), rng.choice(STYLES)))
            left -= n
        lines.append([Strip(segs, rw)])
    return LayoutUpdate(lines, Region(x, y, rw, rh))


def test_the_diffed_stream_shows_the_same_screen_as_textuals():
    w, h = 40, 10
    rng = random.Random(17)
    plain, diffed, diff, c = Terminal(w, h), Terminal(w, h), CellDiff(), console()
    plain_bytes = diffed_bytes = 0
    for _ in range(300):
        # Mostly small changes on the same few cells, as a live screen has.
        u = update(rng, w, h, alphabet=rng.choice(["0123456789 ab", "00001"]))
        full, part = u.render_segments(c), diff.render(u, c, (w, h))
        plain.feed(full)
        diffed.feed(part)
        plain_bytes, diffed_bytes = plain_bytes + len(full), diffed_bytes + len(part)
        assert diffed.cells == plain.cells
    assert diffed_bytes < plain_bytes


def test_an_unchanged_update_sends_nothing_and_one_digit_sends_one_cell():
    w, h, c, diff = 40, 10, console(), CellDiff()

    def row(text: str) -> LayoutUpdate:
        return LayoutUpdate([[Strip([Segment(text, Style(color="red"))], len(text))]], Region(0, 3, len(text), 1))

    first = diff.render(row("step 1,234  loss 0.512"), c, (w, h))
    assert "step 1,234" in first
    assert diff.render(row("step 1,234  loss 0.512"), c, (w, h)) == ""
    again = diff.render(row("step 1,235  loss 0.512"), c, (w, h))
    assert again.startswith("\x1b[4;10H") and "5" in again and "loss" not in again


def test_a_resize_or_a_reset_sends_everything_again():
    c, diff = console(), CellDiff()
    u = LayoutUpdate([[Strip([Segment("abc")], 3)]], Region(0, 0, 3, 1))
    assert "abc" in diff.render(u, c, (40, 10))
    assert diff.render(u, c, (40, 10)) == ""
    assert "abc" in diff.render(u, c, (41, 10))  # resized: the terminal reflowed
    diff.reset()
    assert "abc" in diff.render(u, c, (41, 10))  # resumed from a suspend


def test_wide_characters_are_sent_whole_and_stay_unknown():
    c, diff = console(), CellDiff()
    u = LayoutUpdate([[Strip([Segment("日本")], 4)]], Region(0, 0, 4, 1))
    assert "日本" in diff.render(u, c, (40, 10))
    assert "日本" in diff.render(u, c, (40, 10))


def test_a_style_change_sends_only_what_changed_unless_a_reset_is_shorter():
    from tui.cell_diff import sgr_transition

    assert sgr_transition("97;40", "36;40") == "\x1b[36m"  # a new foreground only
    assert sgr_transition("38;2;1;2;3;48;2;4;5;6", "38;2;9;9;9;48;2;4;5;6") == "\x1b[38;2;9;9;9m"
    assert sgr_transition("31;40", "31") == "\x1b[49m"  # back to the default background
    assert sgr_transition("1;31", "31") == "\x1b[0;31m"  # bold must go: reset, then the style
    assert sgr_transition("36;40", "") == "\x1b[0m"
    assert sgr_transition("36;40", "36;40") == ""
    # Whatever the pair, a terminal in the old style ends in the new one.
    for old in ("", "1;31", "2;4;38;2;63;167;214;40", "97;100", "7;9;53"):
        for new in ("", "31", "1;38;5;200;48;2;4;5;6", "97;40", "4;90;40", "2;4;38;2;63;167;214;40"):
            step = sgr_transition(old, new)
            after = apply_sgr(apply_sgr({}, old), step[2:-1]) if step else apply_sgr({}, old)
            assert after == apply_sgr({}, new), (old, new, step)


def test_runs_on_one_row_are_reached_by_a_short_move_along_it():
    w, h, c, diff = 40, 10, console(), CellDiff()

    def row(text: str) -> LayoutUpdate:
        return LayoutUpdate([[Strip([Segment(text, Style(color="red"))], len(text))]], Region(0, 3, len(text), 1))

    diff.render(row("util 10%  mem 20%  temp 30C"), c, (w, h))
    out = diff.render(row("util 11%  mem 20%  temp 31C"), c, (w, h))
    assert out.startswith("\x1b[4;7H") and "\x1b[4;26H" not in out and "\x1b[18C" in out

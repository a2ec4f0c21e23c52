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

TOKEN = re.compile(r"\x1b\[(\d+);(\d+)H|\x1b\[([0-9;]*)m|(.)", re.S)
STYLES = [None, Style(color="red"), Style(bold=True), Style(color="#3FA7D6", bgcolor="black")]


class Terminal:
    def __init__(self, w: int, h: int) -> None:
        self.cells = [[(" ", "")] * w for _ in range(h)]
        self.x = self.y = 0
        self.sgr = ""

    def feed(self, data: str) -> None:
        for m in TOKEN.finditer(data):
            if m.group(1):
                self.y, self.x = int(m.group(1)) - 1, int(m.group(2)) - 1
            elif m.group(3) is not None:
                sgr = m.group(3)
                sgr = sgr[2:] if sgr.startswith("0;") else sgr  # "reset, then ..." is the same
                self.sgr = "" if sgr in ("", "0") else sgr
            elif m.group(4) != "\n":
                self.cells[self.y][self.x] = (m.group(4), self.sgr)
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

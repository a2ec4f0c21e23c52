"""Repaint only the lines that changed (issue 17): the mechanism the GPU panels and the loss plot
share.

A widget keeps what it painted, a Strip per content line, and the size it was drawn at. On a
change it draws its lines again (`draw_lines`), compares them with what it painted and refreshes
only the lines that differ; a new size, a different number of lines or `forget_painted()` (a
restyle, a theme) draws and repaints everything at the next paint.
"""

from __future__ import annotations

from textual.geometry import Region, Size
from textual.strip import Strip


class PaintsChangedLines:
    """Mixin for a Textual Widget that paints through render_line; subclasses draw_lines()."""

    _painted: list[Strip] = []
    _painted_at: Size | None = None  # None: draw everything at the next paint

    def draw_lines(self) -> list[Strip]:
        """The widget's content now, a Strip per line."""
        raise NotImplementedError

    def forget_painted(self) -> None:
        self._painted_at = None

    def show_changes(self) -> None:
        """Draw the lines again and repaint only those that differ from what was painted."""
        size = self.content_size
        if self._painted_at != size:
            self._painted_at = None
            self.refresh()  # the next paint draws it all
            return
        lines = self.draw_lines()
        if len(lines) != len(self._painted):
            self._painted_at = None
            self.refresh()
            return
        for y, (old, new) in enumerate(zip(self._painted, lines, strict=True)):
            if old != new:
                self.refresh(Region(0, y, size.width, 1))
        self._painted = lines

    def render_line(self, y: int) -> Strip:
        size = self.content_size
        if self._painted_at != size:
            self._painted = self.draw_lines()
            self._painted_at = size
        if 0 <= y < len(self._painted):
            return self._painted[y]
        return Strip.blank(size.width, self.rich_style)

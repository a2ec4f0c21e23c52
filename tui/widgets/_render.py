"""Text helpers shared by the widgets' render methods: bars, sparklines, short numbers."""

from __future__ import annotations

import math
from collections.abc import Sequence

_EIGHTHS = " ▏▎▍▌▋▊▉"
_SPARKS = "▁▂▃▄▅▆▇█"


def bar(fraction: float | None, width: int) -> tuple[str, str]:
    """(filled, empty) strings of a horizontal bar `width` cells wide, in eighth-cell steps."""
    width = max(0, width)
    if fraction is None or not math.isfinite(fraction):
        return "", "·" * width
    fraction = min(1.0, max(0.0, fraction))
    eighths = int(round(fraction * width * 8))
    full, part = divmod(eighths, 8)
    filled = "█" * full + (_EIGHTHS[part] if part and full < width else "")
    return filled, " " * (width - len(filled))


def sparkline(values: Sequence[float | None], width: int, top: float = 100.0) -> str:
    """The last `width` values as block characters (N/A as a space), scaled to 0..top."""
    if width <= 0:
        return ""
    tail = list(values)[-width:]
    out = []
    for v in tail:
        if v is None:
            out.append(" ")
        else:
            out.append(_SPARKS[min(7, max(0, int(v / top * 7.999)))])
    return "".join(out).rjust(width)


def gib(mib: float | None) -> str:
    """Memory in GB with the precision that fits a compact column."""
    if mib is None:
        return "?"
    g = mib / 1024
    return f"{g:.0f}" if g >= 10 else f"{g:.1f}"


def num(value: float | None, fmt: str = "{:.0f}", na: str = "N/A") -> str:
    return na if value is None else fmt.format(value)

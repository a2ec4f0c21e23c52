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


SPARK_STEP = 5  # telemetry samples per sparkline cell


def sparkline(values: Sequence[float | None], width: int, top: float = 100.0, step: int = 1, start: int = 0) -> str:
    """The last `width` cells of `values` as block characters (N/A as a space), scaled to 0..top.
    With `step` > 1 a cell is the mean of `step` samples, in buckets aligned to the absolute sample
    index (`start` is values[0]'s), so the line shifts once every `step` samples and only its newest
    cell changes in between: a terminal that is sent only changed cells gets one cell, not all."""
    if width <= 0:
        return ""
    if step > 1:
        cells: list[float | None] = []
        bucket, acc, n = None, 0.0, 0
        for i, v in enumerate(values):
            b = (start + i) // step
            if b != bucket:
                if bucket is not None:
                    cells.append(acc / n if n else None)
                bucket, acc, n = b, 0.0, 0
            if v is not None:
                acc, n = acc + v, n + 1
        if bucket is not None:
            cells.append(acc / n if n else None)
        values = cells
    tail = list(values)[-width:]
    out = []
    for v in tail:
        if v is None:
            out.append(" ")
        else:
            out.append(_SPARKS[min(7, max(0, int(v / top * 7.999)))])
    return "".join(out).rjust(width)


def num(value: float | None, fmt: str = "{:.0f}", na: str = "N/A") -> str:
    return na if value is None else fmt.format(value)

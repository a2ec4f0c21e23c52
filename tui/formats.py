"""The one set of formatters both viewers use: durations, metric values, axis ticks, clean text.

Plain Python, no Textual (the headless printer imports it). Memory and byte sizes are written by
traindeck.units (units of 1024 named MiB, GiB), which the training side shares; what is a
number is traindeck.numbers' rule (`number` here is its `finite_number`).
"""

from __future__ import annotations

import math
import re
from typing import Any

from traindeck.numbers import finite_number

_CONTROL = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]|[\x00-\x08\x0b-\x1f\x7f]")


def clean_text(text: Any) -> str:
    """One printable line: no ANSI escapes or control characters from a user's stderr."""
    return _CONTROL.sub("", str(text)).replace("\t", " ").strip()


def strip_control(line: str) -> str:
    """A line with escapes and control characters removed, tabs as spaces, trailing space cut."""
    return _CONTROL.sub("", line.replace("\t", " ")).rstrip()


def format_duration(seconds: float | None) -> str:
    """'1:05', '2:03:04', '3d04h' (the run screen's elapsed and ETA); None is '--'."""
    if seconds is None:
        return "--"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    if h >= 24:
        return f"{h // 24}d{h % 24:02d}h"
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def format_clock(seconds: float) -> str:
    """'02:05' or '1:02:05': the headless progress line's elapsed time."""
    s = max(0, int(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def format_span(seconds: float) -> str:
    """'45s', '2m05s', '1h02m': how long a run took."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def format_stall(seconds: float) -> str:
    """How long a rank has not stepped: '92 s' like the watchdog's messages, then '2:05'."""
    return f"{seconds:.0f} s" if seconds < 99.5 else format_duration(seconds)


def format_value(v: Any) -> str:
    """A metric value: 4 significant digits, exponent form when very large or small."""
    if isinstance(v, str):
        return v  # "nan" / "inf" as events.py writes them
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return str(v)
    if not math.isfinite(v):
        return str(v)
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e5 or a < 1e-3:
        return f"{v:.2e}"
    return f"{v:.4g}"


# A finite int or float (not a bool) as a float, else None: the viewers' name for the one rule.
number = finite_number


def integer(value: Any) -> int | None:
    """An int that is not a bool, else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def format_tick(value: float, step: float | None = None) -> str:
    """An axis label as people write it: '0', '500', '14k', '28.5k', '1.2M'; a small value with the
    digits its tick spacing `step` needs ('0.25', '1e-04'). Integers stay integers."""
    if not math.isfinite(value):
        return str(value)
    if value == 0 or (step is not None and abs(value) < step * 1e-6):
        return "0"
    a = abs(value)
    if a >= 1000:
        for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
            if a >= div:
                return f"{value / div:.3g}{unit}"
    if value == int(value) and (step is None or step >= 1):
        return f"{int(value)}"
    if a < 1e-3:
        return f"{value:.0e}"
    if step is not None and step > 0:
        digits = max(0, min(6, -math.floor(math.log10(step)) + (0 if step / 10 ** math.floor(math.log10(step)) in (1, 2, 5) else 1)))
        return f"{value:.{digits}f}"
    return f"{value:.3g}"


def nice_step(span: float, count: int = 5) -> float:
    """A 1, 2 or 5 times a power of ten near span / count: the spacing of axis ticks."""
    if not math.isfinite(span) or span <= 0:
        return 1.0
    raw = span / max(1, count)
    power = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if m * power >= raw:
            return m * power
    return 10 * power


def nice_bounds(lo: float, hi: float, count: int = 5, integer: bool = False) -> tuple[float, float, float]:
    """(lower, upper, step): lo and hi widened to multiples of a nice tick step, so the bounds stay
    put while new points arrive inside them (the axis, and the plot's cells, do not move)."""
    if hi - lo < 1e-12:
        pad = abs(hi) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    step = nice_step(hi - lo, count)
    if integer:
        step = max(1.0, step)
    return math.floor(lo / step) * step, math.ceil(hi / step) * step, step

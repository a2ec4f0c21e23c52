"""The one set of formatters both viewers use: durations, byte sizes, metric values, clean text.

Plain Python, no Textual (the headless printer imports it). Bytes are divided by 1024 and the
unit says so (KiB, MiB, GiB, TiB): a checkpoint of 102,400,000 bytes is "97.7 MiB" everywhere.
"""

from __future__ import annotations

import math
import re
from typing import Any

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


def format_bytes(n: Any) -> str:
    """'512 B', '2.0 KiB', '97.7 MiB', '1.5 GiB'; '?' when `n` is not a number."""
    if isinstance(n, bool) or not isinstance(n, (int, float)) or not math.isfinite(n):
        return "?"
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def number(value: Any) -> float | None:
    """A finite int or float (not a bool) as a float, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def integer(value: Any) -> int | None:
    """An int that is not a bool, else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None

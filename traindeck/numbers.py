"""The one number rule for everything read from a run directory (events, run.json, telemetry).

JSON has no NaN or Infinity, so traindeck.events writes a non-finite float as its text ("nan",
"inf", "-inf"); a hand-edited or hostile file may hold anything else. Every reader decides what
a value means here, nowhere else:

    number(value)          a metric value: an int or float (never a bool), or the text of a
                           non-finite float, as a float; NaN and Infinity kept (a NaN loss is news)
    finite_number(value)   a step, an epoch, a time, a count: a finite number, else None
    is_nonfinite(value)    NaN or Infinity, as a float or as the text events.jsonl stores

An int beyond a double (10**400 in an edited file) is no number at all.
"""

from __future__ import annotations

import math
from typing import Any

# How a non-finite float may be spelled in a file (Python's str() writes the first three).
NONFINITE_TEXT = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf, "+inf": math.inf,
                  "infinity": math.inf, "-infinity": -math.inf}
_MAX_TEXT = 16  # longer strings are no spelling of a non-finite float; skip them unread


def number(value: Any) -> float | None:
    """A metric value as a float, NaN and Infinity included, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        try:
            return float(value)
        except OverflowError:  # an int beyond a double
            return None
    if isinstance(value, str) and len(value) <= _MAX_TEXT:
        return NONFINITE_TEXT.get(value.strip().lower())
    return None


def finite_number(value: Any) -> float | None:
    """A finite int or float (not a bool) as a float, else None (the text "nan" too)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        result = float(value)
    except OverflowError:
        return None
    return result if math.isfinite(result) else None


def is_nonfinite(value: Any) -> bool:
    """NaN or Infinity, as a float or as the text events.jsonl stores it as."""
    result = number(value)
    return result is not None and not math.isfinite(result)

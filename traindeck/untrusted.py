"""Reading files that anyone may have written: the one way every run-directory reader opens them.

A run directory can be handed to you, live in a runs directory others can write, or be a copy a
node sent; a crashed writer leaves junk, a neighbour leaves worse. So every reader takes any bytes
and never raises past these functions (only OSError, which readers already expect):

    open_regular(path)          a regular file, opened without following a symlink and without
                                blocking on a FIFO; anything else is an OSError
    read_bounded(path, limit)   its first `limit` bytes at most (None when it is longer: not ours)
    parse_json(data)            JSON text -> value; ValueError for junk, bad UTF-8, nesting deeper
                                than MAX_JSON_DEPTH (a RecursionError later, in whoever walks it)
    read_json_object(path)      a JSON object file as a dict, else None
    nests_at_most(value, n)     whether a parsed value nests at most n lists/dicts deep
    finite_float(value)         a finite int or float (not a bool) as a float, else None
    bounded_int(value, lo, hi)  an int (not a bool) in [lo, hi], else None

This module lives in the stand-alone `traindeck` package because the heartbeat reader does.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from typing import Any, BinaryIO

from traindeck.numbers import finite_number

# run.json, exit.json, heartbeats, control.json: a few KiB each. Anything much bigger is not ours.
MAX_RECORD_BYTES = 16 << 20
# The records nest a few levels; JSON nested deeper breaks whoever walks it recursively
# (json.dumps when run.json is merged, repr, a TOML writer) with a RecursionError.
MAX_JSON_DEPTH = 64

_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


class NotARegularFile(OSError):
    """A directory, FIFO, socket or device where a run-directory file should be."""


def open_regular(path: str | os.PathLike) -> BinaryIO:
    """The file for reading (binary), when it is a regular file and not a symlink.

    O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever.
    O_NOFOLLOW: a link planted in place of a run file points wherever its author likes.
    Raises OSError (NotARegularFile for a directory, FIFO, device) like a missing file does."""
    fd = os.open(path, _OPEN_FLAGS)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotARegularFile(errno.EINVAL, "not a regular file", str(path))
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bounded(path: str | os.PathLike, limit: int = MAX_RECORD_BYTES) -> bytes | None:
    """The whole file when it holds at most `limit` bytes, None when it holds more. OSError as open_regular."""
    with open_regular(path) as f:
        data = f.read(limit + 1)
    return data if len(data) <= limit else None


def nests_at_most(value: Any, limit: int) -> bool:
    """Whether `value` nests at most `limit` containers deep (iterative: a deep value must not
    recurse here either)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return False
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return True


def parse_json(data: bytes | str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """JSON text as a value. ValueError for anything that is not JSON nested at most `max_depth`
    deep: bad syntax, bad UTF-8, a RecursionError in the parser, an integer of more digits than
    Python converts. Infinity and NaN parse (as Python's json does); use finite_float on numbers."""
    try:
        value = json.loads(data)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    except UnicodeDecodeError as exc:  # a subclass of ValueError; named for the reason
        raise ValueError(f"not UTF-8 text: {exc.reason}") from None
    if not nests_at_most(value, max_depth):
        raise ValueError(f"JSON nested more than {max_depth} deep")
    return value


def read_json_object(path: str | os.PathLike, limit: int = MAX_RECORD_BYTES) -> dict[str, Any] | None:
    """A file holding one JSON object, as a dict; None when it is missing, unreadable, not a
    regular file, longer than `limit`, not JSON, or JSON but not an object."""
    try:
        data = read_bounded(path, limit)
    except OSError:
        return None
    if data is None:
        return None
    try:
        value = parse_json(data)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def json_object_problem(path: str | os.PathLike, limit: int = MAX_RECORD_BYTES) -> str | None:
    """Why `path` (which exists) is not a readable JSON object, in a few words; None when it is
    one or is missing. For the one warning line a listing prints about a bad run."""
    try:
        data = read_bounded(path, limit)
    except FileNotFoundError:
        return None
    except NotARegularFile:
        return "not a regular file"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a symbolic link (not followed)"
        return exc.strerror or "unreadable"
    if data is None:
        return f"larger than {limit >> 20} MiB"
    try:
        value = parse_json(data)
    except ValueError as exc:
        return f"not JSON ({exc})"[:120]
    return None if isinstance(value, dict) else f"JSON {type(value).__name__}, not an object"


def finite_float(value: Any) -> float | None:
    """A finite int or float (not a bool) as a float, else None (1e999, Infinity, NaN, 10**400)."""
    return finite_number(value)


def bounded_int(value: Any, lo: int, hi: int) -> int | None:
    """An int that is not a bool and lies in [lo, hi], else None."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if lo <= value <= hi else None


__all__ = ["MAX_JSON_DEPTH", "MAX_RECORD_BYTES", "NotARegularFile", "bounded_int", "finite_float",
           "json_object_problem", "nests_at_most", "open_regular", "parse_json", "read_bounded", "read_json_object"]


def shown_text(text: str) -> str:
    """`text` fit to show on a terminal: its control characters (ESC first: a neighbour's file
    must not retitle, recolour or write the clipboard of the terminal that lists it) and bidi
    overrides as '?'; newlines and tabs stay."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() or ch in "\n\t" else "?" for ch in text)

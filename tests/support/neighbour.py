"""Acting as another local user of the box: a forked child that switches uid, for the neighbour tests.

    as_neighbour(fn, *args)   runs fn(*args) in a forked child as NEIGHBOUR_UID (no account needed)
                              and returns what it returned (anything JSON can carry); an exception
                              in the child is raised here as NeighbourError with its traceback
    shared_dir()              a fresh directory in /tmp that every user may write (1777, like /tmp),
                              where pytest's own tmp_path (0700 under /tmp/pytest-of-root) is not

The suite runs as root in CI, so a child can become any uid with os.setuid. Elsewhere these tests
cannot act as someone else and skip with the reason (`needs_root`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

NEIGHBOUR_UID = 54321
NEIGHBOUR_GID = 54321
VICTIM_UID = 54322
VICTIM_GID = 54322

needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="acting as another local user needs root (os.setuid in a forked child); CI runs as root")


class NeighbourError(AssertionError):
    pass


def as_user(uid: int, gid: int, fn: Callable[..., Any], *args: Any, timeout_s: float = 60.0) -> Any:
    """fn(*args) in a forked child running as uid:gid (no supplementary groups)."""
    if os.geteuid() != 0:
        pytest.skip("acting as another local user needs root")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 0
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            os.environ["HOME"] = "/nonexistent"
            result = {"ok": fn(*args)}
        except BaseException:  # noqa: BLE001 - reported to the parent
            result = {"error": traceback.format_exc()}
            code = 1
        try:
            os.write(write_end, json.dumps(result, default=str).encode())
        finally:
            os._exit(code)
    os.close(write_end)
    chunks = []
    import select
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            os.close(read_end)
            raise NeighbourError(f"the neighbour's {fn.__name__} did not finish within {timeout_s:g} s")
        ready, _, _ = select.select([read_end], [], [], left)
        if ready:
            chunk = os.read(read_end, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    os.close(read_end)
    os.waitpid(pid, 0)
    result = json.loads(b"".join(chunks) or b'{"error": "the child wrote nothing"}')
    if "error" in result:
        raise NeighbourError(f"the neighbour's {fn.__name__} failed:\n{result['error']}")
    return result["ok"]


def as_neighbour(fn: Callable[..., Any], *args: Any, timeout_s: float = 60.0) -> Any:
    return as_user(NEIGHBOUR_UID, NEIGHBOUR_GID, fn, *args, timeout_s=timeout_s)


def as_victim(fn: Callable[..., Any], *args: Any, timeout_s: float = 60.0) -> Any:
    """A second non-root user (the traindeck user whom the neighbour attacks, where root would be
    too strong a victim: root may write anything anyway)."""
    return as_user(VICTIM_UID, VICTIM_GID, fn, *args, timeout_s=timeout_s)


@contextmanager
def shared_dir(prefix: str = "traindeck-shared-") -> Iterator[Path]:
    """A directory in /tmp that every user may write, sticky like /tmp; removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        os.chmod(path, 0o1777)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)

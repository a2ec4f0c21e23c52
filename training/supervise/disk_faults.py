"""For tests only: make this supervisor's writes into its run directory fail as on a full disk.

    TRAINDECK_TEST_DISK_FULL="AFTER_S:FOR_S"

AFTER_S seconds after the supervisor started the launcher (the training runs), and for FOR_S
seconds, every open for writing and
every write under the run directory raises OSError(ENOSPC), as the kernel does when a disk fills:
run.json, events.jsonl, telemetry.jsonl, the series snapshot. The training processes are left
alone (their own writes are theirs; tests/reliability/test_disk.py fills a real tmpfs for those),
so a test sees exactly what the supervisor does with a disk that fills and comes back. Unset (the
only way it is ever used outside tests), nothing is patched.
"""

from __future__ import annotations

import builtins
import errno
import os
import time
from pathlib import Path
from typing import Any

DISK_FULL_ENV = "TRAINDECK_TEST_DISK_FULL"
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC


# When the supervisor started the launcher (monotonic), once it did: the window counts from there.
_launched_at: list[float | None] = [None]


def launcher_started() -> None:
    """The supervisor's call right after it started the launcher (nothing happens unless armed)."""
    _launched_at[0] = time.monotonic()


def window_from_env() -> tuple[float, float] | None:
    value = os.environ.get(DISK_FULL_ENV, "")
    try:
        after, length = (float(x) for x in value.split(":"))
    except ValueError:
        return None
    return after, length


def arm_from_env(root: Path, log: Any = None) -> bool:
    """Patch os.open, os.write and open in this process when DISK_FULL_ENV asks; True if armed."""
    window = window_from_env()
    if window is None:
        return False
    prefix = str(Path(root).resolve()) + os.sep

    def full_now() -> bool:
        launched = _launched_at[0]
        return launched is not None and launched + window[0] <= time.monotonic() < launched + window[0] + window[1]

    def ours(path: Any) -> bool:
        try:
            return os.path.abspath(os.fspath(path)).startswith(prefix)
        except TypeError:
            return False

    def enospc(path: Any) -> OSError:
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    real_open, real_write, real_builtin_open = os.open, os.write, builtins.open

    def fake_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & _WRITE_FLAGS and full_now() and ours(path):
            raise enospc(path)
        return real_open(path, flags, *args, **kwargs)

    def fake_write(fd: int, data: Any) -> int:
        if full_now():
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                target = ""
            # stdout/stderr (logs/supervisor.log) stay: the test reads what the supervisor said.
            if fd > 2 and ours(target):
                raise enospc(target)
        return real_write(fd, data)

    def fake_builtin_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if isinstance(file, (str, bytes, os.PathLike)) and any(c in mode for c in "wax+") and full_now() \
                and ours(file):
            raise enospc(file)
        return real_builtin_open(file, mode, *args, **kwargs)

    os.open, os.write, builtins.open = fake_open, fake_write, fake_builtin_open
    if log is not None:
        log(f"test fault armed: writes under {root} fail with ENOSPC {window[0]:g} s after the launch, for {window[1]:g} s")
    return True

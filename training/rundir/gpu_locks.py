"""One lock per GPU in a directory every traindeck user of the box shares, and a ticket queue.

    <lock dir>/                  (default /tmp/traindeck-gpu-locks, 1777 like /tmp)
        queue.lock               the mutex: held (flock) only while one process looks and takes
        next-ticket              the ticket counter
        tickets/000000000042.json  a waiting start: run id, user, pid, what it wants; flock'd by its owner
        gpu-<uuid>.lock          flock'd by the supervisor of the run that has the GPU; its content
                                 says who (run_id, user, pid, host, since)

Why this shape:
- flock, so a crashed holder frees its GPUs: the kernel drops the lock with the last descriptor.
  A directory left behind by a crash (files, stale tickets) is therefore never in the way.
- The whole set at once: a start takes the mutex, checks every GPU it wants, locks them all or
  none, and lets go of the mutex. Nobody ever holds half a set while waiting for the rest.
- First come, first served: flock alone is not fair, so waiting starts draw a ticket and only the
  oldest live ticket may take GPUs. A start that does not queue (no --queue) is refused while
  anyone is queued: it would jump the line.
- GPUs are named by UUID: indices differ between containers that see different GPUs; UUIDs do not.
  Users in separate containers must mount one directory into all of them and point
  $TRAINDECK_GPU_LOCK_DIR (or `[hardware] lock_dir`) at it; flock needs a local filesystem.
"""

from __future__ import annotations

import errno
import fcntl
import getpass
import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

LOCK_DIR_ENV = "TRAINDECK_GPU_LOCK_DIR"
DEFAULT_LOCK_DIR = Path("/tmp/traindeck-gpu-locks")
MUTEX = "queue.lock"
COUNTER = "next-ticket"
TICKETS = "tickets"
POLL_S = 1.0

# choose(held) -> (lock keys to take, payload) or (None, why not now)
Chooser = Callable[[dict[str, dict[str, Any]]], tuple[list[str] | None, Any]]


def lock_dir_for(profile_lock_dir: str = "", environ: Mapping[str, str] | None = None) -> Path:
    """$TRAINDECK_GPU_LOCK_DIR (the box's setting) wins, then `[hardware] lock_dir`, then /tmp."""
    environ = os.environ if environ is None else environ
    chosen = environ.get(LOCK_DIR_ENV) or profile_lock_dir
    return Path(chosen).expanduser() if chosen else DEFAULT_LOCK_DIR


def user_name() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in a container
        return str(os.getuid())


def _open_shared(path: Path, flags: int) -> int:
    """Open (creating) a file every user of the box may lock: 0666 in a sticky directory."""
    fd = os.open(path, flags | os.O_CREAT, 0o666)
    try:
        if os.fstat(fd).st_uid == os.getuid():
            os.fchmod(fd, 0o666)
    except OSError:
        pass
    return fd


def _try_lock(fd: int, how: int = fcntl.LOCK_EX) -> bool:
    try:
        fcntl.flock(fd, how | fcntl.LOCK_NB)
        return True
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise


def _read_json(fd_or_path) -> dict[str, Any]:
    try:
        if isinstance(fd_or_path, int):
            text = os.pread(fd_or_path, 1 << 16, 0).decode("utf-8", "replace")
        else:
            text = Path(fd_or_path).read_text(encoding="utf-8")
        data = json.loads(text) if text.strip() else {}
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_json(fd: int, data: dict[str, Any]) -> None:
    raw = json.dumps(data, sort_keys=True).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, raw, 0)


@dataclass
class GpuHold:
    """The GPUs a run took; released at the run's end (or by the kernel when the holder dies)."""

    keys: tuple[str, ...]
    record: dict[str, Any]
    fds: list[int] = field(default_factory=list, repr=False)

    def update(self, **fields: Any) -> None:
        """Add to what the locks say about their holder (the run's worker pids, for --gpus)."""
        self.record.update(fields)
        for fd in self.fds:
            _write_json(fd, self.record)

    def release(self) -> None:
        fds, self.fds = self.fds, []
        for fd in fds:
            try:
                os.ftruncate(fd, 0)
            except OSError:
                pass
            os.close(fd)  # closing the last descriptor drops the flock


@dataclass(frozen=True)
class Ticket:
    number: int
    path: Path
    record: dict[str, Any]


class GpuLocks:
    def __init__(self, directory: Path):
        self.dir = Path(directory)

    # ---------------------------------------------------------------- layout

    def ensure(self) -> None:
        for d in (self.dir, self.dir / TICKETS):
            try:
                d.mkdir(parents=True, exist_ok=True)
                if d.stat().st_uid == os.getuid():
                    d.chmod(0o1777)  # like /tmp: everyone may add, nobody may delete another's files
            except OSError as exc:
                from training.errors import TraindeckError

                raise TraindeckError(
                    f"cannot use the GPU lock directory {self.dir}: {exc.strerror or exc}. Point "
                    f"${LOCK_DIR_ENV} (or [hardware] lock_dir) at a directory every user of this box can "
                    f"write, e.g. a shared mount with mode 1777.") from None

    def _gpu_path(self, key: str) -> Path:
        return self.dir / f"gpu-{key}.lock"

    def _mutex(self) -> int:
        fd = _open_shared(self.dir / MUTEX, os.O_RDWR)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return fd

    # ---------------------------------------------------------------- reading (under the mutex)

    def _held(self) -> dict[str, dict[str, Any]]:
        out = {}
        for path in sorted(self.dir.glob("gpu-*.lock")):
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                continue
            try:
                if _try_lock(fd, fcntl.LOCK_SH):
                    continue  # nobody holds it (a crashed holder's file is just a file)
                out[path.name[len("gpu-"):-len(".lock")]] = _read_json(fd)
            finally:
                os.close(fd)
        return out

    def _live_tickets(self, own: Path | None = None) -> list[Ticket]:
        out = []
        for path in sorted((self.dir / TICKETS).glob("*.json")):
            try:
                number = int(path.stem)
            except ValueError:
                continue
            if path != own:
                try:
                    fd = os.open(path, os.O_RDONLY)
                except OSError:
                    continue
                try:
                    if _try_lock(fd, fcntl.LOCK_SH):  # its owner is gone: a crashed waiter
                        try:
                            path.unlink()
                        except OSError:
                            pass  # another user's, in the sticky directory: just skip it
                        continue
                    record = _read_json(fd)
                finally:
                    os.close(fd)
            else:
                record = _read_json(path)
            out.append(Ticket(number, path, record))
        return sorted(out, key=lambda t: t.number)

    def held(self) -> dict[str, dict[str, Any]]:
        """lock key -> the holder's record, for every GPU a live traindeck run holds now."""
        if not self.dir.is_dir():
            return {}
        fd = self._mutex()
        try:
            return self._held()
        finally:
            os.close(fd)

    def queue(self) -> list[Ticket]:
        if not (self.dir / TICKETS).is_dir():
            return []
        fd = self._mutex()
        try:
            return self._live_tickets()
        finally:
            os.close(fd)

    # ---------------------------------------------------------------- taking

    def _take(self, keys: list[str], record: dict[str, Any]) -> GpuHold | None:
        fds = []
        for key in keys:
            fd = _open_shared(self._gpu_path(key), os.O_RDWR)
            if not _try_lock(fd):
                os.close(fd)
                for taken in fds:
                    os.close(taken)
                return None
            fds.append(fd)
        hold = GpuHold(tuple(keys), dict(record), fds)
        hold.update()
        return hold

    def _draw_ticket(self, record: dict[str, Any]) -> tuple[Path, int]:
        counter = _open_shared(self.dir / COUNTER, os.O_RDWR)
        try:
            raw = os.pread(counter, 64, 0).decode().strip()
            number = int(raw) if raw.isdigit() else 0
            _write_json_text(counter, str(number + 1))
        finally:
            os.close(counter)
        path = self.dir / TICKETS / f"{number:012d}.json"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)  # held while this start waits: a crash frees its place
        _write_json(fd, {**record, "ticket": number})
        return path, fd

    def acquire(self, choose: Chooser, record: dict[str, Any], wait: bool, poll_s: float = POLL_S,
                on_wait: Callable[[int, Any], None] | None = None,
                should_stop: Callable[[], bool] | None = None,
                sleep: Callable[[float], None] = time.sleep) -> tuple[GpuHold | None, Any]:
        """Take the GPUs `choose` picks, all at once. wait=False: one try; (None, why) when busy or
        when others are queued. wait=True: draw a ticket and try whenever it is the oldest live one;
        `on_wait(place, why)` after every failed look (place 1 = next); (None, "stopped") when
        `should_stop()` says so."""
        self.ensure()
        record = {"user": user_name(), "pid": os.getpid(), "host": socket.gethostname(), **record}
        if not wait:
            mutex = self._mutex()
            try:
                queued = self._live_tickets()
                if queued:
                    who = ", ".join(f"{t.record.get('run_id', '?')} (user {t.record.get('user', '?')})"
                                    for t in queued[:3])
                    return None, f"{len(queued)} start(s) already wait for GPUs on this box: {who}"
                keys, payload = choose(self._held())
                if keys is None:
                    return None, payload
                hold = self._take(keys, {**record, "since": round(time.time(), 3)})
                return (hold, payload) if hold else (None, "another start took these GPUs a moment ago")
            finally:
                os.close(mutex)
        mutex = self._mutex()
        try:
            ticket_path, ticket_fd = self._draw_ticket(record)
        finally:
            os.close(mutex)
        try:
            while True:
                mutex = self._mutex()
                try:
                    tickets = self._live_tickets(own=ticket_path)
                    place = next((i + 1 for i, t in enumerate(tickets) if t.path == ticket_path), 1)
                    if place == 1:
                        keys, payload = choose(self._held())
                        if keys is not None:
                            hold = self._take(keys, {**record, "since": round(time.time(), 3)})
                            if hold is not None:
                                ticket_path.unlink(missing_ok=True)
                                return hold, payload
                            payload = "another start took these GPUs a moment ago"
                    else:
                        ahead = tickets[0].record
                        payload = f"behind {place - 1} earlier start(s), next: {ahead.get('run_id', '?')} " \
                                  f"(user {ahead.get('user', '?')})"
                finally:
                    os.close(mutex)
                if on_wait is not None:
                    on_wait(place, payload)
                if should_stop is not None and should_stop():
                    return None, "stopped"
                sleep(poll_s)
        finally:
            if ticket_path.exists():
                ticket_path.unlink(missing_ok=True)
            os.close(ticket_fd)


def _write_json_text(fd: int, text: str) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, text.encode(), 0)

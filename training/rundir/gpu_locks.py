"""One lock per GPU in a directory every traindeck user of the box shares, and a ticket queue.

    <lock dir>/                  (default /tmp/traindeck-gpu-locks; root-owned 1777 like /tmp, or your own)
        queue.lock               the mutex: held (flock) only while one process looks and takes
        ticket-<20 digits>.json  a waiting start: run id, user, pid, what it wants; flock'd by its owner
        gpu-<uuid>.lock          flock'd by the supervisor of the run that has the GPU; its content
                                 says which run (run_id, user, pid, host, since): a hint, see below

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

The directory is hostile ground (every local user may write it):
- The directory itself is opened with O_NOFOLLOW | O_DIRECTORY and refused, with the fix, when it
  is a symlink, not a directory, owned by another non-root user (who could swap files under
  everyone) or writable by others without the sticky bit. Only a directory this process just
  made (mkdir) is chmod-ed to 1777. Every file is opened relative to that descriptor.
- Every open is O_NOFOLLOW | O_NONBLOCK (a planted symlink fails, a FIFO cannot block), and a file
  counts only when fstat says it is a regular file with one link. New files are made with
  O_CREAT | O_EXCL and only then fchmod-ed; an existing file is opened WITHOUT O_CREAT, so a lock
  file another user created keeps working under fs.protected_regular. The mutex and a GPU lock
  only need a descriptor to flock, so a lock file we may not write is opened read-only: we hold it
  without writing our record. A file is written (ftruncate + pwrite) only through a descriptor
  that passed those checks and on which this process holds the exclusive flock.
- No shared counter: a ticket's number is the wall clock in nanoseconds, raised above every live
  ticket's number (drawn under the mutex, so a clock step back never reorders the line), and its
  file is created O_EXCL (a name someone planted is skipped). The old `next-ticket` counter file,
  which whoever made first owned, is gone, so it can no longer refuse anyone.
- Who holds a lock comes from the kernel: /proc/locks names the pid holding the flock on that
  inode, /proc/PID its user and command line. A record (which its writer, maybe a neighbour,
  chose) is read bounded (64 KiB), garbage becomes {}, and its run id is believed only when its
  pid is the kernel's holder. All its text is made printable and bounded before anyone shows it.
- Every wait on the mutex has a deadline of seconds (flock LOCK_NB polling, injectable clock and
  sleep); then the command names the kernel's holder and the fix. Views (`held`, `queue`) read
  without the mutex after the deadline and say so in `warnings`; a queued start keeps waiting and
  reports the holder through on_wait.
"""

from __future__ import annotations

import errno
import fcntl
import getpass
import json
import math
import os
import re
import socket
import stat
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from training.errors import TraindeckError

LOCK_DIR_ENV = "TRAINDECK_GPU_LOCK_DIR"
DEFAULT_LOCK_DIR = Path("/tmp/traindeck-gpu-locks")
MUTEX = "queue.lock"
POLL_S = 1.0
# How long any command waits for the mutex (which a start holds for milliseconds) before it says
# who holds it. Read at call time, so tests may lower it.
MUTEX_DEADLINE_S = 5.0
MAX_RECORD_BYTES = 64 * 1024
MAX_TEXT = 80
FIX = (f"set ${LOCK_DIR_ENV} (or [hardware] lock_dir) to a directory of your own, or ask the box's admin "
       f"to create the shared one root-owned with mode 1777")

_TICKET_NAME = re.compile(r"ticket-(\d{20})\.json")
_GPU_NAME = re.compile(r"gpu-([A-Za-z0-9._-]{1,128})\.lock")
_OPEN = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC

# choose(held) -> (lock keys to take, payload) or (None, why not now)
Chooser = Callable[[dict[str, dict[str, Any]]], tuple[list[str] | None, Any]]


class UnsafeLockDir(TraindeckError):
    """The lock directory, or a file in it, is not what traindeck made: refused with the fix."""


class LockBusy(TraindeckError):
    """The mutex stayed held past the deadline (the message names the kernel's holder)."""


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


# ---------------------------------------------------------------- text and records others wrote

def printable(value: Any, limit: int = MAX_TEXT) -> str:
    """Text fit for a terminal: control characters, escapes and bidi overrides become '?', and it
    is at most `limit` characters. Used on everything a neighbour may have chosen."""
    text = value if isinstance(value, str) else str(value)
    text = "".join(ch if ch.isprintable() else "?" for ch in text[: limit + 1])
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _small_int(value: Any) -> int | None:
    return value if type(value) is int and 0 < value < 1 << 31 else None


def clean_record(data: Any) -> dict[str, Any]:
    """The fields of a lock or ticket record that have the right type; text made printable.
    Anything else (not a dict, wrong types, NaN) is dropped, never raised."""
    if not isinstance(data, dict):
        return {}
    out: dict[str, Any] = {}
    for key in ("run_id", "user", "host", "command"):
        if isinstance(data.get(key), str):
            out[key] = printable(data[key])
    for key in ("pid", "ticket"):
        number = data.get(key)
        if type(number) is int and 0 <= number < 1 << 64:
            out[key] = number
    since = data.get("since")
    if isinstance(since, (int, float)) and not isinstance(since, bool) and math.isfinite(since):
        out["since"] = float(since)
    pids = data.get("pids")
    if isinstance(pids, list):
        out["pids"] = [p for p in pids[:256] if _small_int(p)]
    return out


def parse_record(raw: bytes) -> dict[str, Any]:
    """A record's bytes -> clean_record(JSON), {} for anything that is not one (too big, not
    UTF-8, not JSON, too deep)."""
    if len(raw) > MAX_RECORD_BYTES:
        return {}
    try:
        text = raw.decode("utf-8")
        return clean_record(json.loads(text)) if text.strip() else {}
    except (ValueError, RecursionError, MemoryError):  # UnicodeDecodeError is a ValueError
        return {}


def _read_record(fd: int) -> dict[str, Any]:
    try:
        return parse_record(os.pread(fd, MAX_RECORD_BYTES + 1, 0))
    except OSError:
        return {}


def _write_record(fd: int, data: dict[str, Any]) -> None:
    """Only on a verified lock file whose exclusive flock this process holds (its content is ours)."""
    raw = json.dumps(data, sort_keys=True, default=str).encode()
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, raw, 0)
    except OSError:
        pass  # a lock file we may only read: the kernel still names us as its holder


# ---------------------------------------------------------------- who holds it: the kernel

@dataclass(frozen=True)
class KernelHolder:
    pid: int
    user: str | None = None
    command: str | None = None
    visible: bool = True  # False: /proc has no such pid (another container's process)

    def describe(self) -> str:
        if not self.visible:
            return f"pid {self.pid} (not in this container's process table)"
        parts = [f"pid {self.pid}", f"user {self.user or '?'}"]
        if self.command:
            parts.append(f"command '{self.command}'")
        return ", ".join(parts)


def _proc_holder(pid: int) -> KernelHolder:
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            status = f.read(1 << 16).decode("utf-8", "replace")
    except OSError:
        return KernelHolder(pid, visible=False)
    user = None
    match = re.search(r"^Uid:\s+(\d+)", status, re.M)
    if match:
        uid = int(match.group(1))
        try:
            import pwd

            user = pwd.getpwuid(uid).pw_name
        except (KeyError, ImportError):
            user = str(uid)
    command = None
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read(4096)
        command = printable(raw.rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "replace"), 120) or None
    except OSError:
        pass
    return KernelHolder(pid, printable(user) if user else None, command)


class KernelLocks:
    """The flock holders /proc/locks lists, read once (lazily) per look."""

    def __init__(self, path: str = "/proc/locks"):
        self._path = path
        self._by_inode: dict[int, list[tuple[int, int, int]]] | None = None

    def _load(self) -> dict[int, list[tuple[int, int, int]]]:
        if self._by_inode is None:
            self._by_inode = {}
            try:
                with open(self._path, "rb") as f:
                    text = f.read(4 << 20).decode("ascii", "replace")
            except OSError:
                text = ""
            for line in text.splitlines():
                fields = line.split()
                # "1: FLOCK  ADVISORY  WRITE 6098 fe:00:399095 0 EOF"; "1: -> FLOCK ..." is a waiter
                if len(fields) < 6 or fields[1] != "FLOCK":
                    continue
                try:
                    pid = int(fields[4])
                    major, minor, inode = fields[5].split(":")
                    self._by_inode.setdefault(int(inode), []).append((int(major, 16), int(minor, 16), pid))
                except ValueError:
                    continue
        return self._by_inode

    def holder(self, fd: int) -> KernelHolder | None:
        """Who holds the flock on the file open at fd, or None when the kernel names nobody (here)."""
        try:
            st = os.fstat(fd)
        except OSError:
            return None
        entries = self._load().get(st.st_ino, [])
        same_dev = [pid for major, minor, pid in entries
                    if (major, minor) == (os.major(st.st_dev), os.minor(st.st_dev))]
        # Some filesystems (overlay, btrfs subvolumes) report another device in stat than in
        # /proc/locks: then the inode alone, when it is unambiguous.
        pids = same_dev or ([pid for _, _, pid in entries] if len({e[:2] for e in entries}) == 1 else [])
        pids = [p for p in pids if p > 0 and p != os.getpid()] or [p for p in pids if p > 0]
        return _proc_holder(pids[0]) if pids else None


def _believed(record: dict[str, Any], holder: KernelHolder | None) -> dict[str, Any]:
    """What to say about a lock's holder: the kernel's pid and user; the record's run id and host
    only when the record's pid is that holder (else someone else wrote it)."""
    if holder is None:
        return record  # no /proc/locks entry here (another container): the record, printable
    out: dict[str, Any] = {"pid": holder.pid, "holder": holder.describe()}
    if holder.user:
        out["user"] = holder.user
    if holder.command:
        out["command"] = holder.command
    if record.get("pid") == holder.pid:
        out.update({k: record[k] for k in ("run_id", "host", "since", "pids", "ticket") if k in record})
    return out


# ---------------------------------------------------------------- opening safely

def _verify(fd: int, name: str) -> int:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        os.close(fd)
        what = "not a regular file" if not stat.S_ISREG(st.st_mode) else f"a file with {st.st_nlink} links"
        raise UnsafeLockDir(f"'{printable(name)}' in the GPU lock directory is {what}: traindeck never makes "
                            f"one, so another user planted it. Nothing was opened through it. Ask its owner "
                            f"(uid {st.st_uid}) or the box's admin to remove it, or {FIX}.")
    return fd


def _open_existing(dfd: int, name: str, flags: int) -> int:
    try:
        fd = os.open(name, flags | _OPEN, dir_fd=dfd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeLockDir(f"'{printable(name)}' in the GPU lock directory is a symbolic link: traindeck "
                                f"never makes one, so another user planted it. Nothing was opened through it. "
                                f"Ask the box's admin to remove it, or {FIX}.") from None
        raise
    return _verify(fd, name)


def _open_shared(dfd: int, name: str, writable: bool) -> int:
    """A lock file every user of the box may lock: made here (O_EXCL, then 0666), or the existing
    one opened without O_CREAT; read-only when we may not write it (flock does not need to)."""
    for _ in range(5):
        try:
            fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | _OPEN, 0o666, dir_fd=dfd)
        except FileExistsError:
            pass
        else:
            try:
                os.fchmod(fd, 0o666)  # our own new file: past the umask, so others may lock it
            except OSError:
                pass
            return fd
        try:
            return _open_existing(dfd, name, os.O_RDWR if writable else os.O_RDONLY)
        except FileNotFoundError:
            continue  # removed between the two opens: make it
        except PermissionError:
            if not writable:
                raise
            return _open_existing(dfd, name, os.O_RDONLY)
    raise UnsafeLockDir(f"'{printable(name)}' in the GPU lock directory keeps appearing and disappearing; {FIX}.")


def _try_lock(fd: int, how: int = fcntl.LOCK_EX) -> bool:
    try:
        fcntl.flock(fd, how | fcntl.LOCK_NB)
        return True
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise


# ---------------------------------------------------------------- holds and tickets

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
            _write_record(fd, self.record)

    def release(self) -> None:
        fds, self.fds = self.fds, []
        for fd in fds:
            try:
                os.ftruncate(fd, 0)  # still ours: verified, exclusively flock'd
            except OSError:
                pass
            os.close(fd)  # closing the last descriptor drops the flock


@dataclass(frozen=True)
class Ticket:
    number: int
    path: Path
    record: dict[str, Any]


def _who(record: Mapping[str, Any]) -> str:
    return f"{record.get('run_id', '?')} (user {record.get('user', '?')}, pid {record.get('pid', '?')})"


class GpuLocks:
    def __init__(self, directory: Path, deadline_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic, nap: Callable[[float], None] = time.sleep):
        self.dir = Path(directory)
        self.deadline_s = deadline_s
        self.clock = clock
        self.nap = nap
        # What the last held()/queue() could not do properly (a stuck mutex), printable.
        self.warnings: list[str] = []

    # ---------------------------------------------------------------- layout

    def ensure(self) -> None:
        """Make the directory (1777, like /tmp) if there is none; refuse one that is unsafe."""
        try:
            self.dir.parent.mkdir(parents=True, exist_ok=True)
            os.mkdir(self.dir, 0o700)
        except FileExistsError:
            pass
        except OSError as exc:
            raise UnsafeLockDir(f"cannot use the GPU lock directory {printable(self.dir, 200)}: "
                                f"{exc.strerror or exc}. Point ${LOCK_DIR_ENV} (or [hardware] lock_dir) at a "
                                f"directory every user of this box can write, e.g. a shared mount with mode "
                                f"1777.") from None
        else:
            fd = self._open_dir()
            try:
                os.fchmod(fd, 0o1777)  # the one we just made: everyone may add, nobody may delete another's
            finally:
                os.close(fd)
        os.close(self._open_dir())

    def _refuse_dir(self, what: str) -> UnsafeLockDir:
        return UnsafeLockDir(f"refusing the GPU lock directory {printable(self.dir, 200)}: {what}, so another "
                             f"user could swap the lock files under you (or point them at your files). Nothing "
                             f"was changed. Fix: {FIX}.")

    def _open_dir(self) -> int:
        try:
            fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY | _OPEN)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):  # O_NOFOLLOW | O_DIRECTORY on a link: either
                try:
                    link = stat.S_ISLNK(os.lstat(self.dir).st_mode)
                except OSError:
                    link = False
                raise self._refuse_dir("it is a symbolic link" if link else "it is not a directory") from None
            raise UnsafeLockDir(f"cannot use the GPU lock directory {printable(self.dir, 200)}: "
                                f"{exc.strerror or exc}. {FIX[0].upper()}{FIX[1:]}.") from None
        st = os.fstat(fd)
        problem = None
        if st.st_uid not in (0, os.getuid()):
            problem = f"it belongs to another user (uid {st.st_uid})"
        elif st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
            problem = f"others may write it and it is not sticky (mode {stat.S_IMODE(st.st_mode):o})"
        if problem:
            os.close(fd)
            raise self._refuse_dir(problem)
        return fd

    @contextmanager
    def _directory(self) -> Iterator[int]:
        fd = self._open_dir()
        try:
            yield fd
        finally:
            os.close(fd)

    def _exists(self) -> bool:
        try:
            os.lstat(self.dir)
            return True
        except OSError:
            return False

    def _mutex(self, dfd: int) -> int:
        """The mutex, exclusively; LockBusy (naming the kernel's holder) after the deadline."""
        fd = _open_shared(dfd, MUTEX, writable=False)
        deadline_s = MUTEX_DEADLINE_S if self.deadline_s is None else self.deadline_s
        give_up = self.clock() + deadline_s
        pause = 0.001
        while not _try_lock(fd):
            if self.clock() >= give_up:
                holder = KernelLocks().holder(fd)
                os.close(fd)
                who = holder.describe() if holder else "a process the kernel does not name here (another container?)"
                kill = f" (kill {holder.pid} if it is yours)" if holder and holder.visible else ""
                raise LockBusy(f"the GPU lock directory's mutex {printable(self.dir / MUTEX, 200)} has been held for "
                               f"{deadline_s:g} s by {who}; a traindeck start holds it for milliseconds, so that "
                               f"process is stuck or is not traindeck. Ask its owner to let go{kill}, or {FIX}.")
            self.nap(pause)
            pause = min(pause * 2, 0.05)
        return fd

    @contextmanager
    def _looking(self, dfd: int, strict: bool) -> Iterator[None]:
        """The mutex for a look; a view (not strict) past the deadline looks without it and warns."""
        fd = None
        try:
            fd = self._mutex(dfd)
        except LockBusy as exc:
            if strict:
                raise
            self.warnings.append(str(exc))
        try:
            yield
        finally:
            if fd is not None:
                os.close(fd)

    # ---------------------------------------------------------------- reading (under the mutex)

    def _held(self, dfd: int) -> dict[str, dict[str, Any]]:
        out = {}
        kernel = KernelLocks()
        for name in sorted(os.listdir(dfd)):
            match = _GPU_NAME.fullmatch(name)
            if not match:
                continue
            try:
                fd = _open_existing(dfd, name, os.O_RDONLY)
            except (OSError, UnsafeLockDir):
                continue  # not a lock file: nobody holds a GPU through it (taking it says why)
            try:
                if _try_lock(fd, fcntl.LOCK_SH):
                    continue  # nobody holds it (a crashed holder's file is just a file)
                out[match.group(1)] = _believed(_read_record(fd), kernel.holder(fd))
            finally:
                os.close(fd)
        return out

    def _live_tickets(self, dfd: int, own: str | None = None, own_record: dict | None = None) -> list[Ticket]:
        out = []
        kernel = KernelLocks()
        for name in os.listdir(dfd):
            match = _TICKET_NAME.fullmatch(name)
            if not match:
                continue
            if name == own:
                out.append(Ticket(int(match.group(1)), self.dir / name, dict(own_record or {})))
                continue
            try:
                fd = _open_existing(dfd, name, os.O_RDONLY)
            except (OSError, UnsafeLockDir):
                continue  # a symlink or FIFO named like a ticket is nobody's place in line
            try:
                if _try_lock(fd, fcntl.LOCK_SH):  # its owner is gone: a crashed waiter
                    try:
                        os.unlink(name, dir_fd=dfd)
                    except OSError:
                        pass  # another user's, in the sticky directory: just skip it
                    continue
                record = _believed(_read_record(fd), kernel.holder(fd))
            finally:
                os.close(fd)
            out.append(Ticket(int(match.group(1)), self.dir / name, record))
        return sorted(out, key=lambda t: t.number)

    def held(self) -> dict[str, dict[str, Any]]:
        """lock key -> who holds it (pid and user from the kernel, run id from a record that the
        kernel's holder wrote), for every GPU lock held now. Answers within the deadline."""
        self.warnings = []
        if not self._exists():
            return {}
        with self._directory() as dfd, self._looking(dfd, strict=False):
            return self._held(dfd)

    def queue(self) -> list[Ticket]:
        self.warnings = []
        if not self._exists():
            return []
        with self._directory() as dfd, self._looking(dfd, strict=False):
            return self._live_tickets(dfd)

    # ---------------------------------------------------------------- taking

    def _take(self, dfd: int, keys: list[str], record: dict[str, Any]) -> GpuHold | None:
        fds: list[int] = []
        try:
            for key in keys:
                name = f"gpu-{key}.lock"
                if not _GPU_NAME.fullmatch(name):
                    raise UnsafeLockDir(f"cannot name a lock file for GPU '{printable(key)}'.")
                fd = _open_shared(dfd, name, writable=True)
                if not _try_lock(fd):
                    os.close(fd)
                    for taken in fds:
                        os.close(taken)
                    return None
                fds.append(fd)
        except BaseException:
            for taken in fds:
                os.close(taken)
            raise
        hold = GpuHold(tuple(keys), dict(record), fds)
        hold.update()
        return hold

    def _draw_ticket(self, dfd: int, record: dict[str, Any]) -> tuple[str, int, int]:
        """(name, number, fd): a new ticket after every live one, flock'd while this start waits."""
        newest = max((t.number for t in self._live_tickets(dfd)), default=0)
        number = max(time.time_ns(), newest + 1)
        for _ in range(100):
            name = f"ticket-{number:020d}.json"
            try:
                fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | _OPEN, 0o644, dir_fd=dfd)
            except FileExistsError:  # planted, or drawn the same nanosecond: the next number
                number += 1
                continue
            if not _try_lock(fd):  # someone opened our new file and locked it first: not ours to use
                os.close(fd)
                number += 1
                continue
            _write_record(fd, {**record, "ticket": number})  # held while this start waits: a crash frees its place
            return name, number, fd
        raise UnsafeLockDir(f"could not draw a ticket in the GPU lock directory {printable(self.dir, 200)}; {FIX}.")

    def acquire(self, choose: Chooser, record: dict[str, Any], wait: bool, poll_s: float = POLL_S,
                on_wait: Callable[[int, Any], None] | None = None,
                should_stop: Callable[[], bool] | None = None,
                sleep: Callable[[float], None] = time.sleep) -> tuple[GpuHold | None, Any]:
        """Take the GPUs `choose` picks, all at once. wait=False: one try; (None, why) when busy or
        when others are queued; LockBusy when the mutex stays held past the deadline. wait=True:
        draw a ticket and try whenever it is the oldest live one; `on_wait(place, why)` after every
        failed look (place 1 = next; a stuck mutex is a why naming its holder); (None, "stopped")
        when `should_stop()` says so."""
        self.ensure()
        record = {"user": user_name(), "pid": os.getpid(), "host": socket.gethostname(), **record}
        if not wait:
            with self._directory() as dfd, self._looking(dfd, strict=True):
                queued = self._live_tickets(dfd)
                if queued:
                    who = ", ".join(_who(t.record) for t in queued[:3])
                    return None, f"{len(queued)} start(s) already wait for GPUs on this box: {who}"
                keys, payload = choose(self._held(dfd))
                if keys is None:
                    return None, payload
                hold = self._take(dfd, keys, {**record, "since": round(time.time(), 3)})
                return (hold, payload) if hold else (None, "another start took these GPUs a moment ago")
        ticket: tuple[str, int, int] | None = None
        place = 1
        try:
            while True:
                try:
                    with self._directory() as dfd, self._looking(dfd, strict=True):
                        if ticket is None:
                            ticket = self._draw_ticket(dfd, record)
                        own_record = {**record, "ticket": ticket[1]}
                        tickets = self._live_tickets(dfd, own=ticket[0], own_record=own_record)
                        place = next((i + 1 for i, t in enumerate(tickets) if t.number == ticket[1]), 1)
                        if place == 1:
                            keys, payload = choose(self._held(dfd))
                            if keys is not None:
                                hold = self._take(dfd, keys, {**record, "since": round(time.time(), 3)})
                                if hold is not None:
                                    return hold, payload
                                payload = "another start took these GPUs a moment ago"
                        else:
                            payload = f"behind {place - 1} earlier start(s), next: {_who(tickets[0].record)}"
                except LockBusy as exc:
                    payload = str(exc)  # waiting is what a queued start does; it says for whom
                if on_wait is not None:
                    on_wait(place, payload)
                if should_stop is not None and should_stop():
                    return None, "stopped"
                sleep(poll_s)
        finally:
            if ticket is not None:
                try:
                    with self._directory() as dfd:
                        os.unlink(ticket[0], dir_fd=dfd)
                except (OSError, TraindeckError):
                    pass
                os.close(ticket[2])

"""A cgroup of its own for each run, where the box allows it: what no process can leave.

A process can leave the process tree (double fork + setsid) and clear its environment, but it
cannot leave its cgroup without write access to another one. Where cgroup v2 has a subtree this
user may write (root, or a delegated subtree such as systemd's `Delegate=yes`), the supervisor
puts the launcher into `<its own cgroup>/traindeck-<run id>-<digest of the run dir>` before the launcher runs a line of
its own (so everything it ever starts is in there too), and a stop writes `1` to that cgroup's
`cgroup.kill` (Linux >= 5.14): the kernel kills every process in it, however it detached.

Elsewhere (cgroup v1 only, not writable, a kernel without cgroup.kill, or TRAINDECK_CGROUP=off)
a run gets no cgroup and is found by the process-table scan alone (training.rundir.reaper).

    support = detect()                     # what this box gets, and why
    group = RunCgroup.create(support, run_key(paths.root))   # None where support is not usable
    Popen(..., preexec_fn=group.join_in_child)  # the launcher joins before it execs
    group.pids(); group.kill(); group.remove()

`detect` reads /proc/self/mountinfo and /proc/self/cgroup; tests hand it a fake cgroup root
directory and the two texts instead.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

CGROUP_ENV = "TRAINDECK_CGROUP"  # "off": never create a cgroup for a run (the scan still runs)
PREFIX = "traindeck-"


def run_key(run_root: Path) -> str:
    """The name part of a run's cgroup: its run id plus a digest of where its directory is. Run ids
    are a timestamp and a profile name, so two runs directories (two users, two test sessions)
    starting the same profile in the same second share an id; a shared cgroup would let one's
    stop kill the other's processes."""
    root = Path(run_root).resolve()
    return f"{root.name}-{hashlib.sha1(str(root).encode()).hexdigest()[:8]}"


@dataclass(frozen=True)
class CgroupSupport:
    usable: bool
    # Where run cgroups are created (our own cgroup in the v2 hierarchy), when there is one.
    parent: Path | None
    reason: str

    @property
    def method(self) -> str:
        return "cgroup" if self.usable else "process table"

    def describe(self) -> str:
        """One line for `run.py --check`."""
        if self.usable:
            return (f"cgroup.kill: each run gets its own cgroup under {self.parent} ({self.reason}); "
                    f"the process-table scan (TRAINDECK_RUN_DIR, recorded pids) runs too")
        return (f"process-table scan: TRAINDECK_RUN_DIR in each process's environment plus the pids "
                f"run.json recorded ({self.reason}). A process that both leaves the process tree and "
                f"clears its environment can only be reported, not found")


def _cgroup2_mounts(mountinfo: str) -> list[Path]:
    mounts = []
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, fstype = left.split(), right.split()[:1]
        if fstype == ["cgroup2"] and len(fields) >= 5:
            # Octal escapes (\040 for a space) as the kernel writes them.
            mounts.append(Path(fields[4].encode().decode("unicode_escape")))
    return mounts


def _own_v2_path(proc_cgroup: str) -> str | None:
    for line in proc_cgroup.splitlines():
        if line.startswith("0::"):
            return line[3:].strip() or "/"
    return None


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def detect(mountinfo: str | None = None, proc_cgroup: str | None = None,
           environ: Mapping[str, str] | None = None, probe: bool = True) -> CgroupSupport:
    """Can this process give a run a cgroup of its own? `probe` creates and removes an empty
    child cgroup: the only sure test of write access (permission bits lie on some setups)."""
    environ = os.environ if environ is None else environ
    if environ.get(CGROUP_ENV, "").strip().lower() in ("off", "0", "no", "false"):
        return CgroupSupport(False, None, f"turned off by {CGROUP_ENV}={environ[CGROUP_ENV]}")
    mountinfo = _read(Path("/proc/self/mountinfo")) if mountinfo is None else mountinfo
    proc_cgroup = _read(Path("/proc/self/cgroup")) if proc_cgroup is None else proc_cgroup
    mounts = _cgroup2_mounts(mountinfo)
    if not mounts:
        return CgroupSupport(False, None, "no cgroup v2 hierarchy is mounted (cgroup v1 only)")
    own = _own_v2_path(proc_cgroup)
    if own is None:
        return CgroupSupport(False, None, "this process is in no cgroup v2 group (/proc/self/cgroup has no 0:: line)")
    tried = []
    for mount in mounts:
        parent = mount / own.lstrip("/")
        if not (parent / "cgroup.procs").exists():
            tried.append(f"{parent} does not exist")
            continue
        if not os.access(parent, os.W_OK) or not os.access(parent / "cgroup.procs", os.W_OK):
            return CgroupSupport(False, parent, f"{parent} is not writable by this user (not root and not delegated)")
        # The root cgroup has no cgroup.kill of its own; the cgroups made under it do (Linux >= 5.14).
        has_kill = (parent / "cgroup.kill").exists()
        if probe:
            trial = parent / f"{PREFIX}probe-{os.getpid()}"
            try:
                trial.mkdir(exist_ok=True)
            except OSError as exc:
                return CgroupSupport(False, parent, f"cannot create a cgroup under {parent}: {exc.strerror}")
            has_kill = (trial / "cgroup.kill").exists()
            try:
                trial.rmdir()
            except OSError:
                pass
        if not has_kill:
            return CgroupSupport(False, parent, f"cgroups under {parent} have no cgroup.kill (it needs Linux 5.14 or later)")
        return CgroupSupport(True, parent, f"cgroup v2 at {mount}, writable")
    return CgroupSupport(False, None, "; ".join(tried))


@dataclass(frozen=True)
class RunCgroup:
    path: Path

    @classmethod
    def create(cls, support: CgroupSupport, key: str) -> "RunCgroup | None":
        """The run's cgroup, created empty; None where the box gives none. Raises OSError when the
        box said yes and the kernel then says no (the caller falls back to the scan)."""
        if not support.usable or support.parent is None:
            return None
        path = support.parent / f"{PREFIX}{key}"
        path.mkdir(exist_ok=True)
        return cls(path)

    @classmethod
    def recorded(cls, value: object, key: str) -> "RunCgroup | None":
        """The cgroup run.json names, if it is this run's (`traindeck-<run_key>`) and still there: a
        cgroup.kill must never reach a cgroup some edited run.json points at."""
        if not isinstance(value, str) or not value:
            return None
        path = Path(value)
        if path.name != f"{PREFIX}{key}" or not (path / "cgroup.procs").exists():
            return None
        return cls(path)

    def open_procs(self) -> int:
        """An fd on cgroup.procs, opened before the fork: the child only writes to it."""
        return os.open(self.path / "cgroup.procs", os.O_WRONLY)

    @staticmethod
    def join_in_child(fd: int) -> None:
        """Runs in the forked child before exec (Popen's preexec_fn): writing "0" moves the
        writer itself, so the launcher and all it starts are in the cgroup from the first line."""
        os.write(fd, b"0")

    def pids(self) -> list[int]:
        """Every process in the cgroup and in any cgroup below it."""
        found: list[int] = []
        for d, _dirs, _files in os.walk(self.path):
            for line in _read(Path(d) / "cgroup.procs").split():
                if line.isdigit():
                    found.append(int(line))
        return sorted(set(found))

    def populated(self) -> bool:
        for line in _read(self.path / "cgroup.events").splitlines():
            key, _, value = line.partition(" ")
            if key == "populated":
                return value.strip() == "1"
        return bool(self.pids())

    def kill(self) -> bool:
        """SIGKILL to every process in the cgroup and below (cgroup.kill). False if it failed."""
        try:
            fd = os.open(self.path / "cgroup.kill", os.O_WRONLY)
        except OSError:
            return False
        try:
            os.write(fd, b"1")
            return True
        except OSError:
            return False
        finally:
            os.close(fd)

    def wait_empty(self, timeout_s: float, poll_s: float = 0.02) -> bool:
        deadline = time.monotonic() + timeout_s
        while self.populated():
            if time.monotonic() >= deadline:
                return False
            time.sleep(poll_s)
        return True

    def remove(self) -> bool:
        """Remove the (empty) cgroup and any child cgroups; False while processes are left in it."""
        ok = True
        for d, _dirs, _files in sorted(os.walk(self.path), key=lambda w: len(Path(w[0]).parts), reverse=True):
            try:
                Path(d).rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                ok = False
        return ok

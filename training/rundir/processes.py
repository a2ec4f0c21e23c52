"""The processes of one run, named by (pid, create_time), and how to stop all of them.

A pid alone is not an identity: after a crash the number may belong to someone else's process
by the time `--stop` runs. A recorded process is "ours" only while both its pid and its create
time match. torchrun starts each worker in its own session, so stopping a run by process group
(killpg) would miss them; we walk descendants with psutil and record them in run.json instead.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from typing import Any, Iterable

import psutil

from traindeck.numbers import finite_number
from traindeck.untrusted import bounded_int

# psutil derives create_time from boot time + start ticks; the same process can come out a few
# milliseconds apart in two interpreters, a reused pid never does.
CREATE_TIME_TOLERANCE_S = 0.05
# Linux's pid_max can be at most 2**22; other systems stay well below 2**31.
MAX_PID = 2**31 - 1


@dataclass(frozen=True)
class ProcRef:
    pid: int
    create_time: float
    role: str = "worker"
    rank: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "create_time": self.create_time, "role": self.role, "rank": self.rank}

    @classmethod
    def from_json(cls, data: Any, role: str | None = None) -> "ProcRef | None":
        if not isinstance(data, dict):
            return None
        # Written by our supervisor, but read from a file anyone may have edited: a pid outside
        # the kernel's range (or Infinity, 1e999) names no process, and psutil would raise on it.
        pid, create_time = data.get("pid"), finite_number(data.get("create_time"))
        if isinstance(pid, float) and pid.is_integer():
            pid = int(pid)
        pid = bounded_int(pid, 1, MAX_PID)
        if pid is None or create_time is None:
            return None
        rank = bounded_int(data.get("rank"), 0, MAX_PID)
        role = role or data.get("role")
        return cls(pid, create_time, role if isinstance(role, str) and role else "worker", rank)


def ref_of(proc: psutil.Process | int, role: str = "worker", rank: int | None = None) -> ProcRef | None:
    """Identity of a live process, or None if it is already gone."""
    try:
        p = proc if isinstance(proc, psutil.Process) else psutil.Process(proc)
        return ProcRef(p.pid, p.create_time(), role, rank)
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def resolve(ref: ProcRef) -> psutil.Process | None:
    """The live process behind a reference, or None if it exited (zombies count as exited) or the
    pid now belongs to another process."""
    try:
        p = psutil.Process(ref.pid)
        if abs(p.create_time() - ref.create_time) > CREATE_TIME_TOLERANCE_S:
            return None
        if p.status() == psutil.STATUS_ZOMBIE:
            return None
        return p
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def is_alive(ref: ProcRef | None) -> bool:
    return ref is not None and resolve(ref) is not None


def alive(procs: Iterable[ProcRef]) -> list[ProcRef]:
    return [r for r in procs if resolve(r) is not None]


def _env_rank(p: psutil.Process) -> int | None:
    try:
        value = p.environ().get("RANK")
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
        return None
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def descendants(root: ProcRef) -> list[ProcRef]:
    """Every live descendant of `root` with its role: "worker" (has RANK in its environment, as
    torchrun's workers do) or "child" (DataLoader workers, compilers, whatever a script starts)."""
    p = resolve(root)
    if p is None:
        return []
    try:
        kids = p.children(recursive=True)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []
    out = []
    for kid in kids:
        rank = _env_rank(kid)
        # A worker's own children inherit RANK; only the outermost process with it is the rank.
        parent_has_rank = False
        try:
            parent = kid.parent()
            parent_has_rank = parent is not None and parent.pid != p.pid and _env_rank(parent) is not None
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
        role = "worker" if rank is not None and not parent_has_rank else "child"
        ref = ref_of(kid, role, rank if role == "worker" else None)
        if ref is not None:
            out.append(ref)
    return out


def remember(known: dict[int, ProcRef], seen: Iterable[ProcRef]) -> None:
    """Fold the processes just `seen` into `known` (pid -> ref): a new pid, a reused one (another
    create time), or a worker first seen as a child. The last happens every launch: between
    torchrun's fork and its exec a worker still has torchrun's environment, without RANK."""
    for ref in seen:
        old = known.get(ref.pid)
        if old is None or abs(old.create_time - ref.create_time) > CREATE_TIME_TOLERANCE_S \
                or (old.role != "worker" and ref.role == "worker"):
            known[ref.pid] = ref


def ranks_by_pid(procs: Iterable[ProcRef]) -> dict[int, int]:
    """pid -> global rank for the worker processes among `procs`."""
    return {r.pid: r.rank for r in procs if r.role == "worker" and r.rank is not None}


def signal_procs(procs: Iterable[ProcRef], sig: int) -> list[ProcRef]:
    """Send `sig` to each process that is still ours; returns the ones signalled."""
    sent = []
    for ref in procs:
        p = resolve(ref)
        if p is None:
            continue
        try:
            p.send_signal(sig)
            sent.append(ref)
        except (psutil.NoSuchProcess, psutil.AccessDenied, ProcessLookupError):
            pass
    return sent


def wait_gone(procs: Iterable[ProcRef], timeout_s: float, poll_s: float = 0.05) -> list[ProcRef]:
    """Wait until none of `procs` is alive or the timeout passes; returns the survivors."""
    procs = list(procs)
    deadline = time.monotonic() + max(0.0, timeout_s)
    while True:
        left = alive(procs)
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(poll_s)


def terminate_then_kill(procs: Iterable[ProcRef], grace_s: float,
                        term_first: Iterable[ProcRef] | None = None) -> list[ProcRef]:
    """SIGTERM `term_first` (default: all of `procs`), wait up to `grace_s` for every process in
    `procs` to exit, then SIGKILL whatever is left. Returns the processes that had to be killed.

    Sending SIGTERM only to the launcher lets torchrun stop its workers its own way (it forwards
    the signal); the SIGKILL sweep afterwards covers the processes it could not or did not stop.
    """
    procs = list(dict.fromkeys(procs))
    term = list(procs if term_first is None else term_first)
    signal_procs(term, signal.SIGTERM)
    survivors = wait_gone(procs + [t for t in term if t not in procs], grace_s)
    if not survivors:
        return []
    signal_procs(survivors, signal.SIGKILL)
    # SIGKILL is not deniable; the short wait only covers the kernel tearing the process down.
    wait_gone(survivors, 5.0)
    return survivors


def pid_create_time(pid: int | None = None) -> dict[str, Any]:
    """{"pid": ..., "create_time": ...} of a process (default: this one), the form run.json uses."""
    pid = os.getpid() if pid is None else pid
    ref = ref_of(pid)
    return {"pid": pid, "create_time": ref.create_time if ref else None}

"""Every process of a run, found without its supervisor, stopped, and checked: nothing left?

A run's processes are found four ways, each independent of the supervisor being alive:

    recorded     the pids + create times run.json holds (the supervisor records every descendant
                 it sees, and the orphans re-parented to it)
    cgroup       the run's own cgroup, where the box gives one (training.rundir.cgroups)
    environment  TRAINDECK_RUN_DIR=<this run> in the process's environment: every process of a
                 run inherits it (launcher, ranks, a custom script and whatever it starts), so a
                 process that double-forked out of the tree into a session of its own is found too
    descendant   a child of any process found above (one that cleared its environment but did
                 not leave the tree)

What none of these finds, but still writes into the run directory (a detached helper that cleared
its environment and keeps the run's log open), is a *suspect*: reported by pid, user and command,
never killed, since nothing proves it is the run's.

    result = stop_all(paths.root, recorded, cgroup, grace_s=30, progress=print)
    result.survivors      # [] means nothing of the run is left
    result.exit_fields()  # the keys exit.json gets: stop_method, survivors, nothing_left
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import psutil

from training.rundir.cgroups import RunCgroup
from training.rundir.paths import RUN_DIR_ENV
from training.rundir.processes import ProcRef, ref_of, resolve

Progress = Callable[[str], None]
# The first "still waiting" line comes after this long (a prompt exit says nothing), then every
# PROGRESS_EVERY_S.
PROGRESS_AFTER_S = 1.0
PROGRESS_EVERY_S = 5.0
KILL_WAIT_S = 5.0
COMMAND_CHARS = 120


@dataclass(frozen=True)
class RunProcess:
    ref: ProcRef
    how: str  # recorded | cgroup | environment | descendant
    user: str
    command: str

    def line(self) -> str:
        return f"pid {self.ref.pid} ({self.command})"


@dataclass(frozen=True)
class Survivor:
    pid: int
    user: str
    command: str
    why: str

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "user": self.user, "command": self.command, "why": self.why}

    def line(self) -> str:
        return f"pid {self.pid}, user {self.user}: {self.command}\n    why: {self.why}"


@dataclass
class ReapResult:
    method: str
    found: list[RunProcess] = field(default_factory=list)
    killed: list[RunProcess] = field(default_factory=list)
    survivors: list[Survivor] = field(default_factory=list)

    def exit_fields(self) -> dict[str, Any]:
        """What exit.json records beside the GPU-leak check (keys added, none renamed)."""
        return {"stop_method": self.method, "nothing_left": not self.survivors,
                "survivors": [s.to_json() for s in self.survivors]}


# ---- describing --------------------------------------------------------------------------

def _user(p: psutil.Process) -> str:
    try:
        return p.username()
    except (psutil.Error, KeyError):
        try:
            return f"uid {p.uids().real}"
        except psutil.Error:
            return "?"


def _command(p: psutil.Process) -> str:
    try:
        text = " ".join(" ".join(p.cmdline()).split()) or f"[{p.name()}]"
    except psutil.Error:
        text = "?"
    return text if len(text) <= COMMAND_CHARS else text[:COMMAND_CHARS - 3] + "..."


def _live(p: psutil.Process) -> bool:
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _same_dir(value: str | None, root: str, real_root: str) -> bool:
    if not value:
        return False
    value = os.path.normpath(value)
    return value == root or os.path.realpath(value) == real_root


# ---- finding -----------------------------------------------------------------------------

def find(run_root: Path, recorded: Iterable[ProcRef] = (), cgroup: RunCgroup | None = None,
         exclude: Iterable[int] = ()) -> list[RunProcess]:
    """The live processes of the run, by every way that needs no supervisor (module docstring)."""
    skip = {os.getpid(), *exclude}
    root = os.path.normpath(str(run_root))
    real_root = os.path.realpath(root)
    found: dict[int, RunProcess] = {}

    def add(p: psutil.Process, how: str, role: str = "child", rank: int | None = None) -> None:
        if p.pid in skip or p.pid in found or not _live(p):
            return
        ref = ref_of(p, role, rank)
        if ref is not None:
            found[p.pid] = RunProcess(ref, how, _user(p), _command(p))

    for ref in recorded:
        p = resolve(ref)
        if p is not None:
            add(p, "recorded", ref.role, ref.rank)
    if cgroup is not None:
        for pid in cgroup.pids():
            try:
                add(psutil.Process(pid), "cgroup")
            except psutil.Error:
                pass
    for p in psutil.process_iter():
        if p.pid in skip or p.pid in found:
            continue
        try:
            env = p.environ()
        except (psutil.Error, OSError):
            continue  # gone, or another user's (unreadable): only the other ways can find it
        if _same_dir(env.get(RUN_DIR_ENV), root, real_root):
            add(p, "environment")
    for pid in list(found):
        try:
            kids = psutil.Process(pid).children(recursive=True)
        except psutil.Error:
            continue
        for kid in kids:
            add(kid, "descendant")
    return list(found.values())


def suspects(run_root: Path, known: Iterable[int] = (), exclude: Iterable[int] = ()) -> list[Survivor]:
    """Processes not found as the run's that have a file in the run directory open for writing
    (a detached helper that cleared its environment still holding the run's log as stdout).
    Readers (`tail -f`, `less`) are not suspects."""
    skip = {os.getpid(), *known, *exclude}
    real_root = os.path.realpath(str(run_root)) + os.sep
    out = []
    for p in psutil.process_iter():
        if p.pid in skip:
            continue
        try:
            files = p.open_files()
        except (psutil.Error, OSError):
            continue
        writing = [f.path for f in files if f.path.startswith(real_root) and f.mode != "r"]
        if writing and _live(p):
            rel = os.path.relpath(writing[0], real_root)
            why = (f"cleared its environment (no {RUN_DIR_ENV}) and is not in the run's process tree, "
                   f"but it writes to {rel} in the run directory; not stopped, "
                   f"since nothing proves it is the run's: check it and kill it yourself (kill -9 {p.pid})")
            out.append(Survivor(p.pid, _user(p), _command(p), why))
    return out


# ---- stopping ----------------------------------------------------------------------------

def _signal(proc: RunProcess, sig: int) -> str | None:
    """Send `sig` if the process is still the same one; the reason it could not, else None."""
    p = resolve(proc.ref)
    if p is None:
        return None
    try:
        p.send_signal(sig)
        return None
    except psutil.AccessDenied:
        return "permission"
    except psutil.NoSuchProcess:
        return None


def _alive(procs: Iterable[RunProcess]) -> list[RunProcess]:
    return [f for f in procs if resolve(f.ref) is not None]


def _why_left(proc: RunProcess, denied: str | None) -> str:
    p = resolve(proc.ref)
    uid = os.getuid()
    try:
        owner = p.uids().real if p is not None else uid
        state = p.status() if p is not None else ""
    except psutil.Error:
        owner, state = uid, ""
    if owner != uid and uid != 0:
        return (f"another user's process ({proc.user}; found by {proc.how}): only that user or root can "
                f"stop it")
    if denied:
        return f"permission denied sending SIGKILL (found by {proc.how}); stop it as root"
    if state == psutil.STATUS_DISK_SLEEP:
        return f"stuck in the kernel (state D, uninterruptible I/O; found by {proc.how}): it dies when the I/O ends"
    return f"still alive {KILL_WAIT_S:.0f} s after SIGKILL (found by {proc.how}, state {state or '?'})"


def _waiting_line(left: list[RunProcess], seconds_left: float) -> str:
    shown = ", ".join(f.line() for f in left[:3]) + (f" and {len(left) - 3} more" if len(left) > 3 else "")
    return (f"waiting for {len(left)} process(es) still running after SIGTERM: {shown}; SIGKILL in "
            f"{max(0, round(seconds_left))} s (run.py --stop --now skips the wait)")


def wait_with_progress(is_done: Callable[[], list[Any]], grace_s: float, progress: Progress | None,
                       describe: Callable[[list[Any], float], str], clock: Callable[[], float] = time.monotonic,
                       sleep: Callable[[float], None] = time.sleep, poll_s: float = 0.05) -> list[Any]:
    """Poll `is_done()` (what is still left) until it is empty or `grace_s` passes, telling
    `progress` what it waits for and how long is left: first after PROGRESS_AFTER_S, then every
    PROGRESS_EVERY_S. Returns what was left at the end."""
    start = clock()
    next_say = start + PROGRESS_AFTER_S
    while True:
        left = is_done()
        now = clock()
        if not left or now - start >= grace_s:
            return left
        if progress is not None and now >= next_say:
            progress(describe(left, grace_s - (now - start)))
            next_say = now + PROGRESS_EVERY_S
        sleep(poll_s)


def stop_all(run_root: Path, recorded: Iterable[ProcRef] = (), cgroup: RunCgroup | None = None,
             grace_s: float = 0.0, exclude: Iterable[int] = (), progress: Progress | None = None,
             clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
             method: str | None = None) -> ReapResult:
    """SIGTERM the run (its launcher when one is alive, so torchrun stops its ranks its own way;
    else every process), wait up to `grace_s` saying so, then SIGKILL everything of the run found
    again (cgroup.kill where there is a cgroup), and check that nothing is left."""
    exclude = set(exclude)
    recorded = list(recorded)
    result = ReapResult(method or ("cgroup" if cgroup is not None else "process table"))
    result.found = find(run_root, recorded, cgroup, exclude)
    if result.found and grace_s > 0:
        launcher = [f for f in result.found if f.ref.role == "launcher"]
        for f in launcher or result.found:
            _signal(f, signal.SIGTERM)
        wait_with_progress(lambda: _alive(result.found), grace_s, progress, _waiting_line, clock, sleep)
    result.killed, result.survivors = kill_and_verify(run_root, recorded + [f.ref for f in result.found],
                                                      cgroup, exclude, clock=clock, sleep=sleep)
    return result


def kill_and_verify(run_root: Path, recorded: Iterable[ProcRef] = (), cgroup: RunCgroup | None = None,
                    exclude: Iterable[int] = (), clock: Callable[[], float] = time.monotonic,
                    sleep: Callable[[float], None] = time.sleep) -> tuple[list[RunProcess], list[Survivor]]:
    """SIGKILL whatever of the run is alive now (found afresh: a process started during the grace
    counts too), wait for the kernel to tear it down, look again, and name what is left and why."""
    exclude = set(exclude)
    recorded = list(recorded)
    killed: dict[int, RunProcess] = {}
    survivors: dict[int, Survivor] = {}
    for _round in range(3):
        targets = [f for f in find(run_root, recorded, cgroup, exclude) if f.ref.pid not in survivors]
        if not targets:
            break
        if cgroup is not None:
            cgroup.kill()
        denied = {f.ref.pid: _signal(f, signal.SIGKILL) for f in targets}
        killed.update({f.ref.pid: f for f in targets if f.ref.pid not in killed})
        deadline = clock() + KILL_WAIT_S
        left = _alive(targets)
        while left and clock() < deadline:
            sleep(0.02)
            left = _alive(left)
        for f in left:
            survivors[f.ref.pid] = Survivor(f.ref.pid, f.user, f.command, _why_left(f, denied.get(f.ref.pid)))
        recorded += [f.ref for f in targets]
    found = set(killed) | set(survivors)
    return list(killed.values()), list(survivors.values()) + suspects(run_root, found, exclude)

"""Which GPUs of a shared box a run takes: `[hardware] select` over what NVML and the GPU locks say.

    select = "free"    GPUs no other process holds and with little memory used (the default when
                       the box has more GPUs than the profile wants, or when other processes hold GPUs)
    select = "all"     every GPU of the box (the default otherwise: the run owns the box)
    select = "0,1"     exactly these NVML indices

A CUDA_VISIBLE_DEVICES the user set (the profile's launch.env or the environment) always wins:
traindeck then takes those GPUs and selects nothing itself. What traindeck sets names the GPUs by
UUID (`GPU-...`), not by NVML index: an index means the index-th GPU in CUDA's order, which is NVML's
only under CUDA_DEVICE_ORDER=PCI_BUS_ID, and a user's own CUDA_DEVICE_ORDER is kept.

Pure over its inputs: `gpu_states(backend, locked)` reads NVML once into frozen `GpuState`s,
`select_gpus(states, ...)` decides. The console's start check refuses a busy start with the
holders' names; the supervisor selects again under the GPU locks (training.rundir.gpu_locks) and
sets CUDA_VISIBLE_DEVICES for the launch to what it took.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

from traindeck.units import gib
from training.profile import parse_select  # noqa: F401 - the one parser of [hardware] select

# A GPU with no process listed but more memory used than this is taken by someone NVML cannot
# name (a process in another container, whose PID namespace hides it): not free.
IDLE_MEM_MIB = 1024
IDLE_MEM_FRACTION = 0.05
OUTSIDE = "outside this container"


@dataclass(frozen=True)
class Holder:
    """Who holds a GPU: a traindeck run (from its lock) or a process NVML lists."""

    gpu: int
    pid: int | None = None
    user: str | None = None
    mem_mib: int | None = None
    run_id: str | None = None  # a traindeck run holding the GPU's lock
    command: str | None = None
    outside: bool = False  # NVML names a pid this process table does not have

    def describe(self) -> str:
        """"GPU 2 held by pid 4312, user alice, 9.5 GiB" (the issue's words)."""
        if self.pid is None and not self.run_id:
            return f"GPU {self.gpu}: {self.who()}"
        return f"GPU {self.gpu} held by {self.who()}"

    def who(self) -> str:
        """"pid 4312, user alice, python, 9.5 GiB" | "traindeck run ID, user bob, pid 77".
        Names, commands and run ids are other users' text: printable and bounded here."""
        from training.rundir.gpu_locks import printable

        user = printable(self.user) if self.user else None
        command = printable(self.command, 120) if self.command else None
        if self.run_id:
            who = f"traindeck run {printable(self.run_id)}" + (f", user {user}" if user else "")
            return who + (f", pid {self.pid}" if self.pid is not None else "")
        if self.pid is None:
            return command or f"{gib(self.mem_mib)} used by processes NVML does not list ({OUTSIDE}?)"
        parts = [f"pid {self.pid}"]
        if self.outside:
            parts.append(OUTSIDE)
        else:
            parts.append(f"user {user or '?'}")
            if command:
                parts.append(command)
        if self.mem_mib is not None:
            parts.append(gib(self.mem_mib))
        return ", ".join(parts)


@dataclass(frozen=True)
class GpuState:
    index: int
    name: str
    uuid: str | None
    mem_used_mib: int | None
    mem_total_mib: int | None
    holders: tuple[Holder, ...] = ()
    mig: bool = False

    @property
    def free(self) -> bool:
        return not self.holders and not self.mig


@dataclass(frozen=True)
class Selection:
    """What a start gets. `gpus`: NVML indices the run takes (None: selection does not apply, e.g.
    no GPU wanted or none on the box); `cuda_visible`: what to set, None when the user set it."""

    mode: str  # free | all | list | user | none
    gpus: tuple[int, ...] | None = None
    cuda_visible: str | None = None  # "GPU-<uuid>,GPU-<uuid>" (cuda_visible_of)
    busy: tuple[Holder, ...] = ()  # why it cannot start now
    never: str = ""  # why this box can never satisfy it
    uuids: tuple[str | None, ...] = ()  # NVML's UUID of each GPU in `gpus` (run.json's record)

    @property
    def ok(self) -> bool:
        return not self.busy and not self.never

    def why_busy(self) -> str:
        return "; ".join(h.describe() for h in self.busy)


def describe_pid(pid: int) -> tuple[str | None, str | None, bool]:
    """(user, command, outside): `outside` when this process table has no such pid (inside a
    container NVML reports host PIDs)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            user = proc.username()
            command = proc.name()
        return user, command, False
    except psutil.NoSuchProcess:
        return None, None, True
    except (psutil.AccessDenied, psutil.ZombieProcess, KeyError):  # KeyError: uid without a name
        try:
            return str(psutil.Process(pid).uids().real), None, False
        except Exception:  # noqa: BLE001 - a name is a nicety
            return None, None, False


def lock_key(index: int, uuid: str | None) -> str:
    """One name for a GPU in every container: its UUID (indices differ between containers)."""
    from training.monitor.gpu import normalize_uuid

    return normalize_uuid(uuid) or f"index-{index}"


def gpu_states(backend, locked: Mapping[str, Mapping] | None = None, own_pids: Iterable[int] = (),
               describe=describe_pid) -> list[GpuState]:
    """Every GPU of the box with who holds it: traindeck runs from `locked` (lock_key -> the
    holder's record: run_id, user, pid) and every process NVML lists that is not one of `own_pids`."""
    if not backend.available:
        return []
    locked = locked or {}
    own = set(own_pids)
    infos = {d.index: d for d in backend.devices()}
    out = []
    for s in backend.sample():
        info = infos.get(s.index)
        uuid = s.uuid or (info.uuid if info else None)
        holders: list[Holder] = []
        lock = locked.get(lock_key(s.index, uuid))
        lock_pids: set[int] = set()
        if lock is not None:
            # A lock whose record the kernel's holder did not write (gpu_locks._believed) has no
            # run id: named by the kernel's pid, user and command instead of a forged run.
            pid = lock.get("pid") if type(lock.get("pid")) is int else None
            if lock.get("run_id") or "command" not in lock:
                holders.append(Holder(s.index, pid=pid, user=lock.get("user"), run_id=str(lock.get("run_id") or "?")))
            else:
                holders.append(Holder(s.index, pid=pid, user=lock.get("user"), command=lock.get("command")))
            lock_pids = _run_pids(lock)
        foreign = [p for p in s.processes if p.pid not in own and p.pid not in lock_pids]
        if lock is None or foreign:
            for p in foreign:
                user, command, outside = describe(p.pid)
                holders.append(Holder(s.index, p.pid, user, p.used_mib, command=command, outside=outside))
        used, total = s.mem_used_mib, s.mem_total_mib
        if not holders and used is not None and not s.processes:
            limit = max(IDLE_MEM_MIB, int((total or 0) * IDLE_MEM_FRACTION))
            if used > limit:
                holders.append(Holder(s.index, mem_mib=used))
        if s.error:
            holders.append(Holder(s.index, command=f"NVML error: {s.error}"))
        out.append(GpuState(s.index, s.name, uuid, used, total, tuple(holders), bool(info and info.mig)))
    return out


def _run_pids(lock: Mapping) -> set[int]:
    """The processes of the traindeck run holding a lock: its supervisor and every descendant."""
    import psutil

    pid = lock.get("pid")
    if not isinstance(pid, int):
        return set()
    try:
        return {pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))}
    except (psutil.Error, OSError):
        return {pid}


def cuda_visible_of(chosen: Iterable[GpuState]) -> str:
    """CUDA_VISIBLE_DEVICES naming these GPUs whatever CUDA_DEVICE_ORDER says: their UUIDs, in
    this order; NVML indices only where a GPU has no UUID (CUDA takes one form or the other)."""
    chosen = list(chosen)
    if all(s.uuid for s in chosen):
        return ",".join(str(s.uuid) for s in chosen)
    return ",".join(str(s.index) for s in chosen)


def automatic_mode(wanted: int, states: list[GpuState]) -> str:
    """The default: "free" when the box has more GPUs than wanted or someone else holds one."""
    if len(states) > wanted or any(not s.free for s in states):
        return "free"
    return "all"


def select_gpus(states: list[GpuState], wanted: int, select: str | tuple[int, ...] = "",
                user_cuda_visible: str | None = None) -> Selection:
    """The GPUs a run wanting `wanted` takes on a box in `states` under `[hardware] select`."""
    if wanted == 0 or not states:
        return Selection("none")
    count = len(states)
    if user_cuda_visible is not None:
        from training.supervise.visibility import visible_gpus

        visible = visible_gpus([_as_info(s) for s in states], user_cuda_visible)
        chosen = [s for s in states if s.index in {d.index for d in visible.devices}]
        busy = tuple(h for s in chosen for h in s.holders)
        return Selection("user", tuple(s.index for s in chosen), None, busy, uuids=tuple(s.uuid for s in chosen))
    mode = select or automatic_mode(wanted, states)
    if isinstance(mode, tuple):
        missing = [i for i in mode if i >= count]
        if missing:
            return Selection("list", never=f"hardware.select names GPU {', '.join(map(str, missing))}, but this "
                             f"box has {count} GPU(s) (0..{count - 1})")
        if len(mode) < wanted:
            return Selection("list", never=f"hardware.select names {len(mode)} GPU(s), the profile wants {wanted}")
        chosen = [states[i] for i in mode]
        return Selection("list", mode, cuda_visible_of(chosen), tuple(h for s in chosen for h in s.holders),
                         uuids=tuple(s.uuid for s in chosen))
    usable = [s for s in states if not s.mig]
    if len(usable) < wanted:
        return Selection(mode, never=f"{wanted} GPU(s) wanted, this box has {len(usable)} usable (of {count})")
    if mode == "all":
        chosen = usable
        return Selection("all", tuple(s.index for s in chosen), cuda_visible_of(chosen),
                         tuple(h for s in chosen for h in s.holders), uuids=tuple(s.uuid for s in chosen))
    free = sorted((s for s in usable if s.free), key=lambda s: (s.mem_used_mib or 0, s.index))[:wanted]
    if len(free) < wanted:
        busy = tuple(h for s in usable if not s.free for h in s.holders)
        return Selection("free", busy=busy)
    free = sorted(free, key=lambda s: s.index)
    return Selection("free", tuple(s.index for s in free), cuda_visible_of(free), uuids=tuple(s.uuid for s in free))


def _as_info(s: GpuState):
    from training.monitor.gpu import GpuInfo

    return GpuInfo(s.index, s.name, s.uuid, s.mem_total_mib, mig=s.mig)


class GpusBusy(Exception):
    """The GPUs a start needs are held now (the message names by whom)."""


class QueueLeft(Exception):
    """A queued start was asked to stop (run.py --stop, Ctrl-C) before it got its GPUs."""


@dataclass(frozen=True)
class Waiting:
    """What a queued start waits for: its place in the box's line (1 = next) and the holders' words."""

    place: int
    why: str
    # What makes it a different wait: the place and who holds the GPUs, not their memory, which
    # drifts on every look (the supervisor rewrites the run's record only when this changes).
    key: tuple


def _waiting(place: int, payload: object) -> Waiting:
    if isinstance(payload, Selection):
        holders = tuple((h.gpu, h.pid, h.run_id, h.outside, h.pid is None and h.command) for h in payload.busy)
        return Waiting(place, payload.why_busy(), (place, holders))
    return Waiting(place, str(payload), (place, str(payload)))


@dataclass(frozen=True)
class Claim:
    """What the supervisor took: the selection and the locks that hold it (None: nothing to take)."""

    selection: Selection
    hold: object | None = None  # training.rundir.gpu_locks.GpuHold
    lock_dir: str | None = None

    def release(self) -> None:
        if self.hold is not None:
            self.hold.release()


def user_cuda_visible(profile, environ: Mapping[str, str] | None = None) -> str | None:
    """CUDA_VISIBLE_DEVICES as the user set it (the profile's launch.env, else the environment)."""
    import os

    environ = os.environ if environ is None else environ
    if "CUDA_VISIBLE_DEVICES" in profile.launch.env:
        return str(profile.launch.env["CUDA_VISIBLE_DEVICES"])
    return environ.get("CUDA_VISIBLE_DEVICES")


def applies(profile, backend) -> bool:
    return profile.hardware.gpus > 0 and backend.available


def selection_now(profile, backend, held: Mapping[str, Mapping] | None = None,
                  environ: Mapping[str, str] | None = None) -> Selection:
    """The selection a start would get this moment (the console's check; no locks taken)."""
    if not applies(profile, backend):
        return Selection("none")
    states = gpu_states(backend, held)
    return select_gpus(states, profile.hardware.gpus, parse_select(profile.hardware.select),
                       user_cuda_visible(profile, environ))


def claim_gpus(profile, run_id: str, backend, wait: bool, on_wait: Callable[[Waiting], None] | None = None,
               should_stop: Callable[[], bool] | None = None, environ: Mapping[str, str] | None = None,
               poll_s: float | None = None, sleep: Callable[[float], object] | None = None) -> Claim:
    """Select under the GPU locks and take them all at once. wait=True queues (a ticket in the
    lock directory) and calls `on_wait(Waiting)` after every look that found them busy; `sleep`
    between looks (the supervisor's wakes at once on a stop). Raises GpusBusy (not waiting),
    QueueLeft (`should_stop()` said so while queued) or TraindeckError (a box that can never fit
    the profile: refused at once, never waited for)."""
    from training.errors import TraindeckError
    from training.rundir.gpu_locks import POLL_S, GpuLocks, lock_dir_for

    if not applies(profile, backend):
        return Claim(Selection("none"))
    locks = GpuLocks(lock_dir_for(profile.hardware.lock_dir, environ))
    select = parse_select(profile.hardware.select)
    cvd = user_cuda_visible(profile, environ)

    def choose(held):
        states = gpu_states(backend, held)
        sel = select_gpus(states, profile.hardware.gpus, select, cvd)
        if sel.never:
            raise TraindeckError(f"profile {profile.name} can never start on this box: {sel.never}. "
                                 f"Change hardware.select or hardware.gpus.")
        if not sel.ok:
            return None, sel
        by_index = {s.index: s for s in states}
        return [lock_key(i, by_index[i].uuid) for i in sel.gpus or ()], sel

    if wait:
        choose({})  # what the box can never fit is refused before taking a place in line
    report = None if on_wait is None else (lambda place, payload: on_wait(_waiting(place, payload)))
    extra = {} if sleep is None else {"sleep": sleep}
    hold, payload = locks.acquire(choose, {"run_id": run_id}, wait=wait, on_wait=report,
                                  should_stop=should_stop, poll_s=POLL_S if poll_s is None else poll_s, **extra)
    if hold is None:
        if wait and should_stop is not None and should_stop():
            raise QueueLeft(f"left the GPU queue: {payload}")
        raise GpusBusy(payload.why_busy() if isinstance(payload, Selection) else str(payload))
    return Claim(payload, hold, str(locks.dir))

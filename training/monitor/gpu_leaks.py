"""After a run: does any of its processes still hold GPU memory?

A worker that is SIGKILLed in the middle of a CUDA call can stay in the kernel (state D,
"disk-sleep") until the driver lets go, holding its memory; the next run on that GPU then dies of
out-of-memory for no visible reason. The supervisor calls `find_gpu_leaks` once the run has ended
or been stopped, reports every hit as a warning event and in exit.json "gpu_leaks":

    {"pid": 125, "rank": 0, "role": "worker", "gpu": 0, "used_mib": 80000,
     "state": "disk-sleep", "name": "python3"}

`state` is psutil's status ("disk-sleep", "zombie", "sleeping" ...) or "gone" when NVML still
lists a pid that has no process here any more (the driver has not released its context yet).

Inside a container NVML reports host PIDs, which match no process of the run. So the check also
looks at the run's own GPUs (device UUIDs from the ranks' heartbeats): a process NVML lists there
that was not there before the run started (`baseline`, taken by the supervisor before the launch)
and that has no PID in this container is reported with state "unseen" (most likely a rank of this
run, seen from the host).
"""

from __future__ import annotations

import time
from typing import Any, Iterable

import psutil

from traindeck import units
from training.rundir.events_file import make_event
from training.rundir.processes import CREATE_TIME_TOLERANCE_S

_STATE_HINTS = {
    "unseen": "NVML lists it on this run's GPU, it was not there before the run, and no process here "
              "has that PID: inside a container NVML reports host PIDs, so this is most likely a rank "
              "of this run; find it with nvidia-smi on the host",
    "disk-sleep": "stuck in the kernel (state D), usually inside the GPU driver: no signal reaches it "
                  "until the driver call returns; if it never does, the GPU needs a reset "
                  "(nvidia-smi --gpu-reset) or the box a reboot",
    "zombie": "exited but not reaped; the driver has not released its memory yet",
    "gone": "the process has exited but the driver still lists its memory",
}


def _identity(record: dict[str, Any]) -> tuple[int, float | None] | None:
    try:
        pid = int(record["pid"])
    except (KeyError, TypeError, ValueError):
        return None
    try:
        create_time = float(record["create_time"])
    except (KeyError, TypeError, ValueError):
        create_time = None
    return pid, create_time


def _state_of(pid: int, create_time: float | None) -> tuple[str, str] | None:
    """(status, name) of the pid if it is still the recorded process, ("gone", "") if no process
    has that pid, None if the pid now belongs to another process (not ours to report)."""
    try:
        p = psutil.Process(pid)
        if create_time is not None and abs(p.create_time() - create_time) > CREATE_TIME_TOLERANCE_S:
            return None
        try:
            name = p.name()
        except (psutil.AccessDenied, psutil.ZombieProcess):
            name = ""
        return str(p.status()), name
    except psutil.NoSuchProcess:
        return "gone", ""
    except psutil.AccessDenied:
        return "unknown", ""


def find_gpu_leaks(backend: Any, processes: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every (process of the run, GPU) pair where NVML still sees memory in use.

    `processes` are run.json "processes" records ({pid, create_time, role, rank}); `backend` is a
    training.monitor.gpu.GpuBackend (anything with processes_of(pids) -> [(pid, index, used_mib)]).
    """
    records: dict[int, dict[str, Any]] = {}
    identities: dict[int, float | None] = {}
    for record in processes or []:
        if not isinstance(record, dict):
            continue
        ident = _identity(record)
        if ident is None:
            continue
        records[ident[0]] = record
        identities[ident[0]] = ident[1]
    if not records:
        return []
    try:
        holders = backend.processes_of(sorted(records))
    except Exception:
        return []  # no NVML, a lost GPU: no evidence either way, and no reason to fail the run's ending
    leaks = []
    for pid, index, used_mib in holders:
        if pid not in records:
            continue
        found = _state_of(pid, identities[pid])
        if found is None:
            continue
        state, name = found
        record = records[pid]
        leaks.append({"pid": pid, "rank": record.get("rank"), "role": record.get("role"), "gpu": int(index),
                      "used_mib": used_mib, "state": state, "name": name})
    leaks.sort(key=lambda leak: (leak["gpu"], leak["pid"]))
    return leaks


def describe_leak(leak: dict[str, Any]) -> str:
    who = f"pid {leak['pid']}" + (f" (rank {leak['rank']})" if leak.get("rank") is not None else "")
    held = units.mib(leak["used_mib"]) if leak.get("used_mib") is not None else "memory (size not reported)"
    host = f" on {leak['node']}" if leak.get("node") else ""  # another node of a multi-node run
    message = f"{who} still holds {held} on GPU {leak['gpu']}{host} after the run ended (state {leak['state']})"
    hint = _STATE_HINTS.get(leak["state"])
    if hint:
        message += f": {hint}"
    elif leak["state"] not in ("gone", "unknown"):
        message += f"; end it with kill -9 {leak['pid']} before the next run on that GPU"
    return message


def leak_events(leaks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One warning `log` event per leak (fields: gpu_leak=the leak record)."""
    return [make_event("log", level="warning", message=describe_leak(leak), gpu_leak=leak,
                       **({"rank": leak["rank"]} if leak.get("rank") is not None else {}))
            for leak in leaks]


def gpu_baseline(backend: Any) -> dict[str, list[int]]:
    """GPU UUID -> the PIDs NVML lists on it now (before a run starts)."""
    try:
        return {uuid: sorted(h.pid for h in holders) for uuid, holders in backend.holders_by_uuid().items()}
    except Exception:
        return {}


def unseen_holders(backend: Any, run_uuids: Iterable[str], baseline: dict[str, list[int]],
                   known_pids: Iterable[int] = ()) -> list[dict[str, Any]]:
    """Processes on the run's GPUs that appeared during the run and have no PID in this namespace
    (host PIDs seen from a container): leaks that PID matching cannot find."""
    from training.monitor.gpu import normalize_uuid

    wanted = {normalize_uuid(u) for u in run_uuids if normalize_uuid(u)}
    known = set(int(p) for p in known_pids)
    if not wanted:
        return []
    try:
        by_uuid = backend.holders_by_uuid()
    except Exception:
        return []
    leaks = []
    for uuid, holders in by_uuid.items():
        if uuid not in wanted:
            continue
        before = set(baseline.get(uuid, ()))
        for pid, index, used_mib in holders:
            if pid in before or pid in known or psutil.pid_exists(pid):
                continue
            leaks.append({"pid": pid, "rank": None, "role": None, "gpu": int(index), "used_mib": used_mib,
                          "state": "unseen", "name": ""})
    leaks.sort(key=lambda leak: (leak["gpu"], leak["pid"]))
    return leaks


def gpu_leaks_after_exit(backend: Any, processes: Iterable[dict[str, Any]], settle_s: float = 3.0,
                         poll_s: float = 0.5, run_uuids: Iterable[str] = (),
                         baseline: dict[str, list[int]] | None = None) -> list[dict[str, Any]]:
    """find_gpu_leaks (and, given the run's GPU UUIDs and the baseline, unseen_holders), allowing the
    driver a moment: right after a SIGKILL NVML can list a process for a few hundred milliseconds
    while its context is torn down. Only what persists is a leak."""
    processes = list(processes or [])
    run_uuids = list(run_uuids)
    known = [ident[0] for ident in (_identity(r) for r in processes if isinstance(r, dict)) if ident]
    deadline = time.monotonic() + settle_s
    while True:
        leaks = find_gpu_leaks(backend, processes)
        if baseline is not None:
            leaks += unseen_holders(backend, run_uuids, baseline, known)
        if not leaks or time.monotonic() >= deadline:
            return leaks
        time.sleep(poll_s)

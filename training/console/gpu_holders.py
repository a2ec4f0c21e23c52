"""`run.py --gpus`: who holds which GPU of this box now.

nvidia-smi's process table with names that mean something: a traindeck run by its run id and
user (from the GPU locks, training.rundir.gpu_locks), any other process by pid, user, command and
memory; a pid this process table cannot resolve is "outside this container". Starts waiting for
GPUs are listed after the table. On a box without GPUs: one line that says so.

Always answers within the lock directory's deadline: a stuck mutex or an unsafe lock directory is
one line after the table (naming the kernel's holder, with the fix), never a hang or a traceback.
Holders' pids and users come from the kernel (/proc/locks); a record's text is printable and bounded.
"""

from __future__ import annotations

import os

from traindeck.units import gib_figure
from training.errors import TraindeckError
from training.rundir.gpu_locks import GpuLocks, lock_dir_for, printable
from training.supervise.gpu_select import gpu_states
from training.supervise.visibility import gpu_backend


def format_gpu_holders(backend=None, lock_dir: str = "", describe=None) -> str:
    backend = gpu_backend(backend)
    if not backend.available:
        return f"no GPUs on this box: {backend.error or 'NVML reports none'}"
    locks = GpuLocks(lock_dir_for(lock_dir))
    kwargs = {} if describe is None else {"describe": describe}
    problems: list[str] = []
    try:
        held = locks.held()
    except TraindeckError as exc:  # an unsafe lock directory: the table without traindeck's runs
        held, problems = {}, [str(exc)]
    problems += locks.warnings
    states = gpu_states(backend, held, **kwargs)
    rows = [("GPU", "NAME", "MEMORY GiB", "UUID", "HELD BY")]
    for s in states:
        memory = f"{gib_figure(s.mem_used_mib)}/{gib_figure(s.mem_total_mib)}"
        holders = [h.who() for h in s.holders] or ["free" + (" (MIG mode: name its instances)" if s.mig else "")]
        rows.append((str(s.index), s.name, memory, s.uuid or "?", holders[0]))
        rows += [("", "", "", "", more) for more in holders[1:]]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(r[i].ljust(widths[i]) for i in range(4)) + "  " + r[4] for r in rows]
    queue = []
    if not problems:
        try:
            queue = locks.queue()
        except TraindeckError as exc:
            problems.append(str(exc))
        problems += [w for w in locks.warnings if w not in problems]
    if queue:
        lines.append(f"{len(queue)} start(s) waiting for GPUs, first come first served:")
        lines += [f"  {i}. run {printable(t.record.get('run_id', '?'))} (user {printable(t.record.get('user', '?'))}, "
                  f"pid {printable(t.record.get('pid', '?'))})" for i, t in enumerate(queue, 1)]
    lines.append(f"GPU locks: {printable(locks.dir, 200)}" + ("" if os.path.isdir(locks.dir) else " (none taken yet)"))
    lines += [f"GPU locks: {problem}" for problem in problems]
    if backend.source != "nvml":
        lines.append("(simulated GPUs: $TRAINDECK_FAKE_NVML)")
    return "\n".join(lines)

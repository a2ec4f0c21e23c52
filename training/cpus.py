"""How many CPUs this process may really use: the one number that sizes threads and workers.

`os.cpu_count()` counts the host's cores. A container (Docker `--cpus`, a Kubernetes CPU limit)
or `taskset` gets far fewer: a 16-CPU pod on a 224-core box that trusts os.cpu_count() starts
8 ranks x 8 DataLoader workers and `OMP_NUM_THREADS=28` per rank, and they thrash each other.
The usable count is the affinity mask (`os.sched_getaffinity`), capped by the CFS quota of this
process's cgroup and of every cgroup above it:

    cgroup v2   <cgroup>/cpu.max               "max 100000" (no limit) or "400000 100000" (4 CPUs)
    cgroup v1   <cpu controller>/cpu.cfs_quota_us and cpu.cfs_period_us (quota -1: no limit)

A quota of 1.5 CPUs counts as 2 (threads still get time, just throttled). Every read goes through
`fs_root` (default FS_ROOT), so tests point it at a fake tree; anything unreadable means "no
limit known".

This is not training.rundir.cgroups: that module creates a cgroup per run to contain its
processes; this one only reads the limits the box put on us.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

FS_ROOT = Path("/")  # where /proc and /sys/fs/cgroup are read; tests point it at a fake tree


@dataclass(frozen=True)
class CpuBudget:
    usable: int  # what threads and workers are sized from
    affinity: int  # CPUs in this process's affinity mask
    host: int  # os.cpu_count(): the box's cores
    quota: float | None  # CPUs the cgroup quota allows (None: no quota)
    quota_file: str = ""  # where the quota came from (for messages)

    def describe(self) -> str:
        """'16 usable (cgroup quota 16 CPUs in /sys/fs/cgroup/cpu.max; 224 cores on the host)'."""
        parts = []
        if self.quota is not None:
            parts.append(f"cgroup quota {self.quota:g} CPUs in {self.quota_file}")
        if self.affinity < self.host:
            parts.append(f"affinity mask {self.affinity}")
        if not parts:
            return f"{self.usable} CPUs"
        return f"{self.usable} usable ({'; '.join(parts)}; {self.host} cores on the host)"


def cpu_budget(fs_root: Path | str | None = None, affinity: Iterable[int] | None = None) -> CpuBudget:
    host = os.cpu_count() or 1
    if affinity is None:
        try:
            affinity = os.sched_getaffinity(0)
        except (AttributeError, OSError):  # not Linux
            affinity = range(host)
    in_mask = max(1, len(set(affinity)))
    quota, where = _cgroup_quota(Path(FS_ROOT if fs_root is None else fs_root))
    usable = in_mask if quota is None else max(1, min(in_mask, math.ceil(quota)))
    return CpuBudget(usable, in_mask, host, quota, where)


def usable_cpus(fs_root: Path | str | None = None) -> int:
    """The CPUs this process may use: affinity mask capped by the cgroup's CPU quota."""
    return cpu_budget(fs_root).usable


def _cgroup_quota(fs_root: Path) -> tuple[float | None, str]:
    """(the smallest CPU quota on this process's cgroup path, the file it is in); (None, "") if none."""
    lines = _read(fs_root / "proc/self/cgroup").splitlines()
    cgroups = fs_root / "sys/fs/cgroup"
    best: tuple[float | None, str] = (None, "")
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":  # cgroup v2, the unified hierarchy
            for directory in _up_from(cgroups, path):
                best = _smaller(best, _v2_quota(directory))
        elif "cpu" in controllers.split(","):  # cgroup v1: mounted as cpu,cpuacct (or cpu)
            for mount in (cgroups / controllers, cgroups / "cpu", cgroups / "cpu,cpuacct"):
                for directory in _up_from(mount, path):
                    best = _smaller(best, _v1_quota(directory))
    return best


def _up_from(mount: Path, path: str) -> list[Path]:
    """The cgroup's directory and each above it up to the mount. Inside a container the path in
    /proc/self/cgroup may be the host's (/docker/<id>), absent under the container's own mount:
    walking up still reaches the mount, which is the container's cgroup there."""
    parts = [p for p in path.strip().split("/") if p and p != ".."]
    return [mount.joinpath(*parts[:n]) for n in range(len(parts), -1, -1)]


def _v2_quota(directory: Path) -> tuple[float | None, str]:
    fields = _read(directory / "cpu.max").split()
    if len(fields) >= 1 and fields[0] != "max":
        period = _number(fields[1]) if len(fields) > 1 else 100000.0
        quota = _number(fields[0])
        if quota and period:
            return quota / period, str(directory / "cpu.max")
    return None, ""


def _v1_quota(directory: Path) -> tuple[float | None, str]:
    quota = _number(_read(directory / "cpu.cfs_quota_us"))
    period = _number(_read(directory / "cpu.cfs_period_us"))
    if quota and quota > 0 and period:
        return quota / period, str(directory / "cpu.cfs_quota_us")
    return None, ""


def _smaller(a: tuple[float | None, str], b: tuple[float | None, str]) -> tuple[float | None, str]:
    if b[0] is None:
        return a
    return b if a[0] is None or b[0] < a[0] else a


def _number(text: str) -> float | None:
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return ""

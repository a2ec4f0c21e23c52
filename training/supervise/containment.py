"""The supervisor's side of "stop means nothing left": the run's cgroup, the orphans it adopts,
and the check at the end of every run.

    containment = Containment(paths)            # detects what this box allows (cgroup or scan)
    Popen(..., preexec_fn=containment.preexec())   # the launcher joins the run's cgroup, if any
    containment.spawned()                       # closes the parent's fd on cgroup.procs
    containment.adopted(known)                  # orphans re-parented to us (we are a subreaper)
    fields = containment.final_check(known)     # kill what is left; exit.json's keys

run.json gets `"cgroup"` (the path, or null) and `"stop_method"` (`cgroup` or `process table`),
so `run.py --stop` and the orphan reaper find the same cgroup after a `kill -9` of the supervisor.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable

import psutil

from training.rundir import RunPaths, reaper, update_run_json
from training.rundir import processes as pg
from training.rundir.cgroups import CgroupSupport, RunCgroup, detect, run_key

FINAL_GRACE_S = 1.0


class Containment:
    def __init__(self, paths: RunPaths, log: Callable[[str], None] = print,
                 support: CgroupSupport | None = None) -> None:
        self.paths = paths
        self.log = log
        self.support = support if support is not None else detect()
        self.cgroup: RunCgroup | None = None
        self._fd: int | None = None

    @property
    def method(self) -> str:
        return "cgroup" if self.cgroup is not None else "process table"

    def preexec(self) -> Callable[[], None] | None:
        """Create the run's cgroup; the function the launcher runs between fork and exec to join
        it. None (and the scan alone) where the box gives no cgroup or creating it fails."""
        why = self.support.reason
        try:
            self.cgroup = RunCgroup.create(self.support, run_key(self.paths.root))
            if self.cgroup is not None:
                self._fd = self.cgroup.open_procs()
        except OSError as exc:
            why = f"cannot create the run's cgroup: {exc}"
            self.cgroup, self._fd = None, None
        update_run_json(self.paths, cgroup=str(self.cgroup.path) if self.cgroup else None,
                        stop_method=self.method)
        self.log(f"stop method: {self.method} ({why})")
        if self._fd is None:
            return None
        fd = self._fd
        return lambda: RunCgroup.join_in_child(fd)

    def spawn_failed(self) -> None:
        """The launcher could not join the cgroup (Popen raised): run without one."""
        self.spawned()
        if self.cgroup is not None:
            self.cgroup.remove()
        self.cgroup = None
        update_run_json(self.paths, cgroup=None, stop_method=self.method)

    def spawned(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def adopted(self, known: dict[int, pg.ProcRef], launcher_pid: int | None = None) -> list[pg.ProcRef]:
        """Descendants of the supervisor outside the launcher's tree that no scan saw yet: orphans
        re-parented to us (a double-forked helper; we are a child subreaper). Recorded, they are
        found by pid + create time even after a `kill -9` of the supervisor."""
        try:
            kids = psutil.Process(os.getpid()).children()
        except psutil.Error:
            return []
        out: list[pg.ProcRef] = []
        for kid in kids:
            if kid.pid == launcher_pid:
                continue
            ref = pg.ref_of(kid, "child")
            if ref is None:
                continue
            out.append(ref)
            out += [pg.ProcRef(r.pid, r.create_time, "child") for r in pg.descendants(ref)]
        return [r for r in out if r.pid not in known]

    def final_check(self, known: Iterable[pg.ProcRef]) -> dict[str, Any]:
        """At the end of every run: stop whatever of it is still running, by every way of finding
        it (training.rundir.reaper), and say what is left. Returns exit.json's added keys."""
        result = reaper.stop_all(self.paths.root, list(known), self.cgroup, grace_s=FINAL_GRACE_S,
                                exclude={os.getpid()}, method=self.method)
        if result.killed:
            self.log(f"{len(result.killed)} process(es) of the run outlived it and were killed: "
                     + ", ".join(f"{f.line()} [{f.how}]" for f in result.killed))
        for s in result.survivors:
            self.log(f"left behind: {s.line()}")
        if self.cgroup is not None and not self.cgroup.populated():
            self.cgroup.remove()
        fields = result.exit_fields()
        fields["swept_after_exit"] = len(result.found)
        return fields

"""Every process of one run on this node: the launcher started, each descendant tracked, all ended.

The launcher (torchrun, or the worker itself for dp/single) is spawned into the run's cgroup where
the box allows one (training.supervise.containment), with umask 077 and stdio on its log. Each
process it ever had is remembered by pid + create_time (`known`; a reused pid is not ours), and the
alive set is published to run.json when it changes. A lone worker that exits with a traceback while
the launcher still waits on the others starts the fail-fast clock (FAIL_FAST_S, the main loop's).

At the end `sweep` leaves nothing behind: the recorded processes, descendants re-parented to the
supervisor (a child subreaper), the cgroup and TRAINDECK_RUN_DIR in the process table; and
`gpu_leaks` names any process of the run still holding GPU memory (training.monitor.gpu_leaks).
"""

from __future__ import annotations

import os
import subprocess
import time
from typing import Any

from traindeck.heartbeat import read_heartbeats
from training.monitor.gpu import get_backend
from training.monitor.gpu_leaks import gpu_baseline, gpu_leaks_after_exit
from training.rundir import RunPaths
from training.rundir import processes as pg
from training.supervise import disk_faults
from training.supervise.containment import Containment
from training.supervise.diagnosis import rank_text, traceback_summary
from training.supervise.launch import LaunchSpec, expose_traindeck, format_command
from training.supervise.run_writer import RunWriter
from training.supervise.supervisor_log import log

# A rank that died with a traceback while torchrun still waits on the others (a worker deferring
# SIGTERM, a collective that never times out): after this long the supervisor ends it itself.
FAIL_FAST_S = 1.5


class RunProcesses:
    def __init__(self, paths: RunPaths, writer: RunWriter):
        self.paths = paths
        self.writer = writer
        self.launcher: subprocess.Popen | None = None
        self.launcher_ref: pg.ProcRef | None = None
        # Everything we ever saw, by pid: the final sweep checks all of them (pid + create_time).
        self.known: dict[int, pg.ProcRef] = {}
        # The alive set as last published; replaced (never mutated) so other threads can read it.
        self.procs: tuple[pg.ProcRef, ...] = ()
        self.first_exit_rank: int | None = None
        self.failure_seen_at: float | None = None
        # The run's cgroup where the box allows one, orphan adoption, the end-of-run check.
        self.containment: Containment | None = None
        # GPU UUID -> PIDs NVML lists there before the launch (the leak check's container path).
        self.gpu_baseline: dict[str, list[int]] | None = None

    def spawn(self, spec: LaunchSpec) -> None:
        out_path = spec.launcher_log if spec.uses_torchrun else spec.stdout_log
        assert out_path is not None
        out_path.parent.mkdir(parents=True, exist_ok=True)
        if spec.torchrun_log_dir is not None:
            spec.torchrun_log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        expose_traindeck(spec)
        self.gpu_baseline = self._take_gpu_baseline()
        self.containment = Containment(self.paths, log)
        join_cgroup = self.containment.preexec()
        fd = os.open(out_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            # umask 077: what torchrun and the workers create in the run (per-rank logs, stack
            # dumps, checkpoints) is user-only, like the rest of the run directory.
            popen = dict(env=spec.environ(), cwd=spec.cwd, stdin=subprocess.DEVNULL, stdout=fd,
                         stderr=subprocess.STDOUT, close_fds=True, umask=0o077)
            try:
                self.launcher = subprocess.Popen(list(spec.argv), preexec_fn=join_cgroup, **popen)
            except subprocess.SubprocessError as exc:
                log(f"the launcher could not join the run's cgroup ({exc}): the process-table scan alone")
                self.containment.spawn_failed()
                self.launcher = subprocess.Popen(list(spec.argv), **popen)
        finally:
            os.close(fd)
            self.containment.spawned()
        role, rank = ("launcher", None) if spec.uses_torchrun else ("worker", 0)
        self.launcher_ref = pg.ref_of(self.launcher.pid, role, rank) or pg.ProcRef(self.launcher.pid, 0.0, role, rank)
        self.known[self.launcher_ref.pid] = self.launcher_ref
        self.writer.run_json(launcher=self.launcher_ref.to_json())
        log(f"launcher pid {self.launcher.pid}: {format_command(spec)}")
        disk_faults.launcher_started()  # tests only: a TRAINDECK_TEST_DISK_FULL window counts from here
        self.refresh(force=True)

    @property
    def returncode(self) -> int | None:
        return self.launcher.returncode if self.launcher is not None else None

    def refresh(self, force: bool = False) -> None:
        if self.launcher_ref is None:
            return
        adopted = self.containment.adopted(self.known, self.launcher_ref.pid) if self.containment else []
        pg.remember(self.known, pg.descendants(self.launcher_ref) + adopted)
        current = tuple(pg.alive(self.known.values()))
        if force or set(current) != set(self.procs):
            gone = [r for r in self.procs if r.role == "worker" and r not in current]
            if len(gone) == 1 and self.first_exit_rank is None and self.launcher_ref not in gone:
                # Only a lone exit tells who went first; several in one poll carry no order.
                self.first_exit_rank = gone[0].rank
                self._check_rank_failure(gone[0])
            self.procs = current
            self.writer.run_json(processes=[r.to_json() for r in current])

    def _check_rank_failure(self, ref: pg.ProcRef) -> None:
        if ref.rank is None or self.launcher is None or self.launcher.poll() is not None:
            return
        if traceback_summary(rank_text(self.paths, ref.rank)):
            self.failure_seen_at = time.monotonic()
            log(f"rank {ref.rank} exited with a traceback; the launcher has {FAIL_FAST_S}s to notice")

    def failed_rank_outlived(self, now: float) -> bool:
        """A rank failed and the launcher has not ended the run within FAIL_FAST_S."""
        return self.failure_seen_at is not None and now - self.failure_seen_at > FAIL_FAST_S

    def ranks_by_pid(self) -> dict[int, int]:
        return pg.ranks_by_pid(self.procs)

    def workers(self) -> int:
        return sum(1 for r in self.procs if r.role == "worker")

    def local_ranks_beating(self) -> list[int]:
        """The global ranks of this node's workers that wrote a heartbeat (they are training)."""
        mine = set(self.ranks_by_pid().values())
        return sorted(r for r in read_heartbeats(self.paths.root) if r in mine)

    def kill_everything(self, grace_s: float) -> None:
        self.refresh()
        term = [self.launcher_ref] if self.launcher_ref else []
        killed = pg.terminate_then_kill(list(self.known.values()), grace_s, term_first=term)
        if killed:
            log(f"SIGKILL to {len(killed)} process(es): {[r.pid for r in killed]}")
        if self.launcher is not None:
            try:
                self.launcher.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.launcher.kill()
                self.launcher.wait()

    def sweep(self) -> dict[str, Any]:
        """No process of the run may outlive it; returns what the final check found (exit.json's)."""
        leftovers = pg.alive(self.known.values())
        if leftovers:
            log(f"{len(leftovers)} process(es) outlived the launcher: {[r.pid for r in leftovers]}")
            pg.terminate_then_kill(leftovers, grace_s=1.0)
        # Descendants whose parent died before a scan recorded them were re-parented to us (we are
        # a child subreaper): they are the run's too.
        me = pg.ref_of(os.getpid(), "supervisor")
        orphans = pg.alive(pg.descendants(me)) if me is not None else []
        if orphans:
            log(f"{len(orphans)} unrecorded descendant(s) outlived their parents: {[r.pid for r in orphans]}")
            pg.terminate_then_kill(orphans, grace_s=1.0)
            self.known.update({r.pid: r for r in orphans})
        # Nothing of the run may be left, however it detached: its cgroup, TRAINDECK_RUN_DIR in
        # the process table, the records (training.supervise.containment).
        containment = self.containment or Containment(self.paths, log)
        return containment.final_check(self.known.values())

    def _take_gpu_baseline(self) -> dict[str, list[int]] | None:
        try:
            backend = get_backend()
            return gpu_baseline(backend) if backend.available else None
        except Exception as exc:  # noqa: BLE001 - only the leak check's container path needs it
            log(f"GPU baseline failed: {exc!r}")
            return None

    def gpu_leaks(self) -> list[dict[str, Any]]:
        """Processes of the run that still hold GPU memory now that it is over."""
        try:
            run_uuids = [d.get("uuid") for beat in read_heartbeats(self.paths.root).values()
                         for d in beat.get("devices") or [] if isinstance(d, dict) and d.get("uuid")]
            return gpu_leaks_after_exit(get_backend(), [r.to_json() for r in self.known.values()],
                                        run_uuids=run_uuids, baseline=self.gpu_baseline)
        except Exception as exc:  # noqa: BLE001 - a failed check must not cost the run its exit.json
            log(f"GPU leak check failed: {exc!r}")
            return []

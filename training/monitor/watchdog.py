"""Hang and straggler detection from the ranks' heartbeat files (a thread of the supervisor).

Every rank rewrites RUN_DIR/heartbeats/rank-N.json at most ~1/s while it trains
({"rank", "pid", "step", "epoch", "t", "state"}, traindeck.heartbeat). The watchdog stats those
files every ~1 s, parses only the ones that changed, keeps a short per-rank history of
(t, step) and turns two situations into `log` events with level "warning":

hang       a rank's step has not advanced for the threshold: [watchdog] hang_after_s, or when
           that is 0, 10x the median recent step time across ranks and at least 60 s (5 min while
           no step time is known yet, since the first steps include compilation and warm-up, and
           for a rank whose heartbeat says "starting", "validating", "saving" or "exporting"). One
           warning per incident, an info event with watchdog="recovered" when it moves again.
           Fields: watchdog, rank (None when the heartbeats cannot tell), ranks, step, stalled_s,
           other_steps {rank: step}, gpu_util {rank: %} when the telemetry has it.
straggler  a rank whose step rate over the last ~30 s is below the other ranks' median by
           [watchdog] straggler_ratio, on several consecutive checks; repeated at most every 5 min.

Which rank is stuck: in DDP the ranks are in lock-step, so when one rank hangs the others block
in the next collective and every heartbeat stops. The rank whose heartbeat is behind the others
is the one that is stuck -- but only when heartbeats are fresh enough to tell: with steps faster
than the heartbeat interval, a file can lag its rank by several steps, so a gap that small is no
evidence and the watchdog says it cannot tell (unless GPU utilisation separates them: NCCL keeps
waiting ranks' GPUs busy while a rank stuck in Python or I/O shows ~0%) and points at --dump.

A multi-node run (`[launch] hosts`): the head's watchdog reads every node's heartbeats, its own in
heartbeats/ and each other node's in nodes/<host>/heartbeats/ (the head's copy, or the node's own
directory on a shared filesystem), so one judge sees all ranks in lock-step, and names the host
beside the rank: "rank 1 on gpu-b has not finished a step for 92 s". Global ranks are unique
across nodes, so a rank is still the key.

Paused ranks (state "paused") and ranks that have ended (finished, stopped, failed ...) are never
hung; time spent paused does not count as step time.

    wd = Watchdog(paths, profile, emit=lambda evs: append_events(paths.events, evs))
    wd.start() ... wd.stop()
    wd.check(now)   # the whole logic, no thread: what the unit tests drive
"""

from __future__ import annotations

import math
import os
import re
import statistics
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from traindeck.heartbeat import HEARTBEAT_INTERVAL_S, MAX_HEARTBEAT_BYTES
from traindeck.untrusted import bounded_int, finite_float, read_json_object
from training.monitor.polling import PollingThread
from training.monitor.telemetry import read_telemetry
from training.rundir import RunPaths
from training.rundir.events_file import make_event
from training.rundir.node_views import NodeDir, on_host
from training.rundir.processes import MAX_PID

# States in which a rank is not expected to advance.
IDLE_STATES = frozenset({"paused", "finished", "stopped", "terminated", "failed", "done", "exited"})
# States in which a rank works without finishing steps (set-up, a validation pass, a checkpoint or
# export): in auto mode they get the start-up allowance rather than 10x a step time.
LONG_STATES = frozenset({"starting", "validating", "saving", "exporting"})
AUTO_FACTOR = 10.0
AUTO_MIN_S = 60.0
# Auto mode before any rank has a measured step time (and for ranks still in state "starting").
STARTUP_S = 300.0
HISTORY_LEN = 64
RATE_WINDOW_S = 30.0
# A straggler needs this much history behind its rate, and this many slow checks in a row.
STRAGGLER_MIN_SPAN_S = 5.0
STRAGGLER_MIN_SAMPLES = 3
STRAGGLER_CHECKS = 3
STRAGGLER_REPEAT_S = 300.0
# Below this GPU utilisation a stalled rank is idle; at or above BUSY the GPU is spinning in NCCL.
UTIL_IDLE = 10.0
UTIL_BUSY = 50.0
CHECK_INTERVAL_S = 1.0

_RANK_FILE = re.compile(r"^rank-(\d+)\.json$")


@dataclass
class _RankState:
    rank: int
    pid: int | None
    step: int
    state: str
    t: float  # time of the newest heartbeat
    since: float  # when (step, state) last changed: the start of a possible stall
    history: deque = field(default_factory=lambda: deque(maxlen=HISTORY_LEN))  # (t, step)
    slow_checks: int = 0
    straggler_warned_t: float = -math.inf

    @property
    def idle(self) -> bool:
        return self.state in IDLE_STATES

    def step_time(self) -> float | None:
        """Seconds per step over the recent window of this rank's heartbeats, None if unknown."""
        if len(self.history) < 2:
            return None
        t_last, s_last = self.history[-1]
        first = None
        for t, s in self.history:
            if t_last - t <= RATE_WINDOW_S:
                first = (t, s)
                break
        if first is None:
            return None
        t0, s0 = first
        if s_last <= s0 or t_last <= t0:
            return None
        return (t_last - t0) / (s_last - s0)

    def history_span(self) -> tuple[int, float]:
        if not self.history:
            return 0, 0.0
        t_last = self.history[-1][0]
        recent = [t for t, _ in self.history if t_last - t <= RATE_WINDOW_S]
        return len(recent), t_last - recent[0]


@dataclass
class _Incident:
    ranks: dict[int, tuple[int, str]]  # rank -> (step, state) when reported
    culprits: list[int]
    t: float
    since: float  # when the earliest of its ranks last moved


def _fmt_ranks(ranks: list[int]) -> str:
    ranks = sorted(ranks)
    return f"rank {ranks[0]}" if len(ranks) == 1 else "ranks " + ", ".join(str(r) for r in ranks)


def _fmt_s(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"


class Watchdog(PollingThread):
    def __init__(self, paths: RunPaths | str | os.PathLike, profile: Any,
                 emit: Callable[[list[dict[str, Any]]], None],
                 telemetry_lookup: Callable[[int], float | None] | None = None,
                 clock: Callable[[], float] = time.time, interval_s: float = CHECK_INTERVAL_S,
                 since: float | None = None, nodes: list[NodeDir] | None = None):
        super().__init__(interval_s, name="traindeck-watchdog")
        self.paths = paths if isinstance(paths, RunPaths) else RunPaths(Path(paths))
        # Whose heartbeats to read: this run directory alone, or every node of a multi-node run.
        self.nodes = nodes or [NodeDir(None, self.paths)]
        self._host_of: dict[int, str | None] = {}
        settings = getattr(profile, "watchdog", None)
        self.hang_after_s = float(getattr(settings, "hang_after_s", 0.0) or 0.0)
        self.straggler_ratio = float(getattr(settings, "straggler_ratio", 1.5) or 1.5)
        self.emit = emit
        self.telemetry_lookup = telemetry_lookup
        self.clock = clock
        # Heartbeats older than this are from an earlier life of the run directory (a resumed run,
        # a crashed one): a "training" file from yesterday is not a hang of today's ranks.
        self.since = clock() - 1.0 if since is None else since
        self._stamps: dict[tuple[str | None, int], tuple] = {}
        self._ranks: dict[int, _RankState] = {}
        self._incidents: list[_Incident] = []

    # ---------------------------------------------------------------- thread

    def poll_step(self) -> bool:
        """One check per interval (PollingThread's); a failure is told once, the watchdog is advisory."""
        events = self.check(self.clock())
        if events:
            self.emit(events)
        return False

    # ---------------------------------------------------------------- the logic

    def check(self, now: float) -> list[dict[str, Any]]:
        """Read changed heartbeats, return the warning/info events due at `now`."""
        self._read_heartbeats()
        median_step = self.median_step_time()
        events: list[dict[str, Any]] = []
        events.extend(self._check_recoveries(now))
        events.extend(self._check_hangs(now, median_step))
        events.extend(self._check_stragglers(now))
        return events

    def median_step_time(self) -> float | None:
        times = [st for r in self._ranks.values() if not r.idle and (st := r.step_time()) is not None]
        return statistics.median(times) if times else None

    def threshold_s(self, median_step: float | None = None, state: str = "training") -> float:
        if self.hang_after_s > 0:
            return self.hang_after_s
        if median_step is None or state in LONG_STATES:
            return STARTUP_S
        return max(AUTO_MIN_S, AUTO_FACTOR * median_step)

    # ---- reading

    def _read_heartbeats(self) -> None:
        for node in self.nodes:
            self._read_node_heartbeats(node)

    def _read_node_heartbeats(self, node: NodeDir) -> None:
        try:
            entries = list(os.scandir(node.paths.heartbeats))
        except OSError:
            return  # a node whose first heartbeat has not been copied yet
        for entry in entries:
            match = _RANK_FILE.match(entry.name)
            if not match:
                continue
            try:
                st = entry.stat()
            except OSError:
                continue
            rank = int(match.group(1))
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
            if self._stamps.get((node.host, rank)) == stamp:
                continue  # unchanged: the stat was the whole cost
            # Half-written or foreign (junk, a FIFO, "step": Infinity): try again next check.
            data = read_json_object(entry.path, MAX_HEARTBEAT_BYTES)
            if data is None:
                continue
            step = bounded_int(data.get("step"), -(1 << 62), 1 << 62)
            if step is None:
                continue
            state = data.get("state") if isinstance(data.get("state"), str) and data.get("state") else "training"
            t = finite_float(data.get("t")) or st.st_mtime
            pid = bounded_int(data.get("pid"), 1, MAX_PID)
            self._stamps[(node.host, rank)] = stamp
            if t < self.since:
                continue
            self._host_of[rank] = node.host
            self._update(rank, pid, step, state, t)

    def _update(self, rank: int, pid: int | None, step: int, state: str, t: float) -> None:
        r = self._ranks.get(rank)
        if r is None or pid != r.pid or step < r.step:
            # New rank, a restarted process (torchrun restart, resume) or a step counter that went
            # back: nothing before it describes this process.
            r = _RankState(rank=rank, pid=pid, step=step, state=state, t=t, since=t)
            self._ranks[rank] = r
            if state not in IDLE_STATES:
                r.history.append((t, step))
            return
        if step != r.step or state != r.state:
            if r.state in IDLE_STATES and state not in IDLE_STATES:
                r.history.clear()  # a pause is not step time
            r.since = t
        r.step, r.state, r.t = step, state, max(t, r.t)
        if state not in IDLE_STATES and (not r.history or t > r.history[-1][0]):
            r.history.append((t, step))

    def _who(self, ranks: list[int]) -> str:
        """`rank 1`, or in a multi-node run `rank 1 on gpu-b`, `ranks 0, 1 on gpu-a and rank 2 on gpu-b`."""
        ranks = sorted(ranks)
        if not any(self._host_of.get(r) for r in ranks):
            return _fmt_ranks(ranks)
        by_host: dict[str | None, list[int]] = {}
        for rank in ranks:
            by_host.setdefault(self._host_of.get(rank), []).append(rank)
        return " and ".join(_fmt_ranks(group) + on_host(host) for host, group in by_host.items())

    def _node_field(self, ranks: list[int]) -> dict[str, str]:
        """{"node": host} when every one of these ranks is on one named host."""
        hosts = {self._host_of.get(r) for r in ranks}
        return {"node": hosts.pop()} if len(hosts) == 1 and None not in hosts else {}

    # ---- hangs

    def _stalled_s(self, r: _RankState, now: float) -> float:
        return max(0.0, now - r.since)

    def _check_recoveries(self, now: float) -> list[dict[str, Any]]:
        events = []
        for incident in list(self._incidents):
            moved = [rank for rank, (step, state) in incident.ranks.items()
                     if rank in self._ranks and (self._ranks[rank].step, self._ranks[rank].state) != (step, state)]
            if not moved:
                continue
            # One rank moving ends the incident: in lock-step DDP the others were waiting for it.
            # A rank still stuck after that is a new incident, reported on the next crossing.
            self._incidents.remove(incident)
            ranks = sorted(incident.ranks)
            steps = {rank: self._ranks[rank].step for rank in ranks if rank in self._ranks}
            # The stall ended at the first new heartbeat of a moved rank (its `since` is that time).
            lasted = min(self._ranks[rank].since for rank in moved) - incident.since
            who = incident.culprits or ranks
            first = who[0] if len(who) == 1 else None
            state_note = ""
            if all(self._ranks[rank].idle for rank in moved):
                state_note = f" ({', '.join(sorted({self._ranks[rank].state for rank in moved}))})"
            message = (f"{self._who(who)} {'is' if len(who) == 1 else 'are'} moving again{state_note}: "
                       + ", ".join(f"rank {rank} at step {s}" for rank, s in steps.items())
                       + f", after about {_fmt_s(lasted)} without progress")
            events.append(make_event("log", t=now, level="info", message=message, watchdog="recovered",
                                     rank=first, ranks=who, steps={str(k): v for k, v in steps.items()},
                                     stalled_s=round(lasted, 1), **self._node_field(who)))
        return events

    def _check_hangs(self, now: float, median_step: float | None) -> list[dict[str, Any]]:
        active = [r for r in self._ranks.values() if not r.idle]
        if not active:
            return []
        reported = {rank for inc in self._incidents for rank in inc.ranks}
        crossed = [r for r in active if r.rank not in reported
                   and self._stalled_s(r, now) >= self.threshold_s(median_step, r.state)]
        if not crossed:
            return []
        # Every rank that would have written a newer heartbeat by now if it were moving belongs to
        # the same picture, even if it has not crossed the threshold itself yet.
        base = self.threshold_s(median_step)
        frozen_after = min(base, max(2 * HEARTBEAT_INTERVAL_S + 1.0, 3 * (median_step or 0.0)))
        frozen = [r for r in active if r.rank not in reported
                  and (r in crossed or self._stalled_s(r, now) >= frozen_after)]
        advancing = [r for r in active if r not in frozen and r.rank not in reported]
        utils = self._utils([r.rank for r in frozen])
        culprits = self._culprits(frozen, advancing, median_step, utils)
        event = self._hang_event(now, frozen, advancing, culprits, utils, median_step)
        self._incidents.append(_Incident(ranks={r.rank: (r.step, r.state) for r in frozen},
                                         culprits=[r.rank for r in culprits], t=now,
                                         since=min(r.since for r in frozen)))
        return [event]

    def _utils(self, ranks: list[int]) -> dict[int, float]:
        out: dict[int, float] = {}
        if self.telemetry_lookup is None:
            return out
        for rank in ranks:
            try:
                value = self.telemetry_lookup(rank)
            except Exception:
                value = None
            if value is not None:
                out[rank] = float(value)
        return out

    def _culprits(self, frozen: list[_RankState], advancing: list[_RankState], median_step: float | None,
                  utils: dict[int, float]) -> list[_RankState]:
        if advancing or len(frozen) == 1:
            return sorted(frozen, key=lambda r: r.rank)  # the others move on: every frozen rank is stuck
        # How many steps a heartbeat file may trail its rank (it is written at most once per interval).
        lag = 0 if not median_step else max(0, math.ceil(HEARTBEAT_INTERVAL_S / median_step - 1e-9) - 1)
        lowest = min(r.step for r in frozen)
        highest = max(r.step for r in frozen)
        if highest - lowest > lag:
            return sorted((r for r in frozen if r.step == lowest), key=lambda r: r.rank)
        if len(utils) == len(frozen):
            idle = [r for r in frozen if utils[r.rank] <= UTIL_IDLE]
            busy = [r for r in frozen if utils[r.rank] >= UTIL_BUSY]
            if idle and busy and len(idle) + len(busy) == len(frozen):
                return sorted(idle, key=lambda r: r.rank)
        return []

    def _hang_event(self, now: float, frozen: list[_RankState], advancing: list[_RankState],
                    culprits: list[_RankState], utils: dict[int, float], median_step: float | None) -> dict:
        stalled = max(self._stalled_s(r, now) for r in (culprits or frozen))
        others = sorted((r for r in frozen + advancing if r not in culprits), key=lambda r: r.rank)
        run = self.paths.id
        if culprits:
            steps = sorted({r.step for r in culprits})
            where = f"step {steps[0]}" if len(steps) == 1 else "steps " + ", ".join(map(str, steps))
            who = [r.rank for r in culprits]
            message = (f"{self._who(who)} {'has' if len(who) == 1 else 'have'} not finished a step for "
                       f"{_fmt_s(stalled)} (stuck at {where})")
            groups: dict[tuple[int, bool], list[int]] = {}
            for r in others:
                groups.setdefault((r.step, r in advancing), []).append(r.rank)
            parts = []
            for (step, moving), ranks in sorted(groups.items()):
                verb = ("is" if len(ranks) == 1 else "are") + (" still advancing" if moving else " waiting")
                parts.append(f"{self._who(ranks)} at step {step} {verb}")
            if parts:
                message += "; " + "; ".join(parts)
            step_field = min(r.step for r in culprits)
        else:
            steps = sorted({r.step for r in frozen})
            where = f"step {steps[0]}" if len(steps) == 1 else "steps " + ", ".join(map(str, steps))
            message = (f"no rank has finished a step for {_fmt_s(stalled)} ({self._who([r.rank for r in frozen])} "
                       f"at {where}); the heartbeats cannot tell which rank is stuck and which are waiting "
                       f"for it")
            step_field = min(r.step for r in frozen)
        if utils:
            message += " (GPU util " + ", ".join(f"rank {k} {v:.0f}%" for k, v in sorted(utils.items())) + ")"
        message += f". `traindeck --dump {run}` records every rank's stack."
        fields: dict[str, Any] = {
            "watchdog": "hang",
            "rank": culprits[0].rank if len(culprits) == 1 else None,
            "ranks": [r.rank for r in culprits] or sorted(r.rank for r in frozen),
            "step": step_field,
            "stalled_s": round(stalled, 1),
            "other_steps": {str(r.rank): r.step for r in others},
            "threshold_s": round(self.threshold_s(median_step), 1),
            **self._node_field([r.rank for r in (culprits or frozen)]),
        }
        if utils:
            fields["gpu_util"] = {str(k): v for k, v in sorted(utils.items())}
        return make_event("log", t=now, level="warning", message=message, **fields)

    # ---- stragglers

    def _check_stragglers(self, now: float) -> list[dict[str, Any]]:
        reported = {rank for inc in self._incidents for rank in inc.ranks}
        rates: dict[int, float] = {}
        for r in self._ranks.values():
            if r.idle or r.rank in reported:
                continue
            samples, span = r.history_span()
            step_time = r.step_time()
            if samples >= STRAGGLER_MIN_SAMPLES and span >= STRAGGLER_MIN_SPAN_S and step_time:
                rates[r.rank] = 1.0 / step_time
        events = []
        for rank, rate in sorted(rates.items()):
            r = self._ranks[rank]
            # Compare with the other ranks, not with a median that includes this one: with two
            # ranks the overall median is the mean of the pair and hides a 2x straggler.
            others = [v for k, v in rates.items() if k != rank]
            if not others:
                r.slow_checks = 0
                continue
            typical = statistics.median(others)
            if rate * self.straggler_ratio < typical:
                r.slow_checks += 1
            else:
                r.slow_checks = 0
                continue
            if r.slow_checks < STRAGGLER_CHECKS or now - r.straggler_warned_t < STRAGGLER_REPEAT_S:
                continue
            r.straggler_warned_t = now
            ratio = typical / rate
            utils = self._utils([rank])
            message = (f"{self._who([rank])} is a straggler: {rate:.2f} steps/s against {typical:.2f} for the other "
                       f"ranks ({ratio:.1f}x slower over the last {RATE_WINDOW_S:.0f} s, step {r.step})")
            if utils:
                message += f"; its GPU util is {utils[rank]:.0f}%"
            fields: dict[str, Any] = {"watchdog": "straggler", "rank": rank, "step": r.step,
                                      "steps_per_s": round(rate, 3), "median_steps_per_s": round(typical, 3),
                                      "ratio": round(ratio, 2), **self._node_field([rank])}
            if utils:
                fields["gpu_util"] = utils[rank]
            events.append(make_event("log", t=now, level="warning", message=message, **fields))
        return events


def telemetry_gpu_util(paths: RunPaths, nodes: list[NodeDir] | None = None) -> Callable[[int], float | None]:
    """rank -> utilisation of the GPU that rank runs on, from the newest telemetry.jsonl sample of
    each node (the run directory's own, then every other node's copy in a multi-node run).

    Called only when a hang is being reported, so reading the files' tails each time is fine. CPU
    runs have no GPU utilisation (their samples carry "workers", not "gpus"): None.
    """
    sources = [n.paths.telemetry for n in nodes] if nodes else [paths.telemetry]

    def lookup(rank: int) -> float | None:
        for telemetry in sources:
            util = _util_in(telemetry, rank)
            if util is not None:
                return util
        return None

    return lookup


def _util_in(telemetry: Path, rank: int) -> float | None:
    samples = read_telemetry(telemetry, last_n=1)
    if not samples:
        return None
    gpus = samples[-1].get("gpus")
    for gpu in gpus if isinstance(gpus, list) else []:
        util = finite_float(gpu.get("util")) if isinstance(gpu, dict) else None
        if util is None:
            continue
        # Matched by device UUID ("ranks"); by NVML's PIDs only in samples without it.
        ranks, procs = gpu.get("ranks"), gpu.get("processes")
        if isinstance(ranks, list) and ranks:
            if rank in ranks:
                return util
        elif any(isinstance(p, dict) and p.get("rank") == rank for p in (procs if isinstance(procs, list) else [])):
            return util
    return None

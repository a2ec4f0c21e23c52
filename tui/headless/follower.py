"""The headless printer's loop: follow a run directory through the feed until the run ends."""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable, TextIO

from training.rundir import RunPaths, RunState
from training.rundir.liveness import SupervisorStatus
from training.rundir.logs import rank_logs
from training.rundir.node_views import node_views
from training.rundir.records import Event, parse_events
from training.rundir.rendezvous import rendezvous_of
from tui.feed import RunFeed, read_last_json_line
from tui.formats import clean_text, number, strip_control
from tui.headless.lines import STALL_REPEAT_S, event_line, exit_code, progress_line, summary_lines
from tui.run_model import RunModel

# A supervisor that has not recorded itself in run.json after this long never started.
START_TIMEOUT_S = 60.0
# After a stop, how long to wait for the supervisor's exit.json before summarising without it.
EXIT_JSON_WAIT_S = 10.0
# Between progress lines the follower looks for exit.json this often (a stat), so the summary
# appears, and `run.py --headless` returns, within this of the run's end rather than up to a
# whole progress interval later.
EXIT_POLL_S = 0.2
# finish_run writes the final status event before exit.json, but a run directory of an older
# traindeck (which wrote it after) or one whose exit.json another writer made may be a moment
# ahead of it; while the supervisor is still alive, the follower gives it this long.
FINAL_STATUS_WAIT_S = 3.0
ENDED_STATES = frozenset(s.value for s in RunState if not s.is_live)


class Follower:
    def __init__(self, paths: RunPaths, out: TextIO, interval_s: float,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] | None = None):
        self.paths = paths
        self.out = out
        self.interval_s = interval_s
        self.clock = clock
        self.sleep = sleep or self._sleep_until_exit_json
        self.feed = RunFeed(paths, monotonic=clock)
        self.model = RunModel(run_id=paths.id)
        self.started = clock()
        self.printed_version = -1
        self.last_progress_t = 0.0
        self.last_move_t = clock()
        self.last_step: int | None = None
        self.output_size = 0
        self.node_lines: dict[str, str] = {}  # a multi-node run: each other node's state, as last printed
        # What a dead supervisor's run gets (follow() sets it): the orphan reaper.
        self.reap_fn: Callable[[RunPaths], Any] = _default_reap

    def say(self, line: str) -> None:
        self.out.write(strip_control(line) + "\n")
        self.out.flush()

    def run_json(self) -> dict[str, Any]:
        return self.feed.run_json()

    def exit_info(self) -> dict[str, Any] | None:
        return self.feed.exit_json()

    def reap_orphan(self, paths: RunPaths) -> dict[str, Any] | None:
        """The orphan reaper (training.console.stop.reap_orphan) on this run; exit.json after it.
        `follow(..., reap_fn=...)` replaces it."""
        try:
            self.reap_fn(paths)
        except Exception as exc:  # noqa: BLE001 - a failed reap still ends with a word about the run
            self.say(f"error: could not stop what is left of run {paths.id}: {exc}")
        info = self.exit_info()
        for s in (info or {}).get("survivors") or []:
            self.say(f"  left behind: pid {s.get('pid')}, user {s.get('user')}: {s.get('command')} ({s.get('why')})")
        return info

    def _sleep_until_exit_json(self, seconds: float) -> None:
        """time.sleep(seconds), cut short when the run's exit.json appears."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            time.sleep(min(EXIT_POLL_S, left))
            if self.paths.exit_json.exists():
                return

    def _fold(self, batch: list[Event], quiet: bool) -> None:
        for event in batch:
            previous = self.model.event_state
            self.model.apply_event(event)
            line = None if quiet else event_line(event, self.model, previous)
            if line:
                self.say(line)

    def drain(self, quiet: bool = False) -> None:
        while True:
            batch = self.feed.read_records()
            self._fold(batch, quiet)
            if not batch and self.feed.at_end:
                return

    def catch_up(self) -> None:
        """Apply the events already on disk to the model, silently (the summary still counts them):
        the series snapshot's replay, then the tail after it."""
        base = self.feed.start_from_snapshot()
        if base is not None:
            self._fold(parse_events(base.replay()), quiet=True)
        self.drain(quiet=True)

    def elapsed(self, at: float | None = None) -> float:
        created = number(self.run_json().get("created"))
        start = created if created is not None else (self.model.first_t or self.started)
        return (self.clock() if at is None else at) - start

    def rank0_output(self) -> tuple[int, Path | None]:
        """(bytes rank 0 has printed, its newest stdout file): a script that prints is moving."""
        files = rank_logs(self.paths).get(0, [])
        size = 0
        for f in files:
            try:
                size += f.stat().st_size
            except OSError:
                pass
        stdout = [f for f in files if f.name in ("stdout.log", "rank-0.log")]
        return size, (stdout[-1] if stdout else None)

    def last_output_line(self, path: Path | None, max_chars: int = 100) -> str:
        if path is None:
            return ""
        try:
            with open(path, "rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
                tail = f.read().decode("utf-8", "replace")
        except OSError:
            return ""
        lines = [clean_text(x) for x in re.split(r"[\r\n]", tail)]
        last = next((x for x in reversed(lines) if x), "")
        return last if len(last) <= max_chars else last[:max_chars - 3] + "..."

    def say_nodes(self) -> None:
        """A multi-node run: a line for each other node whose state (or ranks) changed."""
        for view in node_views(self.paths, self.run_json())[1:]:
            line = view.describe()
            if self.node_lines.get(view.host) != line:
                self.node_lines[view.host] = line
                self.say(f"node {line}")

    def tick(self) -> None:
        """Read what is new, print its lines, and the progress line if due."""
        self.drain()
        self.say_nodes()
        now = self.clock()
        rendezvous = rendezvous_of(self.run_json())
        if rendezvous != self.model.rendezvous:
            # A multi-node run's nodes joined, or the endpoint stopped answering: say so now.
            self.model.rendezvous = rendezvous
            self.model.version += 1
        if self.model.step != self.last_step:
            self.last_step, self.last_move_t = self.model.step, now
        size, stdout = self.rank0_output()
        printed, self.output_size = size != self.output_size, size
        if printed:
            self.last_move_t = now
        changed = self.model.version != self.printed_version or printed
        stalled = now - self.last_move_t
        if changed or now - self.last_progress_t >= STALL_REPEAT_S:
            self.progress(stalled if not changed else 0.0, stdout=stdout)

    def progress(self, stalled_s: float = 0.0, at: float | None = None, stdout: Path | None = None) -> None:
        telemetry = read_last_json_line(self.paths.telemetry)
        last = self.last_output_line(stdout) if self.model.step is None else ""
        self.say(progress_line(self.model, self.elapsed(at), telemetry, stalled_s, last_output=last,
                               now=self.clock() if at is None else at))
        self.printed_version = self.model.version
        self.last_progress_t = self.clock()

    def summary(self, exit_info: dict[str, Any] | None, code: int, state: str | None = None) -> None:
        state = state or (exit_info or {}).get("state") or self.model.event_state or "unknown"
        for line in summary_lines(self.model, self.paths.id, exit_info, code, state, self.elapsed()):
            self.say(line)
        if self.feed.skipped:
            self.say(f"  ({self.feed.skipped} unreadable lines in events.jsonl skipped)")
        self.say(f"  run dir: {self.paths.root}")

    def finish(self, exit_info: dict[str, Any] | None, stopped_by_us: bool = False,
               state: str | None = None) -> int:
        self._drain_to_final_status()
        if self.model.version != self.printed_version:
            # The run is over: time its last line by its last event, not by the clock now.
            self.progress(at=self.model.last_t)
        code = exit_code(exit_info, stopped_by_us)
        self.say_nodes()
        self.summary(exit_info, code, state)
        return code

    def _drain_to_final_status(self) -> None:
        deadline = time.monotonic() + FINAL_STATUS_WAIT_S
        while True:
            self.drain()
            if self.model.state in ENDED_STATES or time.monotonic() >= deadline:
                return
            if self.feed.supervisor(self.clock()) is not SupervisorStatus.ALIVE:
                self.drain()  # its last write may have landed just before it exited
                return
            time.sleep(0.05)

    def wait_for_exit_json(self, timeout_s: float) -> dict[str, Any] | None:
        deadline = self.clock() + timeout_s
        while True:
            info = self.exit_info()
            if info is not None or self.clock() >= deadline:
                return info
            self.sleep(0.1)

    def orphaned(self) -> bool:
        """True when the run can never write exit.json: its supervisor is gone (or never came)."""
        status = self.feed.supervisor(self.clock())
        if status in (SupervisorStatus.SPAWNING, SupervisorStatus.UNRECORDED):
            return self.clock() - self.started > START_TIMEOUT_S
        return status is SupervisorStatus.DEAD

    def loop(self) -> int:
        exit_info = self.exit_info()
        if exit_info is not None:
            return self.finish(exit_info)  # a finished run: history, then the summary
        self.drain()
        self.last_step, self.last_move_t = self.model.step, self.clock()
        self.progress()
        while True:
            self.sleep(self.interval_s)
            exit_info = self.exit_info()
            if exit_info is not None:
                return self.finish(exit_info)
            self.tick()
            if self.orphaned():
                # The supervisor may have written exit.json just before exiting.
                exit_info = self.exit_info()
                if exit_info is not None:
                    return self.finish(exit_info)
                sup = self.run_json().get("supervisor") or {}
                self.say(f"error: the supervisor of run {self.paths.id} (pid {sup.get('pid', '?')}) is gone "
                         f"without writing exit.json; the run is orphaned. Stopping whatever is left of it, "
                         f"as python run.py --stop {self.paths.id} would ...")
                exit_info = self.reap_orphan(self.paths)
                if exit_info is not None:
                    return self.finish(exit_info)
                return self.finish({"state": RunState.FAILED.value, "returncode": None,
                                    "message": "supervisor died without exit.json"})


def _default_stop(paths: RunPaths, grace_s: float | None = None, wait: bool = True) -> Any:
    from training.console.stop import stop_run

    # A second Ctrl-C asks for grace 0: what --stop --now does (SIGKILL to the run at once).
    return stop_run(paths, grace_s=grace_s, wait=wait, now=grace_s == 0.0)


def _default_reap(paths: RunPaths) -> Any:
    from training.console.stop import reap_orphan

    return reap_orphan(paths)


def _stop_after_interrupt(f: Follower, paths: RunPaths, stop_fn: Callable[..., Any]) -> int:
    f.say(f"stopping run {paths.id} (Ctrl-C) ...")
    state: Any = None
    try:
        try:
            state = stop_fn(paths)
        except KeyboardInterrupt:
            f.say(f"second Ctrl-C: killing run {paths.id} now ...")
            try:
                state = stop_fn(paths, grace_s=0.0, wait=True)
            except KeyboardInterrupt:
                f.say(f"run {paths.id} may still be stopping; check with: python run.py --runs")
                return 130
        exit_info = f.wait_for_exit_json(EXIT_JSON_WAIT_S)
    except KeyboardInterrupt:
        f.say(f"run {paths.id} may still be stopping; check with: python run.py --runs")
        return 130
    except Exception as exc:  # a stop that failed must still end with a word about the run
        f.say(f"error: could not stop run {paths.id}: {exc}. Try: python run.py --stop {paths.id}")
        return 130
    state_value = getattr(state, "value", state)
    return f.finish(exit_info, stopped_by_us=True,
                    state=(exit_info or {}).get("state") or (state_value if isinstance(state_value, str) else None))


def follow(paths: RunPaths, out: TextIO | None = None, stop_on_interrupt: bool = False, interval_s: float = 2.0,
           *, history: bool = True, stop_fn: Callable[..., Any] | None = None, clock: Callable[[], float] = time.time,
           sleep: Callable[[float], None] | None = None, reap_fn: Callable[[RunPaths], Any] | None = None) -> int:
    """Print a run's progress until it ends; return its exit code (130 when Ctrl-C stopped it).

    Ctrl-C with `stop_on_interrupt` stops the run (a second Ctrl-C kills it without the grace
    period); without it, Ctrl-C detaches and the run keeps going. `history=False` takes in what
    the run already wrote without printing it (a resumed run whose earlier lines were shown).
    """
    out = out if out is not None else sys.stdout
    f = Follower(paths, out, interval_s, clock=clock, sleep=sleep)
    f.reap_fn = reap_fn or _default_reap
    if not history:
        f.catch_up()
    try:
        return f.loop()
    except KeyboardInterrupt:
        pass
    if not stop_on_interrupt:
        f.say(f"detached from run {paths.id}; it keeps running. Re-attach with: python run.py --attach {paths.id}")
        return 130
    return _stop_after_interrupt(f, paths, stop_fn or _default_stop)

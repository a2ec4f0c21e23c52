"""The one-line reporting API for training scripts.

    from traindeck import report
    report.log(step, epoch=epoch, loss=loss.item())            # a train metric point
    report.log(step, split="val", loss=val_loss, acc=val_acc)  # a validation point
    report.checkpoint("checkpoints/last.pt", epoch=epoch, step=step)
    report.epoch(epoch, seconds=35.2, samples_per_s=5012.0)
    report.status("running", epochs=10) ; report.message("lr warmup done", level="info")
    with report.phase("data"):                                 # the step anatomy of your own loop
        batch = next(loader)

Phases (`data`, `compute`, `comm`, `optimizer`, `eval`, `checkpoint`, or a name of your own) add up
their seconds on every rank; the next `log()` on that rank, at most every TIMING_EVERY_S, writes a
`timing` event with them: the interval's wall time less what the phases cover is `other`, and the
steps are the difference of log()'s step numbers. Only where a script marks its phases.

Outside traindeck (no TRAINDECK_RUN_DIR in the environment) every call is a silent no-op, so
a script can keep these lines when it runs under plain torchrun. Under DDP only rank 0
writes unless `all_ranks=True` is passed; every rank's `log()` also beats its heartbeat
(rate-limited to ~1/s), so the watchdog sees hangs in users' scripts too.

Nothing here raises into the training script: values that are not numbers are dropped
(`dropped` counts them), OSErrors are swallowed (`errors` counts them).

Metric points are buffered and written by a daemon thread (by size, or at most FLUSH_SECONDS
late), with one write() per batch on an O_APPEND regular file: a slow or stalled reader can
never block training (a stalled disk or NFS mount stalls the flusher, not the training loop;
past MAX_BUFFERED points are dropped and counted), and the caller pays for building a dict
only. benchmarks/bench_metrics.py on the 2-core dev box: 5 us per call against 10 us when the
caller also encodes and writes each batch (15 vs 24 us under load); 0.7 us outside traindeck.
Checkpoint, epoch, status and log events are written at once, in order, so they are on disk
before the process can exit.
"""

from __future__ import annotations

import atexit
import math
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

# Only traindeck's own modules: a user's script may have a package of its own named `training`.
from traindeck import RUN_DIR_ENV
from traindeck.events import SCHEMA_VERSION, encode, make_event, open_append, write_all

FLUSH_EVENTS = 256
# A point reaches the file at most this late: the console polls the file a few times a second,
# so this is most of what a user waits between report.log() and the plot.
FLUSH_SECONDS = 0.25
# If the disk stalls for minutes, keep at most this many points instead of growing without bound.
MAX_BUFFERED = 100_000
# A script's marked phases become a timing event at most this often per rank.
TIMING_EVERY_S = 1.0


def _env_rank() -> int | None:
    for var in ("RANK", "TRAINDECK_RANK"):
        value = os.environ.get(var)
        if value is not None:
            try:
                return int(value)
            except ValueError:
                pass
    return None


def _dist_rank() -> int | None:
    """The rank of an initialised torch.distributed group (mp.spawn scripts set no RANK variable)."""
    dist = sys.modules.get("torch.distributed")
    try:
        if dist is not None and dist.is_available() and dist.is_initialized():
            return int(dist.get_rank())
    except Exception:
        pass
    return None


def _number(value: Any) -> float | str | None:
    """A JSON-ready float (non-finite as a string, the way events.py writes them) or None."""
    try:
        f = float(value)
    except Exception:  # tensors with many elements raise RuntimeError, strings ValueError...
        return None
    return f if math.isfinite(f) else str(f)


class Reporter:
    def __init__(self, run_dir: str | os.PathLike | None, rank: int | None = 0, heartbeat: bool = True):
        self.run_dir = Path(run_dir) if run_dir else None
        self.path = self.run_dir / "events.jsonl" if self.run_dir else None
        self._rank = rank
        self.errors = 0    # OSErrors swallowed while writing
        self.dropped = 0   # values or events dropped (not a number, buffer full)
        self.written = 0
        self._buffer: list[dict[str, Any]] = []
        self._first_buffered = 0.0
        self._lock = threading.Lock()        # guards _buffer
        self._write_lock = threading.Lock()  # keeps batches in order on disk
        self._wake = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._auto_step = 0
        self._heartbeat_wanted = heartbeat
        self._heartbeat: Any = None
        self._heartbeat_rank: int | None = None
        # report.phase(): seconds per phase since the last timing event, and the totals since the first.
        self._phases: dict[str, float] = {}
        self._phase_since = time.perf_counter()
        self._phase_step: int | None = None
        self._phase_totals: dict[str, Any] = {"steps": 0, "seconds": 0.0, "phases": {}}

    # ---- who writes ---------------------------------------------------------------------
    @property
    def enabled(self) -> bool:
        return self.path is not None

    @property
    def rank(self) -> int:
        if self._rank is None:
            rank = _dist_rank()
            if rank is None:
                return 0  # not known yet: a process group may still be initialised later
            self._rank = rank
        return self._rank

    def _should_write(self, all_ranks: bool) -> bool:
        return self.path is not None and (all_ranks or self.rank == 0)

    # ---- writing ------------------------------------------------------------------------
    def _buffer_event(self, event: dict[str, Any]) -> None:
        with self._lock:
            if len(self._buffer) >= MAX_BUFFERED:
                self.dropped += 1
                return
            if not self._buffer:
                self._first_buffered = time.monotonic()
            self._buffer.append(event)
            due = len(self._buffer) >= FLUSH_EVENTS
        if self._thread is None:
            self._start_flusher()
        if due:
            if self._thread is not None:
                self._wake.set()
            else:
                self.flush()

    def _start_flusher(self) -> None:
        if self._closed:
            return
        try:
            thread = threading.Thread(target=self._flush_loop, name="traindeck-report", daemon=True)
            thread.start()
            self._thread = thread
        except RuntimeError:  # interpreter shutting down: write inline instead
            self._thread = None

    def _flush_loop(self) -> None:
        while not self._closed:
            self._wake.wait(FLUSH_SECONDS / 2)
            self._wake.clear()
            with self._lock:
                size = len(self._buffer)
                age = time.monotonic() - self._first_buffered if size else 0.0
            if size >= FLUSH_EVENTS or age >= FLUSH_SECONDS:
                self.flush()

    def emit(self, kind: str, all_ranks: bool = False, flush: bool = False, **fields: Any) -> None:
        """Write any event kind (make_event cleans the fields); `flush` writes it at once."""
        try:
            if not self._should_write(all_ranks):
                return
            if all_ranks and self.rank != 0:
                fields.setdefault("rank", self.rank)
            event = make_event(kind, **fields)
        except Exception:
            self.dropped += 1
            return
        if flush:
            with self._write_lock:
                with self._lock:
                    batch, self._buffer = self._buffer, []
                batch.append(event)
                self._write(batch)
        else:
            self._buffer_event(event)

    def flush(self) -> None:
        with self._write_lock:
            with self._lock:
                batch, self._buffer = self._buffer, []
            self._write(batch)

    def _write(self, batch: list[dict[str, Any]]) -> None:
        if not batch or self.path is None:
            return
        lines = []
        for event in batch:
            try:
                lines.append(encode(event))
            except (TypeError, ValueError):
                self.dropped += 1  # a field that is not JSON (a user's object in **info)
        if not lines:
            return
        try:
            fd = open_append(self.path)
            try:
                # One write() per batch: lines from the supervisor and this rank never interleave.
                write_all(fd, b"".join(lines))
            finally:
                os.close(fd)
            self.written += len(lines)
        except OSError:
            # Disk full or the run dir vanished: never take training down for a metric line.
            self.errors += 1

    def close(self) -> None:
        """Flush and stop the flusher thread (atexit does this)."""
        self._closed = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(1.0)
        self.flush()

    def _after_fork_in_child(self) -> None:
        # A forked child (a DataLoader worker) must not re-write the parent's buffer, and the
        # parent's flusher thread and locks did not come along.
        self._buffer = []
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._wake = threading.Event()
        self._thread = None

    def _beat(self, step: int, epoch: int | None) -> None:
        hb = self._heartbeat
        rank = self.rank
        if hb is None or self._heartbeat_rank != rank:
            if not self._heartbeat_wanted or self.run_dir is None:
                return
            try:
                from traindeck.heartbeat import Heartbeat
            except ImportError:
                self._heartbeat_wanted = False
                return
            hb = self._heartbeat = Heartbeat(self.run_dir, rank)
            self._heartbeat_rank = rank
        try:
            hb.beat(step, epoch=epoch)
        except Exception:
            self.errors += 1

    # ---- the step anatomy of a user's script (report.phase) ---------------------------
    def add_phase(self, name: str, seconds: float) -> None:
        self._phases[name] = self._phases.get(name, 0.0) + seconds

    def _timing_due(self, step: int) -> None:
        """At a log(): the phases since the last timing event, when there are some and it is time."""
        now = time.perf_counter()
        seconds = now - self._phase_since
        if self._phase_step is None:  # the first log() starts the count: its steps' start is unknown
            self._phase_step, self._phase_since, self._phases = step, now, {}
            return
        if seconds < TIMING_EVERY_S or step <= self._phase_step:
            return
        phases, self._phases = self._phases, {}
        covered = sum(phases.values())
        phases["other"] = phases.get("other", 0.0) + max(0.0, seconds - covered)
        steps, self._phase_step, self._phase_since = step - self._phase_step, step, now
        totals = self._phase_totals
        totals["steps"] += steps
        totals["seconds"] += seconds
        for k, v in phases.items():
            totals["phases"][k] = totals["phases"].get(k, 0.0) + v
        self.emit("timing", all_ranks=True, rank=self.rank, step=step, steps=steps, seconds=round(seconds, 6),
                  phases={k: round(v, 6) for k, v in phases.items()}, clock="host",
                  total={"steps": totals["steps"], "seconds": round(totals["seconds"], 6),
                         "phases": {k: round(v, 6) for k, v in totals["phases"].items()}})

    # ---- public calls -----------------------------------------------------------------
    def log(self, step: int | None = None, epoch: int | None = None, split: str = "train",
            all_ranks: bool = False, **values: Any) -> None:
        if self.path is None:
            return
        try:
            if step is None:
                self._auto_step += 1
                step = self._auto_step
            else:
                step = int(step)
                self._auto_step = step
            epoch = None if epoch is None else int(epoch)
        except Exception:
            self.dropped += 1
            return
        self._beat(step, epoch)
        if self._phases or self._phase_step is not None:
            self._timing_due(step)
        if not (all_ranks or self.rank == 0):
            return
        clean = {}
        for k, v in values.items():
            f = _number(v)
            if f is None:
                self.dropped += 1
            else:
                clean[k] = f
        if not clean:
            return
        # Built by hand rather than through make_event: this is the per-step hot path.
        event: dict[str, Any] = {"v": SCHEMA_VERSION, "t": round(time.time(), 3), "kind": "metric",
                                 "step": step, "split": str(split), "values": clean}
        if epoch is not None:
            event["epoch"] = epoch
        if all_ranks and self.rank != 0:
            event["rank"] = self.rank
        self._buffer_event(event)

    def epoch(self, epoch: int, **info: Any) -> None:
        try:
            epoch = int(epoch)
        except Exception:
            self.dropped += 1
            return
        self.emit("epoch", epoch=epoch, flush=True, **info)

    def checkpoint(self, path: str | os.PathLike, **info: Any) -> None:
        if self.path is None:
            return
        try:
            p = Path(path)
            if self.run_dir is not None:
                try:
                    p = p.resolve().relative_to(self.run_dir.resolve())
                except ValueError:
                    pass
            if "bytes" not in info:
                try:
                    info["bytes"] = os.stat(path).st_size
                except OSError:
                    pass
        except Exception:
            self.dropped += 1
            return
        info.setdefault("best", False)
        self.emit("checkpoint", path=str(p), flush=True, **info)

    def status(self, state: str, message: str = "", **info: Any) -> None:
        self.emit("status", state=str(state), message=str(message), flush=True, **info)

    def message(self, message: str, level: str = "info", all_ranks: bool = False, **info: Any) -> None:
        self.emit("log", level=str(level), message=str(message), all_ranks=all_ranks, flush=True, **info)


_reporter: Reporter | None = None
_reporter_lock = threading.Lock()


def _close_at_exit() -> None:
    if _reporter is not None:
        try:
            _reporter.close()
        except Exception:
            pass


atexit.register(_close_at_exit)


def _reset_after_fork() -> None:
    global _reporter_lock
    _reporter_lock = threading.Lock()
    if _reporter is not None:
        _reporter._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def get_reporter() -> Reporter:
    """The process-wide reporter, configured from the environment on first use."""
    global _reporter
    if _reporter is None:
        with _reporter_lock:
            if _reporter is None:
                _reporter = Reporter(os.environ.get(RUN_DIR_ENV) or None, _env_rank())
    return _reporter


def configure(run_dir: str | os.PathLike | None, rank: int | None = 0, heartbeat: bool = True) -> Reporter:
    """Point the reporter at a run directory explicitly (the built-in worker does this).

    `heartbeat=False` when the caller beats its own traindeck.heartbeat.Heartbeat.
    """
    global _reporter
    with _reporter_lock:
        if _reporter is not None:
            _reporter.close()
        _reporter = Reporter(run_dir, rank, heartbeat=heartbeat)
    return _reporter


def log(step: int | None = None, epoch: int | None = None, split: str = "train", all_ranks: bool = False,
        **values: Any) -> None:
    try:
        get_reporter().log(step, epoch=epoch, split=split, all_ranks=all_ranks, **values)
    except Exception:
        pass  # never into the training script


def epoch(epoch: int, **info: Any) -> None:
    try:
        get_reporter().epoch(epoch, **info)
    except Exception:
        pass


def checkpoint(path: str | os.PathLike, **info: Any) -> None:
    try:
        get_reporter().checkpoint(path, **info)
    except Exception:
        pass


def status(state: str, message: str = "", **info: Any) -> None:
    try:
        get_reporter().status(state, message, **info)
    except Exception:
        pass


def message(message: str, level: str = "info", all_ranks: bool = False, **info: Any) -> None:
    try:
        get_reporter().message(message, level=level, all_ranks=all_ranks, **info)
    except Exception:
        pass


class phase:
    """`with report.phase("data"): ...`: the seconds inside count for that phase of this rank's
    step anatomy (a no-op costing a clock read or two outside traindeck)."""

    __slots__ = ("name", "_t0")

    def __init__(self, name: str) -> None:
        self.name = str(name)

    def __enter__(self) -> "phase":
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> bool:
        try:
            reporter = get_reporter()
            if reporter.enabled:
                reporter.add_phase(self.name, time.perf_counter() - self._t0)
        except Exception:
            pass  # never into the training script
        return False


def flush() -> None:
    try:
        get_reporter().flush()
    except Exception:
        pass

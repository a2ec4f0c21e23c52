"""The one-line reporting API for training scripts.

    from training import report
    report.log(step, epoch=epoch, loss=loss.item())            # a train metric point
    report.log(step, split="val", loss=val_loss, acc=val_acc)  # a validation point
    report.checkpoint("checkpoints/last.pt", epoch=epoch, step=step)

Outside traindeck (no TRAINDECK_RUN_DIR in the environment) every call is a silent no-op, so
a script can keep these lines when it runs under plain torchrun. Under DDP only rank 0
writes unless `all_ranks=True` is passed. Events are buffered and flushed by size or age
with one append to a regular file: a slow or stalled reader can never block training.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from pathlib import Path
from typing import Any

from training.events import append_events, make_event
from training.rundir import RUN_DIR_ENV

FLUSH_EVENTS = 256
FLUSH_SECONDS = 0.5


def _env_rank() -> int:
    for var in ("RANK", "TRAINDECK_RANK"):
        value = os.environ.get(var)
        if value is not None:
            try:
                return int(value)
            except ValueError:
                pass
    return 0


class Reporter:
    def __init__(self, run_dir: str | os.PathLike | None, rank: int = 0):
        self.run_dir = Path(run_dir) if run_dir else None
        self.rank = rank
        self.path = self.run_dir / "events.jsonl" if self.run_dir else None
        self._buffer: list[dict[str, Any]] = []
        self._last_flush = time.monotonic()
        self._lock = threading.Lock()
        self._auto_step = 0

    @property
    def enabled(self) -> bool:
        return self.path is not None

    def _should_write(self, all_ranks: bool) -> bool:
        return self.path is not None and (all_ranks or self.rank == 0)

    def emit(self, kind: str, all_ranks: bool = False, flush: bool = False, **fields: Any) -> None:
        if not self._should_write(all_ranks):
            return
        if all_ranks and self.rank != 0:
            fields.setdefault("rank", self.rank)
        event = make_event(kind, **fields)
        with self._lock:
            self._buffer.append(event)
            if flush or len(self._buffer) >= FLUSH_EVENTS or time.monotonic() - self._last_flush >= FLUSH_SECONDS:
                self._flush_locked()

    def flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        self._last_flush = time.monotonic()
        if not self._buffer or self.path is None:
            return
        batch, self._buffer = self._buffer, []
        try:
            append_events(self.path, batch)
        except OSError:
            # Disk full or the run dir vanished: never take training down for a metric line.
            pass

    # ---- public calls -----------------------------------------------------------------
    def log(self, step: int | None = None, epoch: int | None = None, split: str = "train",
            all_ranks: bool = False, **values: Any) -> None:
        if step is None:
            self._auto_step += 1
            step = self._auto_step
        else:
            self._auto_step = int(step)
        clean = {}
        for k, v in values.items():
            try:
                clean[k] = float(v)
            except (TypeError, ValueError):
                continue
        fields: dict[str, Any] = {"step": int(step), "split": split, "values": clean}
        if epoch is not None:
            fields["epoch"] = int(epoch)
        self.emit("metric", all_ranks=all_ranks, **fields)

    def epoch(self, epoch: int, **info: Any) -> None:
        self.emit("epoch", epoch=int(epoch), flush=True, **info)

    def checkpoint(self, path: str | os.PathLike, **info: Any) -> None:
        p = Path(path)
        if self.run_dir is not None:
            try:
                p = p.resolve().relative_to(self.run_dir.resolve())
            except ValueError:
                pass
        info.setdefault("best", False)
        self.emit("checkpoint", path=str(p), flush=True, **info)

    def status(self, state: str, message: str = "", **info: Any) -> None:
        self.emit("status", state=state, message=message, flush=True, **info)

    def message(self, message: str, level: str = "info", all_ranks: bool = False, **info: Any) -> None:
        self.emit("log", level=level, message=message, all_ranks=all_ranks, flush=True, **info)


_reporter: Reporter | None = None
_reporter_lock = threading.Lock()


def get_reporter() -> Reporter:
    """The process-wide reporter, configured from the environment on first use."""
    global _reporter
    if _reporter is None:
        with _reporter_lock:
            if _reporter is None:
                _reporter = Reporter(os.environ.get(RUN_DIR_ENV) or None, _env_rank())
                atexit.register(_reporter.flush)
    return _reporter


def configure(run_dir: str | os.PathLike | None, rank: int = 0) -> Reporter:
    """Point the reporter at a run directory explicitly (the built-in worker does this)."""
    global _reporter
    with _reporter_lock:
        if _reporter is not None:
            _reporter.flush()
        _reporter = Reporter(run_dir, rank)
        atexit.register(_reporter.flush)
    return _reporter


def log(step: int | None = None, epoch: int | None = None, split: str = "train", all_ranks: bool = False,
        **values: Any) -> None:
    get_reporter().log(step, epoch=epoch, split=split, all_ranks=all_ranks, **values)


def epoch(epoch: int, **info: Any) -> None:
    get_reporter().epoch(epoch, **info)


def checkpoint(path: str | os.PathLike, **info: Any) -> None:
    get_reporter().checkpoint(path, **info)


def status(state: str, message: str = "", **info: Any) -> None:
    get_reporter().status(state, message, **info)


def message(message: str, level: str = "info", **info: Any) -> None:
    get_reporter().message(message, level=level, **info)


def flush() -> None:
    get_reporter().flush()

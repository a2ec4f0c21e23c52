"""The control file: requests from the console to a running worker.

    RUN_DIR/control.json = {"seq": 7, "action": "save|save-stop|pause|resume|rewind", "t": <unix s>}

`rewind` is the [health] nan rule's (sent by the supervisor, never by a console key): reload
checkpoints/last.pt, keep the data where it is (the batches since the checkpoint are skipped) and
go on from the checkpoint's step (training.engine.trainer.Trainer.rewind).

The console calls `send(paths, action)` (or `send_and_wait`, which blocks until the worker's
acknowledgement appears in events.jsonl). Rank 0 calls `ControlChannel(run_dir).poll()` at each
logging boundary; a poll costs one os.stat at most every 0.2 s. In DDP the command travels to the
other ranks inside the all-reduce the worker already does at that boundary, so every rank saves,
stops or pauses at the same step.

The acknowledgement is a `log` event with fields control=<action> and seq=<n>.
A command older than the worker process is stale (left over from before a resume) and ignored.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from traindeck.numbers import finite_number
from traindeck.untrusted import bounded_int
from training.errors import TraindeckError
from training.rundir import RunPaths, read_json, write_json_atomic
from training.rundir.events_file import EventReader
from training.rundir.liveness import not_live_reason

ACTIONS = ("save", "save-stop", "pause", "resume", "rewind")
# Codes that travel in the DDP all-reduce (0 = nothing to do).
ACTION_CODES = {action: n for n, action in enumerate(ACTIONS, start=1)}
CODE_ACTIONS = {n: action for action, n in ACTION_CODES.items()}
POLL_INTERVAL_S = 0.2


class Command(str):
    """An action name ("save", ...) that also carries the request's sequence number."""

    seq: int

    def __new__(cls, action: str, seq: int = 0) -> Command:
        obj = super().__new__(cls, action)
        obj.seq = seq
        return obj

    @property
    def code(self) -> int:
        return ACTION_CODES[str(self)]


# Sequence numbers count requests of one run; one beyond this is junk (and would make every later
# request look old).
MAX_SEQ = 1 << 53


def _seq_of(value: object) -> int | None:
    """control.json's "seq" as an int in [0, MAX_SEQ] (7 and 7.0 alike), else None."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return bounded_int(value, 0, MAX_SEQ)


def _paths(paths: RunPaths | str | os.PathLike) -> RunPaths:
    return paths if isinstance(paths, RunPaths) else RunPaths(Path(paths))


# Longer than the coarse clock tick that stamps file times (1-10 ms).
STAMP_SETTLE_NS = 50_000_000


class ControlChannel:
    """Worker side: notices new requests in control.json cheaply."""

    def __init__(self, run_dir: str | os.PathLike, since: float | None = None,
                 min_interval_s: float = POLL_INTERVAL_S):
        self.path = Path(run_dir) / "control.json"
        # Requests written before this process started belong to an earlier life of the run.
        self.since = time.time() if since is None else since
        self.min_interval_s = min_interval_s
        self.last_seq = 0
        self._next_check = 0.0
        self._stamp: tuple[int, int, int] | None = None

    def poll(self) -> Command | None:
        now = time.monotonic()
        if now < self._next_check:
            return None
        self._next_check = now + self.min_interval_s
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp == self._stamp:
            return None
        # File times tick with the kernel's coarse clock (a few ms) and a replaced file's inode
        # is often reused, so two requests written within a tick can share a stamp: trust the
        # stamp only for a file older than that.
        self._stamp = stamp if time.time_ns() - st.st_mtime_ns > STAMP_SETTLE_NS else None
        data = read_json(self.path)
        if not isinstance(data, dict):
            return None
        # Anyone who can write the run directory can write this file: a seq or a time that is no
        # finite number ("seq": 1e999) is no request, and must not raise in the training loop.
        seq, action, t = _seq_of(data.get("seq")), data.get("action"), finite_number(data.get("t", 0))
        if seq is None or not isinstance(action, str) or t is None:
            return None
        if seq <= self.last_seq:
            return None
        self.last_seq = seq
        if action not in ACTIONS or t < self.since:
            return None
        return Command(action, seq)


def send(paths: RunPaths | str | os.PathLike, action: str) -> int:
    """Write a request atomically with the next sequence number; returns that number."""
    if action not in ACTIONS:
        raise TraindeckError(f"unknown control action '{action}'; use one of {', '.join(ACTIONS)}.")
    paths = _paths(paths)
    lock_path = paths.root / ".control.lock"
    # Two consoles sending at once must not reuse a sequence number.
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        seq = (_seq_of(read_json(paths.control, {}).get("seq")) or 0) + 1
        write_json_atomic(paths.control, {"seq": seq, "action": action, "t": round(time.time(), 3)})
    finally:
        os.close(fd)
    return seq


def send_and_wait(paths: RunPaths | str | os.PathLike, action: str, timeout_s: float = 30.0) -> str:
    """Send a request and wait for the worker to acknowledge it; returns the acknowledgement."""
    paths = _paths(paths)
    reason = not_live_reason(paths)
    if reason:
        raise TraindeckError(f"cannot {action} run {paths.id}: {reason}. Control requests go to live runs only.")
    reader = EventReader(paths.events)
    try:
        reader.offset = os.stat(paths.events).st_size  # only acknowledgements after the request count
    except OSError:
        pass
    seq = send(paths, action)
    deadline = time.monotonic() + timeout_s
    while True:
        for event in reader.read():
            if event.get("kind") == "log" and event.get("control") == action and event.get("seq") == seq:
                return str(event.get("message", ""))
        reason = not_live_reason(paths)
        if reason:
            raise TraindeckError(f"run {paths.id} did not acknowledge '{action}': {reason}.")
        if time.monotonic() >= deadline:
            raise TraindeckError(
                f"run {paths.id} did not acknowledge '{action}' within {timeout_s:g} s. The worker reads "
                f"requests at each logging boundary (train.log_every steps); a long step or a hung rank "
                f"delays it. The request stays in {paths.control} and is handled when the worker gets there.")
        time.sleep(0.1)

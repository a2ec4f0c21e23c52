"""Per-rank heartbeat files: RUN_DIR/heartbeats/rank-<rank>.json.

    hb = Heartbeat(run_dir, rank)
    hb.beat(step, epoch=epoch)                 # call every step; writes at most ~1/s
    hb.beat(step, state="paused", force=True)  # a state change is written at once

Every rank beats, not only rank 0: the supervisor's watchdog compares ranks to spot a hang or a
straggler. A call that does not write costs one monotonic clock read and a comparison, so the
training loop can call it every step. The file is replaced atomically, so a reader sees a whole
JSON object: {"rank", "pid", "step", "epoch", "t", "state"}, plus "devices" once the rank knows
its GPUs: [{"uuid": "GPU-...", "pci_bus_id": "0000:3b:00.0"}, ...] (one, or every GPU of a
DataParallel rank). Telemetry and the checks match GPUs to ranks by that UUID: inside a container
NVML reports host PIDs, which match no process the run knows.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from traindeck.untrusted import bounded_int, read_json_object

HEARTBEAT_INTERVAL_S = 1.0
# A beat is a few hundred bytes (more with a DataParallel rank's GPUs).
MAX_HEARTBEAT_BYTES = 1 << 20


def heartbeat_path(run_dir: str | os.PathLike, rank: int) -> Path:
    return Path(run_dir) / "heartbeats" / f"rank-{rank}.json"


class Heartbeat:
    def __init__(self, run_dir: str | os.PathLike, rank: int = 0, interval_s: float = HEARTBEAT_INTERVAL_S):
        self.rank = int(rank)
        self.path = heartbeat_path(run_dir, self.rank)
        self._tmp = self.path.with_name(f".{self.path.name}.tmp")
        self.interval_s = interval_s
        self._next_write = 0.0
        self._state: str | None = None
        self._pid = os.getpid()
        self.devices: list[dict[str, str | None]] = []  # this rank's GPUs; written with every beat
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError:
            pass  # a heartbeat is advisory; training never fails because of it

    def beat(self, step: int, epoch: int | None = None, state: str = "training", force: bool = False) -> bool:
        """Record progress; returns True when the file was written."""
        now = time.monotonic()
        if now < self._next_write and not force and state == self._state:
            return False
        self._next_write = now + self.interval_s
        self._state = state
        data = {"rank": self.rank, "pid": self._pid, "step": int(step),
                "epoch": None if epoch is None else int(epoch), "t": round(time.time(), 3), "state": state}
        if self.devices:
            data["devices"] = self.devices
        try:
            # One writer per file (this rank), so a fixed temp name is safe; no fsync: a heartbeat
            # lost in a power cut does not matter, a stall in the training loop would.
            fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, (json.dumps(data) + "\n").encode())
            finally:
                os.close(fd)
            os.replace(self._tmp, self.path)
        except OSError:
            return False
        return True


# A rank number beyond any world size torchrun starts; a bigger one is junk.
MAX_RANK = 1 << 20


def read_heartbeats(run_dir: str | os.PathLike) -> dict[int, dict]:
    """rank -> last heartbeat. A file that is not a JSON object with an int "rank" (junk, a FIFO, a
    link, "rank": Infinity) is skipped; so is a "devices" that is not a list of objects."""
    out: dict[int, dict] = {}
    folder = Path(run_dir) / "heartbeats"
    try:
        files = list(folder.glob("rank-*.json"))
    except OSError:
        return out
    for f in files:
        data = read_json_object(f, MAX_HEARTBEAT_BYTES)
        rank = bounded_int(data.get("rank"), 0, MAX_RANK) if data is not None else None
        if rank is None:
            continue
        devices = data.get("devices")
        if devices is not None:
            data["devices"] = [d for d in devices if isinstance(d, dict)] if isinstance(devices, list) else []
        out[rank] = data
    return out

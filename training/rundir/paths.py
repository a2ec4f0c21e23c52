"""Names and primitives of one run directory: its paths, its states, atomic JSON, creation.

    runs/<YYYYmmdd-HHMMSS>-<profile>/
        profile.toml      resolved profile (overrides applied)
        run.json          id, profile, mode, argv, host, supervisor pid + create_time, state, processes;
                          a queued run: "queue": true and "gpu_queue" (its place, what it waits for)
        events.jsonl      append-only event stream (training.rundir.events_file)
        telemetry.jsonl   one line per sample (training.monitor.telemetry)
        logs/             per-rank stdout/stderr
        checkpoints/      last.pt, best.pt, epoch-NNNN.pt
        heartbeats/       rank-N.json, rewritten ~1/s by every rank
        control.json      requests from the console to the workers (training.rundir.control)
        exit.json         return code, failed rank, first error lines
        nodes/<host>/     a multi-node run's other nodes, each in this layout (the head's copy)

Everything here is created user-only (0700 dirs, 0600 files): logs and checkpoints of a
rented box are nobody else's business.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from traindeck import RUN_DIR_ENV  # noqa: F401 - the one definition, re-exported here
from traindeck.untrusted import read_bounded, read_json_object

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

RUNS_DIR_ENV = "TRAINDECK_RUNS_DIR"
# A multi-node run's other nodes, one directory each: <run>/nodes/<host>/ (the node's own layout).
NODES_DIR = "nodes"


class RunState(str, Enum):
    # queued: the supervisor waits for the run's GPUs on a shared box (run.py --queue); nothing
    # of the run is launched yet, but it is live (its supervisor holds a place in the line).
    QUEUED = "queued"
    STARTING = "starting"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    STOPPED = "stopped"

    @property
    def is_live(self) -> bool:
        return self in (RunState.QUEUED, RunState.STARTING, RunState.RUNNING)


def default_runs_dir() -> Path:
    return Path(os.environ.get(RUNS_DIR_ENV) or "runs")


@dataclass(frozen=True)
class RunPaths:
    """Names of everything inside one run directory."""

    root: Path

    @property
    def id(self) -> str:
        return self.root.name

    profile = property(lambda self: self.root / "profile.toml")
    run_json = property(lambda self: self.root / "run.json")
    events = property(lambda self: self.root / "events.jsonl")
    telemetry = property(lambda self: self.root / "telemetry.jsonl")
    logs = property(lambda self: self.root / "logs")
    checkpoints = property(lambda self: self.root / "checkpoints")
    heartbeats = property(lambda self: self.root / "heartbeats")
    control = property(lambda self: self.root / "control.json")
    exit_json = property(lambda self: self.root / "exit.json")
    supervisor_log = property(lambda self: self.root / "logs" / "supervisor.log")
    dumps = property(lambda self: self.root / "dumps")

    def node(self, host: str) -> RunPaths:
        """Another node's files on this machine: the head's copy, or the node's own directory on a
        shared filesystem."""
        return RunPaths(self.root / NODES_DIR / host)


def create_stamped_dir(runs_dir: Path, profile_name: str, now: float | None = None, prefix: str = "") -> Path | None:
    """Make runs/<prefix><stamp>-<profile>/ (user-only), adding -2, -3 ... if the second is taken;
    None when a thousand are (a run directory and a sweep's are made the same way)."""
    runs_dir = Path(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now or time.time()))
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in profile_name) or "run"
    for n in range(1, 1000):
        root = runs_dir / (f"{prefix}{stamp}-{safe}" if n == 1 else f"{prefix}{stamp}-{safe}-{n}")
        try:
            root.mkdir(mode=0o700)
        except FileExistsError:
            continue
        return root
    return None


def create_run_dir(runs_dir: Path, profile_name: str, now: float | None = None) -> RunPaths:
    """Make runs/<stamp>-<profile>/ (user-only) with its subfolders."""
    root = create_stamped_dir(runs_dir, profile_name, now)
    if root is not None:
        paths = RunPaths(root)
        for sub in (paths.logs, paths.checkpoints, paths.heartbeats):
            sub.mkdir(mode=0o700, exist_ok=True)
        return paths
    raise RuntimeError(f"could not create a run directory under {runs_dir}")


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON so a reader sees the old file or the new one, never half of one: a temp file
    beside it, flushed to the disk (fsync), then renamed over it. The old file is never truncated,
    so a full disk (the write or the fsync fails) leaves it as it was, and a crash after the
    rename cannot leave an empty file behind."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def read_json(path: Path, default: Any = None) -> Any:
    """A run-directory record (run.json, exit.json, control.json, a heartbeat) as a dict, or
    `default` when it is missing or is anything but a JSON object: every file here may be junk
    or hostile (traindeck.untrusted: no symlinks followed, no FIFO waited on, bounded size and
    nesting). Callers still check the types of the values they use (training.rundir.records)."""
    data = read_json_object(path)
    return default if data is None else data


def read_run_json(paths: RunPaths) -> dict[str, Any]:
    return read_json(paths.run_json, {})


PROFILE_MAX_BYTES = 4 << 20


def read_profile_data(paths: RunPaths) -> dict[str, Any]:
    """The run's profile.toml as data ({} for junk): read like every run file (bounded, no FIFO
    waited on, no link followed); tomllib recurses on nested arrays."""
    try:
        data = read_bounded(paths.profile, PROFILE_MAX_BYTES)
        return tomllib.loads(data.decode("utf-8")) if data is not None else {}
    except (OSError, ValueError, RecursionError):
        return {}


# The supervisor's threads (its main loop, the health thread counting rewinds) merge into run.json
# one at a time, so neither read-modify-write loses the other's fields.
_RUN_JSON_LOCK = threading.Lock()


def update_run_json(paths: RunPaths, **fields: Any) -> dict[str, Any]:
    """Merge fields into run.json. Only the supervisor (or a --stop cleaning up after it) writes."""
    with _RUN_JSON_LOCK:
        data = read_run_json(paths)
        data.update(fields)
        write_json_atomic(paths.run_json, data)
    return data


def hostname() -> str:
    return socket.gethostname()


def list_run_dirs(runs_dir: Path) -> list[RunPaths]:
    """Every run directory, newest first (by name, which starts with the start time)."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    return [RunPaths(p) for p in sorted(runs_dir.iterdir(), key=lambda p: p.name, reverse=True)
            if p.is_dir() and ((p / "run.json").exists() or (p / "profile.toml").exists())]

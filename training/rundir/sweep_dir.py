"""A sweep's own directory: the grid and the list of its runs, nothing else (DESIGN.md round 3).

    runs/sweep-<YYYYmmdd-HHMMSS>-<profile>/     (0700; files 0600)
        sweep.json     id, profile, grid, base --set, parallel, points (each: its --set values,
                       the run it became, its state), runner pid + create_time, state
        base.toml      the profile every point starts from (the base --set applied)
        runner.log     the sweep runner's stdout and stderr

Each point of a sweep is an ordinary run directory beside it whose run.json carries
`"sweep": {"id": SWEEP_ID, "point": N}`: that, not sweep.json, is the truth of which runs
belong to a sweep (a run started just before a crash is found even if sweep.json missed it).
The directory holds no run.json and no profile.toml, so `list_run_dirs` never takes it for a run.

Writers: `training.console.sweeps.start_sweep` creates sweep.json (runner pid null) and records
the runner's pid; then only the runner writes it (training.console.sweep_runner) until it exits;
`--stop` writes the final state only after the runner is gone. Readers take it as untrusted
(read_json: bounded, no link followed) and type every value here (`SweepRecord.from_json`).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from traindeck.numbers import finite_number
from training.rundir.paths import (
    RunPaths,
    create_stamped_dir,
    list_run_dirs,
    read_json,
    read_run_json,
    write_json_atomic,
)

PREFIX = "sweep-"
SWEEP_JSON = "sweep.json"
BASE_TOML = "base.toml"
RUNNER_LOG = "runner.log"
POINT_STATES = ("pending", "started", "failed", "cancelled")
SWEEP_STATES = ("starting", "running", "finished", "stopped", "failed")


@dataclass(frozen=True)
class SweepPaths:
    root: Path

    @property
    def id(self) -> str:
        return self.root.name

    @property
    def sweep_json(self) -> Path:
        return self.root / SWEEP_JSON

    @property
    def base_profile(self) -> Path:
        return self.root / BASE_TOML

    @property
    def runner_log(self) -> Path:
        return self.root / RUNNER_LOG


@dataclass(frozen=True)
class SweepPoint:
    index: int
    sets: dict[str, str]  # "train.lr" -> "1e-3", as typed on the command line
    run: str | None = None  # the run id it became
    state: str = "pending"
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"sets": dict(self.sets), "run": self.run, "state": self.state, "error": self.error}


@dataclass(frozen=True)
class SweepRecord:
    id: str
    profile: str
    created: float | None
    grid: tuple[tuple[str, tuple[str, ...]], ...]
    sets: tuple[str, ...] = ()  # the base --set items
    parallel: int = 1
    points: tuple[SweepPoint, ...] = ()
    runner: dict[str, Any] = field(default_factory=lambda: {"pid": None, "create_time": None})
    host: str = ""
    state: str = "starting"
    state_t: float | None = None
    argv: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"v": 1, "id": self.id, "profile": self.profile, "created": self.created, "host": self.host,
                "argv": list(self.argv), "grid": [{"key": k, "values": list(v)} for k, v in self.grid],
                "sets": list(self.sets), "parallel": self.parallel,
                "points": [p.to_json() for p in self.points], "runner": dict(self.runner),
                "state": self.state, "state_t": self.state_t}

    @classmethod
    def from_json(cls, data: Any, sweep_id: str) -> "SweepRecord | None":
        """None when it is no sweep record at all; a wrong value is a value missing."""
        if not isinstance(data, dict) or not isinstance(data.get("points"), list):
            return None
        grid = []
        for item in data.get("grid") if isinstance(data.get("grid"), list) else []:
            if isinstance(item, dict) and isinstance(item.get("key"), str) and isinstance(item.get("values"), list):
                grid.append((item["key"], tuple(str(v) for v in item["values"] if isinstance(v, str))))
        points = []
        for i, p in enumerate(data["points"]):
            if not isinstance(p, dict):
                continue
            sets = p.get("sets") if isinstance(p.get("sets"), dict) else {}
            state = p.get("state") if p.get("state") in POINT_STATES else "pending"
            run = p.get("run") if isinstance(p.get("run"), str) and p.get("run") else None
            points.append(SweepPoint(i, {str(k): str(v) for k, v in sets.items() if isinstance(v, str)},
                                     run, state, p.get("error") if isinstance(p.get("error"), str) else ""))
        parallel = data.get("parallel")
        return cls(id=sweep_id, profile=_text(data.get("profile")), created=finite_number(data.get("created")),
                   grid=tuple(grid), sets=tuple(s for s in data.get("sets") or () if isinstance(s, str))
                   if isinstance(data.get("sets"), list) else (),
                   parallel=parallel if isinstance(parallel, int) and not isinstance(parallel, bool) and parallel > 0
                   else 1, points=tuple(points),
                   runner=data["runner"] if isinstance(data.get("runner"), dict) else {"pid": None, "create_time": None},
                   host=_text(data.get("host")),
                   state=data.get("state") if data.get("state") in SWEEP_STATES else "failed",
                   state_t=finite_number(data.get("state_t")),
                   argv=tuple(a for a in data.get("argv") or () if isinstance(a, str))
                   if isinstance(data.get("argv"), list) else ())

    def liveness_record(self) -> dict[str, Any]:
        """What training.rundir.liveness.supervisor_status reads: the runner in the supervisor's place."""
        return {"supervisor": self.runner, "created": self.created, "host": self.host}

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(k for k, _ in self.grid)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def create_sweep_dir(runs_dir: Path, profile_name: str, now: float | None = None) -> SweepPaths:
    """Make runs/sweep-<stamp>-<profile>/ (user-only), adding -2, -3 ... if the second is taken."""
    root = create_stamped_dir(runs_dir, profile_name, now, prefix=PREFIX)
    if root is not None:
        return SweepPaths(root)
    raise RuntimeError(f"could not create a sweep directory under {runs_dir}")


def write_sweep(paths: SweepPaths, record: SweepRecord) -> None:
    write_json_atomic(paths.sweep_json, record.to_json())
    try:
        os.chmod(paths.sweep_json, 0o600)
    except OSError:
        pass


def read_sweep(paths: SweepPaths) -> SweepRecord | None:
    return SweepRecord.from_json(read_json(paths.sweep_json), paths.id)


def list_sweep_dirs(runs_dir: Path) -> list[SweepPaths]:
    """Every sweep directory, newest first."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    return [SweepPaths(p) for p in sorted(runs_dir.iterdir(), key=lambda p: p.name, reverse=True)
            if p.name.startswith(PREFIX) and p.is_dir() and not p.is_symlink() and (p / SWEEP_JSON).exists()]


def sweep_of(run: dict[str, Any]) -> tuple[str, int | None] | None:
    """run.json's `sweep` entry as (sweep id, point), or None for a run of no sweep."""
    entry = run.get("sweep") if isinstance(run, dict) else None
    if not isinstance(entry, dict) or not isinstance(entry.get("id"), str) or not entry["id"]:
        return None
    point = entry.get("point")
    return entry["id"], point if isinstance(point, int) and not isinstance(point, bool) else None


def sweep_runs(runs_dir: Path, sweep_id: str) -> list[RunPaths]:
    """The runs whose run.json says they belong to `sweep_id`, in point order: only real
    directories of the sweep's own owner (in a runs directory others can write, a neighbour's run
    that names your sweep is not one of its runs: not compared, and never reached by --stop)."""
    try:
        owner = os.lstat(Path(runs_dir) / sweep_id).st_uid
    except OSError:
        return []
    found = []
    for paths in list_run_dirs(runs_dir):
        try:
            st = os.lstat(paths.root)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != owner:
            continue
        entry = sweep_of(read_run_json(paths))
        if entry is not None and entry[0] == sweep_id:
            found.append((entry[1] if entry[1] is not None else 1 << 30, paths.id, paths))
    return [p for _, _, p in sorted(found, key=lambda item: (item[0], item[1]))]

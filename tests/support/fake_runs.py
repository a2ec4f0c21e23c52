"""The one builder of run directories that look like the supervisor's, for tests and benchmarks/.

A fake run is laid out exactly as DESIGN.md's run-directory contract says (profile.toml, run.json,
events.jsonl, telemetry.jsonl, logs/, checkpoints/, heartbeats/, exit.json), so every viewer reads
it as it would read a real run. Times are parameters: nothing here reads the clock unless the caller
leaves `t`/`created` out (benchmarks, which live in the present, do).

    paths = make_run_dir(runs_dir, "20261124-183000-cpu", profile_toml=CPU_TOML, state="running",
                         supervisor=this_process(), created=T0)
    append_events(paths, [event(T0 + 1, "status", state="running"), ...])
    write_telemetry(paths, [{"t": T0 + 6, "source": "cpu", ...}])
    write_exit(paths, returncode=0, state="finished", t=T0 + 60)
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Iterable

import psutil

from training.rundir import RunPaths, hostname, write_json_atomic
from training.rundir.events_file import SCHEMA_VERSION

# A profile any fake run can carry: the tiny built-in task, `gpus` GPUs, one rank per GPU.
SYNTHETIC_PROFILE_TOML = """name = "synthetic"
description = "a synthetic run (tests and benchmarks)"

[hardware]
gpus = {gpus}

[launch]
mode = "ddp"
nproc_per_node = {nproc}

[train]
task = "tiny"
epochs = 10
log_every = 1

[telemetry]
interval_s = 1.0
"""

# Plays the supervisor of a run that is not live on this host (no process to check) or dead.
NO_SUPERVISOR: dict[str, Any] = {"pid": None, "create_time": None}


def supervisor_record(pid: int | None = None) -> dict[str, Any]:
    """run.json's `supervisor` entry for a live process (this one by default): the run counts as live
    for as long as that process does."""
    proc = psutil.Process(os.getpid() if pid is None else pid)
    return {"pid": proc.pid, "create_time": proc.create_time()}


def synthetic_profile_toml(gpus: int = 8) -> str:
    return SYNTHETIC_PROFILE_TOML.format(gpus=gpus, nproc=max(1, gpus))


def run_record(run_id: str, *, profile_name: str = "synthetic", mode: str = "ddp", world_size: int = 2,
               state: str = "running", created: float | None = None, state_t: float | None = None,
               supervisor: dict[str, Any] | None = None, host: str | None = None, **extra: Any) -> dict[str, Any]:
    """run.json's content, keys in the supervisor's order; `extra` adds or overrides keys."""
    created = time.time() if created is None else created
    data = {"id": run_id, "profile": profile_name, "mode": mode, "world_size": world_size, "argv": [],
            "host": hostname() if host is None else host, "created": created, "rehearsal": False,
            "supervisor": dict(NO_SUPERVISOR if supervisor is None else supervisor), "launcher": None,
            "processes": [], "port": None, "env": {}, "state": state,
            "state_t": created if state_t is None else state_t}
    data.update(extra)
    return data


def make_run_dir(runs_dir: Path, name: str, *, profile_toml: str | None = None,
                 supervisor_log: str | None = "synthetic run\n", **run_json: Any) -> RunPaths:
    """A run directory `runs_dir/name` with profile.toml (when given), run.json and the empty subfolders.

    Keyword arguments are `run_record`'s (profile_name, mode, world_size, state, created, supervisor,
    host, ...); any other key becomes a run.json key."""
    paths = RunPaths(Path(runs_dir) / name)
    paths.root.mkdir(parents=True, exist_ok=True, mode=0o700)
    for sub in (paths.logs, paths.checkpoints, paths.heartbeats):
        sub.mkdir(exist_ok=True, mode=0o700)
    if profile_toml is not None:
        paths.profile.write_text(profile_toml, encoding="utf-8")
    write_json_atomic(paths.run_json, run_record(paths.id, **run_json))
    if supervisor_log is not None:
        paths.supervisor_log.write_text(supervisor_log, encoding="utf-8")
    return paths


def event(t: float, kind: str, **fields: Any) -> dict[str, Any]:
    """One events.jsonl record (schema v1) at time `t`."""
    return {"v": SCHEMA_VERSION, "t": round(t, 3), "kind": kind, **fields}


def encode_line(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":")) + "\n"


def append_events(paths: RunPaths, events: Iterable[dict[str, Any]]) -> None:
    with open(paths.events, "a", encoding="utf-8") as f:
        f.write("".join(encode_line(e) for e in events))


def write_telemetry(paths: RunPaths, samples: Iterable[dict[str, Any]], tail: str = "") -> None:
    """telemetry.jsonl from `samples`; `tail` is appended raw (a half-written last line, say)."""
    with open(paths.telemetry, "a", encoding="utf-8") as f:
        f.write("".join(encode_line(s) for s in samples) + tail)


def write_exit(paths: RunPaths, returncode: int = 0, state: str = "finished", t: float | None = None,
               **fields: Any) -> None:
    data = {"returncode": returncode, "state": state, "failed_rank": None, "error": [], "hint": None,
            "message": state, "t": time.time() if t is None else t, "seconds": 1.0}
    data.update(fields)
    write_json_atomic(paths.exit_json, data)


def write_metric_lines(path: Path, n: int, start_step: int = 1, t0: float | None = None,
                       chunk: int = 50_000) -> None:
    """n train metric events, fast (a string template, not json.dumps per line): long runs for benchmarks."""
    t0 = time.time() - n * 0.01 if t0 is None else t0
    with open(path, "ab") as f:
        for lo in range(0, n, chunk):
            lines = []
            for i in range(lo, min(n, lo + chunk)):
                s = start_step + i
                lines.append(
                    f'{{"v":1,"t":{t0 + i * 0.01:.3f},"kind":"metric","step":{s},"epoch":{1 + s // 10000},'
                    f'"split":"train","values":{{"loss":{2.0 / (1.0 + s * 1e-4):.6f},'
                    f'"loss/aux":{0.5 / (1.0 + s * 1e-4):.6f},"lr":0.001,"samples_per_s":5000.0}}}}\n')
            f.write("".join(lines).encode())


TWO_HOSTS_PROFILE = '[train]\ntask = "tiny"\n[launch]\nmode = "ddp"\nhosts = ["gpu-a", "gpu-b"]\n'


def two_node_head(tmp_path: Path, node_exit: dict[str, Any]):
    """The head of a `[launch] hosts = ["gpu-a", "gpu-b"]` run as its supervisor (not started) sees
    it, gpu-b's exit.json (`node_exit`) in the head's copy of that node; returns (paths, supervisor)."""
    from training.profile import parse_profile
    from training.supervise.node_ssh import remote_nodes
    from training.supervise.run_supervisor import Supervisor

    paths = RunPaths(tmp_path / "runs" / "20261124-183000-cpu")
    paths.root.mkdir(parents=True)
    sup = Supervisor(paths)
    sup.nodes.profile = parse_profile(TWO_HOSTS_PROFILE)
    sup.nodes.remote = remote_nodes(sup.nodes.profile, paths.id, paths.root.parent)
    paths.node("gpu-b").root.mkdir(parents=True)
    write_json_atomic(paths.node("gpu-b").exit_json, node_exit)
    return paths, sup

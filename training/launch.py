"""Profile -> the exact command that starts a run's workers: argv, environment, working directory.

    ddp, built-in:   python -m torch.distributed.run --nnodes 1 --nproc-per-node 2
                         --rdzv-backend c10d --rdzv-endpoint 127.0.0.1:PORT --rdzv-id RUN_ID
                         --max-restarts 0 --monitor-interval 0.5 --log-dir RUN_DIR/logs/torchrun
                         --redirects 3 [--node-rank N: static rendezvous only] -m training.worker RUN_DIR
    ddp, custom:     python -m torch.distributed.run ... SCRIPT ARGS...   (or ... -m MODULE ARGS...)
    dp / single:     python -m training.worker RUN_DIR   |   python SCRIPT ARGS...   |   python -m MODULE ARGS...

The launch is always an argv list handed to exec, never a shell string, so a profile value
such as `train.args = ["; rm -rf ~"]` reaches the script as one literal argument.

Per-rank logs: torchrun writes RUN_DIR/logs/torchrun/<rdzv_id>_<random>/attempt_K/<local_rank>/
{stdout,stderr}.log (its own messages go to logs/launcher.log); a direct launch writes
stdout+stderr to logs/rank-0.log. `training.runs.rank_logs` maps both layouts to ranks.
"""

from __future__ import annotations

import math
import os
import shlex
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from training.errors import TraindeckError
from training.profile import Profile
from training.rundir import RUN_DIR_ENV, RunPaths

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TORCHRUN_LOG_SUBDIR = "torchrun"
LAUNCHER_LOG = "launcher.log"
# torchrun polls its workers this often; explicit because older torch defaulted to 5 s, which
# would delay noticing a dead rank far beyond what the console promises.
MONITOR_INTERVAL_S = 0.5


@dataclass(frozen=True)
class LaunchSpec:
    """What the supervisor executes. `env` holds only what traindeck sets (recorded in run.json);
    `environ()` lays it over the inherited environment."""

    argv: tuple[str, ...]
    env: Mapping[str, str]
    cwd: Path
    uses_torchrun: bool
    # Processes this node starts (torchrun's nproc_per_node, else 1).
    local_procs: int
    port: int | None = None
    # Direct launches: the file that receives the worker's stdout+stderr.
    stdout_log: Path | None = None
    # torchrun launches: the --log-dir, and the file that receives torchrun's own output.
    torchrun_log_dir: Path | None = None
    launcher_log: Path | None = None
    rank_offset: int = 0
    notes: tuple[str, ...] = field(default=())

    def environ(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ if base is None else base)
        env.update(self.env)
        return env


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the kernel picks it; torchrun binds it moments later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def parse_endpoint(endpoint: str) -> tuple[str, int | None]:
    host, sep, port = endpoint.rpartition(":")
    if not sep:
        return endpoint, None
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        raise TraindeckError(f"launch.rdzv_endpoint '{endpoint}' must be HOST:PORT, e.g. 10.0.0.1:29500.") from None


def _root_of(paths_or_placeholder: RunPaths | Path | str) -> Path:
    if isinstance(paths_or_placeholder, RunPaths):
        return paths_or_placeholder.root
    return Path(paths_or_placeholder)


def _program(profile: Profile, run_dir: str) -> list[str]:
    """What each worker process runs, after the interpreter (or after torchrun's options)."""
    t = profile.train
    if t.script:
        return [t.script, *map(str, t.args)]
    if t.module:
        return ["-m", t.module, *map(str, t.args)]
    return ["-m", "training.worker", run_dir]


def _env(profile: Profile, run_dir: str, local_procs: int, base: Mapping[str, str]) -> dict[str, str]:
    env: dict[str, str] = {k: str(v) for k, v in profile.launch.env.items()}
    if "OMP_NUM_THREADS" not in env and "OMP_NUM_THREADS" not in base:
        # Without this every rank starts one OpenMP thread per core and they thrash each other.
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // max(1, local_procs)))
    env[RUN_DIR_ENV] = run_dir
    env["PYTHONUNBUFFERED"] = "1"
    # The project root first, so `-m training.worker` and a user's `from training import report` import.
    inherited = [p for p in env.get("PYTHONPATH", base.get("PYTHONPATH", "")).split(os.pathsep)
                 if p and p != str(PROJECT_ROOT)]
    env["PYTHONPATH"] = os.pathsep.join([str(PROJECT_ROOT), *inherited])
    if profile.launch.mode == "ddp":
        # torchrun's grace between SIGTERM and SIGKILL when it stops its workers (env, not the
        # --shutdown-timeout flag, which older torchrun versions reject).
        env.setdefault("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", str(max(1, math.ceil(profile.launch.stop_grace_s))))
    return env


def build_launch(profile: Profile, paths_or_placeholder: RunPaths | Path | str, port: int | None = None,
                 python: str | None = None, base_env: Mapping[str, str] | None = None) -> LaunchSpec:
    """The launch for this profile. `port` is the rendezvous port of a single-node ddp run
    (pick it with free_port()); multi-node runs and profiles with an rdzv_endpoint use theirs."""
    root = _root_of(paths_or_placeholder)
    run_dir = str(root)
    logs = root / "logs"
    python = python or sys.executable
    base = os.environ if base_env is None else base_env
    launch = profile.launch
    program = _program(profile, run_dir)
    if launch.mode != "ddp":
        env = _env(profile, run_dir, 1, base)
        notes = ()
        if launch.mode == "dp":
            notes = ("dp runs one process; nn.DataParallel spreads each batch over the visible GPUs",)
        return LaunchSpec(argv=(python, *program), env=env, cwd=PROJECT_ROOT, uses_torchrun=False,
                          local_procs=1, stdout_log=logs / "rank-0.log", notes=notes)

    nproc = launch.nproc_per_node
    if launch.rdzv_endpoint:
        endpoint = launch.rdzv_endpoint
        host, endpoint_port = parse_endpoint(endpoint)
        port = endpoint_port if endpoint_port is not None else port
    else:
        if launch.nnodes > 1:
            raise TraindeckError("multi-node runs need launch.rdzv_endpoint = \"HOST:PORT\" of node 0.")
        if port is None:
            port = free_port()
        endpoint = f"127.0.0.1:{port}"
    rdzv_id = launch.rdzv_id or root.name
    torchrun_logs = logs / TORCHRUN_LOG_SUBDIR
    argv = [
        python, "-m", "torch.distributed.run",
        "--nnodes", str(launch.nnodes),
        "--nproc-per-node", str(nproc),
        "--rdzv-backend", launch.rdzv_backend,
        "--rdzv-endpoint", endpoint,
        "--rdzv-id", rdzv_id,
        "--max-restarts", str(launch.max_restarts),
        "--monitor-interval", str(MONITOR_INTERVAL_S),
        "--log-dir", str(torchrun_logs),
        "--redirects", "3",
    ]
    if launch.rdzv_backend == "static":
        # Only static rendezvous reads it (c10d assigns node ranks itself and warns if it is given).
        argv += ["--node-rank", str(launch.node_rank)]
    argv += program
    return LaunchSpec(argv=tuple(argv), env=_env(profile, run_dir, nproc, base), cwd=PROJECT_ROOT,
                      uses_torchrun=True, local_procs=nproc, port=port, torchrun_log_dir=torchrun_logs,
                      launcher_log=logs / LAUNCHER_LOG, rank_offset=launch.node_rank * nproc)


def format_command(spec: LaunchSpec, with_env: bool = True) -> str:
    """One line a user can paste into a shell to do the same by hand ("would run: ...")."""
    parts = []
    if with_env:
        parts += [f"{k}={shlex.quote(v)}" for k, v in sorted(spec.env.items())]
    parts += [shlex.quote(a) for a in spec.argv]
    line = " ".join(parts)
    if spec.stdout_log is not None:
        line += f" >{shlex.quote(str(spec.stdout_log))} 2>&1"
    return f"(cd {shlex.quote(str(spec.cwd))} && {line})"

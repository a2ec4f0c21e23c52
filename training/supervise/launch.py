"""Profile -> the exact command that starts a run's workers: argv, environment, working directory.

    ddp, built-in:   python -m torch.distributed.run --nnodes 1 --nproc-per-node 2
                         --rdzv-backend static --rdzv-endpoint 127.0.0.1:PORT --rdzv-id RUN_ID
                         --max-restarts 0 --monitor-interval 0.5 --log-dir RUN_DIR/logs/torchrun
                         --redirects 3 --node-rank 0 -m training.worker RUN_DIR
    ddp, custom:     python -m torch.distributed.run ... SCRIPT ARGS...   (or ... -m MODULE ARGS...)
    ddp on MIG:      ... -m traindeck.rank_device SCRIPT ARGS... for a custom program, which execs it
                     unchanged once the rank's CUDA_VISIBLE_DEVICES names its own MIG instance
                     (training.supervise.mig; the built-in worker does the same itself)
    dp / single:     python -m training.worker RUN_DIR   |   python SCRIPT ARGS...   |   python -m MODULE ARGS...

The rendezvous is torchrun's `static` one wherever traindeck knows every node's rank: one node,
and the nodes of a `[launch] hosts` run (the head is node 0, the i-th host node i). torchrun's
TCPStore takes connections from anyone who can reach its port (every local user, whatever address
it is told), and the dynamic c10d rendezvous keeps its state there as a pickle that every agent
unpickles: whoever can write the key runs code as the run's user. The static one exchanges no
pickled state, and TORCH_ELASTIC_WORKER_IDENTICAL=1 skips its rank exchange through the store (all
workers of a traindeck run have one role). Nodes started by hand (nnodes > 1, no hosts) keep c10d
unless the profile says `rdzv_backend = "static"` with each node's node_rank: `--check` says what
that exposes (`dynamic_rendezvous_warning`).

The launch is always an argv list handed to exec, never a shell string, so a profile value
such as `train.args = ["; rm -rf ~"]` reaches the script as one literal argument. `{run_dir}`,
`{checkpoints}` and `{run_id}` in args and `[launch] env` are filled in here (training.placeholders).

Where it runs, and what it imports, is what the user would get by hand:

    custom script / module:  cwd = [train] cwd, else the directory run.py was started from (the
                             supervisor passes run.json's "cwd", so --resume keeps it);
                             sys.path as `python SCRIPT` (the script's directory first) or
                             `python -m MODULE` (the cwd first) give it; PYTHONPATH gets only
                             RUN_DIR/pythonpath, which holds nothing but the `traindeck` package
                             (`from traindeck import report`), so the user's own packages, even
                             one named `training` or `tui`, are never shadowed by traindeck's.
    built-in worker:         cwd = traindeck's root, so `-m training.worker` puts traindeck's root
                             first on sys.path: a `training` package wherever the user stands can
                             never replace traindeck's (the supervisor starts the same way).

Per-rank logs: torchrun writes RUN_DIR/logs/torchrun/<rdzv_id>_<random>/attempt_K/<local_rank>/
{stdout,stderr}.log (its own messages go to logs/launcher.log); a direct launch writes
stdout+stderr to logs/rank-0.log. `training.rundir.logs.rank_logs` maps both layouts to ranks.
"""

from __future__ import annotations

import hashlib
import math
import os
import shlex
import shutil
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import traindeck
from training import PROJECT_ROOT, placeholders
from training.cpus import usable_cpus
from training.errors import TraindeckError
from training.monitor.metric_presets import preset_env
from training.profile import Profile
from training.rundir import RUN_DIR_ENV, RunPaths
from training.supervise import mig

# The package a custom script may import (`from traindeck import report`), and the folder of the
# run directory that exposes it, alone, on the script's PYTHONPATH.
TRAINDECK_PACKAGE = Path(traindeck.__file__).resolve().parent
IMPORT_DIR = "pythonpath"
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
    # torchrun's --rdzv-id (None for a direct launch).
    rdzv_id: str | None = None
    notes: tuple[str, ...] = field(default=())
    # Custom launches: the folder on PYTHONPATH that must hold the traindeck package before exec
    # (expose_traindeck makes it).
    import_dir: Path | None = None

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


def shared_rdzv_id(profile: Profile, endpoint: str) -> str:
    """The rendezvous id of a multi-node run whose profile names none: derived from what every node
    of the run shares (the profile's name, the endpoint, nnodes, nproc_per_node), so the same
    command started by hand on each node, at whatever second, joins one rendezvous. A node's run
    id (its start time) cannot serve: nodes started a second apart would each wait for the others
    under their own id. Reusing the id for the next run is harmless: the rendezvous state lives in
    the store of the host node's torchrun and ends with it; two different jobs on one endpoint
    differ in name or size, so they do not mix."""
    shared = f"{profile.name}|{endpoint}|{profile.launch.nnodes}|{profile.launch.nproc_per_node}"
    return "traindeck-" + hashlib.sha256(shared.encode()).hexdigest()[:12]


def rdzv_backend_of(launch) -> str:
    """The torchrun rendezvous backend a launch uses: the profile's, where it names one; for "auto"
    static whenever traindeck knows every node's rank (one node, or `[launch] hosts`), c10d for
    nodes started by hand, which find their ranks at the rendezvous."""
    if launch.rdzv_backend != "auto":
        return launch.rdzv_backend
    # (The other nodes of a hosts run get rdzv_backend = "static" and their rank from the head:
    # nodes.node_profile.)
    return "c10d" if launch.nnodes > 1 and not launch.hosts else "static"


def dynamic_rendezvous_warning(launch) -> str:
    """What a dynamic (c10d) rendezvous exposes on this box, said plainly; "" for static."""
    if launch.mode != "ddp" or rdzv_backend_of(launch) == "static":
        return ""
    return (f"torchrun's {rdzv_backend_of(launch)} rendezvous keeps its state in a TCP store without "
            f"authentication, as a pickle every node's torchrun loads: anyone who can connect to "
            f"{launch.rdzv_endpoint or 'its port'} (every user of these boxes, and any host that reaches them) "
            f"can run code as you. Put the nodes on a private network or firewall the port to the nodes' "
            f"addresses, or start the nodes from one head with [launch] hosts (static rendezvous), or set "
            f"rdzv_backend = \"static\" and each node's launch.node_rank.")


def _root_of(paths_or_placeholder: RunPaths | Path | str) -> Path:
    if isinstance(paths_or_placeholder, RunPaths):
        return paths_or_placeholder.root
    return Path(paths_or_placeholder)


def placeholder_values(root: Path) -> dict[str, str]:
    """What {run_dir}, {checkpoints} and {run_id} become for the run in `root`."""
    return {"run_dir": str(root), "checkpoints": str(root / "checkpoints"), "run_id": root.name}


def _program(profile: Profile, root: Path) -> list[str]:
    """What each worker process runs, after the interpreter (or after torchrun's options)."""
    t = profile.train
    values = placeholder_values(root)
    args = [placeholders.fill(str(a), values) for a in t.args]
    if t.script:
        return [t.script, *args]
    if t.module:
        return ["-m", t.module, *args]
    return ["-m", "training.worker", str(root)]


def gpu_visibility_env(profile: Profile, base: Mapping[str, str], selected: str | None = None) -> dict[str, str]:
    """What traindeck adds to a launch's environment about GPUs; the user's own setting (the
    profile's launch.env or the inherited environment) always wins, so nothing here overrides it.

    CUDA_DEVICE_ORDER=PCI_BUS_ID: CUDA's default order is "fastest first", NVML's (the panels',
    nvidia-smi's) is PCI bus order; on a box with mixed GPUs "cuda:0" would be another card than
    "GPU 0". CUDA_VISIBLE_DEVICES="": `hardware.gpus = 0` means no GPU at all, for every process.
    `selected`: the GPUs the supervisor took on a shared box (training.supervise.gpu_select), "1,3".
    """
    user = {**base, **{k: str(v) for k, v in profile.launch.env.items()}}
    env: dict[str, str] = {}
    if "CUDA_DEVICE_ORDER" not in user:
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    if profile.hardware.gpus == 0 and "CUDA_VISIBLE_DEVICES" not in user:
        env["CUDA_VISIBLE_DEVICES"] = ""
    elif selected is not None and "CUDA_VISIBLE_DEVICES" not in user:
        env["CUDA_VISIBLE_DEVICES"] = selected
    return env


def _env(profile: Profile, root: Path, local_procs: int, base: Mapping[str, str],
         cuda_visible: str | None = None) -> dict[str, str]:
    run_dir = str(root)
    values = placeholder_values(root)
    env: dict[str, str] = {k: placeholders.fill(str(v), values) for k, v in profile.launch.env.items()}
    if "OMP_NUM_THREADS" not in env and "OMP_NUM_THREADS" not in base:
        # Without this every rank starts one OpenMP thread per core and they thrash each other;
        # the cores are the ones this container or affinity mask may use, not the host's.
        env["OMP_NUM_THREADS"] = str(max(1, usable_cpus() // max(1, local_procs)))
    env.update(gpu_visibility_env(profile, base, cuda_visible))
    env[RUN_DIR_ENV] = run_dir
    env["PYTHONUNBUFFERED"] = "1"
    if profile.is_custom:
        # What the `[metrics]` presets' frameworks need to print their progress live into a file
        # (metric_presets.PRESET_ENV); a value the user set wins.
        for name, value in preset_env(profile.metrics).items():
            if name not in env and name not in base:
                env[name] = value
    # The user's own PYTHONPATH stays; traindeck's root (the supervisor inherits it) does not reach
    # a custom script: there it would shadow the script's own `training` or `tui` package.
    inherited = [p for p in env.get("PYTHONPATH", base.get("PYTHONPATH", "")).split(os.pathsep)
                 if p and p != str(PROJECT_ROOT)]
    first = root / IMPORT_DIR if profile.is_custom else PROJECT_ROOT
    env["PYTHONPATH"] = os.pathsep.join([str(first), *inherited])
    if profile.launch.mode == "ddp":
        # torchrun's grace between SIGTERM and SIGKILL when it stops its workers (env, not the
        # --shutdown-timeout flag, which older torchrun versions reject).
        env.setdefault("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", str(max(1, math.ceil(profile.launch.stop_grace_s))))
    return env


def _run_cuda_visible(env: Mapping[str, str], base: Mapping[str, str]) -> str | None:
    """The CUDA_VISIBLE_DEVICES the launched processes get: the launch's own, else the inherited one."""
    return env.get("CUDA_VISIBLE_DEVICES", base.get("CUDA_VISIBLE_DEVICES"))


def run_cwd(profile: Profile, cwd: str | os.PathLike | None = None) -> Path:
    """Where the run's processes start: for a custom script the recorded `cwd` (a resume), else
    `[train] cwd`, else where traindeck was started; for a built-in task traindeck's root."""
    if not profile.is_custom:
        return PROJECT_ROOT
    return Path(cwd or profile.train.cwd or os.getcwd())


def build_launch(profile: Profile, paths_or_placeholder: RunPaths | Path | str, port: int | None = None,
                 python: str | None = None, base_env: Mapping[str, str] | None = None,
                 cwd: str | os.PathLike | None = None, cuda_visible: str | None = None) -> LaunchSpec:
    """The launch for this profile. `port` is the rendezvous port of a single-node ddp run
    (pick it with free_port()); multi-node runs and profiles with an rdzv_endpoint use theirs.
    `cwd` is run.json's for a run that has one (see run_cwd). `cuda_visible`: the GPUs the
    supervisor took (a CUDA_VISIBLE_DEVICES the user set still wins)."""
    root = _root_of(paths_or_placeholder)
    logs = root / "logs"
    python = python or sys.executable
    base = os.environ if base_env is None else base_env
    launch = profile.launch
    program = _program(profile, root)
    workdir = run_cwd(profile, cwd)
    import_dir = root / IMPORT_DIR if profile.is_custom else None
    if launch.mode != "ddp":
        env = _env(profile, root, 1, base, cuda_visible)
        problem = mig.dp_over_mig_problem(launch.mode, profile.hardware.gpus, _run_cuda_visible(env, base))
        if problem:
            raise TraindeckError(problem)
        notes = ()
        if launch.mode == "dp":
            notes = ("dp runs one process; nn.DataParallel spreads each batch over hardware.gpus of the "
                     "visible GPUs",)
        return LaunchSpec(argv=(python, *program), env=env, cwd=workdir, uses_torchrun=False,
                          local_procs=1, stdout_log=logs / "rank-0.log", notes=notes, import_dir=import_dir)

    nproc = launch.nproc_per_node
    if launch.rdzv_endpoint:
        endpoint = launch.rdzv_endpoint
        host, endpoint_port = parse_endpoint(endpoint)
        port = endpoint_port if endpoint_port is not None else port
    elif launch.hosts and launch.nnodes > 1:
        # The head (the first host) hosts the rendezvous, on a port free there (the supervisor
        # picks it; every other node is told this endpoint).
        if port is None:
            port = free_port()
        endpoint = f"{launch.hosts[0].rpartition('@')[2]}:{port}"
    else:
        if launch.nnodes > 1:
            raise TraindeckError("multi-node runs need launch.rdzv_endpoint = \"HOST:PORT\" of node 0.")
        if port is None:
            port = free_port()
        endpoint = f"127.0.0.1:{port}"
    if launch.rdzv_id:
        rdzv_id = launch.rdzv_id
    elif launch.hosts:
        rdzv_id = root.name  # the head's run id; the other nodes get it as their rdzv_id
    elif launch.nnodes > 1:
        rdzv_id = shared_rdzv_id(profile, endpoint)
    else:
        rdzv_id = root.name
    torchrun_logs = logs / TORCHRUN_LOG_SUBDIR
    backend = rdzv_backend_of(launch)
    argv = [
        python, "-m", "torch.distributed.run",
        "--nnodes", str(launch.nnodes),
        "--nproc-per-node", str(nproc),
        "--rdzv-backend", backend,
        "--rdzv-endpoint", endpoint,
        "--rdzv-id", rdzv_id,
        "--max-restarts", str(launch.max_restarts),
        "--monitor-interval", str(MONITOR_INTERVAL_S),
        "--log-dir", str(torchrun_logs),
        "--redirects", "3",
    ]
    env = _env(profile, root, nproc, base, cuda_visible)
    notes: tuple[str, ...] = ()
    run_devices = _run_cuda_visible(env, base)
    rank_devices = mig.rank_devices(launch.mode, run_devices)
    if rank_devices is not None:
        # On MIG instances each rank needs a CUDA_VISIBLE_DEVICES of its own (training.supervise.mig).
        env[mig.RANK_DEVICES_ENV] = rank_devices
        if profile.is_custom:
            program = ["-m", mig.RANK_DEVICE_MODULE, *program]
        notes = tuple(n for n in (mig.shared_instances_note(nproc, run_devices),) if n)
    if backend == "static":
        # Only static rendezvous reads it (c10d assigns node ranks itself and warns if it is given).
        argv += ["--node-rank", str(launch.node_rank)]
        # Every worker has one role: ranks follow from node_rank, with nothing read from the store.
        if "TORCH_ELASTIC_WORKER_IDENTICAL" not in base:
            env.setdefault("TORCH_ELASTIC_WORKER_IDENTICAL", "1")
    argv += program
    return LaunchSpec(argv=tuple(argv), env=env, cwd=workdir,
                      uses_torchrun=True, local_procs=nproc, port=port, torchrun_log_dir=torchrun_logs,
                      launcher_log=logs / LAUNCHER_LOG, rank_offset=launch.node_rank * nproc, rdzv_id=rdzv_id,
                      notes=notes, import_dir=import_dir)


def expose_traindeck(spec: LaunchSpec) -> None:
    """Put the traindeck package, and nothing else, into the launch's import folder: a symlink,
    or a copy where the filesystem has none. Idempotent (a resume finds it there already)."""
    if spec.import_dir is None:
        return
    link = spec.import_dir / TRAINDECK_PACKAGE.name
    spec.import_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if link.is_symlink():
        if link.resolve() == TRAINDECK_PACKAGE:
            return
        link.unlink()  # a run resumed from another checkout of traindeck
    elif link.is_dir():
        shutil.rmtree(link)  # a copy: refresh it, traindeck may have changed since
    try:
        link.symlink_to(TRAINDECK_PACKAGE, target_is_directory=True)
    except OSError:
        shutil.copytree(TRAINDECK_PACKAGE, link, ignore=shutil.ignore_patterns("__pycache__"))


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

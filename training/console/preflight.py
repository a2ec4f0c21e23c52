"""Preflight: will this profile run on this box? (`run.py --check`, the picker, `--list`)

Checks what costs money to find out later: GPUs wanted vs found (count and model), NCCL for
DDP on GPUs, free disk for checkpoints, a free rendezvous port, cores for CPU ranks, and
prints the exact command that would run.
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from traindeck import units
from training.console.check_table import MIN_FREE_DISK_GIB, Check, closing_hint  # noqa: F401 - Check: its home for callers
from training.profile import Profile, ProfileError, list_profile_names, load_profile
from training.supervise.visibility import (  # noqa: F401
    VisibleGpus,
    cuda_visible_devices,
    gpu_backend,
    run_gpus,
    visible_gpus,
)


@dataclass
class PreflightReport:
    profile: Profile
    checks: list[Check] = field(default_factory=list)
    command: str = ""
    # "torch 2.13.0, CUDA 12.8, NCCL 2.26.2": printed by `run.py --check` (format()), not in `lines`
    # (the picker's pane), which must not change with the installed torch.
    versions: str = ""
    runs_dir: Path = Path("runs")
    # `[launch] hosts`: what the head would run on every other node (`run.py --check` only).
    node_commands: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def lines(self) -> list[str]:
        p = self.profile
        out = [f"profile {p.name}: {p.description}" if p.description else f"profile {p.name}",
               f"  mode {p.launch.mode}, world size {p.world_size}, "
               f"{'task ' + p.train.task if p.train.task else 'script ' + (p.train.script or p.train.module)}"]
        out += [f"[{c.mark}] {c.name}: {c.detail}" for c in self.checks]
        if self.command:
            out.append(f"would run: {self.command}")
        out += self.node_commands
        failed = [c for c in self.checks if not c.ok]
        if failed:
            # The fix fits the failure (training.console.check_table: the table starts use too).
            out.append(f"preflight FAILED ({', '.join(c.name for c in failed)}); nothing was started. "
                       + closing_hint(p, failed, self.runs_dir))
        else:
            out.append("preflight passed")
        return out

    def format(self) -> str:
        lines = self.lines
        if self.versions:
            lines.insert(2, f"       {self.versions}")
        return "\n".join(lines)


def gpu_check(profile: Profile, backend=None, environ: Mapping[str, str] | None = None) -> Check:
    """GPUs wanted by the profile vs GPUs the run will see (NVML, under CUDA_VISIBLE_DEVICES and MIG)."""
    backend = gpu_backend(backend)
    wanted, model = profile.hardware.gpus, profile.hardware.gpu_model
    visible = run_gpus(profile, backend, environ)
    found = visible.count
    names = sorted({d.name for d in visible.devices} | ({"MIG instance"} if visible.mig_instances else set()))
    found_text = f"{found} found" + (f" ({', '.join(names)})" if names else "")
    cvd = cuda_visible_devices(profile, environ)
    if cvd is not None and wanted:
        found_text += f" under CUDA_VISIBLE_DEVICES={cvd!r} ({backend.device_count()} on the box)"
    if visible.notes:
        found_text += "; " + "; ".join(visible.notes)
    if not backend.available and backend.error:
        found_text += f" - {backend.error}"
    if wanted == 0:
        # The run sees none of them (CUDA_VISIBLE_DEVICES=""); say what the box has.
        box = backend.devices() if backend.available else []
        box_names = sorted({d.name for d in box})
        box_text = f"{len(box)} found" + (f" ({', '.join(box_names)})" if box_names else "")
        if not backend.available and backend.error:
            box_text += f" - {backend.error}"
        return Check("gpus", True, f"none wanted; {box_text}")
    want_text = f"{wanted} wanted" + (f" ({model})" if model else "")
    if found < wanted:
        return Check("gpus", False, f"{want_text}, {found_text}")
    from training.supervise.mig import dp_over_mig_problem, one_gpu_instances_warning

    if problem := dp_over_mig_problem(profile.launch.mode, wanted, cvd):
        return Check("gpus", False, f"{want_text}, {found_text}: {problem}")
    if warning := one_gpu_instances_warning(profile.launch.mode, profile.launch.backend, cvd,
                                            backend.devices() if backend.available else [], profile.launch.env):
        return Check("gpus", True, f"{want_text}, {found_text}: {warning}", warning=True)
    if model and not any(model.lower() in n.lower() for n in names):
        return Check("gpus", True, f"{want_text}, {found_text}: a different model; batch sizes and AMP "
                     f"settings may need changing", warning=True)
    return Check("gpus", True, f"{want_text}, {found_text}")


def hardware_match(profile: Profile, backend=None) -> str:
    """Short mark for lists: 'any', 'ok 8/8 B200', 'NO 8/0' ..."""
    backend = gpu_backend(backend)
    wanted = profile.hardware.gpus
    if wanted == 0:
        return "any"
    found = run_gpus(profile, backend).count
    check = gpu_check(profile, backend)
    model = f" {profile.hardware.gpu_model}" if profile.hardware.gpu_model else ""
    if not check.ok:
        return f"NO {found}/{wanted}{model}"
    return f"{'~' if check.warning else 'ok'} {found}/{wanted}{model}"


def _nccl_check(profile: Profile) -> Check | None:
    if profile.launch.mode != "ddp" or profile.hardware.gpus == 0 or profile.launch.backend == "gloo":
        return None
    import torch
    import torch.distributed as dist

    cuda = torch.cuda.is_available()
    nccl = dist.is_available() and dist.is_nccl_available()
    if cuda and nccl:
        return Check("nccl", True, f"available (torch {torch.__version__}, CUDA {torch.version.cuda})")
    why = "this torch build has no CUDA" if torch.version.cuda is None else "CUDA is not usable here"
    return Check("nccl", False, f"not available: {why} (torch {torch.__version__}). DDP on GPUs needs the "
                 f"CUDA build of torch; see the README's GPU install.")


def amp_check(profile: Profile, visible: VisibleGpus) -> Check | None:
    """bf16 on a GPU below compute capability 8.0 (Turing, Volta) is emulated or fails: refuse it."""
    if profile.train.amp != "bf16" or profile.hardware.gpus == 0 or not visible.devices:
        return None
    from training.engine.amp import bf16_fix

    for d in visible.devices:
        fix = bf16_fix(d.compute_capability, f"GPU {d.index} ({d.name})")
        if fix:
            return Check("amp", False, fix)
    caps = sorted({d.compute_capability for d in visible.devices if d.compute_capability})
    return Check("amp", True, "bf16 on compute capability " + ", ".join(f"{a}.{b}" for a, b in caps)
                 if caps else "bf16 (compute capability not reported)")


def torch_check(profile: Profile, gpus_on_box: int) -> Check:
    """The torch, CUDA and NCCL versions this box runs; a CPU build of torch where NVML sees GPUs
    that a GPU profile wants fails with the fix."""
    import torch

    cuda = torch.version.cuda
    nccl = None
    if cuda is not None:
        try:
            version = torch.cuda.nccl.version()
            nccl = ".".join(map(str, version)) if isinstance(version, tuple) else str(version)
        except Exception:
            nccl = None
    detail = (f"torch {torch.__version__}, CUDA {cuda or 'none (a CPU build)'}, "
              f"NCCL {nccl or 'none'}")
    if cuda is None and gpus_on_box and profile.hardware.gpus:
        return Check("torch", False, detail + f"; NVML sees {gpus_on_box} GPU(s) but this torch cannot use them: "
                     + CUDA_INSTALL_HINT)
    return Check("torch", True, detail)


def cuda_check(profile: Profile, visible: VisibleGpus, backend) -> Check | None:
    """A CUDA build of torch that cannot use the GPUs NVML sees (a driver older than the wheel, no
    GPUs given to the container, fewer than the profile wants): the run would train on the CPU.
    None where there is nothing to judge (no GPU wanted or seen; a CPU build: torch_check says so)."""
    import torch

    from training.engine.cuda_fit import cuda_problem

    if profile.hardware.gpus == 0 or visible.count == 0 or torch.version.cuda is None:
        return None
    available = torch.cuda.is_available()
    count = torch.cuda.device_count() if available else 0
    if visible.mig_instances or "CUDA_VISIBLE_DEVICES" in profile.launch.env:
        # torch counts what this process sees, not what the run's own CUDA_VISIBLE_DEVICES names.
        count = max(count, visible.count) if available else 0
    problem = cuda_problem(wanted=profile.hardware.gpus, nvml_gpus=visible.count, torch_version=torch.__version__,
                           torch_cuda=torch.version.cuda, available=available, torch_count=count,
                           driver_cuda=backend.cuda_driver_version(), driver=backend.driver_version())
    if problem:
        return Check("cuda", False, problem)
    return Check("cuda", True, f"torch sees {count} CUDA device(s)")


def arch_check(profile: Profile, visible: VisibleGpus) -> Check | None:
    """Has this torch kernels for the GPUs' architecture (torch.cuda.get_arch_list() against NVML's
    compute capability)? A wheel older than the GPU fails at its first kernel otherwise."""
    import torch

    from training.engine.cuda_fit import arch_problem

    if profile.hardware.gpus == 0 or not visible.devices or torch.version.cuda is None:
        return None
    try:
        arch_list = list(torch.cuda.get_arch_list())
    except Exception:
        arch_list = []
    if not arch_list:
        return None
    gpus = [(f"GPU {d.index} ({d.name})", d.compute_capability) for d in visible.devices]
    problem = arch_problem(arch_list, gpus, torch.__version__)
    if problem:
        return Check("arch", False, problem)
    return Check("arch", True, "kernels for " + ", ".join(sorted({f"sm_{a}{b}" for _, (a, b) in
                                                                 ((n, c) for n, c in gpus if c)})) or "the GPUs")


# DataLoader's default prefetch_factor: each worker holds this many batches in /dev/shm.
PREFETCH_FACTOR = 2
# NCCL's shared-memory transport (GPUs without P2P, e.g. 2080 Tis): a segment per pair of local ranks,
# two 4 MiB buffers each way (NCCL_BUFFSIZE) over a few channels. An estimate, not NCCL's formula.
NCCL_SHM_PER_PAIR = 32 << 20
SHM_FIX = ("give the container a bigger /dev/shm: `docker run --ipc=host` or `--shm-size=16g`; on Kubernetes "
           "mount an emptyDir with medium: Memory at /dev/shm; or lower train.num_workers")


def shm_check(profile: Profile, gpus_found: int, shm_path: str = "/dev/shm", statvfs=os.statvfs,
              cpus: int | None = None) -> Check | None:
    """/dev/shm against what the run puts there: each DataLoader worker's prefetched batches (batch
    bytes x workers x prefetch_factor x local ranks) and NCCL's segments. Docker and Kubernetes give
    a container 64 MB: the workers die with "Bus error", NCCL cannot create its segment. None where
    the run uses neither (CPU ranks get no loader workers) or the box has no /dev/shm."""
    from training.cpus import usable_cpus
    from training.engine.data import loader_workers

    L, T = profile.launch, profile.train
    on_gpus = profile.hardware.gpus > 0 and gpus_found > 0
    ranks = L.nproc_per_node if L.mode == "ddp" else 1
    workers = loader_workers(T.num_workers, "cuda" if on_gpus else "cpu", L.mode, ranks,
                             usable_cpus() if cpus is None else cpus)
    nccl = L.mode == "ddp" and on_gpus and L.backend != "gloo" and ranks > 1
    if not workers and not nccl:
        return None
    try:
        st = statvfs(shm_path)
    except OSError:
        return None
    size, free = st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize
    batch = _batch_bytes(profile)
    loaders = batch * workers * PREFETCH_FACTOR * ranks if batch else 0
    need = loaders + (NCCL_SHM_PER_PAIR * ranks * (ranks - 1) if nccl else 0)
    parts = []
    if loaders:
        parts.append(f"{units.size(batch)} batch x {workers} worker(s) x prefetch {PREFETCH_FACTOR} x {ranks} rank(s)")
    elif workers:
        parts.append(f"{workers} loader worker(s) x {ranks} rank(s), batch size unknown")
    if nccl:
        parts.append(f"NCCL shared memory for {ranks} ranks")
    detail = (f"{units.size(size)} at {shm_path} ({units.size(free)} free), the run needs about {units.size(need)} "
              f"({' + '.join(parts)})")
    if need > size:
        return Check("shm", False, f"{detail}: too small. {SHM_FIX}")
    if need > free:
        return Check("shm", True, f"{detail}: less is free than that; others use /dev/shm. {SHM_FIX}", warning=True)
    return Check("shm", True, detail)


def _batch_bytes(profile: Profile) -> int:
    """One batch of the task's inputs (its example_input x batch_size per process); 0 when unknown
    (a custom script, a task that cannot say)."""
    if profile.is_custom or not profile.train.task:
        return 0
    try:
        from training.tasks import load_task_module

        task = load_task_module(profile.train.task).build(profile.task_options(), profile.train.seed)
        one = task.example_input(1)
        per_sample = sum(t.numel() * t.element_size() for t in one)
    except Exception:
        return 0
    per_process = profile.train.batch_size
    return per_sample * per_process


def cpus_check() -> Check | None:
    """The CPUs threads and loader workers are sized from, where a container's quota or an affinity
    mask makes them fewer than the host's cores (none otherwise)."""
    from training.cpus import cpu_budget

    budget = cpu_budget()
    if budget.usable >= budget.host:
        return None
    return Check("cpus", True, f"{budget.describe()}: OMP_NUM_THREADS and loader workers are sized from "
                 f"{budget.usable}")


CUDA_INSTALL_HINT = ("install a CUDA build of torch into this venv: .venv/bin/pip install torch --index-url "
                     "https://download.pytorch.org/whl/cu128 (pick the index for your driver on "
                     "https://pytorch.org/get-started/locally/), then run this again")


def _disk_check(runs_dir: Path) -> Check:
    probe = Path(runs_dir)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    usage = shutil.disk_usage(probe)
    free_gib = usage.free / 2**30
    ok = free_gib >= MIN_FREE_DISK_GIB
    return Check("disk", ok, f"{free_gib:.1f} GiB free for checkpoints under {runs_dir}"
                 + ("" if ok else f" (need at least {MIN_FREE_DISK_GIB:.0f} GiB)"))


def _port_check(profile: Profile) -> tuple[Check, int]:
    from training.supervise.launch import free_port, rdzv_backend_of

    if profile.launch.mode != "ddp":
        return Check("port", True, "not needed (one process)"), 0
    if profile.launch.rdzv_endpoint:
        host, _, port = profile.launch.rdzv_endpoint.rpartition(":")
        if profile.launch.node_rank == 0 and port.isdigit():
            try:
                with socket.socket() as s:
                    s.bind((host or "0.0.0.0", int(port)))
            except OSError as exc:
                if profile.launch.nnodes > 1 and rdzv_backend_of(profile.launch) == "c10d":
                    # Another node of the run, started first on this machine, hosts the
                    # rendezvous there: this node joins it (torchrun's c10d does exactly that).
                    return Check("port", True, f"rendezvous at {profile.launch.rdzv_endpoint} is open already "
                                 f"(a node started before this one hosts it; this node joins)"), int(port)
                return Check("port", False, f"rendezvous {profile.launch.rdzv_endpoint} cannot be bound here: "
                             f"{exc.strerror}. Is another run using it?"), int(port)
        return Check("port", True, f"rendezvous at {profile.launch.rdzv_endpoint} (torchrun's)"), \
            int(port) if port.isdigit() else 0
    port = free_port()
    return Check("port", True, f"free rendezvous port {port} on 127.0.0.1 (picked anew for every run)"), port


def _rendezvous_check(profile: Profile) -> Check | None:
    """A dynamic rendezvous (nodes started by hand) is a door for whoever reaches its port: say so."""
    from training.supervise.launch import dynamic_rendezvous_warning

    warning = dynamic_rendezvous_warning(profile.launch)
    return Check("rendezvous", True, warning, warning=True) if warning else None


def _cores_check(profile: Profile, gpus_found: int) -> Check | None:
    if profile.launch.mode != "ddp" or gpus_found:
        return None
    from training.cpus import usable_cpus

    cores = usable_cpus()
    ranks = profile.launch.nproc_per_node
    threads = max(1, cores // ranks)
    ok = ranks <= 4 * cores
    return Check("cpu", ok, f"{ranks} CPU ranks on {cores} cores ({threads} thread(s) each)"
                 + ("" if ok else "; too many ranks for this box, lower launch.nproc_per_node"),
                 warning=ranks > cores)


def select_check(profile: Profile, backend=None, gpus: Check | None = None) -> Check | None:
    """Would the GPUs this start takes (`[hardware] select`) be free now? None when selection does
    not apply (no GPU wanted, none on the box) or the count check already failed."""
    from training.rundir.gpu_locks import GpuLocks, lock_dir_for
    from training.supervise.gpu_select import applies, selection_now

    backend = gpu_backend(backend)
    if (gpus is not None and not gpus.ok) or not applies(profile, backend):
        return None
    from training.errors import TraindeckError
    from training.rundir.gpu_locks import UnsafeLockDir

    locks = GpuLocks(lock_dir_for(profile.hardware.lock_dir))
    try:  # answers within the lock directory's deadline; an unsafe one fails this check, with the fix
        held = locks.held()
        if locks.warnings:  # a start would wait for the mutex and give up: say who holds it
            return Check("select", False, locks.warnings[0])
        waiting = locks.queue()
    except UnsafeLockDir as exc:
        # No wait fixes an unsafe lock directory: the start table says its own fix, not --queue.
        return Check("locks", False, str(exc), never=True)
    except TraindeckError as exc:
        return Check("select", False, str(exc))
    sel = selection_now(profile, backend, held)
    if sel.never:
        return Check("select", False, sel.never, never=True)
    if not sel.ok:
        return Check("select", False, f"the GPUs this start would take are busy: {sel.why_busy()}")
    if waiting:
        # Free GPUs, but others queued first: a start that does not queue would jump the line.
        first = waiting[0].record
        return Check("select", False, f"GPUs {','.join(map(str, sel.gpus or ()))} are free, but {len(waiting)} "
                     f"start(s) already wait for GPUs on this box (first: run {first.get('run_id', '?')}, "
                     f"user {first.get('user', '?')})")
    taking = ",".join(map(str, sel.gpus or ()))
    return Check("select", True, f"GPUs {taking} ({sel.mode})")


def run_preflight(profile: Profile, runs_dir: Path, backend=None, holders: bool = False) -> PreflightReport:
    """Every check of `run.py --check`. `holders`: also whether the GPUs the start would take are
    free now (`select_check`: NVML's processes and traindeck's GPU locks), as a start checks; the
    picker's pane leaves it out (it is redrawn as the cursor moves, the lock directory is shared)."""
    from training.rundir import RunPaths
    from training.supervise.launch import build_launch, format_command

    backend = gpu_backend(backend)
    report = PreflightReport(profile, runs_dir=Path(runs_dir))
    gpus = gpu_check(profile, backend)
    report.checks.append(gpus)
    select = select_check(profile, backend, gpus) if holders else None
    if select is not None:
        report.checks.append(select)
    visible = run_gpus(profile, backend)
    torch_found = torch_check(profile, backend.device_count() if backend.available else 0)
    report.versions = torch_found.detail.split("; ")[0]
    if not torch_found.ok:
        report.checks.append(torch_found)
    if torch_found.ok:
        for check in (cuda_check(profile, visible, backend), arch_check(profile, visible)):
            if check is not None:
                report.checks.append(check)
    amp = amp_check(profile, visible)
    if amp:
        report.checks.append(amp)
    nccl = _nccl_check(profile)
    if nccl:
        report.checks.append(nccl)
    cores = _cores_check(profile, backend.device_count() if backend.available else 0)
    if cores:
        report.checks.append(cores)
    for check in (cpus_check(), shm_check(profile, visible.count)):
        if check is not None:
            report.checks.append(check)
    report.checks.append(_disk_check(runs_dir))
    port_check, port = _port_check(profile)
    report.checks.append(port_check)
    exposed = _rendezvous_check(profile)
    if exposed is not None:
        report.checks.append(exposed)
    placeholder = RunPaths(Path(runs_dir) / f"<new>-{profile.name}")
    from training.errors import TraindeckError

    try:
        report.command = format_command(build_launch(profile, placeholder, port))
    except TraindeckError as exc:  # a launch that would be refused (dp over MIG instances: the gpus check)
        report.command = f"nothing: {exc}"
    return report


def format_profile_list(profiles_dir: Path | None = None, backend=None) -> str:
    """`run.py --list`: one line per profile with a hardware match column."""
    backend = gpu_backend(backend)
    rows = [("PROFILE", "MODE", "RANKS", "HARDWARE", "DESCRIPTION")]
    for name in list_profile_names(profiles_dir):
        try:
            p = load_profile(name, profiles_dir=profiles_dir)
        except ProfileError as exc:
            rows.append((name, "-", "-", "invalid", str(exc)))
            continue
        rows.append((p.name, p.launch.mode, str(p.world_size), hardware_match(p, backend), p.description))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(r[i].ljust(widths[i]) for i in range(4)) + "  " + r[4] for r in rows]
    if not backend.available:
        lines.append(f"(GPUs: {backend.error or 'none found'})")
    return "\n".join(lines)


def head_check(profile: Profile) -> Check | None:
    """`[launch] hosts`: run.py starts the run on the first host, the head (it hosts the rendezvous)."""
    from training.supervise.rdzv_watch import is_this_machine

    hosts = profile.launch.hosts
    if len(hosts) < 2:
        return None
    head = hosts[0].rpartition("@")[2]
    if is_this_machine(head):
        return Check("head", True, f"{head} is this machine: the run starts here and on {', '.join(hosts[1:])} "
                     f"over SSH")
    return Check("head", False, f"the first of launch.hosts, {head}, is not this machine; start the run on {head} "
                 f"(the head hosts the rendezvous), or put this machine's name first", never=True)


def node_checks(report: PreflightReport) -> None:
    """`run.py --check` on a `[launch] hosts` profile: every other host over SSH (reachable, the
    same traindeck version, GPUs wanted vs found), and the commands the head would run there."""
    from training import traindeck_version
    from training.supervise.node_ssh import check_node, node_profile, node_ssh, remote_nodes

    profile = report.profile
    head = head_check(profile)
    if head is None:
        return
    report.checks.append(head)
    ours = traindeck_version()
    for node in remote_nodes(profile, "RUN_ID", report.runs_dir):
        for_nodes = node_profile(profile, f"{profile.launch.hosts[0].rpartition('@')[2]}:PORT", "RUN_ID",
                                 host=node.host)
        info, problem = check_node(profile, node)
        if info is None:
            report.checks.append(Check(f"node {node.host}", False, problem))
        else:
            wanted, found = profile.hardware.gpus, int(info.get("gpus") or 0)
            version = str(info.get("version"))
            problems = []
            if version != ours:
                problems.append(f"traindeck {version} there, {ours} here: install the same version on every node")
            if wanted and found < wanted:
                problems.append(f"{found} GPU(s) found, the profile wants {wanted}")
            names = ", ".join(sorted(set(info.get("gpu_names") or []))) or "no GPU"
            detail = (f"reachable over SSH ({info.get('hostname')}), traindeck {version}, {found} GPU(s) "
                      f"({names}), wants {wanted}; runs go to {node.run_dir}")
            report.checks.append(Check(f"node {node.host}", not problems, "; ".join(problems) or detail))
        start = node_ssh(profile.launch, node, "start", node.run_dir, "--run-id", "RUN_ID", "--head",
                         profile.launch.hosts[0], "--cwd", str(Path.cwd()))
        report.node_commands.append(f"would run on {node.host}: {shlex.join(start)}  "
                                    f"(profile.toml on stdin; there: {_node_torchrun(for_nodes)})")


def _node_torchrun(profile: Profile) -> str:
    p = profile.launch
    from training.supervise.launch import rdzv_backend_of

    backend = rdzv_backend_of(p)
    rank = f" --node-rank {p.node_rank}" if backend == "static" else ""
    return (f"torchrun --nnodes {p.nnodes} --nproc-per-node {p.nproc_per_node} --rdzv-backend {backend}{rank} "
            f"--rdzv-endpoint {p.rdzv_endpoint} --rdzv-id {p.rdzv_id}")

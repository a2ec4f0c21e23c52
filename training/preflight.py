"""Preflight: will this profile run on this box? (`run.py --check`, the picker, `--list`)

Checks what costs money to find out later: GPUs wanted vs found (count and model), NCCL for
DDP on GPUs, free disk for checkpoints, a free rendezvous port, cores for CPU ranks, and
prints the exact command that would run.
"""

from __future__ import annotations

import os
import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path

from training.profile import Profile, ProfileError, list_profile_names, load_profile

MIN_FREE_DISK_GIB = 2.0


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    # A warning does not fail the preflight (e.g. a different GPU model than the profile's).
    warning: bool = False

    @property
    def mark(self) -> str:
        return "ok  " if self.ok and not self.warning else ("warn" if self.ok else "FAIL")


@dataclass
class PreflightReport:
    profile: Profile
    checks: list[Check] = field(default_factory=list)
    command: str = ""

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
        failed = [c.name for c in self.checks if not c.ok]
        out.append("preflight passed" if not failed else
                   f"preflight FAILED ({', '.join(failed)}); nothing was started. "
                   f"Try 'run.py --profile {p.name} --rehearse' to rehearse this profile on this box.")
        return out

    def format(self) -> str:
        return "\n".join(self.lines)


def _gpu_backend(backend=None):
    if backend is not None:
        return backend
    from training.gpu import get_backend

    return get_backend()


def gpu_check(profile: Profile, backend=None) -> Check:
    """GPUs wanted by the profile vs GPUs NVML sees, with their model."""
    backend = _gpu_backend(backend)
    wanted, model = profile.hardware.gpus, profile.hardware.gpu_model
    devices = backend.devices() if backend.available else []
    found = len(devices)
    names = sorted({d.name for d in devices})
    found_text = f"{found} found" + (f" ({', '.join(names)})" if names else "")
    if not backend.available and backend.error:
        found_text += f" - {backend.error}"
    if wanted == 0:
        return Check("gpus", True, f"none wanted; {found_text}")
    want_text = f"{wanted} wanted" + (f" ({model})" if model else "")
    if found < wanted:
        return Check("gpus", False, f"{want_text}, {found_text}")
    if model and not any(model.lower() in n.lower() for n in names):
        return Check("gpus", True, f"{want_text}, {found_text}: a different model; batch sizes and AMP "
                     f"settings may need changing", warning=True)
    return Check("gpus", True, f"{want_text}, {found_text}")


def hardware_match(profile: Profile, backend=None) -> str:
    """Short mark for lists: 'any', 'ok 8/8 B200', 'NO 8/0' ..."""
    backend = _gpu_backend(backend)
    wanted = profile.hardware.gpus
    if wanted == 0:
        return "any"
    found = backend.device_count() if backend.available else 0
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
    from training.launch import free_port

    if profile.launch.mode != "ddp":
        return Check("port", True, "not needed (one process)"), 0
    if profile.launch.rdzv_endpoint:
        host, _, port = profile.launch.rdzv_endpoint.rpartition(":")
        if profile.launch.node_rank == 0 and port.isdigit():
            try:
                with socket.socket() as s:
                    s.bind((host or "0.0.0.0", int(port)))
            except OSError as exc:
                return Check("port", False, f"rendezvous {profile.launch.rdzv_endpoint} cannot be bound here: "
                             f"{exc.strerror}. Is another run using it?"), int(port)
        return Check("port", True, f"rendezvous at {profile.launch.rdzv_endpoint} (torchrun's)"), \
            int(port) if port.isdigit() else 0
    port = free_port()
    return Check("port", True, f"free rendezvous port {port} on 127.0.0.1 (picked anew for every run)"), port


def _cores_check(profile: Profile, gpus_found: int) -> Check | None:
    if profile.launch.mode != "ddp" or gpus_found:
        return None
    cores = os.cpu_count() or 1
    ranks = profile.launch.nproc_per_node
    threads = max(1, cores // ranks)
    ok = ranks <= 4 * cores
    return Check("cpu", ok, f"{ranks} CPU ranks on {cores} cores ({threads} thread(s) each)"
                 + ("" if ok else "; too many ranks for this box, lower launch.nproc_per_node"),
                 warning=ranks > cores)


def run_preflight(profile: Profile, runs_dir: Path, backend=None) -> PreflightReport:
    from training.launch import build_launch, format_command
    from training.rundir import RunPaths

    backend = _gpu_backend(backend)
    report = PreflightReport(profile)
    gpus = gpu_check(profile, backend)
    report.checks.append(gpus)
    nccl = _nccl_check(profile)
    if nccl:
        report.checks.append(nccl)
    cores = _cores_check(profile, backend.device_count() if backend.available else 0)
    if cores:
        report.checks.append(cores)
    report.checks.append(_disk_check(runs_dir))
    port_check, port = _port_check(profile)
    report.checks.append(port_check)
    placeholder = RunPaths(Path(runs_dir) / f"<new>-{profile.name}")
    report.command = format_command(build_launch(profile, placeholder, port))
    return report


def format_profile_list(profiles_dir: Path | None = None, backend=None) -> str:
    """`run.py --list`: one line per profile with a hardware match column."""
    backend = _gpu_backend(backend)
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

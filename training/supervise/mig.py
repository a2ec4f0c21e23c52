"""A run on MIG instances: what the launch must do differently.

CUDA gives one process one MIG instance, the first its CUDA_VISIBLE_DEVICES names. So ddp ranks
that share the run's CUDA_VISIBLE_DEVICES would all sit on that one (torchrun gives every local
rank the same environment): the launch passes the run's devices as TRAINDECK_RANK_DEVICES and
each rank narrows its own CUDA_VISIBLE_DEVICES to its entry (traindeck.rank_device); a custom
program runs under `-m traindeck.rank_device`, which execs it unchanged. nn.DataParallel, one
process, can never span MIG instances: dp over more than one is refused with the fix (ddp).
"""

from __future__ import annotations

from traindeck.rank_device import RANK_DEVICES_ENV  # noqa: F401 - the variable the launch sets
from training.monitor.gpu import normalize_uuid

RANK_DEVICE_MODULE = "traindeck.rank_device"


def cuda_visible_entries(cuda_visible: str | None) -> list[str]:
    """CUDA_VISIBLE_DEVICES as CUDA reads it: the entries up to the first empty one."""
    out: list[str] = []
    for token in (cuda_visible or "").split(","):
        token = token.strip()
        if not token:
            break
        out.append(token)
    return out


def names_mig(entries: list[str]) -> bool:
    return any(e.upper().startswith("MIG-") for e in entries)


def rank_devices(mode: str, cuda_visible: str | None) -> str | None:
    """TRAINDECK_RANK_DEVICES for a ddp launch whose devices include MIG instances (None: the
    ranks can share CUDA_VISIBLE_DEVICES, each picking its GPU by LOCAL_RANK)."""
    entries = cuda_visible_entries(cuda_visible)
    if mode != "ddp" or len(entries) < 2 or not names_mig(entries):
        return None
    return ",".join(entries)


def shared_instances_note(nproc: int, cuda_visible: str | None) -> str:
    """What a ddp run with more local ranks than MIG instances does (""; when each has its own)."""
    entries = cuda_visible_entries(cuda_visible)
    if not names_mig(entries) or nproc <= len(entries):
        return ""
    return (f"{nproc} ranks on {len(entries)} MIG instance(s): ranks share instances (LOCAL_RANK modulo "
            f"{len(entries)}); NCCL refuses that (\"Duplicate GPU detected\"), gloo shares them. Set "
            f"launch.nproc_per_node = {len(entries)} or name more instances in CUDA_VISIBLE_DEVICES.")


def dp_over_mig_problem(mode: str, wanted_gpus: int, cuda_visible: str | None) -> str:
    """Why a dp run cannot use these devices ("" when it can): DataParallel splits each batch over
    one process's GPUs, and a process gets one MIG instance."""
    entries = cuda_visible_entries(cuda_visible)
    if mode != "dp" or wanted_gpus < 2 or len(entries) < 2 or not names_mig(entries):
        return ""
    used = min(wanted_gpus, len(entries))
    return (f"dp cannot span MIG instances: CUDA gives one process one MIG instance, so nn.DataParallel "
            f"over CUDA_VISIBLE_DEVICES={','.join(entries)} would train on {entries[0]} alone. Use "
            f"launch.mode = \"ddp\" with launch.nproc_per_node = {used}: each rank gets its own instance.")


def one_gpu_instances_warning(mode: str, pg_backend: str, cuda_visible: str | None, devices,
                              launch_env=None) -> str:
    """What NCCL does with ranks on MIG instances of one GPU ("" when no two share a GPU, or the
    run uses gloo): NCCL tells GPUs apart by PCI bus id, which instances of one GPU share, so it
    refuses them ("Duplicate GPU detected"; NCCL 2.31 and newer ask for NCCL_MULTI_RANK_GPU_ENABLE=1).
    `devices`: NVML's (training.monitor.gpu.GpuInfo), which know each GPU's instances."""
    if mode != "ddp" or pg_backend == "gloo" or "NCCL_MULTI_RANK_GPU_ENABLE" in (launch_env or {}):
        return ""
    by_gpu: dict[int, list[str]] = {}
    for entry in cuda_visible_entries(cuda_visible):
        wanted = normalize_uuid(entry) if entry.upper().startswith("MIG-") else None
        gpu = next((d for d in devices if wanted and any(normalize_uuid(m) == wanted for m in d.mig_uuids)), None)
        if gpu is not None:
            by_gpu.setdefault(gpu.index, []).append(entry)
    shared = {index: entries for index, entries in by_gpu.items() if len(entries) > 1}
    if not shared:
        return ""
    where = "; ".join(f"GPU {index}: {', '.join(entries)}" for index, entries in sorted(shared.items()))
    return (f"ranks on MIG instances of one GPU ({where}): NCCL tells GPUs apart by PCI bus id and refuses "
            f"them (\"Duplicate GPU detected\"). Set launch.backend = \"gloo\", or launch.env "
            f"NCCL_MULTI_RANK_GPU_ENABLE = \"1\" with NCCL 2.31 or newer, or name instances of different GPUs.")

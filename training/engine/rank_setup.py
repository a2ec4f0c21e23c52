"""Setting a rank up: its environment (rank, world, device, process-group backend), then the task's
model on the device with its precision, the wrapping (DDP, DataParallel), the optimizer and the
learning-rate schedule. Notes for the run's events are collected as (level, message) and reported
by rank 0 once the run is set up."""

from __future__ import annotations

import contextlib
import math
import os
import random
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from training.engine.amp import DTYPES, AutocastForward, worker_bf16_problem
from training.engine.data import _to_channels_last
from training.tasks import load_task_module

Notes = list[tuple[str, str]]  # (level, message)

# Cosine decays to this fraction of the peak lr (nanoGPT's min_lr = lr / 10).
MIN_LR_RATIO = 0.1


@dataclass
class Environment:
    """Who this process is: torchrun's RANK / LOCAL_RANK / WORLD_SIZE (ddp) or one process."""

    mode: str
    ddp: bool
    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    backend: str
    notes: Notes = field(default_factory=list)
    # Why this GPU profile must not go on (NVML sees GPUs that torch cannot use): the worker raises
    # it as CudaUnusable once the run's reporting is set up, so the failure says the fix.
    cuda_problem: str = ""


def read_environment(profile) -> Environment:
    mode = profile.launch.mode
    ddp = mode == "ddp" and "RANK" in os.environ and "WORLD_SIZE" in os.environ
    rank = int(os.environ.get("RANK", 0)) if ddp else 0
    local_rank = int(os.environ.get("LOCAL_RANK", 0)) if ddp else 0
    world_size = int(os.environ.get("WORLD_SIZE", 1)) if ddp else 1
    notes: Notes = []
    if mode == "ddp" and not ddp:
        notes.append(("warning", "ddp: not started by torchrun (no RANK/WORLD_SIZE); running as a single process"))
    cuda_count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    device, backend, device_notes = choose_device(profile.hardware.gpus, profile.launch.backend, ddp, local_rank,
                                                  cuda_count)
    problem = unusable_gpus(profile.hardware.gpus, cuda_count) if device.type != "cuda" else ""
    return Environment(mode, ddp, rank, local_rank, world_size, device, backend, notes + device_notes, problem)


def unusable_gpus(wanted_gpus: int, cuda_count: int, backend=None, environ=None) -> str:
    """Why a rank of a GPU profile that torch gave no CUDA device must not train on the CPU ("" when
    it may: no GPU wanted, or no real GPU here, the CPU box every CPU profile and test runs on).

    NVML answers whether there are GPUs (it needs no CUDA runtime); GPUs simulated by a fake NVML
    are never usable by torch, and a profile on them trains on the CPU as before. An empty
    CUDA_VISIBLE_DEVICES hides every GPU on purpose."""
    environ = os.environ if environ is None else environ
    if wanted_gpus <= 0 or cuda_count or environ.get("CUDA_VISIBLE_DEVICES") == "":
        return ""
    from training.engine.cuda_fit import cuda_problem
    from training.monitor.gpu import get_backend

    nvml = get_backend() if backend is None else backend
    if not nvml.available or nvml.source != "nvml":
        return ""
    return cuda_problem(wanted=wanted_gpus, nvml_gpus=nvml.device_count(), torch_version=torch.__version__,
                        torch_cuda=torch.version.cuda, available=torch.cuda.is_available(),
                        torch_count=cuda_count, driver_cuda=nvml.cuda_driver_version(),
                        driver=nvml.driver_version())


def choose_device(wanted_gpus: int, backend_setting: str, ddp: bool, local_rank: int,
                  cuda_count: int) -> tuple[torch.device, str, Notes]:
    """(device, process-group backend or "", notes) for this process.

    `hardware.gpus = 0` means no GPU at all, even where CUDA is visible (the launch also hides the
    GPUs with CUDA_VISIBLE_DEVICES="" unless the user set it).
    """
    notes: Notes = []
    if wanted_gpus == 0 and cuda_count:
        notes.append(("info", "hardware.gpus = 0: training on the CPU although CUDA is visible"))
        cuda_count = 0
    if not ddp:
        return (torch.device("cuda", 0) if cuda_count else torch.device("cpu")), "", notes
    backend = backend_setting if backend_setting != "auto" else ("nccl" if cuda_count else "gloo")
    if cuda_count:
        # More gloo ranks than GPUs (the GPU check's 2 gloo ranks on one GPU) share devices.
        return torch.device("cuda", local_rank % cuda_count), backend, notes
    if backend == "nccl":
        notes.append(("warning", "backend nccl needs CUDA; no GPU visible, using gloo"))
        backend = "gloo"
    return torch.device("cpu"), backend, notes


def plan_dp(wanted_gpus: int, visible_gpus: int, batch_size: int) -> tuple[list[int], Notes]:
    """nn.DataParallel's device_ids: the profile's hardware.gpus of the visible GPUs, never all of
    them (a 2-GPU profile on an 8-GPU box uses 2). Returns (device_ids, notes); [] = no DP."""
    used = min(wanted_gpus, visible_gpus) if wanted_gpus > 0 else 0
    if used < 2:
        why = "no GPU visible" if visible_gpus == 0 else (
            "one GPU visible" if visible_gpus == 1 else f"hardware.gpus = {wanted_gpus}")
        return [], [("warning", f"dp: {why}, running as a single process")]
    notes = []
    if used < wanted_gpus:
        notes.append(("warning", f"dp: {wanted_gpus} GPUs wanted, {visible_gpus} visible; using {used}"))
    if batch_size % used:
        notes.append(("warning", f"dp: batch_size {batch_size} is not divisible by {used} GPUs; "
                                 f"the last GPU gets a smaller slice"))
    return list(range(used)), notes


def cuda_device_identities(indices: list[int], environ=None) -> list[dict[str, str | None]]:
    """UUID ("GPU-..." like NVML's, "MIG-..." for a MIG instance) and PCI bus id ("0000:3b:00.0")
    of these CUDA devices, for the heartbeat: how telemetry finds this rank's GPUs when PIDs do not
    match (containers).

    torch's device properties give the UUID without a prefix, a MIG instance's too: it is a MIG
    instance when this process's CUDA_VISIBLE_DEVICES names it as MIG-<uuid> (CUDA reaches a MIG
    instance no other way)."""
    from training.monitor.gpu import normalize_uuid

    environ = os.environ if environ is None else environ
    named_mig = {normalize_uuid(t) for t in str(environ.get("CUDA_VISIBLE_DEVICES") or "").split(",")
                 if t.strip().lower().startswith("mig-")}
    out = []
    for index in indices:
        try:
            props = torch.cuda.get_device_properties(index)
        except Exception:
            continue
        uuid = str(getattr(props, "uuid", "") or "")
        if uuid and not uuid.upper().startswith(("GPU-", "MIG-")):
            uuid = ("MIG-" if normalize_uuid(uuid) in named_mig else "GPU-") + uuid
        bus = getattr(props, "pci_bus_id", None)
        pci = None if bus is None else (f"{int(getattr(props, 'pci_domain_id', 0)):04x}:{int(bus):02x}:"
                                         f"{int(getattr(props, 'pci_device_id', 0)):02x}.0")
        out.append({"uuid": uuid or None, "pci_bus_id": pci})
    return out


def build_task(profile, rank: int):
    """(task, train_set, val_set, model). Same seed on every rank for the data and the initial
    weights; seed + rank for everything after."""
    T = profile.train
    torch.manual_seed(T.seed)
    task = load_task_module(T.task).build(profile.task_options(), T.seed)
    train_set, val_set = task.datasets()
    model: nn.Module = task.model()
    torch.manual_seed(T.seed + rank)
    random.seed(T.seed + rank)
    return task, train_set, val_set, model


def place_model(model: nn.Module, task, T, device: torch.device, notes: Notes) -> bool:
    """Move the model to the device (NHWC for conv nets when asked); returns whether channels_last."""
    channels_last = T.channels_last and getattr(task, "uses_conv", False)
    if T.channels_last and not channels_last:
        notes.append(("info", f"channels_last ignored: task {T.task} has no conv layers"))
    model.to(device)
    if channels_last:
        _to_channels_last(model)
    return channels_last


@dataclass
class Precision:
    """train.amp as it runs here: the autocast dtype (None = fp32) and the fp16 grad scaler."""

    dtype: torch.dtype | None
    scaler: torch.amp.GradScaler
    device_type: str

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def describe(self) -> str:
        return str(self.dtype).replace("torch.", "") if self.dtype is not None else "off"


def choose_precision(T, device: torch.device, notes: Notes) -> Precision:
    amp_dtype = DTYPES.get(T.amp)
    if T.amp == "bf16" and (problem := worker_bf16_problem(device)):
        raise ValueError(problem)
    if T.amp == "fp16" and device.type != "cuda":
        notes.append(("info", "amp fp16 needs a GPU; running in fp32 on the CPU (bf16 works on CPU)"))
        amp_dtype = None
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype is torch.float16)
    return Precision(amp_dtype, scaler, device.type)


def wrap_model(raw: nn.Module, profile, env: Environment, precision: Precision,
               notes: Notes) -> tuple[nn.Module, list[int]]:
    """(the model the loop calls, DataParallel's device ids or []): DDP, DataParallel or `raw`."""
    if env.ddp:
        return DDP(raw, device_ids=[env.device.index] if env.device.type == "cuda" else None), []
    if env.mode != "dp":
        return raw, []
    cuda = env.device.type == "cuda"
    dp_ids, dp_notes = plan_dp(profile.hardware.gpus, torch.cuda.device_count() if cuda else 0,
                               profile.train.batch_size)
    notes.extend(dp_notes)
    if not dp_ids:
        return raw, []
    # The replicas run in threads of their own: autocast must be entered inside forward.
    inner = AutocastForward(raw, env.device.type, precision.dtype) if precision.dtype is not None else raw
    return nn.DataParallel(inner, device_ids=dp_ids), dp_ids


def make_optimizer(raw: nn.Module, T, env: Environment, notes: Notes) -> tuple[torch.optim.Optimizer, list]:
    """(optimizer, its parameters); the lr scaled by the world size when train.lr_scaling says so."""
    lr = T.lr
    if env.ddp and T.lr_scaling == "linear":
        lr = T.lr * env.world_size
    elif env.ddp and T.lr_scaling == "sqrt":
        lr = T.lr * math.sqrt(env.world_size)
    if lr != T.lr:
        notes.append(("info", f"lr scaled {T.lr_scaling} by world size {env.world_size}: {T.lr:g} -> {lr:g}"))
    params = [p for p in raw.parameters() if p.requires_grad]
    if T.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=T.weight_decay), params
    return torch.optim.AdamW(params, lr=lr, weight_decay=T.weight_decay), params


def make_scheduler(optimizer: torch.optim.Optimizer, T, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup, then constant or cosine down to MIN_LR_RATIO of the peak."""

    def lr_factor(done: int) -> float:
        if T.warmup_steps and done < T.warmup_steps:
            return (done + 1) / T.warmup_steps
        if T.schedule == "constant":
            return 1.0
        progress = min(1.0, (done - T.warmup_steps) / max(1, total_steps - T.warmup_steps))
        return MIN_LR_RATIO + (1 - MIN_LR_RATIO) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)

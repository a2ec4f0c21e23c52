"""The built-in training worker: one loop for single, dp and ddp.

Launch commands (the supervisor builds these; RUN_DIR may also come from $TRAINDECK_RUN_DIR):

    # ddp: one process per GPU (or per CPU slot on gloo), through torchrun
    python -m torch.distributed.run --nproc_per_node 2 --rdzv-backend c10d \
        --rdzv-endpoint 127.0.0.1:29517 -m training.worker RUN_DIR
    # dp (nn.DataParallel over hardware.gpus of the visible GPUs) and single: one process
    python -m training.worker RUN_DIR

It reads RUN_DIR/profile.toml, resumes from RUN_DIR/checkpoints/last.pt when it exists (a resumed
run or a torchrun restart), else from [checkpoint] resume when set, trains, and writes events
(rank 0 only), heartbeats (every rank) and checkpoints (rank 0 only) into RUN_DIR.

Host syncs: the loss is accumulated on the device; the only `.item()`/all-reduce is at each
logging boundary (train.log_every steps), where one small all-reduce carries the loss sums and
the control code rank 0 read from control.json, so all ranks act on save/stop/pause at the same
step.

Signals: SIGTERM (torchrun's stop) abandons the step and exits 143; SIGUSR1 dumps every thread's
stack to RUN_DIR/dumps/rank-<rank>.txt.

Exit codes: 0 finished (or stopped on request after saving), 1 error (traceback on stderr),
130 SIGINT, 143 SIGTERM.

Test-only environment (never set by traindeck itself):
    TRAINDECK_TEST_DUMP_WEIGHTS=DIR   each rank saves its final weights to DIR/rank-<rank>.pt
    TRAINDECK_TEST_STEP_DELAY_S=0.05  sleep this long after every optimizer step
"""

from __future__ import annotations

import contextlib
import faulthandler
import math
import os
import random
import signal
import sys
import time
import traceback
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from training import report
from training.engine.amp import DTYPES, AutocastForward, AutocastProbe, worker_bf16_problem
from training.engine.checkpoint import (
    CheckpointFiles,
    CheckpointWriteError,
    capture_rng_state,
    improved,
    load_checkpoint,
    load_model_weights,
    make_checkpoint,
    model_state,
    remove_stale_temp_files,
    restore_rng_state,
    serialize,
)
from training.profile import parse_profile
from training.rundir import RUN_DIR_ENV, RunPaths
from training.rundir.control import CODE_ACTIONS, ControlChannel
from training.rundir.heartbeat import Heartbeat
from training.tasks import load_task_module

EXIT_SIGINT = 130
EXIT_SIGTERM = 143
PAUSE_POLL_S = 0.5
# Cosine decays to this fraction of the peak lr (nanoGPT's min_lr = lr / 10).
MIN_LR_RATIO = 0.1


class Terminated(BaseException):
    """SIGTERM arrived: abandon the step and leave (BaseException so no `except Exception` eats it)."""


class StopRequested(Exception):
    """control.json asked for save-stop; the checkpoint is written, exit 0."""


def _raise_terminated(signum, frame):
    raise Terminated()


def _batch_to(batch, device, channels_last: bool):
    out = []
    for i, t in enumerate(batch):
        t = t.to(device, non_blocking=True)
        # Inputs only (the target is last); float images/clips benefit from NHWC/NDHWC in conv nets.
        if channels_last and i < len(batch) - 1 and t.dim() in _CHANNELS_LAST and t.is_floating_point():
            t = t.contiguous(memory_format=_CHANNELS_LAST[t.dim()])
        out.append(t)
    return tuple(out)


# channels_last is defined for 4-D tensors (Conv2d) and channels_last_3d for 5-D ones (Conv3d);
# `model.to(memory_format=torch.channels_last)` raises on a Conv3d weight.
_CHANNELS_LAST = {4: torch.channels_last, 5: torch.channels_last_3d}


def _to_channels_last(model: nn.Module) -> None:
    for param in model.parameters():
        if param.dim() in _CHANNELS_LAST:
            param.data = param.data.contiguous(memory_format=_CHANNELS_LAST[param.dim()])


def _all_reduce_dict(totals: dict[str, torch.Tensor], ddp: bool) -> dict[str, torch.Tensor]:
    """Sum a dict of tensors over ranks with one collective."""
    if not ddp or not totals:
        return totals
    keys = sorted(totals)
    flat = torch.cat([totals[k].reshape(-1).double() for k in keys])
    dist.all_reduce(flat)
    out, offset = {}, 0
    for k in keys:
        n = totals[k].numel()
        out[k] = flat[offset:offset + n].reshape(totals[k].shape).to(totals[k].dtype)
        offset += n
    return out


def choose_device(wanted_gpus: int, backend_setting: str, ddp: bool, local_rank: int,
                  cuda_count: int) -> tuple[torch.device, str, list[tuple[str, str]]]:
    """(device, process-group backend or "", notes) for this process.

    `hardware.gpus = 0` means no GPU at all, even where CUDA is visible (the launch also hides the
    GPUs with CUDA_VISIBLE_DEVICES="" unless the user set it).
    """
    notes: list[tuple[str, str]] = []
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


def loader_workers(setting: int, device_type: str, mode: str, local_procs: int, cpus: int | None) -> int:
    """DataLoader worker processes for this rank. `setting` >= 0 is the profile's own number.

    Auto (-1): none when training on the CPU (the ranks already use the cores, and a worker would
    take one from training); on GPUs the batches must be made while the GPU computes, so up to 4
    per rank in ddp and up to 8 for the one dp/single process, leaving a core for each rank.
    """
    if setting >= 0:
        return setting
    if device_type != "cuda":
        return 0
    per_rank = max(1, cpus or 1) // max(1, local_procs)
    return max(0, min(4 if mode == "ddp" else 8, per_rank - 1))


class EpochIndices(Sampler[int]):
    """The indices of the current epoch (set before each one), so the DataLoader and its persistent
    worker processes live for the whole run instead of being started again every epoch."""

    def __init__(self) -> None:
        self.indices: list[int] = []

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def cuda_device_identities(indices: list[int]) -> list[dict[str, str | None]]:
    """UUID ("GPU-..." like NVML's) and PCI bus id ("0000:3b:00.0") of these CUDA devices, for the
    heartbeat: how telemetry finds this rank's GPUs when PIDs do not match (containers)."""
    out = []
    for index in indices:
        try:
            props = torch.cuda.get_device_properties(index)
        except Exception:
            continue
        uuid = str(getattr(props, "uuid", "") or "")
        if uuid and not uuid.startswith(("GPU-", "MIG-")):
            uuid = "GPU-" + uuid
        bus = getattr(props, "pci_bus_id", None)
        pci = None if bus is None else (f"{int(getattr(props, 'pci_domain_id', 0)):04x}:{int(bus):02x}:"
                                         f"{int(getattr(props, 'pci_device_id', 0)):02x}.0")
        out.append({"uuid": uuid or None, "pci_bus_id": pci})
    return out


def plan_dp(wanted_gpus: int, visible_gpus: int, batch_size: int) -> tuple[list[int], list[tuple[str, str]]]:
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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    run_dir = Path(argv[0] if argv else os.environ.get(RUN_DIR_ENV, ""))
    if not str(run_dir) or not (run_dir / "profile.toml").is_file():
        print(f"usage: python -m training.worker RUN_DIR (or set {RUN_DIR_ENV}); "
              f"no profile.toml in '{run_dir}'", file=sys.stderr)
        return 2
    paths = RunPaths(run_dir)
    profile = parse_profile(paths.profile.read_text(encoding="utf-8"), path=paths.profile)
    if profile.is_custom:
        print("this profile runs a custom script; training.worker runs built-in tasks only", file=sys.stderr)
        return 2
    T = profile.train
    mode = profile.launch.mode

    # ---- environment: ranks, device, process group --------------------------------------------
    ddp = mode == "ddp" and "RANK" in os.environ and "WORLD_SIZE" in os.environ
    rank = int(os.environ.get("RANK", 0)) if ddp else 0
    local_rank = int(os.environ.get("LOCAL_RANK", 0)) if ddp else 0
    world_size = int(os.environ.get("WORLD_SIZE", 1)) if ddp else 1
    is_main = rank == 0
    report.configure(run_dir, rank, heartbeat=False)  # the loop beats its own Heartbeat below
    notes: list[tuple[str, str]] = []  # (level, message), reported once the run is set up
    if mode == "ddp" and not ddp:
        notes.append(("warning", "ddp: not started by torchrun (no RANK/WORLD_SIZE); running as a single process"))

    signal.signal(signal.SIGTERM, _raise_terminated)
    paths.dumps.mkdir(parents=True, exist_ok=True, mode=0o700)
    dump_file = open(paths.dumps / f"rank-{rank}.txt", "a")
    faulthandler.register(signal.SIGUSR1, file=dump_file, all_threads=True, chain=False)

    device, backend, device_notes = choose_device(profile.hardware.gpus, profile.launch.backend, ddp, local_rank,
                                                  torch.cuda.device_count() if torch.cuda.is_available() else 0)
    notes.extend(device_notes)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.set_device(device)

    heartbeat = Heartbeat(run_dir, rank)
    heartbeat.beat(0, state="starting", force=True)
    step = 0
    epoch = 0
    try:
        if ddp:
            dist.init_process_group(backend=backend, rank=rank, world_size=world_size)

        # ---- task, data, model -----------------------------------------------------------------
        # Same seed on every rank for data and initial weights; seed + rank for everything after.
        torch.manual_seed(T.seed)
        task = load_task_module(T.task).build(profile.task_options(), T.seed)
        train_set, val_set = task.datasets()
        model: nn.Module = task.model()
        torch.manual_seed(T.seed + rank)
        random.seed(T.seed + rank)

        channels_last = T.channels_last and getattr(task, "uses_conv", False)
        if T.channels_last and not channels_last:
            notes.append(("info", f"channels_last ignored: task {T.task} has no conv layers"))
        model.to(device)
        if channels_last:
            _to_channels_last(model)

        amp_dtype = DTYPES.get(T.amp)
        if T.amp == "bf16" and (problem := worker_bf16_problem(device)):
            raise ValueError(problem)
        if T.amp == "fp16" and device.type != "cuda":
            notes.append(("info", "amp fp16 needs a GPU; running in fp32 on the CPU (bf16 works on CPU)"))
            amp_dtype = None
        scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype is torch.float16)

        def autocast():
            if amp_dtype is None:
                return contextlib.nullcontext()
            return torch.autocast(device_type=device.type, dtype=amp_dtype)

        # ---- resume state (weights before wrapping) ---------------------------------------------
        ckpt_files = CheckpointFiles(paths.checkpoints, keep_last=profile.checkpoint.keep_last)
        resume_from = None
        if ckpt_files.last.exists():
            resume_from = ckpt_files.last
        elif profile.checkpoint.resume:
            resume_from = Path(profile.checkpoint.resume)
        ckpt = None
        if resume_from is not None:
            ckpt = load_checkpoint(resume_from, map_location="cpu")
            load_model_weights(model, ckpt["model"])
            if ckpt.get("profile_digest") and ckpt["profile_digest"] != profile.digest():
                notes.append(("warning", f"{resume_from.name} was written with a different profile (digest "
                                         f"{ckpt['profile_digest']}, now {profile.digest()}); continuing "
                                         f"with the current profile"))

        # ---- wrap ----------------------------------------------------------------------------
        raw = model
        dp_ids: list[int] = []
        if ddp:
            model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
        elif mode == "dp":
            dp_ids, dp_notes = plan_dp(profile.hardware.gpus, torch.cuda.device_count() if cuda else 0,
                                       T.batch_size)
            notes.extend(dp_notes)
            if dp_ids:
                # The replicas run in threads of their own: autocast must be entered inside forward.
                inner = AutocastForward(model, device.type, amp_dtype) if amp_dtype is not None else model
                model = nn.DataParallel(inner, device_ids=dp_ids)

        if device.type == "cuda":
            heartbeat.devices = cuda_device_identities(dp_ids or [device.index])
            heartbeat.beat(step, state="starting", force=True)

        # Which autocast dtype every forward really ran in (each DP replica thread, each rank):
        # reported after the first step, then the hook is gone.
        autocast_probe = AutocastProbe(raw, expected=max(1, len(dp_ids))) if amp_dtype is not None \
            else None

        # ---- optimizer and schedule --------------------------------------------------------
        lr = T.lr
        if ddp and T.lr_scaling == "linear":
            lr = T.lr * world_size
        elif ddp and T.lr_scaling == "sqrt":
            lr = T.lr * math.sqrt(world_size)
        if lr != T.lr:
            notes.append(("info", f"lr scaled {T.lr_scaling} by world size {world_size}: {T.lr:g} -> {lr:g}"))
        params = [p for p in raw.parameters() if p.requires_grad]
        if T.optimizer == "sgd":
            optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=T.weight_decay)
        else:
            optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=T.weight_decay)

        # Per-rank data: DistributedSampler (shuffle per epoch via set_epoch) also for one process,
        # so the order is a function of (seed, epoch) and a resume can skip exactly what was done.
        train_sampler = DistributedSampler(train_set, num_replicas=world_size, rank=rank, shuffle=True,
                                           seed=T.seed, drop_last=True)
        micro_per_epoch = len(train_sampler) // T.batch_size
        steps_per_epoch = micro_per_epoch // T.grad_accum
        if T.steps_per_epoch:
            steps_per_epoch = min(steps_per_epoch, T.steps_per_epoch)
        if steps_per_epoch < 1:
            raise ValueError(f"the training set ({len(train_set)} samples, {len(train_sampler)} per rank) is too "
                             f"small for batch_size {T.batch_size} x grad_accum {T.grad_accum}; lower them")
        total_steps = T.epochs * steps_per_epoch
        val_indices = list(range(rank, len(val_set), world_size))  # no padding: exact val metrics
        workers = loader_workers(T.num_workers, device.type, mode, int(os.environ.get("LOCAL_WORLD_SIZE", 1)),
                                 os.cpu_count())
        loader_options = {"num_workers": workers, "persistent_workers": workers > 0,
                          "pin_memory": device.type == "cuda"}
        val_loader = DataLoader(val_set, batch_size=T.batch_size, sampler=val_indices, **loader_options)
        epoch_indices = EpochIndices()
        loader = DataLoader(train_set, batch_size=T.batch_size, sampler=epoch_indices, drop_last=True,
                            **loader_options)

        def lr_factor(done: int) -> float:
            if T.warmup_steps and done < T.warmup_steps:
                return (done + 1) / T.warmup_steps
            if T.schedule == "constant":
                return 1.0
            progress = min(1.0, (done - T.warmup_steps) / max(1, total_steps - T.warmup_steps))
            return MIN_LR_RATIO + (1 - MIN_LR_RATIO) * 0.5 * (1 + math.cos(math.pi * progress))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)

        start_epoch, start_epoch_step = 1, 0
        best_value: float | None = None
        monitor_name, monitor_mode = profile.monitor
        if ckpt is not None and ckpt.get("format"):
            if ckpt.get("optimizer") is not None:
                optimizer.load_state_dict(ckpt["optimizer"])
            if ckpt.get("scheduler") is not None:
                scheduler.load_state_dict(ckpt["scheduler"])
            if ckpt.get("scaler") is not None and scaler.is_enabled():
                scaler.load_state_dict(ckpt["scaler"])
            step = int(ckpt["step"])
            if ckpt.get("epoch_complete"):
                start_epoch, start_epoch_step = int(ckpt["epoch"]) + 1, 0
            else:
                start_epoch, start_epoch_step = int(ckpt["epoch"]), int(ckpt["epoch_step"])
            if ckpt.get("monitor", {}).get("name") == monitor_name:
                best_value = ckpt.get("best")
            rng = ckpt.get("rng") or []
            if rank < len(rng):
                restore_rng_state(rng[rank])
            else:  # a different world size: derive a fresh stream rather than copy rank 0's
                torch.manual_seed(T.seed + rank + 1000003 * step)
            notes.append(("info", f"resumed from {resume_from} at step {step} (epoch {start_epoch}, "
                                  f"{start_epoch_step} steps into it)"))
        elif ckpt is not None:
            notes.append(("info", f"loaded weights from {resume_from} (no training state in it)"))
        ckpt = None  # the optimizer/model hold their copies now

        # ---- reporting helpers -----------------------------------------------------------------
        control = ControlChannel(run_dir) if is_main else None
        dump_weights = os.environ.get("TRAINDECK_TEST_DUMP_WEIGHTS")
        step_delay = float(os.environ.get("TRAINDECK_TEST_STEP_DELAY_S") or 0)
        if is_main:
            remove_stale_temp_files(paths.checkpoints)

        def save(kinds: list[str], epoch_step: int, epoch_complete: bool, monitor_value: float | None = None) -> None:
            """Collective: every rank calls it at the same step. kinds: 'last', 'epoch', 'best'."""
            # A long write must not look like a hung step to the watchdog.
            heartbeat.beat(step, epoch=epoch, state="saving", force=True)
            rng_states = [capture_rng_state()]
            if ddp:
                rng_states = [None] * world_size
                dist.all_gather_object(rng_states, capture_rng_state())
            failure = ""
            if is_main:
                targets = [ckpt_files.last if k == "last" else ckpt_files.best if k == "best"
                           else ckpt_files.epoch_file(epoch) for k in kinds]
                state = make_checkpoint(model=raw, optimizer=optimizer, scaler=scaler, scheduler=scheduler,
                                        epoch=epoch, epoch_step=epoch_step, epoch_complete=epoch_complete,
                                        step=step, rng=rng_states, profile_digest=profile.digest(),
                                        task=T.task, world_size=world_size,
                                        monitor=(monitor_name, monitor_mode), monitor_value=monitor_value,
                                        best=best_value)
                try:
                    written = ckpt_files.write(serialize(state), targets)
                except CheckpointWriteError as exc:
                    failure = str(exc)
                    report.message(f"checkpoint write failed at step {step}: {exc}. The previous checkpoint "
                                   f"files are intact; free disk space and resume the run.", level="error")
                else:
                    for target, nbytes, seconds in written:
                        report.checkpoint(target, epoch=epoch, step=step, monitor=monitor_name,
                                          value=monitor_value, best=target == ckpt_files.best, bytes=nbytes,
                                          seconds=round(seconds, 3))
                    if "epoch" in kinds:
                        ckpt_files.prune()
            if ddp:  # every rank learns whether rank 0's write worked, so all exit together
                flag = torch.tensor([1.0 if failure else 0.0], device=device)
                dist.broadcast(flag, src=0)
                if flag.item() and not failure:
                    failure = "rank 0 could not write the checkpoint"
            if failure:
                raise CheckpointWriteError(failure)

        def handle_control(code: int, epoch_step: int, seq: int, paused: bool) -> bool:
            """Act on a control code all ranks agreed on; returns whether the run is now paused."""
            action = CODE_ACTIONS.get(code)
            if action in ("save", "save-stop"):
                save(["last"], epoch_step, epoch_complete=False)
                if action == "save":
                    report.message(f"saved checkpoints/last.pt at step {step} on request", control=action,
                                   seq=seq)
                    return paused
                report.message(f"saved step {step}; stopping on request", control=action, seq=seq)
                report.status("stopped", message=f"stopped on request after saving step {step}", step=step,
                              epoch=epoch)
                raise StopRequested()
            if action == "pause":
                report.message(f"{'already ' if paused else ''}paused at step {step}", control=action, seq=seq)
                return True
            if action == "resume":
                report.message(f"resumed at step {step}" if paused else f"not paused (step {step})",
                               control=action, seq=seq)
                return False
            return paused

        def read_control() -> tuple[int, int]:
            cmd = control.poll() if control is not None else None
            return (cmd.code, cmd.seq) if cmd is not None else (0, 0)

        def pause_loop(epoch_step: int, seq: int) -> None:
            """All ranks wait here; in DDP a cheap all-reduce every PAUSE_POLL_S keeps them in step."""
            paused = True
            while paused:
                heartbeat.beat(step, epoch=epoch, state="paused")
                time.sleep(PAUSE_POLL_S)
                code, seq = read_control()
                if ddp:
                    t = torch.tensor([float(code)], device=device)
                    dist.all_reduce(t)
                    code = int(round(t.item()))
                if code:
                    paused = handle_control(code, epoch_step, seq, paused=True)
            heartbeat.beat(step, epoch=epoch, state="training", force=True)

        def validate() -> dict[str, float]:
            eval_model = model if isinstance(model, nn.DataParallel) else raw  # DDP forward is for training
            heartbeat.beat(step, epoch=epoch, state="validating", force=True)
            raw.eval()
            totals: dict[str, torch.Tensor] = {}
            with torch.no_grad(), autocast():
                for batch in val_loader:
                    stats = task.val_stats(eval_model, _batch_to(batch, device, channels_last))
                    for k, v in stats.items():
                        v = v.detach().double()
                        totals[k] = totals[k] + v if k in totals else v
            raw.train()
            heartbeat.beat(step, epoch=epoch, state="training", force=True)
            totals = _all_reduce_dict(totals, ddp)
            return {k: float(v) for k, v in task.val_metrics(totals).items()}

        # ---- start ---------------------------------------------------------------------------
        for level, message in notes:
            report.message(message, level=level)
        world_desc = f"{world_size} x {device.type}" if ddp else f"{mode} on {device}"
        report.status("running", message=f"training {T.task}: {world_desc}, {T.epochs} epochs x "
                                         f"{steps_per_epoch} steps from step {step}",
                      world_size=world_size, device=str(device), backend=backend or None, epochs=T.epochs,
                      steps_per_epoch=steps_per_epoch, start_step=step, batch_size=T.batch_size,
                      amp=str(amp_dtype).replace("torch.", "") if amp_dtype is not None else "off",
                      grad_scaler=scaler.is_enabled(), dp_device_ids=dp_ids or None, num_workers=workers)
        samples_per_step = T.batch_size * T.grad_accum * world_size
        model.train()
        loss_sum = torch.zeros((), device=device)
        comp_sums: dict[str, torch.Tensor] = {}
        steps_since_log = 0
        t_log = time.monotonic()
        paused = False

        # ---- the loop ----------------------------------------------------------------------
        for epoch in range(start_epoch, T.epochs + 1):
            skip_steps = start_epoch_step if epoch == start_epoch else 0
            train_sampler.set_epoch(epoch)
            indices = list(train_sampler)[skip_steps * T.grad_accum * T.batch_size:]
            epoch_indices.indices = indices
            batches = iter(loader)
            t_epoch = time.monotonic()
            epoch_step = skip_steps
            while epoch_step < steps_per_epoch:
                for micro in range(T.grad_accum):
                    batch = _batch_to(next(batches), device, channels_last)
                    last_micro = micro == T.grad_accum - 1
                    sync = model.no_sync() if ddp and not last_micro else contextlib.nullcontext()
                    with sync:
                        with autocast():
                            loss, components = task.loss(model, batch)
                        scaler.scale(loss / T.grad_accum).backward()
                    loss_sum += loss.detach().float() / T.grad_accum
                    for k, v in components.items():
                        v = v.detach().float() / T.grad_accum
                        comp_sums[k] = comp_sums[k] + v if k in comp_sums else v
                if T.grad_clip:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(params, T.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
                step += 1
                epoch_step += 1
                steps_since_log += 1
                heartbeat.beat(step, epoch=epoch)
                if autocast_probe is not None:
                    autocast_probe.close()
                    report.message(f"rank {rank}: autocast in forward: " + ", ".join(
                        f"{dev} {'/'.join(dtypes)}" for dev, dtypes in autocast_probe.by_device().items()),
                        all_ranks=True, autocast=autocast_probe.by_device())
                    autocast_probe = None
                if step_delay:
                    time.sleep(step_delay)

                if step % T.log_every == 0:
                    # The one host sync of the interval: loss sums + the control code, all ranks.
                    code, seq = read_control()
                    names = sorted(comp_sums)
                    packed = torch.stack([loss_sum, *(comp_sums[k] for k in names),
                                          torch.tensor(float(code), device=device)]).double()
                    if ddp:
                        dist.all_reduce(packed)
                    values = packed.tolist()
                    code = int(round(values[-1]))
                    now = time.monotonic()
                    scale = 1.0 / (steps_since_log * world_size)
                    metrics = {"loss": values[0] * scale}
                    metrics.update({k: v * scale for k, v in zip(names, values[1:-1], strict=True)})
                    metrics["lr"] = scheduler.get_last_lr()[0]
                    metrics["samples_per_s"] = steps_since_log * samples_per_step / max(now - t_log, 1e-9)
                    report.log(step, epoch=epoch, **metrics)
                    loss_sum.zero_()
                    comp_sums = {}
                    steps_since_log = 0
                    if code:
                        paused = handle_control(code, epoch_step, seq, paused=False)
                        if paused:
                            pause_loop(epoch_step, seq)
                            paused = False
                    t_log = time.monotonic()

                if profile.checkpoint.every_steps and step % profile.checkpoint.every_steps == 0:
                    save(["last"], epoch_step, epoch_complete=False)

            # ---- end of epoch: validate, report, checkpoint --------------------------------
            epoch_seconds = time.monotonic() - t_epoch
            done_samples = (epoch_step - skip_steps) * samples_per_step
            val_metrics: dict[str, float] = {}
            if epoch % T.val_every == 0 or epoch == T.epochs:
                val_metrics = validate()
                report.log(step, epoch=epoch, split="val",
                           **{(k[4:] if k.startswith("val_") else k): v for k, v in val_metrics.items()})
            report.epoch(epoch, epochs=T.epochs, step=step, seconds=round(epoch_seconds, 3),
                         samples_per_s=round(done_samples / max(epoch_seconds, 1e-9), 1))
            monitor_value = val_metrics.get(monitor_name)
            if val_metrics and monitor_value is None and is_main and epoch == start_epoch:
                report.message(f"monitor '{monitor_name}' is not among the validation metrics "
                               f"({', '.join(val_metrics)}); best.pt is not written", level="warning")
            kinds = []
            every = profile.checkpoint.every_epochs
            if (every and epoch % every == 0) or epoch == T.epochs:
                kinds.append("last")
                if profile.checkpoint.keep_last:
                    kinds.append("epoch")
            if improved(monitor_value, best_value, monitor_mode):
                best_value = monitor_value
                kinds.append("best")
            if kinds:
                save(kinds, epoch_step, epoch_complete=True, monitor_value=monitor_value)
            t_log = time.monotonic()

        # ---- finish --------------------------------------------------------------------------
        epoch = min(max(epoch, start_epoch - 1), T.epochs)
        if is_main and profile.export.onnx:
            ok, message = _export(task, raw, run_dir / profile.export.path, profile.export.opset)
            report.message(message, level="info" if ok else "warning")
        if dump_weights:
            Path(dump_weights).mkdir(parents=True, exist_ok=True)
            torch.save(model_state(raw), Path(dump_weights) / f"rank-{rank}.pt")
        if is_main:
            report.message(f"training finished: {T.epochs} epochs, step {step}")
        heartbeat.beat(step, epoch=epoch, state="finished", force=True)
        return 0

    except StopRequested:
        heartbeat.beat(step, epoch=epoch, state="stopped", force=True)
        return 0
    except Terminated:
        heartbeat.beat(step, epoch=epoch, state="terminated", force=True)
        if is_main:
            report.message(f"SIGTERM received at step {step}; stopping without saving", level="warning")
        print(f"rank {rank}: SIGTERM received at step {step}; exiting", file=sys.stderr)
        return EXIT_SIGTERM
    except KeyboardInterrupt:
        print(f"rank {rank}: interrupted at step {step}", file=sys.stderr)
        return EXIT_SIGINT
    except CheckpointWriteError as exc:
        heartbeat.beat(step, epoch=epoch, state="failed", force=True)
        print(f"rank {rank}: error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        heartbeat.beat(step, epoch=epoch, state="failed", force=True)
        traceback.print_exc()
        if is_main:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            report.message(f"rank {rank} failed at step {step}: {type(exc).__name__}: {first}", level="error")
        return 1
    finally:
        # A second SIGTERM during cleanup kills at once rather than raising inside the teardown.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        report.flush()
        if dist.is_available() and dist.is_initialized():
            with contextlib.suppress(Exception):
                dist.destroy_process_group()
        faulthandler.unregister(signal.SIGUSR1)
        dump_file.close()


def _export(task, raw: nn.Module, path: Path, opset: int) -> tuple[bool, str]:
    from training.engine.export import export_onnx

    try:
        example = task.example_input()
    except Exception as exc:
        return False, f"ONNX export skipped: the task gave no example input ({exc})"
    return export_onnx(raw, example, path, opset=opset)


if __name__ == "__main__":
    from training.engine.fast_exit import exit_without_teardown

    exit_without_teardown(main())

"""The built-in training worker: one loop for single, dp and ddp.

Launch commands (the supervisor builds these; RUN_DIR may also come from $TRAINDECK_RUN_DIR):

    # ddp: one process per GPU (or per CPU slot on gloo), through torchrun
    python -m torch.distributed.run --nproc_per_node 2 --rdzv-backend static --node-rank 0 \
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

Test-only environment (never set by traindeck itself), read once at setup (training.engine.hooks):
    TRAINDECK_TEST_DUMP_WEIGHTS=DIR   each rank saves its final weights to DIR/rank-<rank>.pt
    TRAINDECK_TEST_STEP_DELAY_S=0.05  sleep this long after every optimizer step
    TRAINDECK_TEST_STEP_DELAY_RANK=1  ... on this rank only (a straggler)
    TRAINDECK_TEST_NAN_AT_STEP=40     the weights become NaN after step 40 (the health rules' tests)

The pieces: training.engine.rank_setup (environment, device, model, optimizer), .data (samplers and
loaders), .resume (checkpoint -> weights and training state), .trainer (the loop, validation,
checkpoints, control requests), .step_clock (the step anatomy), .flops (FLOPs per sample, once),
.hooks (the test-only hooks).
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import signal
import sys
import traceback
from pathlib import Path

import torch
import torch.distributed as dist

from traindeck.heartbeat import Heartbeat
from training import report
from training.engine.amp import AutocastProbe
from training.engine.checkpoint import CheckpointFiles, CheckpointWriteError
from training.engine.cuda_fit import CudaUnusable
from training.engine.data import make_data
from training.engine.flops import count_flops_per_sample
from training.engine.hooks import Hooks
from training.engine.rank_setup import (
    Environment,
    build_task,
    choose_precision,
    cuda_device_identities,
    make_optimizer,
    make_scheduler,
    place_model,
    read_environment,
    wrap_model,
)
from training.engine.resume import load_resume_weights, restore_training_state
from training.engine.trainer import StopRequested, Trainer
from training.profile import parse_profile
from training.rundir import RUN_DIR_ENV, RunPaths

EXIT_SIGINT = 130
EXIT_SIGTERM = 143


class Terminated(BaseException):
    """SIGTERM arrived: abandon the step and leave (BaseException so no `except Exception` eats it)."""


def _raise_terminated(signum, frame):
    raise Terminated()


def build_trainer(profile, paths: RunPaths, env: Environment, heartbeat: Heartbeat) -> Trainer:
    """Task -> model on the device -> resume weights -> wrap -> optimizer, data, schedule ->
    resume the training state. Every rank builds the same; notes are reported by rank 0 later."""
    T, notes = profile.train, env.notes
    task, train_set, val_set, model = build_task(profile, env.rank)
    channels_last = place_model(model, task, T, env.device, notes)
    precision = choose_precision(T, env.device, notes)

    ckpt_files = CheckpointFiles(paths.checkpoints, keep_last=profile.checkpoint.keep_last)
    resumed = load_resume_weights(model, profile, ckpt_files, notes)  # before wrapping

    # FLOPs of one sample, counted once on the unwrapped model (before DDP's hooks are on it).
    flops, flops_note = (count_flops_per_sample(task, model, train_set, env.device, channels_last)
                         if env.rank == 0 else (None, ""))
    raw = model  # what is checkpointed and exported; the loop calls the wrapper (DDP, DataParallel)
    model, dp_ids = wrap_model(raw, profile, env, precision, notes)
    if env.device.type == "cuda":
        heartbeat.devices = cuda_device_identities(dp_ids or [env.device.index])
        heartbeat.beat(0, state="starting", force=True)
    # Which autocast dtype every forward really ran in: reported after the first step.
    probe = AutocastProbe(raw, expected=max(1, len(dp_ids))) if precision.dtype is not None else None

    optimizer, params = make_optimizer(raw, T, env, notes)
    data = make_data(train_set, val_set, T, env.mode, env.device, env.rank, env.world_size)
    scheduler = make_scheduler(optimizer, T, T.epochs * data.steps_per_epoch)
    start = restore_training_state(resumed, optimizer, scheduler, precision.scaler, profile, env.rank, notes)
    del resumed  # the model and the optimizer hold their copies now

    return Trainer(profile=profile, paths=paths, env=env, heartbeat=heartbeat, task=task, model=model, raw=raw,
                   dp_ids=dp_ids, precision=precision, channels_last=channels_last, optimizer=optimizer,
                   params=params, scheduler=scheduler, data=data, ckpt_files=ckpt_files, start=start,
                   autocast_probe=probe, hooks=Hooks.from_environ(), notes=notes, flops_per_sample=flops,
                   flops_note=flops_note)


def _read_profile(argv: list[str] | None):
    """(paths, profile), or None after printing why this is not a run the worker can train."""
    argv = sys.argv[1:] if argv is None else argv
    run_dir = Path(argv[0] if argv else os.environ.get(RUN_DIR_ENV, ""))
    if not str(run_dir) or not (run_dir / "profile.toml").is_file():
        print(f"usage: python -m training.worker RUN_DIR (or set {RUN_DIR_ENV}); "
              f"no profile.toml in '{run_dir}'", file=sys.stderr)
        return None
    paths = RunPaths(run_dir)
    profile = parse_profile(paths.profile.read_text(encoding="utf-8"), path=paths.profile)
    if profile.is_custom:
        print("this profile runs a custom script; training.worker runs built-in tasks only", file=sys.stderr)
        return None
    return paths, profile


def main(argv: list[str] | None = None) -> int:
    read = _read_profile(argv)
    if read is None:
        return 2
    paths, profile = read

    # ---- environment: ranks, device; rank 0 does the run directory's I/O ----------------------
    env = read_environment(profile)
    rank = env.rank
    is_main = rank == 0
    report.configure(paths.root, rank, heartbeat=False)  # the loop beats its own Heartbeat below
    signal.signal(signal.SIGTERM, _raise_terminated)
    paths.dumps.mkdir(parents=True, exist_ok=True, mode=0o700)
    dump_file = open(paths.dumps / f"rank-{rank}.txt", "a")
    faulthandler.register(signal.SIGUSR1, file=dump_file, all_threads=True, chain=False)
    if env.device.type == "cuda":
        torch.cuda.set_device(env.device)
    heartbeat = Heartbeat(paths.root, rank)
    heartbeat.beat(0, state="starting", force=True)

    trainer: Trainer | None = None
    clean = False  # finished or stopped with every rank together: the only exits that destroy the group
    try:
        if env.cuda_problem:  # a GPU profile never trains on the CPU without a word
            raise CudaUnusable(env.cuda_problem)
        if env.ddp:
            dist.init_process_group(backend=env.backend, rank=rank, world_size=env.world_size)
        trainer = build_trainer(profile, paths, env, heartbeat)
        code = trainer.run()
        clean = True
        return code
    except StopRequested:
        clean = True
        step, epoch = _position(trainer)
        heartbeat.beat(step, epoch=epoch, state="stopped", force=True)
        return 0
    except Terminated:
        step, epoch = _position(trainer)
        heartbeat.beat(step, epoch=epoch, state="terminated", force=True)
        if is_main:
            report.message(f"SIGTERM received at step {step}; stopping without saving", level="warning")
        print(f"rank {rank}: SIGTERM received at step {step}; exiting", file=sys.stderr)
        return EXIT_SIGTERM
    except KeyboardInterrupt:
        print(f"rank {rank}: interrupted at step {_position(trainer)[0]}", file=sys.stderr)
        return EXIT_SIGINT
    except CheckpointWriteError as exc:
        step, epoch = _position(trainer)
        heartbeat.beat(step, epoch=epoch, state="failed", force=True)
        print(f"rank {rank}: error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        step, epoch = _position(trainer)
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
        leave_process_group(clean)
        faulthandler.unregister(signal.SIGUSR1)
        dump_file.close()


def leave_process_group(clean: bool) -> None:
    """Destroy the process group after a clean end; abort it after a failure.

    A failing rank's peers may sit in an NCCL all-reduce: NCCL's orderly shutdown can need every
    rank, so destroying the group here would wait for NCCL's timeout (10 minutes) instead of
    letting torchrun see the failure in seconds. Abort where torch can (NCCL); otherwise leave the
    group as it is, the process exits next."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    if clean:
        with contextlib.suppress(Exception):
            # Every rank leaves together: torch's gloo aborts a rank (std::terminate, no traceback)
            # that destroys the group while a peer still uses it, as rank 0 does while it writes.
            dist.barrier()
        with contextlib.suppress(Exception):
            dist.destroy_process_group()
        return
    if dist.get_backend() != "nccl":
        return  # gloo: nothing to abort, and its sockets close with the process
    from torch.distributed import distributed_c10d

    abort = getattr(distributed_c10d, "_abort_process_group", None)
    if abort is not None:
        with contextlib.suppress(Exception):
            abort()


def _position(trainer: Trainer | None) -> tuple[int, int]:
    """(step, epoch) for the exit's heartbeat and messages; (0, 0) before training was set up."""
    return (trainer.step, trainer.epoch) if trainer is not None else (0, 0)


if __name__ == "__main__":
    from training.engine.fast_exit import exit_without_teardown

    exit_without_teardown(main())

"""Resuming: which checkpoint (RUN_DIR/checkpoints/last.pt, else [checkpoint] resume), its weights
before the model is wrapped, then the training state (optimizer, schedule, scaler, position, best
value, each rank's RNG) once those exist."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from training.engine.checkpoint import CheckpointFiles, load_checkpoint, load_model_weights, restore_rng_state
from training.engine.rank_setup import Notes


@dataclass
class Resumed:
    """A checkpoint read for resuming; dropped once the model and the optimizer hold their copies."""

    path: Path
    ckpt: dict


@dataclass
class StartPoint:
    """Where training starts: global step, epoch (1-based), steps already done in it, best value."""

    step: int = 0
    epoch: int = 1
    epoch_step: int = 0
    best: float | None = None


def resume_source(ckpt_files: CheckpointFiles, profile) -> Path | None:
    """The run's own last.pt (a resumed run, a torchrun restart), else [checkpoint] resume."""
    if ckpt_files.last.exists():
        return ckpt_files.last
    if profile.checkpoint.resume:
        return Path(profile.checkpoint.resume)
    return None


def load_resume_weights(model: torch.nn.Module, profile, ckpt_files: CheckpointFiles,
                        notes: Notes) -> Resumed | None:
    """Load the resume checkpoint's weights into the (unwrapped) model; None when starting fresh."""
    path = resume_source(ckpt_files, profile)
    if path is None:
        return None
    ckpt = load_checkpoint(path, map_location="cpu")
    load_model_weights(model, ckpt["model"])
    if ckpt.get("profile_digest") and ckpt["profile_digest"] != profile.digest():
        notes.append(("warning", f"{path.name} was written with a different profile (digest "
                                 f"{ckpt['profile_digest']}, now {profile.digest()}); continuing "
                                 f"with the current profile"))
    return Resumed(path, ckpt)


def restore_training_state(resumed: Resumed | None, optimizer, scheduler, scaler, profile, rank: int,
                           notes: Notes) -> StartPoint:
    """The optimizer, schedule, scaler and this rank's RNG from a full checkpoint; the position to
    start from. A weights-only file (no "format") starts at step 0 with its weights."""
    if resumed is None:
        return StartPoint()
    ckpt = resumed.ckpt
    if not ckpt.get("format"):
        notes.append(("info", f"loaded weights from {resumed.path} (no training state in it)"))
        return StartPoint()
    if ckpt.get("optimizer") is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
    if ckpt.get("scheduler") is not None:
        scheduler.load_state_dict(ckpt["scheduler"])
    if ckpt.get("scaler") is not None and scaler.is_enabled():
        scaler.load_state_dict(ckpt["scaler"])
    start = StartPoint(step=int(ckpt["step"]))
    if ckpt.get("epoch_complete"):
        start.epoch, start.epoch_step = int(ckpt["epoch"]) + 1, 0
    else:
        start.epoch, start.epoch_step = int(ckpt["epoch"]), int(ckpt["epoch_step"])
    if ckpt.get("monitor", {}).get("name") == profile.monitor[0]:
        start.best = ckpt.get("best")
    rng = ckpt.get("rng") or []
    if rank < len(rng):
        restore_rng_state(rng[rank])
    else:  # a different world size: derive a fresh stream rather than copy rank 0's
        torch.manual_seed(profile.train.seed + rank + 1000003 * start.step)
    notes.append(("info", f"resumed from {resumed.path} at step {start.step} (epoch {start.epoch}, "
                          f"{start.epoch_step} steps into it)"))
    return start

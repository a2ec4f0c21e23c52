"""Per-rank data: the samplers and DataLoaders one run keeps for its whole life, and moving a
batch onto the device (channels_last for conv nets)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from training.cpus import usable_cpus

# channels_last is defined for 4-D tensors (Conv2d) and channels_last_3d for 5-D ones (Conv3d);
# `model.to(memory_format=torch.channels_last)` raises on a Conv3d weight.
_CHANNELS_LAST = {4: torch.channels_last, 5: torch.channels_last_3d}


def _batch_to(batch, device, channels_last: bool):
    out = []
    for i, t in enumerate(batch):
        t = t.to(device, non_blocking=True)
        # Inputs only (the target is last); float images/clips benefit from NHWC/NDHWC in conv nets.
        if channels_last and i < len(batch) - 1 and t.dim() in _CHANNELS_LAST and t.is_floating_point():
            t = t.contiguous(memory_format=_CHANNELS_LAST[t.dim()])
        out.append(t)
    return tuple(out)


def _to_channels_last(model: nn.Module) -> None:
    for param in model.parameters():
        if param.dim() in _CHANNELS_LAST:
            param.data = param.data.contiguous(memory_format=_CHANNELS_LAST[param.dim()])


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


@dataclass
class Data:
    """This rank's share of the data. `start_epoch` points the train loader at one epoch's indices,
    skipping the steps a resumed run already did."""

    train_sampler: DistributedSampler
    epoch_indices: EpochIndices
    loader: DataLoader
    val_loader: DataLoader
    steps_per_epoch: int
    num_workers: int

    def start_epoch(self, epoch: int, skip_samples: int):
        self.train_sampler.set_epoch(epoch)
        self.epoch_indices.indices = list(self.train_sampler)[skip_samples:]
        return iter(self.loader)


def make_data(train_set, val_set, T, mode: str, device: torch.device, rank: int, world_size: int) -> Data:
    """Per-rank data: DistributedSampler (shuffle per epoch via set_epoch) also for one process, so
    the order is a function of (seed, epoch) and a resume can skip exactly what was done."""
    train_sampler = DistributedSampler(train_set, num_replicas=world_size, rank=rank, shuffle=True,
                                       seed=T.seed, drop_last=True)
    micro_per_epoch = len(train_sampler) // T.batch_size
    steps_per_epoch = micro_per_epoch // T.grad_accum
    if T.steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, T.steps_per_epoch)
    if steps_per_epoch < 1:
        raise ValueError(f"the training set ({len(train_set)} samples, {len(train_sampler)} per rank) is too "
                         f"small for batch_size {T.batch_size} x grad_accum {T.grad_accum}; lower them")
    val_indices = list(range(rank, len(val_set), world_size))  # no padding: exact val metrics
    workers = loader_workers(T.num_workers, device.type, mode, int(os.environ.get("LOCAL_WORLD_SIZE", 1)),
                             usable_cpus())
    loader_options = {"num_workers": workers, "persistent_workers": workers > 0,
                      "pin_memory": device.type == "cuda"}
    val_loader = DataLoader(val_set, batch_size=T.batch_size, sampler=val_indices, **loader_options)
    epoch_indices = EpochIndices()
    loader = DataLoader(train_set, batch_size=T.batch_size, sampler=epoch_indices, drop_last=True,
                        **loader_options)
    return Data(train_sampler, epoch_indices, loader, val_loader, steps_per_epoch, workers)

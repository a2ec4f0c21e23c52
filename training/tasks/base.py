"""The contract between the worker and a built-in workload.

A task module exposes `build(options: dict, seed: int) -> Task`. The worker owns devices,
wrapping (DDP/DP), AMP, the optimizer and checkpoints; the task owns data, model and what
its losses and validation metrics mean. Everything is synthetic, generated in-process from
the seed with a planted signal, so every rank builds identical datasets without a download.

Validation is written for DDP: `val_stats` returns *sums* over a batch (loss sums, counts,
per-class tp/fp/fn ...) as tensors; the worker adds them up over batches and all-reduces
them over ranks, then `val_metrics` turns the totals into numbers such as val_loss or val_f1.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn
from torch.utils.data import Dataset


class Task(Protocol):
    name: str
    # True for conv models where channels_last memory format helps.
    uses_conv: bool

    def datasets(self) -> tuple[Dataset, Dataset]:
        """(train, val); items are tuples of tensors (inputs..., target)."""

    def model(self) -> nn.Module:
        """A fresh model. The worker moves it to the device and wraps it."""

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(total loss to backprop, components) for a batch already on the device.

        Components are detached scalars such as {"loss/conflict": ..., "loss/entropy": ...};
        the worker reports the total as "loss" and each component under its own name.
        """

    def val_stats(self, model: nn.Module, batch: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        """Additive statistics of one validation batch (sums and counts, not means)."""

    def val_metrics(self, totals: dict[str, torch.Tensor]) -> dict[str, float]:
        """Metrics from the summed statistics, named val_* (val_loss always present)."""

    def example_input(self, batch_size: int = 1) -> tuple[torch.Tensor, ...]:
        """Inputs for tracing/ONNX export, shaped like one batch of model inputs."""

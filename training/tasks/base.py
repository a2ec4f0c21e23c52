"""The contract between the worker and a built-in workload, and how a task declares its options.

A task module exposes `build(options: dict, seed: int) -> Task`. The worker owns devices,
wrapping (DDP/DP), AMP, the optimizer and checkpoints; the task owns data, model and what
its losses and validation metrics mean. Everything is synthetic, generated in-process from
the seed with a planted signal, so every rank builds identical datasets without a download.

Validation is written for DDP: `val_stats` returns *sums* over a batch (loss sums, counts,
per-class tp/fp/fn ...) as tensors; the worker adds them up over batches and all-reduces
them over ranks, then `val_metrics` turns the totals into numbers such as val_loss or val_f1.

Options: each task declares its `[task]` options once, as `Option`s in its registry entry
(training/tasks/__init__.py): name, default (whose type is the option's type), bounds or
choices, one line of help. The profile loader checks a profile's `[task]` table against them
(naming file and line); `TaskSpec.resolve` applies the same declaration when a task is built,
so a task reads its options and checks none of them itself. This module imports no torch: the
console loads profiles without it.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch
    from torch import nn
    from torch.utils.data import Dataset


class Task(Protocol):
    name: str
    # True for conv models where channels_last memory format helps.
    uses_conv: bool
    # Optional: the tokens (sequence positions) one sample holds, for tokens/s beside samples/s;
    # a task without the attribute has no tokens (training.rundir.step_anatomy.throughput).
    # tokens_per_sample: int

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


class OptionError(ValueError):
    """A task option is unknown or its value is wrong; str() reads after the option's name
    ("is 0; it must be >= 1 (...)"), so the profile can put file, line and key before it."""


_TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


@dataclass(frozen=True)
class Option:
    """One `[task]` option: its type is its default's (int, float, bool or str)."""

    name: str
    default: Any
    help: str
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] = ()

    @property
    def type(self) -> type:
        return type(self.default)

    def check(self, value: Any) -> Any:
        """`value` as this option's type (an int is a float where a float is wanted), or OptionError."""
        tp = self.type
        if tp is float and isinstance(value, int) and not isinstance(value, bool):
            try:
                value = float(value)
            except OverflowError:  # an int beyond a double
                raise OptionError("is too large; it must be a finite number.") from None
        if type(value) is not tp:
            shown = "a table" if isinstance(value, dict) else repr(value)
            raise OptionError(f"must be {_TYPE_NAMES[tp]}, not {shown}. Write it as {_TYPE_NAMES[tp]}"
                              + (f", one of {', '.join(self.choices)}." if self.choices else "."))
        if tp is float and not math.isfinite(value):
            raise OptionError(f"is {value}; it must be a finite number.")
        if self.choices and value not in self.choices:
            close = difflib.get_close_matches(value, self.choices, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise OptionError(f"is '{value}', which is not one of {', '.join(self.choices)}.{hint}")
        if self.min is not None and value < self.min:
            raise OptionError(f"is {value}; it must be >= {self.min} ({self.help}).")
        if self.max is not None and value > self.max:
            raise OptionError(f"is {value}; it must be <= {self.max} ({self.help}).")
        return value


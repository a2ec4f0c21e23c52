"""tiny: a small MLP on a planted linear-plus-noise classification signal.

The labels are argmax(x @ W + noise) for a hidden W drawn from the seed, so an MLP can recover
the signal and the loss falls within a few hundred steps; the data is a few hundred kilobytes
and is materialized once, which keeps the cpu profile well under a minute on two cores.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from training.tasks.synthetic import SyntheticTask


def _split_sizes(total: int) -> tuple[int, int]:
    val = max(1, total // 8)
    return max(1, total - val), val


class MLP(nn.Module):
    def __init__(self, features: int, hidden: int, classes: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(features, hidden), nn.GELU(),
            nn.Linear(hidden, hidden), nn.GELU(),
            nn.Linear(hidden, classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TinyTask(SyntheticTask):
    name = "tiny"
    uses_conv = False

    def make_datasets(self) -> tuple[TensorDataset, TensorDataset]:
        """Generated at once: a few hundred kilobytes."""
        g = torch.Generator().manual_seed(self.seed)
        # Columns scaled by 1/sqrt(features) keep the planted logits at unit scale whatever the
        # width, so `noise` means the same thing for every feature count.
        weight = torch.randn(self.features, self.classes, generator=g) / self.features ** 0.5
        x = torch.randn(self.samples, self.features, generator=g)
        logits = x @ weight + self.noise * torch.randn(self.samples, self.classes, generator=g)
        y = logits.argmax(dim=1)
        n_train, _ = _split_sizes(self.samples)
        return TensorDataset(x[:n_train], y[:n_train]), TensorDataset(x[n_train:], y[n_train:])

    def model(self) -> nn.Module:
        return MLP(self.features, self.hidden, self.classes)

    def loss(self, model, batch):
        x, y = batch
        return F.cross_entropy(model(x).float(), y), {}

    def val_stats(self, model, batch):
        x, y = batch
        logits = model(x).float()
        return {
            "loss_sum": F.cross_entropy(logits, y, reduction="sum"),
            "correct": (logits.argmax(dim=1) == y).sum(),
            "count": torch.tensor(y.shape[0], device=y.device),
        }

    def val_metrics(self, totals):
        count = max(float(totals["count"]), 1.0)
        return {"val_loss": float(totals["loss_sum"]) / count, "val_acc": float(totals["correct"]) / count}

    def example_input(self, batch_size: int = 1):
        return (torch.zeros(batch_size, self.features),)


def build(options: dict, seed: int) -> TinyTask:
    return TinyTask(options, seed)

"""A minimal task for the engine tests, used only while training/tasks/tiny.py is not there.

It follows training/tasks/base.py: a planted linear signal, an MLP, cross-entropy with a
second reported component, and additive validation statistics.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import TensorDataset


class EngineTask:
    name = "tiny"
    uses_conv = False

    def __init__(self, options: dict, seed: int):
        self.o = options
        g = torch.Generator().manual_seed(seed)
        n, f, c = options["samples"], options["features"], options["classes"]
        x = torch.randn(n, f, generator=g)
        w = torch.randn(f, c, generator=g)
        y = (x @ w + options["noise"] * torch.randn(n, c, generator=g)).argmax(1)
        cut = n * 4 // 5
        self._train = TensorDataset(x[:cut], y[:cut])
        self._val = TensorDataset(x[cut:], y[cut:])

    def datasets(self):
        return self._train, self._val

    def model(self) -> nn.Module:
        o = self.o
        return nn.Sequential(nn.Linear(o["features"], o["hidden"]), nn.ReLU(), nn.Linear(o["hidden"], o["classes"]))

    def loss(self, model, batch):
        x, y = batch
        logits = model(x)
        ce = nn.functional.cross_entropy(logits, y)
        reg = 1e-4 * logits.pow(2).mean()
        return ce + reg, {"loss/ce": ce.detach(), "loss/reg": reg.detach()}

    def val_stats(self, model, batch):
        x, y = batch
        logits = model(x)
        return {"loss_sum": nn.functional.cross_entropy(logits.float(), y, reduction="sum"),
                "correct": (logits.argmax(1) == y).sum().double(),
                "count": torch.tensor(float(len(y)), dtype=torch.float64)}

    def val_metrics(self, totals):
        count = max(float(totals["count"]), 1.0)
        return {"val_loss": float(totals["loss_sum"]) / count, "val_acc": float(totals["correct"]) / count}

    def example_input(self, batch_size: int = 1):
        return (torch.randn(batch_size, self.o["features"]),)


def build(options: dict, seed: int) -> EngineTask:
    return EngineTask(options, seed)

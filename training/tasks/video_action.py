"""video-action: a 3D CNN that recognizes planted motion patterns in short clips.

Each clip ([3, frames, size, size], channels first for Conv3d) shows a Gaussian blob moving in
a class-specific direction (class k moves at angle 2*pi*k/classes) across about half the frame,
next to a static distractor blob of the same size and random colour, plus pixel noise. A single
frame says nothing about the class; the motion does, so the network has to use time.

Class frequencies are geometric: p_k proportional to imbalance^(-k/(classes-1)), so the most
frequent class is `imbalance` times the least frequent. With class_weights, cross-entropy
weighs class k by 1/(classes * p_k) (inverse frequency, scaled so that the average weight
over the data is 1, which keeps the loss on the same scale as the unweighted one). Validation
uses the same weighted loss (sum of w*l over sum of w), accuracy, and macro F1 computed from
summed per-class tp/fp/fn, so every number is exact after the DDP all-reduce.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from training.tasks.synthetic import SyntheticTask, item_generator

NOISE = 0.4
TRAVEL = 0.5  # of the frame side, over the whole clip
def class_frequencies(classes: int, imbalance: float) -> torch.Tensor:
    ratio = imbalance ** (-torch.arange(classes, dtype=torch.float64) / max(classes - 1, 1))
    return (ratio / ratio.sum()).float()


def conv_bn(cin: int, cout: int, stride: tuple[int, int, int]) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm3d(cout), nn.ReLU())


class Video3DCNN(nn.Module):
    def __init__(self, width: int, classes: int):
        super().__init__()
        # Space is downsampled first and time last: clips are short, and a 3x3x3 kernel only
        # sees motion of about one pixel per frame, so the blob's per-frame step has to shrink
        # (spatial stride) before temporal resolution is given up.
        self.features = nn.Sequential(
            conv_bn(3, width, (1, 2, 2)),
            conv_bn(width, 2 * width, (1, 2, 2)),
            conv_bn(2 * width, 2 * width, (1, 1, 1)),
            conv_bn(2 * width, 4 * width, (2, 2, 2)),
        )
        self.classifier = nn.Linear(4 * width, classes)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        """clip [B, 3, T, H, W] -> logits [B, classes]."""
        return self.classifier(self.features(clip).mean(dim=(2, 3, 4)))


class VideoActionTask(SyntheticTask):
    name = "video-action"
    uses_conv = True

    def __init__(self, options: dict, seed: int):
        super().__init__(options, seed)
        self.frequencies = class_frequencies(self.classes, self.imbalance)
        self._cumulative = self.frequencies.double().cumsum(0)
        self.weights = (1.0 / (self.classes * self.frequencies) if self.class_weights
                        else torch.ones(self.classes))

    # -- data ---------------------------------------------------------------------------------

    def _blob(self, centres: torch.Tensor, sigma: float) -> torch.Tensor:
        """Gaussian blobs at centres [T, 2] (x, y in pixels) -> [T, S, S]."""
        grid = torch.arange(self.size, dtype=torch.float32)
        gx = torch.exp(-((grid[None, :] - centres[:, :1]) ** 2) / (2 * sigma ** 2))
        gy = torch.exp(-((grid[None, :] - centres[:, 1:]) ** 2) / (2 * sigma ** 2))
        return gy[:, :, None] * gx[:, None, :]

    def item(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = item_generator(self.seed, index)
        u = torch.rand(1, generator=g, dtype=torch.float64)
        label = min(int(torch.searchsorted(self._cumulative, u)), self.classes - 1)
        angle = 2 * math.pi * label / self.classes
        direction = torch.tensor([math.cos(angle), math.sin(angle)])
        s = self.size
        sigma = max(1.0, s / 12)
        mid = s / 2 + (torch.rand(2, generator=g) - 0.5) * 0.3 * s
        progress = torch.linspace(-0.5, 0.5, self.frames)[:, None]
        moving = self._blob(mid + progress * TRAVEL * s * direction, sigma)
        still = self._blob((0.15 * s + torch.rand(1, 2, generator=g) * 0.7 * s).expand(self.frames, 2), sigma)
        colours = 0.5 + 0.5 * torch.rand(2, 3, generator=g)
        noise = torch.empty(3, self.frames * s * s).normal_(0.0, NOISE, generator=g)
        # one addmm paints both coloured blobs onto the noise: a full-size clip is 600k values
        # and elementwise broadcasting would make several temporaries of that size
        clip = torch.addmm(noise, colours.T, torch.stack([moving, still]).view(2, -1))
        return clip.view(3, self.frames, s, s), torch.tensor(label)

    # -- model and metrics --------------------------------------------------------------------

    def model(self) -> nn.Module:
        return Video3DCNN(self.width, self.classes)

    def loss(self, model, batch):
        clip, label = batch
        logits = model(clip).float()
        return F.cross_entropy(logits, label, weight=self.weights.to(logits.device)), {}

    def val_stats(self, model, batch):
        clip, label = batch
        logits = model(clip).float()
        weight = self.weights.to(logits.device)[label]
        predicted = F.one_hot(logits.argmax(dim=1), self.classes)
        actual = F.one_hot(label, self.classes)
        tp = (predicted * actual).sum(dim=0)
        return {
            "loss_sum": (F.cross_entropy(logits, label, reduction="none") * weight).sum(),
            "weight_sum": weight.sum(),
            "count": torch.tensor(float(label.shape[0]), device=label.device),
            "correct": tp.sum(),
            "tp": tp,
            "fp": predicted.sum(dim=0) - tp,
            "fn": actual.sum(dim=0) - tp,
        }

    def val_metrics(self, totals):
        tp, fp, fn = (totals[k].double() for k in ("tp", "fp", "fn"))
        # Classes that never occur and are never predicted have no F1; leave them out of the
        # macro average instead of counting them as 0 or 1.
        present = (tp + fp + fn) > 0
        f1 = 2 * tp / (2 * tp + fp + fn).clamp(min=1)
        return {
            "val_loss": float(totals["loss_sum"]) / max(float(totals["weight_sum"]), 1e-12),
            "val_acc": float(totals["correct"]) / max(float(totals["count"]), 1.0),
            "val_f1": float(f1[present].mean()) if bool(present.any()) else 0.0,
        }

    def example_input(self, batch_size: int = 1):
        return (torch.zeros(batch_size, 3, self.frames, self.size, self.size),)


def build(options: dict, seed: int) -> VideoActionTask:
    return VideoActionTask(options, seed)

"""image-classifier: ResNet-style classifiers on images with a planted class pattern.

Every class owns an oriented sinusoidal grating (orientation, spatial frequency) and a colour;
an image is its class's grating at a random phase and contrast, plus Gaussian pixel noise.
Orientations are spread over up to 8 angles and frequencies over as many levels as needed, so
classes differ in structure even at 100 classes; the colour is drawn from the seed.

Depths: "tiny" (1 basic block per stage, 2 stages), "resnet18" (basic blocks [2, 2, 2, 2]),
"resnet50" (bottleneck blocks [3, 4, 6, 3], expansion 4); stage s has width * 2^s channels
(times 4 at a bottleneck's output). The stem adapts to the image size the usual way: a 3x3
stride-1 conv below 64 pixels (CIFAR style), stride 2 up to 128, and the ImageNet 7x7 stride-2
conv plus max pool from 128 up, so stage 1 always works at a moderate resolution.

Items are (image [3, size, size], label); loss is cross-entropy.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from training.tasks.synthetic import SyntheticTask, item_generator, seed_generator

NOISE = 0.6
ORIENTATIONS = 8
# -- ResNet -----------------------------------------------------------------------------------


def conv_bn(cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False),
                         nn.BatchNorm2d(cout))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = conv_bn(cin, planes, 3, stride)
        self.conv2 = conv_bn(planes, planes, 3)
        self.shortcut = conv_bn(cin, planes, 1, stride) if stride != 1 or cin != planes else nn.Identity()
        # zero-init the last BN so every block starts as the identity (Goyal et al., 2017)
        nn.init.zeros_(self.conv2[1].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.shortcut(x) + self.conv2(F.relu(self.conv1(x))))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int):
        super().__init__()
        cout = planes * self.expansion
        self.conv1 = conv_bn(cin, planes, 1)
        self.conv2 = conv_bn(planes, planes, 3, stride)  # stride on the 3x3 (ResNet v1.5)
        self.conv3 = conv_bn(planes, cout, 1)
        self.shortcut = conv_bn(cin, cout, 1, stride) if stride != 1 or cin != cout else nn.Identity()
        nn.init.zeros_(self.conv3[1].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.conv2(F.relu(self.conv1(x))))
        return F.relu(self.shortcut(x) + self.conv3(y))


ARCHITECTURES: dict[str, tuple[type[nn.Module], tuple[int, ...]]] = {
    "tiny": (BasicBlock, (1, 1)),
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
}


class ResNet(nn.Module):
    def __init__(self, depth: str, width: int, classes: int, size: int):
        super().__init__()
        block, counts = ARCHITECTURES[depth]
        if size >= 128:
            self.stem = nn.Sequential(conv_bn(3, width, 7, 2), nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        else:
            self.stem = nn.Sequential(conv_bn(3, width, 3, 2 if size >= 64 else 1), nn.ReLU())
        stages, cin = [], width
        for stage, count in enumerate(counts):
            planes = width * 2 ** stage
            for i in range(count):
                stages.append(block(cin, planes, 2 if stage > 0 and i == 0 else 1))
                cin = planes * block.expansion
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(cin, classes)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """image [B, 3, H, W] -> logits [B, classes]."""
        return self.fc(self.stages(self.stem(image)).mean(dim=(2, 3)))


# -- task -------------------------------------------------------------------------------------


class ImageClassifierTask(SyntheticTask):
    name = "image-classifier"
    uses_conv = True

    def __init__(self, options: dict, seed: int):
        super().__init__(options, seed)
        orientations = min(self.classes, ORIENTATIONS)
        levels = math.ceil(self.classes / orientations)
        k = torch.arange(self.classes)
        self.angles = math.pi * (k % orientations).float() / orientations
        # 1.5 to 6 cycles per image, whatever the image size
        self.frequencies = 1.5 + 4.5 * (k // orientations).float() / max(levels - 1, 1)
        planted = seed_generator(seed)
        self.colours = F.normalize(0.2 + torch.rand(self.classes, 3, generator=planted), dim=1) * math.sqrt(3)
        coords = (torch.arange(self.size, dtype=torch.float32) + 0.5) / self.size
        self.grid_y, self.grid_x = torch.meshgrid(coords, coords, indexing="ij")

    def item(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = item_generator(self.seed, index)
        label = int(torch.randint(0, self.classes, (1,), generator=g))
        phase, contrast = (torch.rand(2, generator=g) * torch.tensor([2 * math.pi, 0.5]) + torch.tensor([0.0, 0.5])).tolist()
        angle, frequency = float(self.angles[label]), float(self.frequencies[label])
        along = self.grid_x * math.cos(angle) + self.grid_y * math.sin(angle)
        grating = torch.cos(2 * math.pi * frequency * along + phase).view(1, -1)
        noise = torch.empty(3, self.size * self.size).normal_(0.0, NOISE, generator=g)
        image = torch.addmm(noise, contrast * self.colours[label].view(3, 1), grating)
        return image.view(3, self.size, self.size), torch.tensor(label)

    def model(self) -> nn.Module:
        return ResNet(self.depth, self.width, self.classes, self.size)

    def loss(self, model, batch):
        image, label = batch
        return F.cross_entropy(model(image).float(), label), {}

    def val_stats(self, model, batch):
        image, label = batch
        logits = model(image).float()
        return {
            "loss_sum": F.cross_entropy(logits, label, reduction="sum"),
            "correct": (logits.argmax(dim=1) == label).sum(),
            "count": torch.tensor(float(label.shape[0]), device=label.device),
        }

    def val_metrics(self, totals):
        count = max(float(totals["count"]), 1.0)
        return {"val_loss": float(totals["loss_sum"]) / count, "val_acc": float(totals["correct"]) / count}

    def example_input(self, batch_size: int = 1):
        return (torch.zeros(batch_size, 3, self.size, self.size),)


def build(options: dict, seed: int) -> ImageClassifierTask:
    return ImageClassifierTask(options, seed)

"""protein-rcl: per-residue regression over amino-acid sequences with a CNN, U-Net or LSTM.

Sequences are uniform over the 20 amino acids with lengths between length/2 and `length`,
padded to `length` with a mask. The planted per-residue target depends on a window around
the residue, like most per-residue properties (flexibility, burial, loop propensity):

    y_i = tanh(sum_j tri_j * KD(a_{i+j}) / 9) + 0.5 * tanh(sum_j box_j * charge(a_{i+j}))

with Kyte-Doolittle hydropathy over a triangular window of 9 and net charge over a window of
5 (residues past either end count as 0). The encoding is "onehot" (20 indicators) or "blosum"
(the residue's BLOSUM62 row, / 4); the planted target is the same for both, so the encodings
can be compared on one task.

Items are (encoded [L, 20], mask [L], target [L]); the model takes (encoded, mask) and returns
[B, L]. Loss is MSE over real residues only; validation reports val_loss and the Pearson
correlation over all real residues, from summed moments so it is exact after all-reduce.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from training.tasks.synthetic import SyntheticTask, item_generator

AMINO_ACIDS = "ARNDCQEGHILKMFPSTWYV"

# BLOSUM62 (Henikoff & Henikoff 1992), rows and columns in AMINO_ACIDS order.
BLOSUM62 = (
    (4, -1, -2, -2, 0, -1, -1, 0, -2, -1, -1, -1, -1, -2, -1, 1, 0, -3, -2, 0),
    (-1, 5, 0, -2, -3, 1, 0, -2, 0, -3, -2, 2, -1, -3, -2, -1, -1, -3, -2, -3),
    (-2, 0, 6, 1, -3, 0, 0, 0, 1, -3, -3, 0, -2, -3, -2, 1, 0, -4, -2, -3),
    (-2, -2, 1, 6, -3, 0, 2, -1, -1, -3, -4, -1, -3, -3, -1, 0, -1, -4, -3, -3),
    (0, -3, -3, -3, 9, -3, -4, -3, -3, -1, -1, -3, -1, -2, -3, -1, -1, -2, -2, -1),
    (-1, 1, 0, 0, -3, 5, 2, -2, 0, -3, -2, 1, 0, -3, -1, 0, -1, -2, -1, -2),
    (-1, 0, 0, 2, -4, 2, 5, -2, 0, -3, -3, 1, -2, -3, -1, 0, -1, -3, -2, -2),
    (0, -2, 0, -1, -3, -2, -2, 6, -2, -4, -4, -2, -3, -3, -2, 0, -2, -2, -3, -3),
    (-2, 0, 1, -1, -3, 0, 0, -2, 8, -3, -3, -1, -2, -1, -2, -1, -2, -2, 2, -3),
    (-1, -3, -3, -3, -1, -3, -3, -4, -3, 4, 2, -3, 1, 0, -3, -2, -1, -3, -1, 3),
    (-1, -2, -3, -4, -1, -2, -3, -4, -3, 2, 4, -2, 2, 0, -3, -2, -1, -2, -1, 1),
    (-1, 2, 0, -1, -3, 1, 1, -2, -1, -3, -2, 5, -1, -3, -1, 0, -1, -3, -2, -2),
    (-1, -1, -2, -3, -1, 0, -2, -3, -2, 1, 2, -1, 5, 0, -2, -1, -1, -1, -1, 1),
    (-2, -3, -3, -3, -2, -3, -3, -3, -1, 0, 0, -3, 0, 6, -4, -2, -2, 1, 3, -1),
    (-1, -2, -2, -1, -3, -1, -1, -2, -2, -3, -3, -1, -2, -4, 7, -1, -1, -4, -3, -2),
    (1, -1, 1, 0, -1, 0, 0, 0, -1, -2, -2, 0, -1, -2, -1, 4, 1, -3, -2, -2),
    (0, -1, 0, -1, -1, -1, -1, -2, -2, -1, -1, -1, -1, -2, -1, 1, 5, -2, -2, 0),
    (-3, -3, -4, -4, -2, -2, -3, -2, -2, -3, -2, -3, -1, 1, -4, -3, -2, 11, 2, -3),
    (-2, -2, -2, -3, -2, -1, -2, -3, 2, -1, -1, -2, -1, 3, -3, -2, -2, 2, 7, -1),
    (0, -3, -3, -3, -1, -2, -2, -3, -3, 3, 1, -2, 1, -1, -2, -2, 0, -3, -1, 4),
)
# Kyte & Doolittle (1982) hydropathy, AMINO_ACIDS order.
HYDROPATHY = (1.8, -4.5, -3.5, -3.5, 2.5, -3.5, -3.5, -0.4, -3.2, 4.5,
              3.8, -3.9, 1.9, 2.8, -1.6, -0.8, -0.7, -0.9, -1.3, 4.2)
CHARGE = {"D": -1.0, "E": -1.0, "K": 1.0, "R": 1.0, "H": 0.1}
def encoding_table(encoding: str) -> torch.Tensor:
    """[20, 20]: row a is the feature vector of amino acid a ("onehot" or "blosum")."""
    if encoding == "onehot":
        return torch.eye(len(AMINO_ACIDS))
    return torch.tensor(BLOSUM62, dtype=torch.float32) / 4.0


# -- models -----------------------------------------------------------------------------------


class ResidualConv(nn.Module):
    def __init__(self, channels: int, dilation: int = 1):
        super().__init__()
        self.conv1 = nn.Conv1d(channels, channels, 5, padding=2 * dilation, dilation=dilation)
        self.bn = nn.BatchNorm1d(channels)
        self.conv2 = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.gelu(self.bn(self.conv1(x))))


class ResidueCNN(nn.Module):
    """Dilated residual 1D CNN: receptive field 1 + 4 * (1 + 2 + 4 + 8) = 61 residues."""

    def __init__(self, width: int):
        super().__init__()
        self.embed = nn.Conv1d(len(AMINO_ACIDS), width, 1)
        self.blocks = nn.Sequential(*(ResidualConv(width, d) for d in (1, 2, 4, 8)))
        self.out = nn.Conv1d(width, 1, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.embed((x * mask[..., None]).transpose(1, 2))
        return self.out(self.blocks(h)).squeeze(1) * mask


def double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv1d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm1d(cout), nn.GELU(),
        nn.Conv1d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm1d(cout), nn.GELU(),
    )


class ResidueUNet(nn.Module):
    """1D U-Net: `levels` max-pool halvings, channels doubling (capped at 4 x width), and
    upsampling back with the encoder's features concatenated at every level."""

    def __init__(self, width: int, levels: int):
        super().__init__()
        channels = [min(width * 2 ** i, width * 4) for i in range(levels + 1)]
        self.inc = double_conv(len(AMINO_ACIDS), channels[0])
        self.down = nn.ModuleList(double_conv(channels[i], channels[i + 1]) for i in range(levels))
        self.up = nn.ModuleList(double_conv(channels[i + 1] + channels[i], channels[i]) for i in reversed(range(levels)))
        self.out = nn.Conv1d(channels[0], 1, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.inc((x * mask[..., None]).transpose(1, 2))
        skips = []
        for down in self.down:
            skips.append(h)
            h = down(F.max_pool1d(h, 2))
        for up in self.up:
            skip = skips.pop()
            # interpolate to the skip's length rather than x2, so odd lengths line up too
            h = up(torch.cat([F.interpolate(h, size=skip.shape[-1], mode="nearest"), skip], dim=1))
        return self.out(h).squeeze(1) * mask


class ResidueLSTM(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        hidden = max(1, width // 2)
        self.embed = nn.Linear(len(AMINO_ACIDS), width)
        self.lstm = nn.LSTM(width, hidden, num_layers=2, batch_first=True, bidirectional=True)
        self.out = nn.Linear(2 * hidden, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # Padding is zeroed, not packed: packing needs per-sequence lengths on the host, which
        # neither DataParallel scatter nor ONNX export can carry.
        h, _ = self.lstm(self.embed(x * mask[..., None]))
        return self.out(h).squeeze(-1) * mask


# -- task -------------------------------------------------------------------------------------


class ProteinRCLTask(SyntheticTask):
    name = "protein-rcl"
    # channels_last is a 2D (4-D tensor) layout; it does nothing for Conv1d, so not a conv task
    uses_conv = False

    def __init__(self, options: dict, seed: int):
        super().__init__(options, seed)
        self.tokens_per_sample = self.length  # residues, padded to `length`: what the model computes on
        self.table = encoding_table(self.encoding)
        self.hydropathy = torch.tensor(HYDROPATHY)
        self.charge = torch.tensor([CHARGE.get(a, 0.0) for a in AMINO_ACIDS])
        triangle = 5.0 - torch.arange(-4, 5).abs().float()
        self.hydropathy_window = (triangle / triangle.sum()).view(1, 1, -1)
        self.charge_window = torch.ones(1, 1, 5)

    # -- data ---------------------------------------------------------------------------------

    def item(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        g = item_generator(self.seed, index)
        n = int(torch.randint(self.length // 2, self.length + 1, (1,), generator=g))
        residues = torch.randint(0, len(AMINO_ACIDS), (self.length,), generator=g)
        mask = torch.zeros(self.length)
        mask[:n] = 1.0
        # zero-padded convolutions: residues past either end contribute nothing
        hydropathy = F.conv1d((self.hydropathy[residues] * mask).view(1, 1, -1), self.hydropathy_window, padding=4)
        charge = F.conv1d((self.charge[residues] * mask).view(1, 1, -1), self.charge_window, padding=2)
        target = (torch.tanh(hydropathy / 2.0) + 0.5 * torch.tanh(charge)).view(-1) * mask
        return self.table[residues] * mask[:, None], mask, target

    # -- model and metrics --------------------------------------------------------------------

    def model(self) -> nn.Module:
        if self.arch == "cnn":
            return ResidueCNN(self.width)
        if self.arch == "unet":
            return ResidueUNet(self.width, levels=max(1, min(3, int(math.log2(self.length)) - 3)))
        return ResidueLSTM(self.width)

    def loss(self, model, batch):
        x, mask, target = batch
        error = (model(x, mask).float() - target.float()) * mask
        return error.square().sum() / mask.sum().clamp(min=1.0), {}

    def val_stats(self, model, batch):
        x, mask, target = batch
        m = mask.double()
        p = model(x, mask).double() * m
        y = target.double() * m
        return {
            "squared_error": ((p - y) ** 2).sum(),
            "residues": m.sum(),
            "sum_p": p.sum(), "sum_y": y.sum(),
            "sum_pp": (p * p).sum(), "sum_yy": (y * y).sum(), "sum_py": (p * y).sum(),
        }

    def val_metrics(self, totals):
        n = max(float(totals["residues"]), 1.0)
        sp, sy = float(totals["sum_p"]), float(totals["sum_y"])
        cov = float(totals["sum_py"]) - sp * sy / n
        var_p = float(totals["sum_pp"]) - sp * sp / n
        var_y = float(totals["sum_yy"]) - sy * sy / n
        # a constant prediction has no correlation; report 0 rather than NaN
        pearson = cov / math.sqrt(var_p * var_y) if var_p > 0 and var_y > 0 else 0.0
        return {"val_loss": float(totals["squared_error"]) / n, "val_pearson": pearson}

    def example_input(self, batch_size: int = 1):
        return torch.zeros(batch_size, self.length, len(AMINO_ACIDS)), torch.ones(batch_size, self.length)


def build(options: dict, seed: int) -> ProteinRCLTask:
    return ProteinRCLTask(options, seed)

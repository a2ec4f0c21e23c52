"""chess-value: a residual CNN that regresses a planted evaluation of chess-like positions.

Positions are sampled piece occupancies (one king a side, random counts of the other pieces,
pawns never on the first or last rank), encoded as 12 planes of 8x8: white P N B R Q K, then
black. The planted evaluation is material (1, 3, 3, 5, 9) plus a positional term from simple
piece-square tables (pawn advancement, knight/bishop centralization, king on its back rank)
plus a bishop-pair bonus (the one non-linear feature), white minus black, squashed by
tanh(eval / 12) into (-1, 1). The value head keeps the square layout (AlphaZero style: 1x1 conv
then a fully connected layer), because the positional term depends on where pieces stand.

Items are (planes [12, 8, 8], value []); loss is MSE.
"""

from __future__ import annotations

import math
import random

import torch
import torch.nn.functional as F
from torch import nn

from training.tasks.synthetic import SyntheticTask, item_seed

PIECE_VALUES = (1.0, 3.0, 3.0, 5.0, 9.0, 0.0)  # P N B R Q K
# Inclusive upper bound of each piece's count for one side (king fixed at one).
MAX_COUNTS = (8, 2, 2, 2, 1)
BISHOP_PAIR = 0.5
EVAL_SCALE = 12.0
def planted_weights() -> torch.Tensor:
    """[12, 8, 8] weight of a piece on a square (rank 0 = white's back rank), white positive."""
    rank = torch.arange(8.0)[:, None].expand(8, 8)
    file = torch.arange(8.0)[None, :].expand(8, 8)
    # 0 on the four centre squares, 3 in the corners
    centre_distance = torch.maximum((rank - 3.5).abs(), (file - 3.5).abs()) - 0.5
    white = torch.stack([
        PIECE_VALUES[0] + 0.1 * (rank - 1).clamp(min=0),      # pawns: advancement
        PIECE_VALUES[1] + 0.3 - 0.15 * centre_distance,        # knights: centralization
        PIECE_VALUES[2] + 0.2 - 0.1 * centre_distance,         # bishops
        PIECE_VALUES[3] + 0.2 * (rank == 6).float(),           # rooks: the seventh rank
        PIECE_VALUES[4] + 0.05 * (3 - centre_distance),        # queen
        0.3 * (rank == 0).float() - 0.1 * (rank >= 2).float(),  # king: stay home
    ])
    black = -white.flip(1)  # mirrored ranks, opposite sign
    return torch.cat([white, black])


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(x + self.bn2(self.conv2(y)))


class ValueNet(nn.Module):
    def __init__(self, channels: int, blocks: int):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(12, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU())
        self.blocks = nn.Sequential(*(ResidualBlock(channels) for _ in range(blocks)))
        head_hidden = max(32, channels)
        self.head = nn.Sequential(
            nn.Conv2d(channels, 2, 1, bias=False), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(),
            nn.Linear(2 * 64, head_hidden), nn.ReLU(), nn.Linear(head_hidden, 1),
        )

    def forward(self, planes: torch.Tensor) -> torch.Tensor:
        """planes [B, 12, 8, 8] -> value [B]."""
        return self.head(self.blocks(self.stem(planes))).squeeze(-1)


class ChessValueTask(SyntheticTask):
    name = "chess-value"
    uses_conv = True

    def __init__(self, options: dict, seed: int):
        super().__init__(options, seed)
        self.flat_weights = planted_weights().flatten().tolist()

    def item(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        # Python's Random rather than torch ops: a position is ~30 scattered writes, and at
        # millions of positions per epoch the per-op overhead of torch would dominate.
        rng = random.Random(item_seed(self.seed, index))
        counts = [[int(rng.random() * (top + 1)) for top in MAX_COUNTS] + [1] for _ in range(2)]
        white_pawns, black_pawns = counts[0][0], counts[1][0]
        pawn_squares = rng.sample(range(8, 56), white_pawns + black_pawns)  # ranks 2..7
        taken = set(pawn_squares)
        others = [(6 * side + piece) for side in range(2) for piece in range(1, 6) for _ in range(counts[side][piece])]
        other_squares = rng.sample([s for s in range(64) if s not in taken], len(others))
        flat = (pawn_squares[:white_pawns]
                + [6 * 64 + sq for sq in pawn_squares[white_pawns:]]
                + [plane * 64 + sq for plane, sq in zip(others, other_squares, strict=True)])
        planes = torch.zeros(12 * 64)
        planes[flat] = 1.0
        evaluation = sum(self.flat_weights[i] for i in flat)
        evaluation += BISHOP_PAIR * ((counts[0][2] >= 2) - (counts[1][2] >= 2))
        return planes.view(12, 8, 8), torch.tensor(math.tanh(evaluation / EVAL_SCALE))

    def model(self) -> nn.Module:
        return ValueNet(self.channels, self.blocks)

    def loss(self, model, batch):
        planes, value = batch
        return F.mse_loss(model(planes).float(), value.float()), {}

    def val_stats(self, model, batch):
        planes, value = batch
        error = model(planes).float() - value.float()
        return {
            "squared_error": error.square().sum(),
            "abs_error": error.abs().sum(),
            "count": torch.tensor(float(value.shape[0]), device=value.device),
        }

    def val_metrics(self, totals):
        count = max(float(totals["count"]), 1.0)
        return {"val_loss": float(totals["squared_error"]) / count, "val_mae": float(totals["abs_error"]) / count}

    def example_input(self, batch_size: int = 1):
        return (torch.zeros(batch_size, 12, 8, 8),)


def build(options: dict, seed: int) -> ChessValueTask:
    return ChessValueTask(options, seed)

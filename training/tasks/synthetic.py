"""Deterministic synthetic data shared by the built-in tasks.

Every item is a pure function of (seed, index), so every rank builds the same dataset without a
download or a broadcast, and a split too big for memory (the full-size B200 profiles) is made
item by item in `__getitem__` instead of up front.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from training.tasks import TASKS

# Splits smaller than this are generated once; bigger ones item by item from (seed, index).
MATERIALIZE_BYTES = 256 << 20

_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def item_seed(seed: int, index: int) -> int:
    """A 64-bit seed for item `index`: hashed rather than packed side by side, so nearby
    (seed, index) pairs get unrelated streams."""
    return _splitmix64(_splitmix64(seed & _MASK64) ^ index)


def seed_generator(seed: int) -> torch.Generator:
    """A torch generator for a whole-task constant (e.g. a planted pattern) from the task seed."""
    return torch.Generator().manual_seed(_splitmix64(seed & _MASK64) & 0xFFFFFFFF)


def item_generator(seed: int, index: int) -> torch.Generator:
    # torch's CPU generator keeps only the low 32 bits of a seed, so (seed, index) is hashed
    # rather than packed side by side (which would make seed s and s + 1 share items).
    return torch.Generator().manual_seed(item_seed(seed, index) & 0xFFFFFFFF)


def train_val(make_item, total: int) -> tuple[Dataset, Dataset]:
    """Items 0.. for training and the last eighth (at least one) for validation."""
    n_val = max(1, total // 8)
    n_train = total - n_val
    return SyntheticDataset(make_item, 0, n_train), SyntheticDataset(make_item, n_train, n_val)


class SyntheticDataset(Dataset):
    """Items make_item(start + i); stacked once up front when the whole split is small."""

    def __init__(self, make_item, start: int, count: int):
        self.make_item, self.start, self.count = make_item, start, count
        self.columns: tuple[torch.Tensor, ...] | None = None
        first = make_item(start)
        if count * sum(t.numel() * t.element_size() for t in first) <= MATERIALIZE_BYTES:
            items = [first] + [make_item(start + i) for i in range(1, count)]
            self.columns = tuple(torch.stack(column) for column in zip(*items, strict=True))

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        if not 0 <= i < self.count:
            raise IndexError(i)
        if self.columns is not None:
            return tuple(column[i] for column in self.columns)
        return self.make_item(self.start + i)


class SyntheticTask:
    """What every built-in task shares: its options as attributes (declared, and checked, in
    training/tasks/__init__.py: the task checks none itself), its seed, and its (train, val)
    datasets, made once on first use."""

    name: str

    def __init__(self, options: dict, seed: int):
        vars(self).update(TASKS[self.name].resolve(options))
        self.seed = seed
        self._data: tuple[Dataset, Dataset] | None = None

    def item(self, index: int) -> tuple[torch.Tensor, ...]:
        raise NotImplementedError

    def make_datasets(self) -> tuple[Dataset, Dataset]:
        return train_val(self.item, getattr(self, TASKS[self.name].items))

    def datasets(self) -> tuple[Dataset, Dataset]:
        if self._data is None:
            self._data = self.make_datasets()
        return self._data

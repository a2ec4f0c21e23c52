"""Reads the CSV splits under data/ (a path relative to where the script runs)."""

import csv

import torch


def load_split(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    with open(f"data/{name}.csv", newline="") as f:
        rows = list(csv.reader(f))[1:]
    values = torch.tensor([[float(v) for v in row] for row in rows])
    return values[:, :-1], values[:, -1].long()

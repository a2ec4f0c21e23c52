"""A two-layer classifier, sized by the config."""

import torch


class Classifier(torch.nn.Module):
    def __init__(self, features: int, hidden: int, classes: int = 2):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(features, hidden), torch.nn.ReLU(),
                                       torch.nn.Linear(hidden, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

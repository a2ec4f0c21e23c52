"""Real tqdm output: a training loop whose bar carries the loss as postfix (set_postfix)."""

import torch
from tqdm import tqdm

torch.manual_seed(0)
w = torch.zeros(4, requires_grad=True)
x = torch.randn(64, 4)
y = x.sum(dim=1)
opt = torch.optim.SGD([w], lr=0.05)
for epoch in range(2):
    bar = tqdm(range(20), desc=f"epoch {epoch}")
    for _step in bar:
        loss = ((x @ w - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        bar.set_postfix(loss=loss.item(), lr=0.05)

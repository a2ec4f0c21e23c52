"""A user's own plain training loop with a tqdm bar, as they would run it: `python tqdm_loop.py`,
or one copy per rank under torchrun (no process group: the bar is what is tested). tqdm draws on
stderr by default, with the loss in its postfix; each rank but 0 stays quiet, as scripts do."""

import os
import time

import torch
from tqdm import tqdm

rank = int(os.environ.get("RANK", "0"))
torch.manual_seed(0)
x = torch.randn(64, 4)
y = x.sum(dim=1, keepdim=True)
model = torch.nn.Linear(4, 1)
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
with tqdm(range(12), desc="epoch 1", disable=rank != 0, mininterval=0) as bar:
    for _ in bar:
        loss = torch.nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        bar.set_postfix(loss=f"{loss.item():.5f}")
        time.sleep(0.03)

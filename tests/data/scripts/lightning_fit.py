"""A user's own Lightning script, as they would run it: `python lightning_fit.py [tqdm]`, or under
torchrun (Lightning finds torchrun's environment and joins its process group instead of spawning).

Lightning's own defaults stay: the progress bar it picks (Rich where rich is installed, tqdm with
`tqdm`), its logger and its ModelCheckpoint (lightning_logs/version_N/checkpoints/, one per epoch).
A linear model, 2 epochs of 8 steps (4 per rank under 2-rank DDP); each step sleeps 40 ms so the
bar redraws during an epoch as it does on a real model.
"""

import os
import sys
import time

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset


class Regression(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, _):
        time.sleep(0.04)
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, _):
        x, y = batch
        pred = self.layer(x)
        self.log("val_loss", torch.nn.functional.mse_loss(pred, y), prog_bar=True, sync_dist=True)
        self.log("val_mae", (pred - y).abs().mean(), prog_bar=True, sync_dist=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


if __name__ == "__main__":
    torch.manual_seed(0)
    x = torch.randn(64, 4)
    data = TensorDataset(x, x.sum(dim=1, keepdim=True))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    callbacks = [pl.callbacks.TQDMProgressBar()] if sys.argv[1:] == ["tqdm"] else None
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", devices=world_size,
                         strategy="ddp" if world_size > 1 else "auto", log_every_n_steps=2,
                         callbacks=callbacks, enable_model_summary=False)
    trainer.fit(Regression(), DataLoader(data, batch_size=8), DataLoader(data, batch_size=32))

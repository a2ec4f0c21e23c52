"""Real PyTorch Lightning output: a linear model, 2 epochs of 8 steps with validation, on CPU.

    python capture_lightning.py tqdm      # TQDMProgressBar (Lightning's bar without rich)
    python capture_lightning.py rich      # RichProgressBar (the default where rich is installed)
"""

import sys

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset


class Regression(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, _):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, _):
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.layer(x), y), prog_bar=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


torch.manual_seed(0)
x = torch.randn(64, 4)
data = TensorDataset(x, x.sum(dim=1, keepdim=True))
bar = pl.callbacks.TQDMProgressBar() if sys.argv[1:] == ["tqdm"] else pl.callbacks.RichProgressBar()
trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                     log_every_n_steps=2, callbacks=[bar])
trainer.fit(Regression(), DataLoader(data, batch_size=8), DataLoader(data, batch_size=16))

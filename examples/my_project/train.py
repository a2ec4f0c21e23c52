"""An ordinary training script, unmodified for traindeck: it knows nothing about it.

    python train.py                                   # one process, from this directory
    torchrun --nproc-per-node 2 train.py              # DDP on gloo (CPU) or nccl (GPU)
    python train.py --config config/small.py --out_dir out

It reads its config and data by paths relative to this directory, imports its own package
(mylib), prints nanoGPT-style progress lines and saves out/ckpt.pt after each evaluation.
traindeck turns those lines into metrics and checkpoints with the profile next to it
(traindeck.toml); nothing here imports traindeck.
"""

import argparse
import os
import time

import torch
import torch.distributed as dist
from mylib.data import load_split
from mylib.model import Classifier

parser = argparse.ArgumentParser()
parser.add_argument("--config", default="config/small.py")
parser.add_argument("--out_dir", default="out")
args = parser.parse_args()

# Defaults, then the config file's assignments on top.
max_iters, eval_interval, log_interval = 200, 50, 10
batch_size, hidden, learning_rate = 64, 64, 3e-3
with open(args.config) as f:
    exec(f.read())

ddp = int(os.environ.get("WORLD_SIZE", "1")) > 1
if ddp:
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
rank = dist.get_rank() if ddp else 0
master = rank == 0
device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu"
torch.manual_seed(1337 + rank)

x_train, y_train = load_split("train")
x_val, y_val = load_split("val")
model = Classifier(x_train.shape[1], hidden).to(device)
raw = model
if ddp:
    model = torch.nn.parallel.DistributedDataParallel(model)
optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)


@torch.no_grad()
def val_loss() -> float:
    model.eval()
    loss = torch.nn.functional.cross_entropy(model(x_val.to(device)), y_val.to(device)).item()
    model.train()
    return loss


os.makedirs(args.out_dir, exist_ok=True)
t0 = time.time()
for it in range(1, max_iters + 1):
    idx = torch.randint(len(x_train), (batch_size,))
    loss = torch.nn.functional.cross_entropy(model(x_train[idx].to(device)), y_train[idx].to(device))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    if master and it % log_interval == 0:
        dt = (time.time() - t0) * 1000 / log_interval
        t0 = time.time()
        print(f"iter {it}: loss {loss.item():.4f}, time {dt:.2f}ms", flush=True)
    if master and it % eval_interval == 0:
        print(f"step {it}: train loss {loss.item():.4f}, val loss {val_loss():.4f}", flush=True)
        path = os.path.join(args.out_dir, "ckpt.pt")
        print(f"saving checkpoint to {path}", flush=True)
        torch.save({"model": raw.state_dict(), "iter": it}, path)
if ddp:
    dist.destroy_process_group()

"""The project's training loop: `python -m training.loop` or through train.py.

    --config FILE   exec'd for `steps` and `lr` (relative to the working directory)
    --out_dir DIR   last.pt goes here; a run resumes from it
    --crash_once    fail at step 3 the first time (a file in the working directory remembers)
"""

import argparse
import csv
import json
import os
import sys

import torch
import torch.distributed as dist
from model import make_model  # noqa: I001 - the local module, found on the script's/cwd's sys.path

import training
from traindeck import report


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="config/small.py")
    parser.add_argument("--out_dir", default="out")
    parser.add_argument("--crash_once", action="store_true")
    args = parser.parse_args()
    config = {"steps": 4, "lr": 0.05}
    with open(args.config) as f:
        exec(f.read(), {}, config)

    with open("data/points.csv") as f:
        rows = [[float(v) for v in row] for row in list(csv.reader(f))[1:]]
    data = torch.tensor(rows)
    x, y = data[:, :-1], data[:, -1:]

    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        dist.init_process_group("gloo")
    rank = dist.get_rank() if distributed else 0
    torch.manual_seed(0)
    model = make_model(x.shape[1])
    if distributed:
        model = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(model.parameters(), lr=config["lr"])
    os.makedirs(args.out_dir, exist_ok=True)
    last = os.path.join(args.out_dir, "last.pt")
    start = 0
    if os.path.exists(last):
        state = torch.load(last, weights_only=True)
        (model.module if distributed else model).load_state_dict(state["model"])
        start = state["step"]
    if rank == 0:
        with open(os.path.join(args.out_dir, f"facts-{start}.json"), "w") as f:
            json.dump({"cwd": os.getcwd(), "sys_path0": sys.path[0], "training": training.__file__,
                       "owner": training.OWNER, "report": report.__file__, "world_size":
                       dist.get_world_size() if distributed else 1, "start": start}, f)
    try:
        for step in range(start + 1, config["steps"] + 1):
            loss = torch.nn.functional.mse_loss(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if args.crash_once and step == 3 and not os.path.exists("crashed_once"):
                open("crashed_once", "w").close()
                raise RuntimeError("crashing once at step 3, as asked")
            if rank == 0:
                print(f"step {step} loss {loss.item():.4f}", flush=True)
                report.log(step, loss=loss.item())
                torch.save({"model": (model.module if distributed else model).state_dict(), "step": step},
                           last)
                report.checkpoint(last, step=step)
        if distributed:
            # torch's gloo aborts a rank that leaves while its peer still writes (rank 0 here):
            # the ranks that finished leave together.
            dist.barrier()
    finally:
        if distributed:
            dist.destroy_process_group()


if __name__ == "__main__":
    main()

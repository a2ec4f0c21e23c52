"""A custom script whose loss goes NaN: prints "step N loss X" lines, X = nan from --nan-at on.

    python prints_nan.py [--steps N] [--nan-at K] [--sleep S]
"""

import argparse
import time

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=12)
parser.add_argument("--nan-at", type=int, default=4)
parser.add_argument("--sleep", type=float, default=0.25)
args = parser.parse_args()

for step in range(1, args.steps + 1):
    loss = float("nan") if step >= args.nan_at else 1.0 / step
    print(f"step {step} loss {loss}", flush=True)
    time.sleep(args.sleep)

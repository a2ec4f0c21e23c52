"""Writes checkpoints to DIR/last.pt in a loop until killed (the kill -9 test's victim).

Checkpoint n holds a weight tensor filled with n and step = n, large enough (~8 MB) that a
random kill often lands inside a write. Prints "ready" after the first complete save.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from training.engine.checkpoint import CheckpointFiles, make_checkpoint, serialize  # noqa: E402

files = CheckpointFiles(Path(sys.argv[1]))
model = nn.Linear(1024, 2048)
n = 0
while True:
    n += 1
    with torch.no_grad():
        model.weight.fill_(float(n))
    state = make_checkpoint(model=model, epoch=1, epoch_step=n, epoch_complete=False, step=n, rng=[],
                            profile_digest="loop")
    files.write(serialize(state), [files.last])
    if n == 1:
        print("ready", flush=True)

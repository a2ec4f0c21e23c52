"""FLOPs of one training sample of a built-in task, counted once at start (torch.utils.flop_counter).

One forward and backward of a few samples through the unwrapped model, before DDP wraps it (DDP's
gradient hooks would start an all-reduce on this rank alone), with the RNG and the buffers
(BatchNorm's running statistics) restored and the gradients dropped afterwards, so training starts
exactly as it would have without the count. The counter counts matmuls and convolutions (what the
peak TFLOP/s of a GPU measures too), not elementwise work.
"""

from __future__ import annotations

import torch
from torch import nn

from training.engine.data import _batch_to

SAMPLES = 4  # samples in the counted batch: enough to be a batch, small enough to cost nothing


def count_flops_per_sample(task, model: nn.Module, dataset, device: torch.device,
                           channels_last: bool = False) -> tuple[float | None, str]:
    """(FLOPs of one sample's forward + backward, "") or (None, why)."""
    try:
        from torch.utils.flop_counter import FlopCounterMode
    except ImportError as exc:  # an old torch
        return None, f"no torch.utils.flop_counter ({exc})"
    n = min(SAMPLES, len(dataset))
    if n == 0:
        return None, "the training set is empty"
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    devices = [device] if device.type == "cuda" else []
    try:
        from torch.utils.data import default_collate

        batch = _batch_to(default_collate([dataset[i] for i in range(n)]), device, channels_last)
        with torch.random.fork_rng(devices=devices), FlopCounterMode(display=False) as counter:
            loss, _ = task.loss(model, batch)
            loss.backward()
        flops = counter.get_total_flops()
    except Exception as exc:  # noqa: BLE001 - a count that cannot be made is no reason to stop training
        return None, f"the FLOP count failed: {type(exc).__name__}: {exc}"
    finally:
        model.zero_grad(set_to_none=True)
        with torch.no_grad():
            for name, b in model.named_buffers():
                if name in buffers:
                    b.copy_(buffers[name])
    if flops <= 0:
        return None, "the FLOP counter found no matmul or convolution"
    return flops / n, ""

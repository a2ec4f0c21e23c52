"""Mixed precision that holds in every thread, and the checks that it can run on this GPU.

Why a wrapper: the autocast dtype is thread-local. nn.DataParallel runs each replica's forward in
a thread of its own (`parallel_apply`) and re-enters autocast there with `enabled=` only, so a
replica thread gets the device's default dtype -- float16 on CUDA -- although the training loop
asked for bfloat16: a "bf16" DataParallel run trained in fp16 without a GradScaler.
`AutocastForward` enters the profile's dtype inside the forward itself, in whatever thread calls it.

bf16 needs compute capability 8.0 (Ampere) or newer; below that (a 2080 Ti is sm_75) torch either
emulates it slowly or fails, so preflight (from NVML) and the worker (from torch) refuse it and
suggest fp16.
"""

from __future__ import annotations

import threading
from typing import Any

import torch
from torch import nn

BF16_MIN_CAPABILITY = (8, 0)
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


class AutocastForward(nn.Module):
    """`module` whose forward always runs under autocast(device_type, dtype), in any thread.

    Wraps the raw model only for the call (the raw model is what is saved), so a checkpoint has
    the same keys with and without it.
    """

    def __init__(self, module: nn.Module, device_type: str, dtype: torch.dtype):
        super().__init__()
        self.module = module
        self.device_type = device_type
        self.dtype = dtype

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        with torch.autocast(device_type=self.device_type, dtype=self.dtype):
            return self.module(*args, **kwargs)


class AutocastProbe:
    """A forward hook that records which autocast dtype each forward of a model really ran in.

    Keyed by (device of the first tensor argument, thread): the DataParallel replicas are copies of
    the model that keep its hooks, so every replica thread reports here. The hook removes itself
    once `expected` distinct devices were seen, so it costs nothing after the first step.
    """

    def __init__(self, model: nn.Module, expected: int = 1):
        self.expected = max(1, expected)
        self.seen: dict[str, str] = {}  # "cuda:1" -> "bfloat16" | "off"
        self._lock = threading.Lock()
        self._handle = model.register_forward_pre_hook(self._hook)

    def _hook(self, module: nn.Module, args: tuple) -> None:
        tensor = next((a for a in args if isinstance(a, torch.Tensor)), None)
        if tensor is None:
            return
        device = str(tensor.device)
        try:
            dtype = autocast_state(tensor.device.type)
        except Exception:  # a probe never breaks training
            return
        with self._lock:
            self.seen.setdefault(f"{device} {threading.current_thread().name}", dtype)
            devices = {key.split(" ", 1)[0] for key in self.seen}
            if len(devices) >= self.expected and self._handle is not None:
                self._handle.remove()
                self._handle = None

    @property
    def done(self) -> bool:
        return self._handle is None

    def close(self) -> None:
        with self._lock:
            if self._handle is not None:
                self._handle.remove()
                self._handle = None

    def by_device(self) -> dict[str, list[str]]:
        """device -> the distinct autocast dtypes its forwards ran in (one, when all is well)."""
        with self._lock:
            out: dict[str, set[str]] = {}
            for key, dtype in self.seen.items():
                out.setdefault(key.split(" ", 1)[0], set()).add(dtype)
        return {device: sorted(dtypes) for device, dtypes in sorted(out.items())}


def autocast_state(device_type: str) -> str:
    """The autocast dtype in effect in this thread ("bfloat16", "float16") or "off".
    torch >= 2.4 takes a device type; 2.3 (the floor) has per-device functions."""
    try:
        enabled = torch.is_autocast_enabled(device_type)
        dtype = torch.get_autocast_dtype(device_type)
    except (TypeError, AttributeError):
        if device_type == "cuda":
            enabled, dtype = torch.is_autocast_enabled(), torch.get_autocast_gpu_dtype()
        else:
            enabled, dtype = torch.is_autocast_cpu_enabled(), torch.get_autocast_cpu_dtype()
    return str(dtype).replace("torch.", "") if enabled else "off"


def bf16_fix(capability: tuple[int, int] | None, name: str = "this GPU") -> str | None:
    """Why bf16 cannot run on a GPU of this compute capability, with the fix; None when it can."""
    if capability is None or tuple(capability) >= BF16_MIN_CAPABILITY:
        return None
    major, minor = capability
    return (f"train.amp = \"bf16\" needs compute capability {BF16_MIN_CAPABILITY[0]}.{BF16_MIN_CAPABILITY[1]} "
            f"(Ampere) or newer; {name} is sm_{major}{minor}, where bf16 is emulated or fails. "
            f"Use fp16 there: set train.amp = \"fp16\" (with a GradScaler) or --set train.amp=fp16")


def worker_bf16_problem(device: torch.device) -> str | None:
    """The worker's own check on its CUDA device (torch's view, without counting emulation)."""
    if device.type != "cuda":
        return None
    try:
        native = torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # torch 2.3: no including_emulation; native bf16 is compute capability >= 8.0
        native = tuple(torch.cuda.get_device_capability(device)) >= BF16_MIN_CAPABILITY
    if native:
        return None
    return bf16_fix(torch.cuda.get_device_capability(device), torch.cuda.get_device_name(device))

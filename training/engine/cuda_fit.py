"""Can this torch use these GPUs? Asked where NVML sees GPUs that the profile wants: by preflight
before a start and by each rank before it picks its device, so a GPU profile never trains on the
CPU without a word (a driver older than the wheel made `torch.cuda.is_available()` False, and the
rank went on on the CPU), and a wheel without the GPU's architecture fails with the fix instead of
"no kernel image is available" at the first kernel.

Pure functions over what torch and NVML report; the callers pass those in, the tests fake them.
"""

from __future__ import annotations

import re
from typing import Iterable

# Where a CUDA build of torch comes from (the README's "On a GPU box" says the same).
WHEEL_INDEX = "https://download.pytorch.org/whl/cu{tag}"
INSTALL = (".venv/bin/pip install torch --index-url {index} (the README's \"On a GPU box\"; pick the index "
           "for your driver on https://pytorch.org/get-started/locally/)")


class CudaUnusable(RuntimeError):
    """A GPU profile on a box whose GPUs this torch cannot use: the message is the fix."""


def cuda_problem(*, wanted: int, nvml_gpus: int, torch_version: str, torch_cuda: str | None, available: bool,
                 torch_count: int, driver_cuda: tuple[int, int] | None = None, driver: str | None = None) -> str:
    """Why this torch cannot give a profile wanting `wanted` GPUs the `nvml_gpus` NVML sees ("" when
    it can, or when there is nothing to use: no GPU wanted, none seen)."""
    if wanted <= 0 or nvml_gpus <= 0:
        return ""
    seen = f"NVML sees {nvml_gpus} GPU(s) for this run, but torch {torch_version}"
    if torch_cuda is None:
        return (f"{seen} is a CPU build and cannot use them; the run would train on the CPU. Install a CUDA "
                f"build of torch: " + INSTALL.format(index=WHEEL_INDEX.format(tag="128")))
    if not available:
        wheel = _version(torch_cuda)
        if driver_cuda is not None and wheel is not None and driver_cuda < wheel:
            have = f"{driver_cuda[0]}.{driver_cuda[1]}"
            return (f"{seen} (built for CUDA {torch_cuda}) cannot use them: the NVIDIA driver"
                    f"{' ' + driver if driver else ''} supports CUDA up to {have}, older than the wheel's. "
                    f"Update the driver, or install a torch build for CUDA {have} or older: "
                    + INSTALL.format(index=WHEEL_INDEX.format(tag=f"{driver_cuda[0]}{driver_cuda[1]}")))
        return (f"{seen} (built for CUDA {torch_cuda}) reports torch.cuda.is_available() False; the run "
                f"would train on the CPU. Check that nvidia-smi works here, that a container was given the "
                f"GPUs (docker run --gpus all; the NVIDIA container toolkit) and CUDA_VISIBLE_DEVICES names them")
    needed = min(wanted, nvml_gpus)
    if torch_count < needed:
        return (f"{seen} sees only {torch_count} of them (torch.cuda.device_count()), and the profile wants "
                f"{wanted}; check CUDA_VISIBLE_DEVICES and nvidia-smi (a GPU in a bad state, or hidden from "
                f"this container)")
    return ""


_ARCH = re.compile(r"^(sm|compute)_(\d+)([af]?)$")


def runs_on(arch_list: Iterable[str], capability: tuple[int, int]) -> bool:
    """Whether a torch built for `arch_list` (torch.cuda.get_arch_list()) has kernels for a GPU of
    `capability`: a cubin of the same major and a minor not above it (sm_80 runs on 8.6; sm_90a
    only on 9.0), or PTX of an architecture not above it, which the driver compiles (compute_90)."""
    major, minor = capability
    for arch in arch_list:
        m = _ARCH.match(arch.strip())
        if not m:
            continue
        number = int(m.group(2))
        a_major, a_minor = number // 10, number % 10
        if m.group(1) == "sm":
            if m.group(3) == "a":
                if (a_major, a_minor) == (major, minor):
                    return True
            elif a_major == major and a_minor <= minor:
                return True
        elif (a_major, a_minor) <= (major, minor) and not m.group(3):
            return True
    return False


def arch_problem(arch_list: Iterable[str], gpus: Iterable[tuple[str, tuple[int, int] | None]],
                 torch_version: str) -> str:
    """Why this torch has no kernels for one of `gpus` ((name, compute capability)); "" when every
    GPU is covered, or when torch lists no architectures (a CPU build: another check says so)."""
    arch_list = [a for a in arch_list if a]
    if not arch_list:
        return ""
    for name, capability in gpus:
        if capability is None or runs_on(arch_list, capability):
            continue
        sm = f"sm_{capability[0]}{capability[1]}"
        newer = " (sm_100 and newer need CUDA 12.8+ wheels)" if capability[0] >= 10 else ""
        return (f"torch {torch_version} has no kernels for {name} (compute capability {capability[0]}."
                f"{capability[1]}, {sm}): it was built for {', '.join(arch_list)}, and the first kernel would "
                f"fail with \"no kernel image is available\". Install a torch build for {sm}{newer}: "
                + INSTALL.format(index=WHEEL_INDEX.format(tag="128")))
    return ""


def _version(text: str) -> tuple[int, int] | None:
    m = re.match(r"^(\d+)\.(\d+)", text or "")
    return (int(m.group(1)), int(m.group(2))) if m else None

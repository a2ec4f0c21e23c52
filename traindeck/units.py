"""The one way memory is written for people: units of 1024 whose names say so (MiB, GiB), as nvidia-smi.

It lives in traindeck/, the bottom layer, because both sides show memory and must agree: the
training side in GPU selection and queue messages (run.json's `waiting_for`, `--gpus`), the GPU
check, leak warnings and preflight; the viewers in the GPU panels, the headless line and
checkpoint sizes. Before, one screen could show "10.2 GB" (10^9 bytes) for a holder and "9 GB"
(2^30 bytes) in the panel beside it for the same memory.

    mib(5120)          "5120 MiB"   whole MiB, as nvidia-smi lists a process (a leak, a delta)
    gib(9728)          "9.5 GiB"    a GPU's memory in a sentence (who holds a GPU)
    gib_figure(9728)   "9.5"        a figure for a column whose unit is printed once: "9.5/80 GiB"
    size(102_400_000)  "97.7 MiB"   a byte count (a checkpoint, /dev/shm), B to TiB

NVML and telemetry report MiB; `size` takes bytes. A value that is not a finite number is "?".
"""

from __future__ import annotations

from typing import Any

from traindeck.numbers import finite_number

KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30


def mib(value: Any, sign: bool = False) -> str:
    """Whole MiB ("5120 MiB"; "+997 MiB" with `sign`); "? MiB" when not a number."""
    n = finite_number(value)
    if n is None:
        return "? MiB"
    return f"{n:+.0f} MiB" if sign else f"{n:.0f} MiB"


def gib(mib_value: Any) -> str:
    """MiB as GiB with one decimal ("9.5 GiB"); "? GiB" when not a number."""
    n = finite_number(mib_value)
    return "? GiB" if n is None else f"{n / KIB:.1f} GiB"


def gib_figure(mib_value: Any) -> str:
    """MiB as a compact figure of GiB ("9.5", "80"): one decimal below 10 GiB; "?" when not a number."""
    n = finite_number(mib_value)
    if n is None:
        return "?"
    g = n / KIB
    return f"{g:.0f}" if g >= 10 else f"{g:.1f}"


def size(nbytes: Any) -> str:
    """'512 B', '2.0 KiB', '97.7 MiB', '1.5 GiB', '1.2 TiB'; '?' when not a number."""
    n = finite_number(nbytes)
    if n is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < KIB:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= KIB
    return f"{n:.1f} TiB"

"""One device per rank where the run's devices are MIG instances.

A CUDA process enumerates one MIG instance, the first its CUDA_VISIBLE_DEVICES names, so ranks
that all see `MIG-a,MIG-b` all train on MIG-a (NCCL: "Duplicate GPU detected"; gloo shares it
without a word). torchrun gives every local rank the same environment, so the supervisor passes
the run's devices, in order, as TRAINDECK_RANK_DEVICES, and each rank narrows its own
CUDA_VISIBLE_DEVICES to its LOCAL_RANK's entry before CUDA starts (ranks beyond the list share,
LOCAL_RANK modulo its length). The rank then sees one device, cuda:0.

    built-in worker:  training.worker calls use_rank_device() before it imports torch.
    custom program:   torchrun ... -m traindeck.rank_device SCRIPT ARGS   (or -m MODULE ARGS)
                      sets the variable, then execs the interpreter on the program: it runs as
                      `python SCRIPT ARGS` would run it, in the same process (torchrun watches
                      that pid), with the script's directory first on sys.path and its own argv.

Standalone like the rest of this package: no import of `training`, nothing but the standard library.
"""

from __future__ import annotations

import os
import sys
from typing import MutableMapping, Sequence

RANK_DEVICES_ENV = "TRAINDECK_RANK_DEVICES"
USAGE = "usage: python -m traindeck.rank_device SCRIPT [ARGS...] | -m MODULE [ARGS...]"


def rank_device(devices: str, local_rank: int) -> str | None:
    """The entry of `devices` ("MIG-a,MIG-b") that local rank `local_rank` trains on."""
    entries = [t.strip() for t in devices.split(",") if t.strip()]
    return entries[local_rank % len(entries)] if entries else None


def use_rank_device(environ: MutableMapping[str, str] | None = None) -> str | None:
    """Narrow CUDA_VISIBLE_DEVICES to this rank's device where the supervisor passed the run's
    devices (TRAINDECK_RANK_DEVICES) and torchrun this rank's LOCAL_RANK; the device, or None."""
    environ = os.environ if environ is None else environ
    devices, local_rank = environ.get(RANK_DEVICES_ENV), environ.get("LOCAL_RANK", "")
    if not devices or not local_rank.isdigit():
        return None
    device = rank_device(devices, int(local_rank))
    if device is not None:
        environ["CUDA_VISIBLE_DEVICES"] = device
    return device


def program_argv(args: Sequence[str], executable: str, flags: Sequence[str] = ()) -> list[str]:
    """The interpreter's argv that runs `args` (SCRIPT ARGS or -m MODULE ARGS) as `python` would."""
    if not args or (args[0] == "-m" and len(args) < 2):
        raise SystemExit(USAGE)
    return [executable, *flags, *args]


def main(argv: Sequence[str] | None = None) -> None:
    import subprocess

    args = list(sys.argv[1:] if argv is None else argv)
    use_rank_device()
    # The interpreter options this process was started with (-O, -X ..., -W ...): the program keeps them.
    flags = subprocess._args_from_interpreter_flags()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, program_argv(args, sys.executable, flags))


if __name__ == "__main__":
    main()

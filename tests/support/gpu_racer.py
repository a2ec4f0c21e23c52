"""One traindeck start racing others for the same GPUs (tests/unit/test_gpu_locks.py runs several).

    python -m tests.support.gpu_racer NAME ROUNDS OCCUPANT_FILE [hold|crash]

Each round claims both GPUs of a fake 2 x 2080 Ti box through the real `claim_gpus` (locks, tickets),
checks that nobody else is in OCCUPANT_FILE while it holds them, and releases. Prints one line per
round: "ok" or "OVERLAP-with-<name>", then "waited=N" (looks that found the GPUs taken). `crash`: claim once, say "held", and wait to be killed.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from tests.fixtures.fake_nvml import four_2080ti
from training.monitor.gpu import GpuBackend
from training.profile import load_profile
from training.supervise.gpu_select import claim_gpus


def main() -> None:
    name, rounds, occupant = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    mode = sys.argv[4] if len(sys.argv) > 4 else "hold"
    fake = four_2080ti(pids=[])
    fake.devices = fake.devices[:2]
    backend = GpuBackend(nvml=fake)
    profile = load_profile("4x2080ti", ["hardware.gpus=2", "launch.nproc_per_node=2", "hardware.select=all"])
    if mode == "crash":
        claim_gpus(profile, name, backend, wait=True, poll_s=0.01)
        print("held", flush=True)
        time.sleep(60)
        return
    go = occupant.with_name("go")
    while not go.exists():  # both racers start their rounds together
        time.sleep(0.001)
    waited = 0
    for _ in range(rounds):
        def on_wait(waiting):
            nonlocal waited
            waited += 1
        claim = claim_gpus(profile, name, backend, wait=True, poll_s=0.002, on_wait=on_wait)
        fd = os.open(occupant, os.O_RDWR | os.O_CREAT, 0o600)
        other = os.pread(fd, 100, 0).decode()
        os.pwrite(fd, name.ljust(20).encode(), 0)
        time.sleep(0.002)
        now = os.pread(fd, 100, 0).decode().strip()
        os.ftruncate(fd, 0)
        os.close(fd)
        claim.release()
        print("ok" if not other.strip() and now == name else f"OVERLAP-with-{other.strip() or now}", flush=True)
    print(f"waited={waited}", flush=True)


if __name__ == "__main__":
    main()

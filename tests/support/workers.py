"""How many pytest-xdist workers `make test` uses: `python -m tests.support.workers` prints it.

The suite's tests wait a lot (grace periods, heartbeats, stalled ranks) between bursts of CPU
(every rank imports torch), so on an idle box one worker more than it has cores keeps them busy;
on a box already busy (another suite beside this one, a training run) one per core, because more
would only stretch the timing-sensitive tests. Busy: the machine's CPU over the last half second
or the 1-minute load average above half a core."""

from __future__ import annotations

import os

import psutil


def workers(cores: int, busy_fraction: float, load1: float) -> int:
    busy = busy_fraction > 0.5 or load1 > 0.5 * cores
    return cores if busy else cores + 1


def main() -> None:
    cores = os.cpu_count() or 1
    print(workers(cores, psutil.cpu_percent(interval=0.5) / 100.0, os.getloadavg()[0]))


if __name__ == "__main__":
    main()

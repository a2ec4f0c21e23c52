"""How many pytest-xdist workers `make test` uses: `python -m tests.support.workers` prints it.

The suite's tests wait a lot (grace periods, heartbeats, stalled ranks) between bursts of CPU
(every rank imports torch), so on an idle box one worker more than it has cores keeps them busy;
on a box already busy (another suite beside this one, a training run) one per core, because more
would only stretch the timing-sensitive tests. Busy: the machine's CPU over the last second above
40%. Not the load average: it trails by a minute, and `make test` starts right after its own
`pip install`, which would make every fresh clone look busy."""

from __future__ import annotations

import os

import psutil

BUSY_FRACTION = 0.4


def workers(cores: int, busy_fraction: float) -> int:
    return cores if busy_fraction > BUSY_FRACTION else cores + 1


def main() -> None:
    print(workers(os.cpu_count() or 1, psutil.cpu_percent(interval=1.0) / 100.0))


if __name__ == "__main__":
    main()

"""The supervisor's own log: one timestamped line per thing it did or saw, on its stderr.

`main` points stdout and stderr at logs/supervisor.log, so every part of the supervisor (and the
monitor threads it starts) tells the user through `log` without knowing where the file is.
"""

from __future__ import annotations

import sys
import time


def log(message: str) -> None:
    try:
        print(time.strftime("%H:%M:%S"), message, file=sys.stderr, flush=True)
    except (OSError, ValueError):  # logs/supervisor.log on a full disk: the run goes on untold
        pass

"""Leave a worker process without the interpreter's teardown.

A process that imported torch (and, through the optimizer, torch._dynamo) spends about a second
of CPU after `main()` returns, destroying tens of thousands of module objects nobody will use
again. Every rank pays it at the end of every run and every stop; on a box where ranks outnumber
cores (a rehearsal, the test suite) that second is the ranks' exit time. The worker has flushed
and closed what it owns by then (events, heartbeats, checkpoints, the process group), so it runs
the atexit handlers (multiprocessing's, which stop DataLoader workers, among them), flushes
stdout and stderr, and ends with os._exit.
"""

from __future__ import annotations

import atexit
import os
import sys
from typing import NoReturn


def exit_without_teardown(code: int | None) -> NoReturn:
    code = 0 if code is None else int(code)
    try:
        atexit._run_exitfuncs()  # what a normal exit runs first; os._exit alone would skip it
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed pipe: nothing more can reach it anyway
                pass
        os._exit(code)

"""How a run ended, as the supervisor says it: `RunResult`, which becomes exit.json's record.

Each part that can end a run gives one (the launch that could not start, the launcher's exit as
diagnosed, a stop, a health rule, a node that dropped out); `named_for_the_disk` puts a full disk
first where one is why. Kept apart from the state machine so every part can return one without
importing the supervisor.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from training.rundir import RunPaths, RunState
from training.rundir.records import ExitRecord
from training.rundir.write_failures import DISK_ERROR_TEXT, WriteTrouble


@dataclass(frozen=True)
class RunResult:
    state: RunState
    returncode: int | None
    failed_rank: int | None = None
    error: list[str] = field(default_factory=list)
    hint: str | None = None
    message: str = ""

    def exit_record(self, started: float, **extra: Any) -> ExitRecord:
        return ExitRecord(state=self.state.value, returncode=self.returncode, failed_rank=self.failed_rank,
                          error=tuple(self.error), hint=self.hint, message=self.message,
                          t=round(time.time(), 3), seconds=round(time.time() - started, 3), extra=extra)


def named_for_the_disk(result: RunResult, paths: RunPaths, disk: WriteTrouble) -> RunResult:
    """A run that failed because the disk was full or read-only (a rank's checkpoint write, or the
    supervisor's own writes still failing at the end) says "disk full" first, with the fix."""
    if result.state is not RunState.FAILED or result.message.startswith("disk full"):
        return result
    text = " ".join([result.message, *result.error])
    if not (any(words in text for words in DISK_ERROR_TEXT) or (disk.failing and disk.disk_full)):
        return result
    hint = result.hint or (f"free space on the disk of {paths.root} (df -h {paths.root}), then "
                           f"'run.py --resume {paths.id}' goes on from checkpoints/last.pt")
    return RunResult(result.state, result.returncode, result.failed_rank, result.error, hint,
                     f"disk full: {result.message}")

"""Messages that cross screens: the screens ask, the app decides (starts runs, switches screens)."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from training.profile import Profile
from training.rundir import RunPaths


@dataclass
class StartRun(Message):
    """Start this profile as a new run (rehearsal: the scaled-down rehearsal of it; queue: wait in
    line for busy GPUs, run.py --queue)."""

    profile: Profile
    rehearsal: bool = False
    queue: bool = False


@dataclass
class MeasureScaling(Message):
    """Run this profile at 1, 2, 4 ... N GPUs and measure each size (run.py --scaling)."""

    profile: Profile


@dataclass
class OpenRun(Message):
    """Show the run screen for this run directory, live or finished."""

    paths: RunPaths


@dataclass
class CompareRuns(Message):
    """Show these runs side by side (the compare screen)."""

    runs: list[RunPaths]


@dataclass
class ShowRuns(Message):
    """Show every run in the runs directory."""


@dataclass
class Detach(Message):
    """Leave the run screen; the run goes on."""

    paths: RunPaths

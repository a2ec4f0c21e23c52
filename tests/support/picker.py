"""The console on its picker, over a profiles directory of one shipped profile, on a fake box."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable

from tests.support.waiting import await_for
from training.monitor.gpu import GpuBackend
from training.profile import PROFILES_DIR
from tui.app import make_app
from tui.screens.picker import PickerScreen


def picker_app(tmp_path: Path, profile: str, nvml: Any):
    """The console whose profiles directory holds only the shipped `profile` (runs in tmp_path/runs),
    its GPUs those of the fake `nvml`."""
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    shutil.copy(PROFILES_DIR / f"{profile}.toml", profiles / f"{profile}.toml")
    return make_app(runs_dir=tmp_path / "runs", profiles_dir=profiles, gpu_backend=GpuBackend(nvml=nvml))


async def on_the_picker(pilot: Any, app: Any) -> None:
    """Until the picker shows and has read its profiles."""
    await await_for(pilot, lambda: isinstance(app.screen, PickerScreen) and app.screen.entries)


def record_starts(monkeypatch: Any, keep: Callable[[Any, dict], Any]) -> list:
    """The console's start replaced by a recorder: each start_run(profile, runs_dir, **kw) appends
    keep(profile, kw) to the list returned, and no run screen opens."""
    started: list = []
    monkeypatch.setattr("training.console.runs.start_run",
                        lambda profile, runs_dir, **kw: started.append(keep(profile, kw)))
    monkeypatch.setattr("tui.app.TraindeckApp.on_open_run", lambda self, message: None)
    return started

"""The console's start applies the same table as run.py (training.console.start_policy): a profile
that wants more GPUs than the box has is refused from the picker with --check's line and the fix,
and nothing starts; another GPU model is only a warning."""

from __future__ import annotations

import shutil

from textual.widgets import OptionList

from tests.fixtures.fake_nvml import eight_b200, zero_devices
from tests.support.waiting import await_for
from training.monitor.gpu import GpuBackend
from training.profile import PROFILES_DIR
from tui.app import make_app
from tui.screens.picker import PickerScreen


def _notes(app) -> list[str]:
    return [str(n.message) for n in app._notifications]


async def test_picker_refuses_a_profile_that_wants_more_gpus_than_the_box_has(tmp_path):
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    shutil.copy(PROFILES_DIR / "8xb200-gnn.toml", profiles / "8xb200-gnn.toml")
    app = make_app(runs_dir=tmp_path / "runs", profiles_dir=profiles, gpu_backend=GpuBackend(nvml=zero_devices()))
    async with app.run_test(size=(100, 30)) as pilot:
        await await_for(pilot, lambda: isinstance(app.screen, PickerScreen) and app.screen.entries)
        options = app.screen.query_one(OptionList)
        options.highlighted = options.get_option_index("8xb200-gnn")
        await pilot.press("s")
        await await_for(pilot, lambda: any("not starting profile 8xb200-gnn" in n for n in _notes(app)),
                        what="the refusal")
        note = next(n for n in _notes(app) if "not starting" in n)
        assert "[FAIL] gpus: 8 wanted (B200), 0 found" in note and "--set hardware.gpus=0" in note
        assert isinstance(app.screen, PickerScreen)
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())


async def test_a_start_on_another_gpu_model_warns_and_starts(tmp_path, monkeypatch):
    started = []
    monkeypatch.setattr("training.console.runs.start_run", lambda profile, runs_dir, **kw: started.append(profile))
    monkeypatch.setattr("tui.app.TraindeckApp.on_open_run", lambda self, message: None)
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    shutil.copy(PROFILES_DIR / "4x2080ti.toml", profiles / "4x2080ti.toml")
    # An idle 8-GPU box (no one else on it): the start takes 4 free GPUs, only the model differs.
    app = make_app(runs_dir=tmp_path / "runs", profiles_dir=profiles, gpu_backend=GpuBackend(nvml=eight_b200(pids=[])))
    async with app.run_test(size=(100, 30)) as pilot:
        await await_for(pilot, lambda: isinstance(app.screen, PickerScreen) and app.screen.entries)
        await pilot.press("s")
        await await_for(pilot, lambda: started, what="the start")
        await await_for(pilot, lambda: any("[warn] gpus: 4 wanted (2080 Ti)" in n for n in _notes(app)),
                        what="the warning")
    assert [p.name for p in started] == ["4x2080ti"]

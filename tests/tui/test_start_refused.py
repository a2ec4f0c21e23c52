"""The console's start applies the same table as run.py (training.console.start_checks): a profile
that wants more GPUs than the box has is refused from the picker with --check's line and the fix,
and nothing starts; another GPU model is only a warning."""

from __future__ import annotations

from textual.widgets import OptionList

from tests.fixtures.fake_nvml import eight_b200, zero_devices
from tests.support.picker import on_the_picker, picker_app, record_starts
from tests.support.waiting import await_for
from tui.screens.picker import PickerScreen


def _notes(app) -> list[str]:
    return [str(n.message) for n in app._notifications]


async def test_picker_refuses_a_profile_that_wants_more_gpus_than_the_box_has(tmp_path):
    app = picker_app(tmp_path, "8xb200-gnn", zero_devices())
    async with app.run_test(size=(100, 30)) as pilot:
        await on_the_picker(pilot, app)
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
    started = record_starts(monkeypatch, lambda profile, kw: profile)
    # An idle 8-GPU box (no one else on it): the start takes 4 free GPUs, only the model differs.
    app = picker_app(tmp_path, "4x2080ti", eight_b200(pids=[]))
    async with app.run_test(size=(100, 30)) as pilot:
        await on_the_picker(pilot, app)
        await pilot.press("s")
        await await_for(pilot, lambda: started, what="the start")
        await await_for(pilot, lambda: any("[warn] gpus: 4 wanted (2080 Ti)" in n for n in _notes(app)),
                        what="the warning")
    assert [p.name for p in started] == ["4x2080ti"]

"""The picker's rehearse key runs the same checklist as `run.py --rehearse` and shows its verdict."""

from __future__ import annotations

from tests.support.waiting import await_for
from training.console import rehearse
from tui.app import make_app
from tui.screens.picker import PickerScreen


async def test_picker_rehearse_key_runs_the_rehearse_checklist(tmp_path, backend, monkeypatch):
    calls = []

    def fake_rehearse(profile, runs_dir, follow, argv=None, out=None, **kwargs):
        calls.append((profile.name, runs_dir, argv))
        print("rehearse: cpu on this box", file=out)
        print("rehearsal of cpu passed in 12 s: ready for its GPUs", file=out)
        print("  ok    launch", file=out)
        return 0

    monkeypatch.setattr(rehearse, "rehearse", fake_rehearse)
    app = make_app(runs_dir=tmp_path / "runs", gpu_backend=backend)
    notes = []
    monkeypatch.setattr(app, "notify", lambda message, **kw: notes.append(str(message)))
    async with app.run_test(size=(100, 30)) as pilot:
        await await_for(pilot, lambda: isinstance(app.screen, PickerScreen) and app.screen.entries)
        await pilot.press("r")
        await await_for(pilot, lambda: any("rehearsal of cpu passed" in n for n in notes))
    assert calls == [("cpu", tmp_path / "runs", ["--profile", "cpu", "--rehearse"])]

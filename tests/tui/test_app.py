"""Pilot tests of the console: picker, run screen on recorded runs, dialogs, runs screen.

Recorded runs (tests/data/runs, written by tests/support/recorded_runs.py) are copied to a
temporary runs directory, so nothing a test does can change them. The GPU backend is the fake
8x B200 NVML and the clock stands at the recorded runs' "now" (conftest's `recorded_app`), so
what the screen shows does not depend on today's date. Real runs are in test_app_live.py (slow).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from textual.widgets import DataTable, OptionList, SelectionList, TabbedContent, TextArea

from tests.support.locations import BAD_PROFILES
from tests.support.waiting import await_for
from training.profile import PROFILES_DIR
from training.rundir import RunPaths, read_run_json
from tui.app import make_app
from tui.screens.confirm_dialog import ConfirmDialog
from tui.screens.picker import PickerScreen
from tui.screens.quit_dialog import QuitDialog
from tui.screens.run_screen import RunScreen
from tui.screens.runs_screen import RunsScreen
from tui.widgets import EventLog, GpuPanel, LossPlot, RankLog, RunHeader

GNN = "20261124-090000-8xb200-gnn"
CPU = "20261123-140000-cpu"
FAILED = "20261123-100000-4x2080ti"
SIZE = (100, 30)


async def wait_run_loaded(pilot) -> RunScreen:
    await await_for(pilot, lambda: isinstance(pilot.app.screen, RunScreen) and pilot.app.screen.loaded)
    screen = pilot.app.screen
    await await_for(pilot, lambda: screen.telemetry_seen or not screen.model.live)
    await pilot.pause(0.1)
    return screen


async def press_and_see(pilot, key: str, screen_type: type) -> None:
    """Press `key`, then wait until the app's screen is a `screen_type`."""
    await pilot.press(key)
    await await_for(pilot, lambda: isinstance(pilot.app.screen, screen_type))


async def event_log_text(pilot, screen: RunScreen) -> str:
    """The Events tab's text (RichLog renders once it is shown)."""
    await pilot.press("2")
    await pilot.pause(0.2)
    return "\n".join(strip.text for strip in screen.query_one(EventLog).lines)


def header_text(screen: RunScreen) -> str:
    return screen.query_one(RunHeader).render().plain


# ---- picker ----------------------------------------------------------------------------------

async def test_picker_lists_profiles_with_hardware_match_and_preflight(tmp_path, backend):
    app = make_app(runs_dir=tmp_path / "runs", gpu_backend=backend)
    async with app.run_test(size=SIZE) as pilot:
        await await_for(pilot, lambda: isinstance(app.screen, PickerScreen) and app.screen.entries)
        picker = app.screen
        options = picker.query_one(OptionList)
        prompts = [str(options.get_option_at_index(i).prompt) for i in range(options.option_count)]
        assert any(p.startswith("8xb200-gnn  ok 8/8 B200") for p in prompts)
        assert any(p.startswith("4x2080ti  ~ 8/4") or p.startswith("4x2080ti  ") for p in prompts)
        assert any(p.startswith("cpu  any") for p in prompts)
        # cpu is highlighted first: its TOML and its preflight are shown.
        await await_for(pilot, lambda: picker.preflight_ready, timeout=30)  # imports torch: seconds on a loaded box
        assert 'name = "cpu"' in picker.query_one(TextArea).text
        preflight = str(picker.query_one("#preflight").render())
        assert "preflight passed" in preflight


async def test_picker_shows_profile_error_in_place(tmp_path, backend):
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    shutil.copy(PROFILES_DIR / "cpu.toml", profiles / "cpu.toml")
    shutil.copy(BAD_PROFILES / "misspelled_key.toml", profiles / "broken.toml")
    app = make_app(runs_dir=tmp_path / "runs", profiles_dir=profiles, gpu_backend=backend)
    async with app.run_test(size=SIZE) as pilot:
        await await_for(pilot, lambda: isinstance(app.screen, PickerScreen) and app.screen.entries)
        picker = app.screen
        assert picker.entries["broken"].profile is None
        options = picker.query_one(OptionList)
        options.highlighted = options.get_option_index("broken")
        # The highlight is handled asynchronously; the cpu profile's preflight may still be shown.
        await await_for(pilot, lambda: "broken.toml" in str(picker.query_one("#preflight").render()))
        shown = str(picker.query_one("#preflight").render())
        assert "broken.toml" in shown and "Did you mean" in shown
        assert picker.query_one("#preflight-box").has_class("-error")
        await pilot.press("s")  # starting it only explains; nothing starts, nothing crashes
        await pilot.pause(0.2)
        assert isinstance(app.screen, PickerScreen)
        assert not (tmp_path / "runs").exists()


# ---- run screen on recorded runs --------------------------------------------------------------

async def test_attach_finished_cpu_run_shows_whole_history(recorded_app):
    app = recorded_app(CPU)
    async with app.run_test(size=SIZE) as pilot:
        screen = await wait_run_loaded(pilot)
        assert screen.model.state == "finished"
        header = header_text(screen)
        assert "finished" in header and "epoch 4/4" in header and "step 116" in header
        assert "elapsed 0:44" in header  # recorded start to recorded end, no clock
        panels = list(screen.query(GpuPanel))
        assert [p.device.title for p in panels] == ["CPU worker 0 (rank 0)", "CPU worker 1 (rank 1)"]
        assert all(p.device.kind == "cpu" for p in panels)
        text = await event_log_text(pilot, screen)
        assert "★ checkpoint best.pt" in text and "epoch 4/4 done" in text and "exit: finished" in text
        plot = screen.query_one(LossPlot)
        assert ("train", "loss") in plot.visible_keys() and ("val", "loss") in plot.visible_keys()
        assert ("train", "lr") not in plot.visible_keys()


async def test_attach_failed_run_names_rank_and_first_error_lines(recorded_app):
    app = recorded_app(FAILED)
    async with app.run_test(size=SIZE) as pilot:
        screen = await wait_run_loaded(pilot)
        assert screen.model.state == "failed"
        text = await event_log_text(pilot, screen)
        assert "failing rank 2" in text
        assert "CUDA out of memory" in text
        assert "hint: lower train.batch_size" in text
        # A failed run can be resumed; stop/save/pause are for live runs only.
        assert screen.check_action("resume", ()) is True
        assert screen.check_action("stop", ()) is False


async def test_running_8gpu_run_marks_hot_throttling_and_idle_gpus(recorded_app):
    app = recorded_app(GNN)
    async with app.run_test(size=SIZE) as pilot:
        screen = await wait_run_loaded(pilot)
        panels = {p.device.index: p for p in screen.query(GpuPanel)}
        assert sorted(panels) == list(range(8))
        assert panels[3].has_class("-hot") and not panels[0].has_class("-hot")
        assert panels[5].has_class("-throttle")
        assert panels[6].has_class("-idle") and not panels[7].has_class("-idle")
        assert panels[0].device.ranks == (0,) and len(panels[0].device.history) == 90
        assert panels[2].has_class("-stalled")  # the recorded run ends in a hang of rank 2
        header = header_text(screen)
        assert "running" in header and "epoch 12/50" in header and "ETA" in header
        # Compact rows at this width: each GPU is one line.
        assert all(p.size.height == 1 for p in panels.values())


async def test_plot_keys_change_axis_scale_smoothing_and_series(recorded_app):
    app = recorded_app(GNN)
    async with app.run_test(size=SIZE) as pilot:
        screen = await wait_run_loaded(pilot)
        plot = screen.query_one(LossPlot)
        assert {("train", "loss/conflict"), ("train", "loss/chromatic"), ("train", "loss/entropy")} <= set(
            plot.visible_keys())
        await pilot.press("x", "l", "m")
        assert (plot.x_axis, plot.log_y, plot.smoothing) == ("epoch", True, 0.6)
        await pilot.press("m", "m")
        assert plot.smoothing == 0.0
        await pilot.press("t")
        series = screen.query_one(SelectionList)
        assert series.display and series.has_focus
        series.deselect("train\x1floss/entropy")
        await pilot.pause()
        assert ("train", "loss/entropy") not in plot.visible_keys()
        await pilot.pause(0.1)
        assert "x: epoch (x) · y: log (l) · raw (m)" in plot.settings_text()


async def test_80x24_default_screen_shows_the_last_checkpoint(recorded_app):
    """At 80x24, on the default tab, the header names the last checkpoint (its age from the
    injected clock), the plot marks checkpoint steps and the footer fits its line."""
    app = recorded_app(GNN)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await wait_run_loaded(pilot)
        await pilot.pause(0.2)
        assert screen.query_one(TabbedContent).active == "plot"
        shown = screen.query_one(RunHeader)
        text = shown.render().plain
        # The recorded run's last checkpoint: best.pt after epoch 11, 1 min before SNAPSHOT_NOW.
        assert "ckpt best.pt ep 11 val_loss 0.8508 ★ best  1 min ago" in text, text
        assert shown.region.height == 3 and shown.region.y == 0  # on screen, three lines
        screen_text = "\n".join(
            "".join(seg.text for seg in strip) for strip in app.screen._compositor.render_update(full=True).strips)
        assert "ckpt best.pt ep 11" in screen_text
        plot = screen.query_one(LossPlot)
        assert len(plot.checkpoints) == 11 and all(best for _, _, best in plot.checkpoints)
        assert screen_text.count("▼") >= 8  # the legend covers the first ones, at the top left
        footer = screen_text.splitlines()[-1]
        assert footer.rstrip().endswith("^p palette") and "q Quit" in footer, footer


async def test_checkpoint_mark_without_best_names_the_best_and_its_age(recorded_app, tmp_path):
    from tui.run_model import RunModel

    model = RunModel()
    model.apply_events([
        {"kind": "checkpoint", "t": 100.0, "path": "checkpoints/best.pt", "epoch": 3, "step": 30,
         "monitor": "val_loss", "value": 0.5, "best": True},
        {"kind": "checkpoint", "t": 200.0, "path": "checkpoints/last.pt", "epoch": 4, "step": 40,
         "monitor": "val_loss", "value": 0.6, "best": False}])
    mark = model.checkpoint_mark(now=200.0 + 3 * 3600 + 5)
    assert (mark.name, mark.epoch, mark.best, mark.best_value, mark.best_epoch, mark.age) == \
        ("last.pt", 4, False, 0.5, 3, "3 h")
    assert model.checkpoint_marks == [(30, 3, True), (40, 4, False)]


async def test_tabs_and_rank_logs(recorded_app):
    app = recorded_app(GNN)
    async with app.run_test(size=SIZE) as pilot:
        screen = await wait_run_loaded(pilot)
        await pilot.press("3")
        assert screen.query_one(TabbedContent).active == "logs"
        rank_log = screen.query_one(RankLog)
        await await_for(pilot, lambda: rank_log._sources)
        labels = [label for label, _ in rank_log._sources]
        assert labels[:2] == ["rank 0 stdout", "rank 0 stderr"] and "supervisor" in labels
        log = rank_log.query_one("#rank-log-lines")
        await await_for(pilot, lambda: any("epoch 11" in line for line in log.lines))
        await pilot.press("2")
        assert screen.query_one(TabbedContent).active == "events"


async def test_quit_on_live_run_asks_stop_or_detach(recorded_app, recorded_runs_dir):
    app = recorded_app(GNN)
    async with app.run_test(size=SIZE) as pilot:
        await wait_run_loaded(pilot)
        await press_and_see(pilot, "q", QuitDialog)
        await press_and_see(pilot, "escape", RunScreen)  # cancel keeps watching
        await press_and_see(pilot, "q", QuitDialog)
        await pilot.press("d")
        await await_for(pilot, lambda: not app.is_running)
    assert read_run_json(RunPaths(recorded_runs_dir / GNN))["state"] == "running"  # detached: untouched


async def test_quit_on_finished_run_just_quits(recorded_app):
    app = recorded_app(CPU)
    async with app.run_test(size=SIZE) as pilot:
        await wait_run_loaded(pilot)
        await pilot.press("q")
        await await_for(pilot, lambda: not app.is_running)


async def test_stop_asks_to_confirm(recorded_app, recorded_runs_dir):
    app = recorded_app(GNN)
    async with app.run_test(size=SIZE) as pilot:
        await wait_run_loaded(pilot)
        await press_and_see(pilot, "s", ConfirmDialog)
        await press_and_see(pilot, "n", RunScreen)
    assert read_run_json(RunPaths(recorded_runs_dir / GNN))["state"] == "running"


async def test_runs_screen_lists_and_opens_runs(recorded_app):
    app = recorded_app()
    async with app.run_test(size=SIZE) as pilot:
        await await_for(pilot, lambda: isinstance(app.screen, PickerScreen))
        await pilot.press("a")
        await await_for(pilot, lambda: isinstance(app.screen, RunsScreen) and app.screen.loaded)
        table = app.screen.query_one(DataTable)
        assert table.row_count == 3
        first = [str(c) for c in table.get_row_at(0)]
        assert first[0] == GNN and first[1] == "running" and "epoch 12/50" in first[4]
        states = {str(table.get_row_at(i)[0]): str(table.get_row_at(i)[1]) for i in range(3)}
        assert states[CPU] == "finished" and states[FAILED] == "failed"
        table.move_cursor(row=1)
        await pilot.press("enter")
        screen = await wait_run_loaded(pilot)
        assert screen.paths.id == CPU
        await press_and_see(pilot, "d", RunsScreen)  # detach goes back to the runs list


async def test_command_palette_offers_the_screen_keys(recorded_app):
    app = recorded_app(GNN)
    async with app.run_test(size=SIZE) as pilot:
        screen = await wait_run_loaded(pilot)
        titles = {c.title for c in app.get_system_commands(screen)}
        assert {"Stop", "Detach", "Save", "Pause", "Series", "x axis", "Log y", "Smooth", "Plot tab",
                "Events tab", "Logs tab", "Runs", "Quit", "Save+stop", "Stacks"} <= titles
        assert "Resume" not in titles  # only for stopped or failed runs


# ---- watchdog, stack dumps, save-and-stop -----------------------------------------------------

def append_event(run: Path, **event) -> None:
    with (run / "events.jsonl").open("a", encoding="utf-8") as f:
        f.write(json.dumps({"v": 1, "kind": "log", **event}) + "\n")


async def test_watchdog_hang_marks_the_rank_panel_until_it_recovers(recorded_app, recorded_runs_dir):
    run = recorded_runs_dir / GNN
    app = recorded_app(run.name)
    async with app.run_test(size=SIZE) as pilot:
        screen = await wait_run_loaded(pilot)
        panels = {p.device.index: p for p in screen.query(GpuPanel)}
        # The recorded run: rank 2 hung (a warning); rank 6 was a straggler long ago (no mark now).
        assert panels[2].has_class("-stalled") and panels[2].alert.label.startswith("HUNG ")
        assert [i for i, p in panels.items() if p.has_class("-stalled") or p.has_class("-straggler")] == [2]
        assert "HUNG" in panels[2].render().plain  # the label shows in the compact row
        text = (await event_log_text(pilot, screen)).replace("\n", "")  # unwrap
        assert "HANG · rank 2 · step 4061 · 61 s  rank 2 has not finished a step for" in text
        assert "SLOW · rank 6" in text
        # The highlighted line uses the hang's component style, not the plain warning one.
        hang_style = screen.query_one(EventLog).get_component_rich_style("event-log--hang", partial=True)
        hang_line = next(strip for strip in screen.query_one(EventLog).lines if "HANG" in strip.text)
        assert any(seg.style and seg.style.bgcolor == hang_style.bgcolor for seg in hang_line)

        t = json.loads((run / "events.jsonl").read_text().splitlines()[-1])["t"]
        append_event(run, t=t + 5, level="warning", watchdog="straggler", rank=5, step=4061,
                     message="rank 5 is a straggler: 1.00 steps/s against 3.00 for the other ranks")
        await await_for(pilot, lambda: panels[5].has_class("-straggler"))
        assert panels[5].alert.label == "slow" and not panels[5].has_class("-stalled")

        append_event(run, t=t + 9, level="info", watchdog="recovered", rank=2, ranks=[2], steps={"2": 4062},
                     stalled_s=70.0, message="rank 2 is moving again: rank 2 at step 4062, after about 70 s "
                                             "without progress")
        await await_for(pilot, lambda: not panels[2].has_class("-stalled"))
        assert panels[2].alert is None and panels[5].has_class("-straggler")
        text = await event_log_text(pilot, screen)
        assert "MOVING · rank 2" in text

        # The run ends: every mark goes.
        data = json.loads((run / "run.json").read_text())
        data["state"] = "stopped"
        (run / "run.json").write_text(json.dumps(data))
        await await_for(pilot, lambda: not panels[5].has_class("-straggler"))


async def test_watchdog_marks_a_cpu_worker_panel(recorded_app, recorded_runs_dir):
    run = recorded_runs_dir / CPU
    data = json.loads((run / "run.json").read_text())
    data["state"] = "running"  # live again, so the mark applies
    (run / "run.json").write_text(json.dumps(data))
    (run / "exit.json").unlink()
    append_event(run, t=data["state_t"] + 1, level="warning", watchdog="hang", rank=1, ranks=[1], step=116,
                 stalled_s=92.0, message="rank 1 has not finished a step for 92 s (stuck at step 116)")
    app = recorded_app(run.name)
    app.clock = lambda: data["state_t"] + 1
    async with app.run_test(size=SIZE) as pilot:
        screen = await wait_run_loaded(pilot)
        panels = {p.device.ranks[0]: p for p in screen.query(GpuPanel)}
        await await_for(pilot, lambda: panels[1].has_class("-stalled"))
        assert not panels[0].has_class("-stalled")
        assert panels[1].alert.label == "HUNG 92 s"


async def test_stacks_key_dumps_and_shows_the_dump_in_the_logs_tab(recorded_app, monkeypatch):
    from training.console import stackdump

    calls = []

    def fake_dump(paths, *args, **kwargs):
        calls.append(paths.id)
        paths.dumps.mkdir(exist_ok=True)
        out = paths.dumps / "stacks-20261124-093000.txt"
        out.write_text("==== rank 2 (pid 41002, py-spy) ====\nThread 1 (idle): all_reduce\n")
        return [f"stack dump of 8 ranks: {out}"]

    monkeypatch.setattr(stackdump, "dump_stacks", fake_dump)
    app = recorded_app(GNN)
    async with app.run_test(size=SIZE) as pilot:
        screen = await wait_run_loaded(pilot)
        assert screen.check_action("dump", ()) is True
        await pilot.press("k")
        rank_log = screen.query_one(RankLog)
        await await_for(pilot, lambda: rank_log.selected is not None and rank_log.selected.name.startswith("stacks-"))
        assert calls == [GNN]
        assert screen.query_one(TabbedContent).active == "logs"
        log = rank_log.query_one("#rank-log-lines")
        await await_for(pilot, lambda: any("all_reduce" in line for line in log.lines))
        assert any("stack dump of 8 ranks" in str(n.message) for n in app._notifications)


async def test_stacks_key_reports_the_error(recorded_app, monkeypatch):
    from training.console import stackdump
    from training.errors import TraindeckError

    def failing(paths, *args, **kwargs):
        raise TraindeckError(f"run {paths.id} runs on gpu-box-1, not on this machine")

    monkeypatch.setattr(stackdump, "dump_stacks", failing)
    app = recorded_app(GNN)
    async with app.run_test(size=SIZE) as pilot:
        screen = await wait_run_loaded(pilot)
        await pilot.press("k")
        await await_for(pilot, lambda: any("not on this machine" in str(n.message) for n in app._notifications))
        assert screen.query_one(TabbedContent).active == "plot"


async def test_save_stop_asks_then_writes_the_control_file(recorded_app, recorded_runs_dir):
    paths = RunPaths(recorded_runs_dir / GNN)
    app = recorded_app(paths.id)
    async with app.run_test(size=SIZE) as pilot:
        await wait_run_loaded(pilot)
        await press_and_see(pilot, "S", ConfirmDialog)
        await press_and_see(pilot, "n", RunScreen)  # no: nothing is sent
        await pilot.pause(0.2)
        assert not paths.control.exists()
        await press_and_see(pilot, "S", ConfirmDialog)
        await pilot.press("y")
        await await_for(pilot, lambda: paths.control.exists())
        control = json.loads(paths.control.read_text())
        assert control["action"] == "save-stop" and control["seq"] == 1


async def test_live_only_keys_are_hidden_on_finished_runs(recorded_app):
    app = recorded_app(CPU)
    async with app.run_test(size=SIZE) as pilot:
        screen = await wait_run_loaded(pilot)
        for action in ("stop", "save", "pause", "save_stop", "dump"):
            assert screen.check_action(action, ()) is False, action
        titles = {c.title for c in app.get_system_commands(screen)}
        assert not {"Save+stop", "Stacks", "Stop"} & titles


def test_run_model_folds_watchdog_events():
    from tui.run_model import RunModel

    model = RunModel()
    model.apply_run_json({"state": "running"})
    model.apply_events([
        {"kind": "log", "t": 100.0, "level": "warning", "watchdog": "hang", "rank": None, "ranks": [0, 1],
         "step": 7, "stalled_s": 65.0, "message": "no rank has finished a step for 65 s"},
        {"kind": "log", "t": 101.0, "level": "warning", "watchdog": "straggler", "rank": 1, "step": 7,
         "message": "rank 1 is a straggler"},
        {"kind": "log", "t": 102.0, "level": "warning", "watchdog": "straggler", "rank": 3, "step": 9,
         "message": "rank 3 is a straggler"},
    ])
    alerts = model.current_alerts(now=135.0)
    # The heartbeats could not tell who is stuck: both are marked, neither is named "HUNG".
    assert alerts[0].label(135.0) == "STALLED? 1:40" and alerts[1].kind == "hang"  # a hang outranks "slow"
    assert alerts[3].label() == "slow"
    assert 3 not in model.current_alerts(now=102.0 + 331)  # a straggler warning goes stale
    model.apply_events([{"kind": "log", "t": 140.0, "level": "info", "watchdog": "recovered", "rank": None,
                         "ranks": [0, 1], "message": "ranks 0, 1 are moving again"}])
    assert set(model.current_alerts(now=140.0)) == {3}
    model.apply_run_json({"state": "stopped"})
    assert model.current_alerts(now=140.0) == {}


async def test_a_live_health_event_shows_in_header_and_log_and_rings_the_terminal(recorded_app, recorded_runs_dir):
    run = recorded_runs_dir / GNN
    app = recorded_app(run.name)
    async with app.run_test(size=SIZE) as pilot:
        screen = await wait_run_loaded(pilot)
        written: list[str] = []
        driver_write = app._driver.write
        app._driver.write = lambda data: (written.append(data), driver_write(data))
        assert "⚠" not in header_text(screen)
        t = json.loads((run / "events.jsonl").read_text().splitlines()[-1])["t"]
        append_event(run, kind="health", t=t + 2, rule="nan", value="nan", step=4070, rank=None, action="save-stop",
                     asked="stop", metric="loss", incident="nan-1",
                     message="loss is nan at step 4070; saving the last good checkpoint and stopping")
        await await_for(pilot, lambda: "⚠ nan step 4070 → save-stop" in header_text(screen))
        out = "".join(written)
        assert out.startswith("\a")
        assert f"\x1b]9;traindeck {GNN}: health nan: loss is nan at step 4070;" in out
        assert f"\x1b]777;notify;traindeck {GNN};health nan: loss is nan" in out
        text = (await event_log_text(pilot, screen)).replace("\n", "")
        assert "HEALTH nan · step 4070 · SAVE-STOP  loss is nan at step 4070" in text
        # An update of the same incident: in the header and the log, but no second alarm.
        written.clear()
        append_event(run, kind="health", t=t + 3, rule="nan", value="nan", step=4080, rank=None, action="warn",
                     asked="stop", metric="loss", incident="nan-1", update=True, firings=2,
                     message="loss is nan at step 4080 (again: firing 2 of the incident since step 4070)")
        await await_for(pilot, lambda: "⚠ nan step 4080 → save-stop ×2" in header_text(screen))
        out = "".join(written)
        assert "\a" not in out and "\x1b]9;" not in out and "\x1b]777;" not in out
        text = (await event_log_text(pilot, screen)).replace("\n", "")
        assert "HEALTH nan · step 4080 · update  loss is nan at step 4080 (again" in text


async def test_a_recorded_health_event_rings_nothing(recorded_app, recorded_runs_dir):
    run = recorded_runs_dir / GNN
    t = json.loads((run / "events.jsonl").read_text().splitlines()[-1])["t"]
    append_event(run, kind="health", t=t + 1, rule="throughput", value=10.0, step=4070, action="warn",
                 message="throughput dropped")
    app = recorded_app(run.name)
    async with app.run_test(size=SIZE) as pilot:
        written: list[str] = []
        screen = await wait_run_loaded(pilot)
        driver_write = app._driver.write
        app._driver.write = lambda data: (written.append(data), driver_write(data))
        await pilot.pause(0.3)
        assert "⚠ throughput step 4070" in header_text(screen)
        assert "\x1b]9;" not in "".join(written)


def test_run_model_folds_health_events_and_old_watchdog_warnings_alike():
    from tui.run_model import RunModel

    model = RunModel()
    model.apply_events([
        {"kind": "log", "t": 1.0, "level": "warning", "watchdog": "hang", "rank": 1, "ranks": [1], "step": 3,
         "stalled_s": 61.0, "message": "rank 1 has not finished a step"},
        {"kind": "health", "t": 2.0, "rule": "divergence", "value": 9.1, "step": 40, "action": "warn",
         "message": "the train loss is diverging"},
        {"kind": "health", "t": 3.0, "rule": "nan", "value": "nan", "step": 50, "action": "stop", "message": "x"},
    ])
    assert model.alerts[1].kind == "hang"
    assert [e.rule for e in model.health] == ["divergence", "nan"] and model.health[1].value == "nan"
    assert model.header(3.0).health == "nan step 50 → stop (+1)"
    assert model.warnings == 3


async def test_health_firings_are_marked_on_the_loss_plot_by_step(recorded_app, recorded_runs_dir):
    run = recorded_runs_dir / GNN
    lines = (run / "events.jsonl").read_text().splitlines()
    steps = [e["step"] for e in map(json.loads, lines) if e.get("kind") == "metric" and e.get("split") == "train"]
    mid = steps[len(steps) // 2]
    append_event(run, kind="health", t=json.loads(lines[-1])["t"] + 1, rule="divergence", value=9.0, step=mid,
                 action="warn", message="the train loss is diverging")
    app = recorded_app(run.name)
    async with app.run_test(size=SIZE) as pilot:
        screen = await wait_run_loaded(pilot)
        plot = screen.query_one(LossPlot)
        assert plot.markers == ((mid, "divergence"),)
        xs, _ = plot.store.view(("train", "loss"), 100)
        assert plot.visible_markers(xs) == [(mid, "divergence")]
        plot.render()
        assert "divergence" in plot.plt.build()
        # By epoch a firing has no place (it names a step): no marker.
        await pilot.press("x")
        assert plot.visible_markers(xs) == []
        plot.render()
        assert "divergence" not in plot.plt.build()


async def test_the_event_log_follows_its_end_when_its_height_changes_after_the_last_line():
    """A layout change after the last write (the series list appearing beside the side log, a
    resize) must not leave the log short of the newest lines until the next event."""
    from textual.app import App

    class LogApp(App):
        CSS = "EventLog { height: 12; }"

        def compose(self):
            yield EventLog(id="log")

    app = LogApp()
    async with app.run_test(size=(60, 30)) as pilot:
        log = app.query_one(EventLog)
        for i in range(40):
            log.write(f"line {i}")
        await pilot.pause(0.1)
        assert log.scroll_y == log.max_scroll_y > 0
        log.styles.height = 6  # shorter: the end moves down by 6 lines
        await pilot.pause(0.1)
        assert log.max_scroll_y == 40 - 6
        assert log.scroll_y == log.max_scroll_y

"""The feed and the one run model: stat-keyed reads, the liveness check, and a supervisor that
dies while the run screen watches (run.json still says "running"; the screen must not)."""

from __future__ import annotations

import subprocess
import sys
import time

from tests.support.fake_runs import append_events, event, make_run_dir, supervisor_record, write_exit
from tests.support.waiting import await_for
from training.rundir.liveness import SupervisorStatus, supervisor_status
from tui.app import make_app
from tui.feed import RunFeed
from tui.run_model import RunModel
from tui.screens.run_screen import RunScreen

T0 = 1_764_000_000.0


def _short_lived_process() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def test_feed_reads_changes_once_and_notices_a_dead_supervisor(tmp_path):
    proc = _short_lived_process()
    try:
        paths = make_run_dir(tmp_path, "20261124-183000-cpu", state="running",
                             supervisor=supervisor_record(proc.pid), created=T0)
        append_events(paths, [event(T0 + 1, "status", state="running", epochs=2, steps_per_epoch=3)])
        ticks = [0.0]
        feed = RunFeed(paths, monotonic=lambda: ticks[0])
        first = feed.poll()
        # The event already on disk comes folded in the series snapshot (rebuilt: there was none).
        assert first is not None and first.caught_up and not first.orphaned and first.events == []
        assert [e["kind"] for e in first.base.replay()] == ["status"]
        assert feed.poll() is None  # nothing changed: no batch
        assert supervisor_status(first.run_json) is SupervisorStatus.ALIVE
    finally:
        proc.kill()
        proc.wait()
    ticks[0] += 5.0  # past the liveness check's interval
    batch = feed.poll()
    assert batch is not None and batch.orphaned
    model = RunModel()
    model.apply_run_json(batch.run_json)
    model.apply_orphaned(batch.orphaned)
    assert model.state == "failed" and not model.live
    write_exit(paths, returncode=None, state="failed", t=T0 + 9)
    batch = feed.poll()
    assert batch is not None and not batch.orphaned and batch.exit_json["state"] == "failed"


def test_one_model_folds_what_both_viewers_show():
    model = RunModel()
    model.apply_events([
        event(T0 + 1, "status", state="running", epochs=2, steps_per_epoch=3, start_step=0),
        event(T0 + 2, "metric", step=1, epoch=1, split="train", values={"loss": 0.5, "samples_per_s": 10.0}),
        event(T0 + 3, "metric", step=1, epoch=1, split="val", values={"loss": 0.4}),
        event(T0 + 4, "checkpoint", path="checkpoints/best.pt", epoch=1, step=1, monitor="val_loss",
              value=0.4, best=True, bytes=2048, seconds=0.1),
        event(T0 + 5, "log", level="warning", message="slow"),
    ])
    assert (model.epoch, model.epochs, model.step, model.last_loss) == (1, 2, 1, 0.5)
    assert model.val == {"loss": 0.4} and model.best["value"] == 0.4 and model.warnings == 1
    assert model.header(T0 + 10).total_steps == 6


async def test_run_screen_notices_a_supervisor_that_dies_while_watched(tmp_path, backend, clock):
    proc = _short_lived_process()
    runs = tmp_path / "runs"
    paths = make_run_dir(runs, "20261124-183000-cpu", state="running",
                         supervisor=supervisor_record(proc.pid), created=time.time())
    append_events(paths, [event(time.time(), "status", state="running", epochs=2, steps_per_epoch=3)])
    app = make_app(runs_dir=runs, attach=paths, gpu_backend=backend, clock=clock)
    try:
        async with app.run_test(size=(100, 30)) as pilot:
            await await_for(pilot, lambda: isinstance(app.screen, RunScreen) and app.screen.loaded)
            screen = app.screen
            assert screen.model.state == "running"
            proc.kill()
            proc.wait()
            await await_for(pilot, lambda: screen.model.state == "failed", timeout=10.0)
            assert not screen.check_action("stop", ())
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_run_json_change_read_between_polls_still_reaches_the_next_batch(tmp_path):
    # The telemetry poll reads run.json (for the node list) on the same feed between two event
    # polls: the change it saw first must still be posted, or the screen never learns the run ended.
    paths = make_run_dir(tmp_path, "20261124-183000-cpu", state="running", created=T0)
    feed = RunFeed(paths, snapshot=False)
    assert feed.poll() is not None and feed.poll() is None
    make_run_dir(tmp_path, "20261124-183000-cpu", state="stopped", created=T0)
    assert feed.run_json()["state"] == "stopped"  # the other poll got there first
    batch = feed.poll()
    assert batch is not None and batch.run_json["state"] == "stopped"
    assert feed.poll() is None

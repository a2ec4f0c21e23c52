"""Issue 35: what a long-lived follower of a run holds is bounded by a named constant, not by the
run's length. Each structure is fed 10^5 events (far past its bound) and its size is asserted at
the bound. benchmarks/bench_follow.py measures the processes' RSS over 10^6 events."""

from __future__ import annotations

from rich.text import Text

from training.monitor.notify import NOTIFY_OUTCOMES_KEPT, Notifier, Outcome
from training.rundir.series import DEFAULT_CAPACITY, DEFAULT_RECENT, MAX_SERIES, SeriesStore
from training.rundir.snapshot import MAX_STORY, Folded
from tui.feed import HISTORY, TelemetryFeed
from tui.run_model import MAX_CHECKPOINT_MARKS, MAX_HEALTH_MARKS, MAX_REWINDS, RunModel
from tui.widgets.event_log import EVENT_LOG_MAX_LINES, EventLog

N = 100_000


def test_event_log_never_shown_keeps_at_most_its_max_lines():
    # The Events tab's log is never sized until someone opens the tab: RichLog defers every write
    # until then, and held one per event for the whole run.
    log = EventLog()
    for i in range(N):
        log.write(Text(f"epoch {i}"))
    assert len(log._deferred_renders) == EVENT_LOG_MAX_LINES == log.max_lines
    assert str(log._deferred_renders[-1].content) == f"epoch {N - 1}"  # the newest are kept


def test_run_model_lists_stay_at_their_bounds():
    model = RunModel()
    for i in range(N):
        model.apply_event({"v": 1, "t": float(i), "kind": "health", "rule": "overfit", "step": i,
                           "action": "warn", "incident": f"i{i}", "message": "m"})
        model.apply_event({"v": 1, "t": float(i), "kind": "checkpoint", "path": "checkpoints/last.pt",
                           "epoch": i, "step": i, "best": False})
        model.apply_event({"v": 1, "t": float(i), "kind": "log", "level": "warning", "message": "rewind",
                           "control": "rewind", "from_step": i + 10, "to_step": i})
    assert len(model.health) == MAX_HEALTH_MARKS and model.health[-1].step == N - 1
    assert len(model.checkpoint_marks) == MAX_CHECKPOINT_MARKS and model.checkpoint_marks[-1][0] == N - 1
    assert len(model.rewinds) == MAX_REWINDS and model.rewinds[-1] == (N + 9, N - 1)
    assert model.health_incidents == N and model.checkpoints == N  # the counts still count every one


def test_series_store_holds_capacity_plus_recent_per_series():
    store = SeriesStore()
    store.add_events({"kind": "metric", "step": s, "split": "train", "values": {"loss": 1.0 / s, "lr": 0.1}}
                     for s in range(1, N + 1))
    per_series = DEFAULT_CAPACITY + 1 + DEFAULT_RECENT  # closed buckets, the open one, the raw tail
    assert store.stored_points <= 2 * per_series
    assert store.get(("train", "loss")).count == N
    for name in range(MAX_SERIES + 50):  # names are the user's: a metric per step is not a series each
        store.add("train", f"m{name}", 1.0, 1.0)
    assert len(store.series) == MAX_SERIES


def test_snapshot_story_keeps_the_newest_max_story():
    folded = Folded()
    folded.story.extend({"kind": "epoch", "epoch": i} for i in range(N))
    assert len(folded.story) == MAX_STORY


def test_telemetry_history_per_device_is_bounded(tmp_path):
    from training.rundir import RunPaths

    feed = TelemetryFeed(RunPaths(tmp_path))
    for i in range(N // 10):
        feed._remember({"gpus": [{"index": 0, "util": i % 100}, {"index": 1, "util": 50}]})
    assert {k: len(v) for k, v in feed.history.items()} == {"gpu0": HISTORY, "gpu1": HISTORY}


def test_notifier_keeps_the_newest_outcomes():
    notifier = Notifier(type("Settings", (), {"command": []})(), "run", "/tmp/run")
    for i in range(N // 10):
        notifier.outcomes.append(Outcome(("true",), i))
    assert len(notifier.outcomes) == NOTIFY_OUTCOMES_KEPT and notifier.outcomes[-1].returncode == N // 10 - 1


async def test_footer_keeps_only_the_keys_it_shows_however_often_bindings_refresh():
    # Textual's Footer kept every FooterKey it ever composed (Textualize/textual#6666): a recompose
    # per Screen.refresh_bindings, which the run screen did per batch behind a fast run. tui.app
    # drops the removed keys before each compose.
    import gc

    from textual.app import App
    from textual.binding import Binding
    from textual.widgets import Footer
    from textual.widgets._footer import FooterKey

    import tui.app  # noqa: F401 - installs the Footer's release of removed keys

    class Keys(App):
        BINDINGS = [Binding("s", "stop", "Stop"), Binding("p", "pause", "Pause"), Binding("q", "quit", "Quit")]

        def compose(self):
            yield Footer(compact=True)

    app = Keys()
    async with app.run_test(size=(80, 10)) as pilot:
        footer = app.query_one(Footer)
        for _ in range(30):
            app.screen.refresh_bindings()
            await pilot.pause()
        shown = len(footer.query(FooterKey))
        assert shown >= 3
        assert len(getattr(footer, "__watchers")["compact"]) <= shown
        gc.collect()
        assert sum(isinstance(o, FooterKey) for o in gc.get_objects()) <= 2 * shown

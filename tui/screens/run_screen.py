"""The run screen: one run directory, live or finished, shown from its files only.

One reader thread (a long-lived worker) polls the run directory and posts one message per batch:
events (run.json, exit.json, events.jsonl; every 0.1 s, a few stats when nothing changed and
then no message), telemetry (telemetry.jsonl; every telemetry interval; snapshots replace each
other) and the chosen log file (every 0.5 s). One thread, not a worker per poll: a worker per
poll (12 a second) cost a thread hand-off, three state-change messages and a timer each, more
CPU than the reading itself. Handlers fold batches into the `RunModel` and the
`SeriesStore` and hand the results down to the widgets: the event log at once, the header at
most once per `HEADER_REFRESH_S` (at once for a change of state), the loss plot at most once
per `PLOT_REFRESH_S` (its redraw is the expensive part: ~10-20 ms). Attaching to a finished run
reads everything from the start, so it shows the whole history.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Footer, SelectionList, TabbedContent, TabPane
from textual.widgets.selection_list import Selection
from textual.worker import Worker, WorkerState, get_current_worker

from training.rundir import RunPaths
from training.rundir.node_views import NodeView, head_host, node_views, other_hosts
from training.rundir.records import Event, HealthEvent, TimingEvent
from training.rundir.series import Key, SeriesStore
from tui import messages
from tui.describe import describe, plain_text
from tui.feed import RunFeed, TelemetryFeed
from tui.run_model import RunModel
from tui.screens.confirm_dialog import ConfirmDialog
from tui.screens.quit_dialog import QuitDialog
from tui.tail import TextTail
from tui.terminal_notify import osc_notification
from tui.widgets import DeviceView, EventLog, GpuGrid, LossPlot, PanelAlert, RankLog, RunHeader, TimeView
from tui.widgets.loss_plot import default_shown, series_label

# events.jsonl is polled often so a batch reaches the UI within ~0.1-0.2 s; an idle poll is a
# few os.stat calls and posts nothing. The expensive redraw (the loss plot) is coalesced
# separately: at most once per PLOT_REFRESH_S (BENCHMARKS.md, figures 3 and 4).
EVENTS_POLL_S = 0.1
EVENTS_IDLE_POLL_S = 0.5  # a finished run: only a resume (run.json) or a late event can come
PLOT_REFRESH_S = 1.0  # a plot redraw costs ~10-20 ms (plotext); new points show within 1 s
# The step count: at most four times a second (bench_paint: p95 at paint 0.54 s; at 0.5 s it was
# 0.70-0.74 s on a quiet box and 1.11 s under load 7, over issue 17's 1 s); a change of state
# shows at once. A pending step count also rides in the GPU panels' and the plot's frames.
HEADER_REFRESH_S = 0.25
LOW_BANDWIDTH_PLOT_S = 5.0  # run.py --low-bandwidth: the plot at most every 5 s
LOG_POLL_S = 0.5
READER_TICK_S = 0.1  # the reader notices a wake-up (a log chosen, the screen closing) within this
# events.jsonl is read at most this much per poll (~3,500 metric events). The reader's 4 MB
# default makes ~27,000 event dicts per message while catching up with a long run, and that
# high-water mark stays in RSS: 2.1x the memory after 10^6 events vs 10^4, against 1.08x with
# 512 KB (benchmarks/bench_memory.py, BENCHMARKS.md).
EVENTS_CHUNK_BYTES = 512 << 10
# Batches the reader thread may have posted that the screen has not folded yet. While it catches
# up (or the run writes faster than the screen folds) the reader polls again at once; without
# this bound it read ahead without limit and the queued batches held every event read since
# (hundreds of MB behind a fast run, issue 35). So at most this many chunks are in memory.
MAX_EVENT_BATCHES_IN_FLIGHT = 2
BATCH_WAIT_S = 0.02  # how soon the reader looks again while that many are waiting
# Attach from the series snapshot (training/rundir/snapshot.py) plus the tail after it; False
# reads events.jsonl from its start (benchmarks/bench_attach.py's "before").
USE_SERIES_SNAPSHOT = True


SERIES_LIST_MIN_WIDTH = 160  # the series list shows by default from here (beside the side log)


class _Coalesce:
    """Runs `action` for a burst of requests at most once per `interval` seconds: at once when
    the last run is that old, else once from a one-shot timer when it is."""

    def __init__(self, screen: Screen, interval: float, action: Callable[[], None]) -> None:
        self.screen, self.interval, self.action = screen, interval, action
        self.pending = False
        self.last = float("-inf")
        self.timer: Timer | None = None

    def request(self) -> None:
        self.pending = True
        wait = self.last + self.interval - time.monotonic()
        if wait <= 0:
            self.flush()
        elif self.timer is None:
            self.timer = self.screen.set_timer(wait, self._fired)

    def flush(self) -> None:
        """Run now if anything is pending."""
        if self.timer is not None:
            self.timer.stop()
            self.timer = None
        if self.pending:
            self.pending = False
            self.last = time.monotonic()
            self.action()

    def _fired(self) -> None:
        self.timer = None
        self.flush()


def _key_id(key: Key) -> str:
    return "\x1f".join(key)


def _id_key(value: str) -> Key:
    split, _, name = value.partition("\x1f")
    return split, name


class RunScreen(Screen):
    BINDINGS = [
        Binding("s", "stop", "Stop"),
        Binding("d", "detach", "Detach"),
        Binding("R", "resume", "Resume"),
        Binding("w", "save", "Save"),
        Binding("p", "pause", "Pause"),
        Binding("S", "save_stop", "Save+stop"),
        Binding("k", "dump", "Stacks"),
        Binding("t", "series", "Series"),
        # The plot's title names these keys; the footer has no room for them at 80 columns.
        Binding("x", "x_axis", "x axis", show=False),
        Binding("l", "log_y", "Log y", show=False),
        Binding("m", "smoothing", "Smooth", show=False),
        Binding("1", "tab('plot')", "Plot tab", show=False),
        Binding("2", "tab('events')", "Events tab", show=False),
        Binding("3", "tab('logs')", "Logs tab", show=False),
        Binding("4", "tab('time')", "Time tab", show=False),
        Binding("a", "runs", "Runs", show=False),
        Binding("q", "quit_run", "Quit"),
    ]

    # ---- messages from the workers (one per batch) ------------------------------------------
    @dataclass
    class EventsArrived(Message):
        records: list[Event]  # typed once by the feed (tui.feed.FeedBatch)
        run_json: dict[str, Any]
        exit_json: dict[str, Any] | None
        caught_up: bool
        orphaned: bool = False
        base: Any = None  # training.rundir.snapshot.Folded: the run up to the snapshot's offset
        replay: list[Event] = field(default_factory=list)  # its story, typed

    @dataclass
    class TelemetryArrived(Message):
        devices: tuple[DeviceView, ...]
        t: float | None
        note: str = ""
        simulated: bool = False  # "source": "fake-nvml"

        def can_replace(self, message: Message) -> bool:
            # Each snapshot carries the whole picture (histories included): the newest wins.
            return isinstance(message, RunScreen.TelemetryArrived)

    @dataclass
    class NodesChanged(Message):
        """A `[launch] hosts` run's nodes, the head first, when one's state or ranks changed."""

        nodes: tuple[NodeView, ...]

    @dataclass
    class DumpWritten(Message):
        """A stack dump landed in dumps/: show it in the Logs tab."""

        path: Path
        sources: list[tuple[str, Path]]

    @dataclass
    class LogArrived(Message):
        path: Path | None
        lines: list[str]
        reset: bool
        sources: list[tuple[str, Path]] = field(default_factory=list)

    def __init__(self, paths: RunPaths, clock: Callable[[], float] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.paths = paths
        self.clock = clock
        self.model = RunModel(run_id=paths.id)
        self.store = SeriesStore()
        self.loaded = False  # the events file has been read to its end once (tests wait for it)
        self.telemetry_seen = False
        # The reader thread's state: touched only inside _read_run_dir's polls.
        self._feed = RunFeed(paths, chunk_bytes=EVENTS_CHUNK_BYTES, snapshot=USE_SERIES_SNAPSHOT)
        self._telemetry = TelemetryFeed(paths)
        # A `[launch] hosts` run's other nodes: host -> its telemetry in nodes/<host>/, the newest
        # sample of each node (with its feed), and the node states last posted.
        self._node_telemetry: dict[str, TelemetryFeed] = {}
        self._latest_samples: dict[str, tuple[dict[str, Any], TelemetryFeed]] = {}
        self._nodes_posted: tuple[NodeView, ...] = ()
        self._log_path: Path | None = None
        self._log_tail: TextTail | None = None
        self._log_sources_posted: list[tuple[str, Path]] | None = None
        self._series_ids: set[str] = set()
        self._last_state = ""
        self._shown_orphaned = False
        self._checkpoints_shown = 0
        # Coalesced redraws (main thread): new points redraw the plot at most once per
        # PLOT_REFRESH_S, new steps the header at most once per HEADER_REFRESH_S.
        self._plot_redraw = _Coalesce(self, PLOT_REFRESH_S, self._redraw_plot)
        self._header_redraw = _Coalesce(self, HEADER_REFRESH_S, self._update_header)
        # Telemetry snapshots reach the GPU panels at most once per --refresh (none: each sample).
        self._grid_redraw = _Coalesce(self, 0.0, self._update_grid)
        self._telemetry_shown: RunScreen.TelemetryArrived | None = None
        self._polls: dict[str, Callable[[], None]] = {
            "events": self._poll_events, "telemetry": self._poll_telemetry, "ranklog": self._poll_log}
        self._wake_reader = threading.Event()  # set: poll everything now (or notice the end)
        # A slot per EventsArrived posted and not yet folded (MAX_EVENT_BATCHES_IN_FLIGHT).
        self._batch_slots = threading.Semaphore(MAX_EVENT_BATCHES_IN_FLIGHT)
        self._closing = False
        self._next_poll_s: dict[str, float] = {"events": EVENTS_POLL_S, "telemetry": 1.0, "ranklog": LOG_POLL_S}

    # The widgets the batch handlers update, found once (a DOM query per batch, ~10 a second, was a
    # measurable part of the console's CPU).
    @cached_property
    def _header(self) -> RunHeader:
        return self.query_one(RunHeader)

    @cached_property
    def _grid(self) -> GpuGrid:
        return self.query_one(GpuGrid)

    @cached_property
    def _plot(self) -> LossPlot:
        return self.query_one(LossPlot)

    @cached_property
    def _event_logs(self) -> tuple[EventLog, ...]:
        return tuple(self.query(EventLog).results(EventLog))

    def now(self) -> float:
        clock = self.clock or getattr(self.app, "clock", None)
        return clock() if clock else time.time()

    # ---- layout -----------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield RunHeader(id="run-header")
        yield GpuGrid(id="gpus")
        with TabbedContent(initial="plot", id="tabs"):
            with TabPane("Plot", id="plot"):
                with Horizontal(id="plot-row"):
                    plot = LossPlot(id="loss-plot")
                    plot.store = self.store
                    yield plot
                    yield SelectionList[str](id="series")
                    # From 120x36 the run's story stands beside the plot (the Events tab stays).
                    yield EventLog(id="side-log", min_width=20)
            with TabPane("Events", id="events"):
                yield EventLog(id="event-log")
            with TabPane("Logs", id="logs"):
                yield RankLog(id="rank-log")
            with TabPane("Time", id="time"):
                yield TimeView(id="time-view")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        # run.py --refresh SECONDS / --low-bandwidth (the app's settings): slower redraws.
        refresh = getattr(self.app, "refresh_s", None) or 0.0
        low = bool(getattr(self.app, "low_bandwidth", False))
        self._plot_redraw.interval = max(PLOT_REFRESH_S, refresh, LOW_BANDWIDTH_PLOT_S if low else 0.0)
        self._header_redraw.interval = max(HEADER_REFRESH_S, refresh)
        self._grid_redraw.interval = refresh
        if low:
            self.query_one(GpuGrid).sparklines = False
        self.query_one("#series", SelectionList).border_title = "series (space)"
        if self.app.size.width >= SERIES_LIST_MIN_WIDTH:
            self.add_class("-show-series")
        self._update_header()
        self._read_run_dir()
        self.set_interval(1.0, self._tick)

    def on_unmount(self) -> None:
        self._closing = True
        self._wake_reader.set()  # the reader ends now, not at its next poll

    def _tick(self) -> None:
        if self.model.live:
            # The elapsed time, when nothing else redrew the header in the last second (while a
            # run reports, its batches and telemetry do, so the clock adds no frame of its own).
            if time.monotonic() - self._header_redraw.last >= 1.0:
                self._header_redraw.request()
            self._update_alerts()  # a hang's "HUNG m:ss" counts on

    def _update_alerts(self) -> None:
        now = self.now()
        self._grid.alerts = {
            rank: PanelAlert(alert.kind, alert.label(now)) for rank, alert in self.model.current_alerts(now).items()}

    def _update_header(self) -> None:
        # HeaderInfo is a frozen dataclass: the reactive repaints only when a field changed.
        self._header.info = self.model.header(self.now())
        if self.sub_title != self.paths.id:
            self.sub_title = self.paths.id

    # ---- the reader thread --------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="reader", exit_on_error=False)
    def _read_run_dir(self) -> None:
        """Each poll when it is due (its interval set by the poll itself), until the screen goes."""
        worker = get_current_worker()
        due = dict.fromkeys(self._polls, 0.0)
        failed: set[str] = set()
        while not (worker.is_cancelled or self._closing):
            for name, poll in self._polls.items():
                if time.monotonic() < due[name]:
                    continue
                try:
                    poll()
                    failed.discard(name)
                except Exception as exc:  # noqa: BLE001 - shown, and the poll tried again
                    if name not in failed:  # once per outage, not once per poll
                        self.app.call_from_thread(self.notify, f"reading {name}: {exc}", severity="error", timeout=6)
                    failed.add(name)
                    self._next_poll_s[name] = max(self._next_poll_s[name], 1.0)
                due[name] = time.monotonic() + max(0.01, self._next_poll_s[name])
            # Plain sleeps of at most READER_TICK_S, not Event.wait(timeout): libfaketime (the
            # console tests a year ahead) stalls timed waits on a condition, and a cancelled
            # worker (the app exiting) has no other way in.
            until = min(due.values())
            while not (self._wake_reader.is_set() or self._closing) and time.monotonic() < until:
                time.sleep(min(READER_TICK_S, max(0.0, until - time.monotonic())))
            if self._wake_reader.is_set():
                self._wake_reader.clear()
                due = dict.fromkeys(self._polls, 0.0)

    def _poll_events(self) -> None:
        # The feed re-reads run.json and exit.json only when they changed, events.jsonl only when
        # it grew, and checks the supervisor at most once a second: an idle poll posts nothing.
        if not self._batch_slots.acquire(blocking=False):
            self._next_poll_s["events"] = BATCH_WAIT_S  # the screen is behind: read on once it folded one
            return
        batch = self._feed.poll()
        # self.model is the main thread's; reading its state string here is only a hint.
        self._next_poll_s["events"] = 0.0 if not self._feed.caught_up else (
            EVENTS_POLL_S if self.model.live or not self._feed.posted else EVENTS_IDLE_POLL_S)
        if batch is None or not self.post_message(self.EventsArrived(
                batch.records, batch.run_json, batch.exit_json, batch.caught_up, batch.orphaned, batch.base,
                batch.replay)):
            self._batch_slots.release()

    def _poll_telemetry(self) -> None:
        # A `[launch] hosts` run: every other node's telemetry too, from the head's copy in
        # nodes/<host>/ (run.json names the nodes; the feed re-reads it only when it changed).
        run_json = self._feed.run_json()
        hosts = other_hosts(run_json)
        for host in hosts:
            if host not in self._node_telemetry:
                self._node_telemetry[host] = TelemetryFeed(self.paths.node(host))
        feeds = [(head_host(run_json) if hosts else "", self._telemetry), *self._node_telemetry.items()]
        new = False
        for host, feed in feeds:
            latest = feed.poll()
            if latest is not None:
                self._latest_samples[host] = (latest, feed)
                new = True
        at_end = all(feed.at_end for _, feed in feeds)
        self._next_poll_s["telemetry"] = self._telemetry.interval_s if at_end else 0.0
        if hosts:
            views = tuple(node_views(self.paths, run_json))
            if views != self._nodes_posted:
                self._nodes_posted = views
                self.post_message(self.NodesChanged(views))
        if new:
            # Grouped by node, the head first, in the order run.json names them.
            shown = [(h, *self._latest_samples[h]) for h, _ in feeds if h in self._latest_samples]
            devices = tuple(d for host, sample, feed in shown for d in self._devices(sample, feed, host))
            self.post_message(self.TelemetryArrived(devices, shown[0][1].get("t"),
                                                    simulated=any(s.get("source") == "fake-nvml" for _, s, _ in shown)))

    def _devices(self, sample: dict[str, Any], feed: TelemetryFeed | None = None, host: str = "") -> tuple[DeviceView, ...]:
        feed = feed or self._telemetry
        history, count = feed.history, feed.count

        def hist(key: str) -> tuple[tuple[float | None, ...], int]:
            values = tuple(history.get(key, ()))
            return values, count.get(key, 0) - len(values)

        if sample.get("gpus") is not None:
            return tuple(DeviceView.from_gpu(g, *hist(f"gpu{g.get('index', i)}"), host=host)
                         for i, g in enumerate(sample["gpus"]) if isinstance(g, dict))
        workers = sorted((w for w in sample.get("workers") or [] if isinstance(w, dict)),
                         key=lambda w: w.get("rank") if isinstance(w.get("rank"), int) else 1 << 30)
        return tuple(DeviceView.from_worker(w, i, *hist(f"cpu{w.get('rank', i)}"), host=host)
                     for i, w in enumerate(workers))

    def _poll_log(self) -> None:
        sources = self._log_sources()
        path = self._log_path
        lines: list[str] = []
        reset = False
        if path is not None:
            if self._log_tail is None or self._log_tail.path != path:
                self._log_tail = TextTail(path)
                reset = True
            new, restarted = self._log_tail.read()
            lines, reset = new, reset or restarted
        if lines or reset or sources != self._log_sources_posted:  # else the handler has nothing to do
            self._log_sources_posted = sources
            self.post_message(self.LogArrived(path, lines, reset, sources))

    def _log_sources(self) -> list[tuple[str, Path]]:
        from training.rundir.logs import log_label, rank_logs

        sources = [(log_label(rank, f), f) for rank, files in rank_logs(self.paths).items() for f in files]
        if self.paths.supervisor_log.exists():
            sources.append(("supervisor", self.paths.supervisor_log))
        try:
            dumps = sorted(p for p in self.paths.dumps.iterdir() if p.is_file())
        except OSError:
            dumps = []
        sources += [(f"stack dump {p.name}", p) for p in dumps]
        return sources

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR:
            self.notify(str(event.worker.error), title=event.worker.name, severity="error", timeout=10)

    # ---- folding the batches into the widgets ------------------------------------------------
    def on_run_screen_events_arrived(self, message: EventsArrived) -> None:
        try:
            self._fold_events(message)
        finally:
            self._batch_slots.release()  # the reader may read the next chunk

    def _fold_events(self, message: EventsArrived) -> None:
        model = self.model
        model.apply_run_json(message.run_json)
        had_exit = model.exit is not None
        model.apply_exit(message.exit_json)
        model.apply_orphaned(message.orphaned)
        records = message.records
        if message.base is not None:
            # Attach in constant time: the series snapshot's store and its bounded story, then
            # the tail after its offset (message.records).
            self.store = self._plot.store = message.base.store
            model.apply_events(message.replay)
        model.apply_events(records)
        checkpoints = model.checkpoints
        # The event log describes each event as written.
        replayed = [e.raw for e in message.replay]
        written = [e.raw for e in records]
        for log in self._event_logs:
            if log.start_t is None:
                log.start_t = model.created or next((e.t for e in records if e.t is not None), None)
            log.add_events(replayed, epochs=model.epochs)
            log.add_events(written, epochs=model.epochs)
            if had_exit and model.exit is None:
                log.shown_exit = False  # resumed: a new exit will come
            if message.orphaned and not self._shown_orphaned:
                log.add_orphaned(str((message.run_json.get("supervisor") or {}).get("pid", "?")), self.paths.id)
            if model.exit is not None and message.caught_up:
                log.add_exit(model.exit)
        self._shown_orphaned = message.orphaned
        if checkpoints != self._checkpoints_shown:
            self._checkpoints_shown = checkpoints
            self._plot.checkpoints = tuple(model.checkpoint_marks)
        # The first complete picture is drawn at once (tests and snapshots wait for `loaded`).
        first = message.caught_up and not self.loaded
        if self.store.add_events(records) or message.base is not None:
            self._sync_series()
            self._plot_redraw.request()
        if first:
            self._plot_redraw.flush()
        grid = self._grid
        grid.training = model.state == "running" and not model.paused
        self._update_alerts()
        if not self.telemetry_seen and message.caught_up and not model.live:
            grid.placeholder = "no telemetry was recorded for this run"
        if message.base is not None or any(type(e) is TimingEvent for e in records):
            view = self.query_one(TimeView)
            view.anatomy, view.throughput = model.anatomy(), model.throughput()
        health = [e for e in records if type(e) is HealthEvent]
        # From the model, not this batch: an attach that starts from the series snapshot gets the
        # firings folded into it (message.base) and none among the batch's events.
        markers = tuple((e.step, e.rule) for e in model.health if e.step is not None)
        if markers != self._plot.markers:
            self._plot.markers = markers
        alarms = [e for e in health if not e.update]  # an update is no new alarm
        if alarms and self.loaded and model.live:
            self._tell_health(alarms)  # live firings only: a replayed history rings nothing
        shown = self._header.info
        self._header_redraw.request()
        if first or model.state != shown.state or (model.paused and model.live) != shown.paused \
                or bool(health):
            self._header_redraw.flush()  # a change of state shows at once; a new step can wait
        # Only a change of state changes the bindings (check_action reads model.live and state);
        # each refresh rebuilds the Footer, which leaked its keys (Textual #6666; tui.app's fix).
        if model.state != self._last_state or first:
            self._last_state = model.state
            self.refresh_bindings()
        self.loaded = self.loaded or message.caught_up

    def _tell_health(self, events: list[HealthEvent]) -> None:
        """A health rule fired while someone watches: the bell, a desktop notification (OSC 9 and
        OSC 777 pass through SSH to most terminals) and a toast."""
        sequences = "\a"  # the bell, written the way App.bell writes it (which is silent in tests)
        for event in events[-3:]:  # a burst (a backlog after a stall of the feed): its newest three
            line = describe(event.raw)
            text = plain_text(line) if line else event.rule
            sequences += osc_notification(f"traindeck {self.paths.id}", text)
            self.notify(text, title="training health", severity="warning", timeout=10)
        driver = getattr(self.app, "_driver", None)
        if driver is not None:
            driver.write(sequences)

    def _redraw_plot(self) -> None:
        self._plot.version += 1
        self._header_redraw.flush()  # a pending step count rides in this frame

    def _sync_series(self) -> None:
        selection = self.query_one("#series", SelectionList)
        new = [k for k in self.store.names() if _key_id(k) not in self._series_ids]
        if not new:
            return
        for key in new:
            self._series_ids.add(_key_id(key))
            selection.add_option(Selection(series_label(key), _key_id(key), default_shown(key)))
        self._apply_series_selection()

    def _apply_series_selection(self) -> None:
        selection = self.query_one("#series", SelectionList)
        self.query_one(LossPlot).shown = frozenset(_id_key(v) for v in selection.selected)

    def on_selection_list_selected_changed(self, event: SelectionList.SelectedChanged) -> None:
        self._apply_series_selection()

    def on_run_screen_telemetry_arrived(self, message: TelemetryArrived) -> None:
        first = not self.telemetry_seen
        self.telemetry_seen = True
        self._telemetry_shown = message
        self._grid_redraw.request()
        if first:
            self._grid_redraw.flush()

    def on_run_screen_nodes_changed(self, message: NodesChanged) -> None:
        self.model.nodes = message.nodes
        self._header_redraw.request()
        self._header_redraw.flush()

    def _update_grid(self) -> None:
        message = self._telemetry_shown
        if message is None:
            return
        grid = self._grid
        grid.simulated = message.simulated
        grid.devices = message.devices
        self._header_redraw.flush()  # a pending step count rides in this frame

    def on_rank_log_source_selected(self, message: RankLog.SourceSelected) -> None:
        self._log_path = message.path
        self._wake_reader.set()  # the chosen log shows now, not at the next log poll

    def on_run_screen_log_arrived(self, message: LogArrived) -> None:
        rank_log = self.query_one(RankLog)
        rank_log.set_sources(message.sources)
        if message.path is not None and message.path == self._log_path:
            rank_log.add_lines(message.lines, message.reset)

    # ---- keys -------------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        live = self.model.live
        if action in ("stop", "save", "pause", "save_stop", "dump"):
            return live
        if action == "resume":
            return not live and self.model.state in ("stopped", "failed")
        return True

    def action_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab

    def action_series(self) -> None:
        self.action_tab("plot")
        self.toggle_class("-show-series")
        if self.has_class("-show-series"):
            self.query_one("#series", SelectionList).focus()
        else:
            self.set_focus(None)

    def action_x_axis(self) -> None:
        plot = self.query_one(LossPlot)
        plot.x_axis = "epoch" if plot.x_axis == "step" else "step"

    def action_log_y(self) -> None:
        plot = self.query_one(LossPlot)
        plot.log_y = not plot.log_y

    def action_smoothing(self) -> None:
        plot = self.query_one(LossPlot)
        plot.smoothing = LossPlot.next_smoothing(plot.smoothing)

    def action_runs(self) -> None:
        self.post_message(messages.ShowRuns())

    def action_detach(self) -> None:
        self.post_message(messages.Detach(self.paths))

    def _confirm(self, title: str, body: str, yes: str, then: Callable[[], None]) -> None:
        """Ask first; run `then` only on yes."""
        self.app.push_screen(ConfirmDialog(title, body, yes=yes, no="Keep training"),
                             lambda answer: then() if answer else None)

    def action_stop(self) -> None:
        self._confirm(f"Stop run {self.paths.id}?",
                      "Every process of the run gets SIGTERM, then SIGKILL after the profile's grace period. "
                      "checkpoints/last.pt stays, so the run can be resumed.", "Stop the run", self._stop_run)

    def action_quit_run(self) -> None:
        if not self.model.live:
            self.app.exit()
            return

        def chosen(choice: str | None) -> None:
            if choice == "stop":
                self._stop_run(then_exit=True)
            elif choice == "detach":
                self.app.exit()

        self.app.push_screen(QuitDialog(self.paths.id), chosen)

    def action_resume(self) -> None:
        self._resume_run()

    def action_save(self) -> None:
        self._control("save")

    def action_pause(self) -> None:
        self._control("resume" if self.model.paused else "pause")

    def action_save_stop(self) -> None:
        self._confirm(f"Save and stop run {self.paths.id}?",
                      "Every rank writes checkpoints/last.pt at the next logging boundary, then the run stops "
                      "cleanly; resume it later with R or --resume.", "Save and stop",
                      lambda: self._control("save-stop"))

    def action_dump(self) -> None:
        self.notify("recording every rank's stack…", timeout=3)
        self._dump_stacks()

    @work(thread=True, exclusive=True, group="dump", exit_on_error=False)
    def _dump_stacks(self) -> None:
        from training.console import stackdump
        from training.errors import TraindeckError

        before = self._dump_files()
        try:
            lines = stackdump.dump_stacks(self.paths)
        except TraindeckError as exc:
            self.app.call_from_thread(self.notify, str(exc), title="stack dump", severity="warning", timeout=10)
            lines = None
        new = sorted(self._dump_files() - before, key=lambda p: (p.stat().st_mtime, p.name))
        if lines is not None:
            self.app.call_from_thread(self.notify, lines[0] if lines else "stack dump written", title="stack dump",
                                      timeout=6)
        if new:  # also after a partial failure: the file says which ranks gave no stack
            self.post_message(self.DumpWritten(new[-1], self._log_sources()))

    def _dump_files(self) -> set[Path]:
        try:
            return {p for p in self.paths.dumps.iterdir() if p.is_file() and p.name.startswith("stacks-")}
        except OSError:
            return set()

    def on_run_screen_dump_written(self, message: DumpWritten) -> None:
        self.action_tab("logs")
        rank_log = self.query_one(RankLog)
        rank_log.set_sources(message.sources)
        rank_log.select(message.path)

    def _not_yours(self, doing: str) -> bool:
        """The console acts only on run directories that are yours, as --stop and --resume do."""
        from training.console.owned_run import ownership_problem

        problem = ownership_problem(self.paths)
        if problem:
            self.app.call_from_thread(self.notify, f"{doing} refused for {self.paths.id}: {problem}",
                                      severity="error", timeout=8)
        return bool(problem)

    @work(thread=True, group="control", exit_on_error=False)
    def _stop_run(self, then_exit: bool = False) -> None:
        from training.console.stop import stop_run

        if self._not_yours("stop"):
            return
        self.app.call_from_thread(self.notify, f"stopping {self.paths.id}…", timeout=3)
        state = stop_run(self.paths)
        self.app.call_from_thread(self.notify, f"{self.paths.id}: {state.value}")
        if then_exit:
            self.app.call_from_thread(self.app.exit)

    @work(thread=True, group="control", exit_on_error=False)
    def _resume_run(self) -> None:
        from training.console.runs import resume_run

        if self._not_yours("resume"):
            return
        resume_run(self.paths)
        self.app.call_from_thread(self.notify, f"resuming {self.paths.id} from checkpoints/last.pt")

    @work(thread=True, group="control", exit_on_error=False)
    def _control(self, action: str) -> None:
        from training.rundir.control import send

        if self._not_yours(action):
            return
        seq = send(self.paths, action)
        self.app.call_from_thread(self.notify, f"{action} requested (#{seq}); the workers act at the next "
                                  f"logging boundary", timeout=4)

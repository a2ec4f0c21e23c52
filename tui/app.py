"""The Textual app: wiring only. Screens ask through messages (tui.messages); the app starts
runs, opens run screens and decides what detaching means.

    make_app(runs_dir)                          # picker
    make_app(runs_dir, profile=p, argv=argv)    # start p, then its run screen (queue=True: run.py --queue)
    make_app(runs_dir, attach=paths)            # the run screen of an existing run

Over SSH (issue 17): the app sends the terminal only the cells that changed (tui.cell_diff);
`refresh` (run.py --refresh SECONDS) redraws the run screen at most that often, and
`low_bandwidth` (run.py --low-bandwidth) is monochrome, without sparklines, the plot every 5 s.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any

from textual import work
from textual.app import App, SystemCommand
from textual.filter import NoColor
from textual.screen import Screen
from textual.widgets import Footer
from textual.worker import Worker, WorkerState

from training.profile import Profile
from training.rundir import RunPaths
from tui import messages
from tui.cell_diff import CellDiff, DiffedUpdate, diffable
from tui.screens.compare_screen import CompareScreen
from tui.screens.picker import PickerScreen
from tui.screens.run_screen import RunScreen
from tui.screens.runs_screen import RunsScreen


def _footer_releases_removed_keys() -> None:
    """Textual's Footer keeps every FooterKey it ever composed alive (Textualize/textual#6666, open
    in textual 8.2.8): each key's `data_bind(compact=Footer.compact)` puts (key, setter) in the
    Footer's watchers of `compact`, and Textual prunes that list of closed widgets only when
    `compact` changes, which it never does. Each recompose (every Screen.refresh_bindings) so left
    the ~9 keys it removed alive with their styles and caches, ~20 KB each: behind a fast run the
    run screen refreshed its bindings on every batch and the console grew ~0.1-0.2 KB per event
    (issue 35, BENCHMARKS.md "Memory over a long live run"). Dropping the removed keys before each
    compose bounds the list by the keys on screen (tests/unit/test_memory_bounds.py)."""
    compose = Footer.compose
    if getattr(compose, "releases_removed_keys", False):
        return

    def compose_releasing(self: Footer) -> Any:
        watchers = getattr(self, "__watchers", {}).get("compact")
        if watchers:
            watchers[:] = [(node, callback) for node, callback in watchers if not node._closing]
        yield from compose(self)

    compose_releasing.releases_removed_keys = True  # type: ignore[attr-defined]
    Footer.compose = compose_releasing  # type: ignore[method-assign]


_footer_releases_removed_keys()


class TraindeckApp(App[int | None]):
    TITLE = "traindeck"
    CSS_PATH = ["styles/app.tcss", "styles/picker.tcss", "styles/run.tcss", "styles/runs.tcss",
                "styles/widgets.tcss", "styles/compare.tcss"]
    # Narrow: GPU panels are table rows; wide and tall: a grid of cards.
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (120, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (36, "-tall")]

    def __init__(self, runs_dir: Path, profiles_dir: Path | None = None, profile: Profile | None = None,
                 attach: RunPaths | None = None, argv: list[str] | None = None, gpu_backend: Any = None,
                 clock: Callable[[], float] = time.time, refresh: float | None = None,
                 low_bandwidth: bool = False, cell_diff: bool = True, queue: bool = False,
                 show_runs: bool = False) -> None:
        super().__init__()
        self.start_queued = queue  # run.py --profile X --queue: the start waits for busy GPUs
        self.show_runs = show_runs  # run.py --sweep in a terminal: the runs screen, the sweep's runs under it
        self.refresh_s = refresh
        self.low_bandwidth = low_bandwidth
        if low_bandwidth and not self.no_color:
            self.no_color = True
            self._filters.append(NoColor())
        # What the terminal shows, so that an update sends only the cells that changed.
        self.cell_diff = CellDiff() if cell_diff else None
        self.runs_dir = Path(runs_dir)
        self.profiles_dir = profiles_dir
        self.start_profile = profile
        self.attach = attach
        self.argv = argv
        self._gpu_backend = gpu_backend
        # Wall time, compared with recorded event times (elapsed time, how long a straggler mark
        # stays): a parameter, so replays of recorded runs look the same on any date.
        self.clock = clock

    def get_theme_variable_defaults(self) -> dict[str, str]:
        # Status colours for the stylesheets; a theme may override them.
        return {"td-ok": "#4EBF71", "td-warn": "#E5A93C", "td-bad": "#E05D5D", "td-idle": "#7A8CA3",
                "td-util": "#3FA7D6", "td-mem": "#A77BE0"}

    @property
    def gpu_backend(self) -> Any:
        """The NVML backend, created on first use (from a worker thread: it may load the driver)."""
        if self._gpu_backend is None:
            from training.monitor.gpu import get_backend

            self._gpu_backend = get_backend()
        return self._gpu_backend

    def preflight(self, profile: Profile, runs_dir: Path) -> Any:
        """The picker's preflight (a PreflightReport); snapshot tests swap in a fixed one."""
        from training.console.preflight import run_preflight

        return run_preflight(profile, runs_dir, backend=self.gpu_backend)

    def _display(self, screen: Screen, renderable: Any) -> None:
        diff = self.cell_diff
        if diff is not None and diffable(renderable) and self._driver is not None and not self._driver.is_inline:
            renderable = DiffedUpdate(renderable, diff, tuple(self.size))
        super()._display(screen, renderable)

    def on_mount(self) -> None:
        if self.cell_diff is not None:  # the shell drew over the screen while suspended
            self.app_resume_signal.subscribe(self, lambda _app: self.cell_diff.reset())
        if self.attach is not None:
            self.push_screen(RunScreen(self.attach))
        elif self.start_profile is not None:
            self._start_run(self.start_profile, False, self.argv, self.start_queued)
        elif self.show_runs:
            self.push_screen(RunsScreen(self.runs_dir))
        else:
            self.push_screen(PickerScreen(self.profiles_dir, self.runs_dir))

    # ---- what the screens ask for --------------------------------------------------------------
    def on_start_run(self, message: messages.StartRun) -> None:
        argv = self.argv or ["--profile", message.profile.name] + (["--rehearse"] if message.rehearsal else []) \
            + (["--queue"] if message.queue else [])
        self._start_run(message.profile, message.rehearsal, argv, message.queue)

    @work(thread=True, exclusive=True, group="start", exit_on_error=False)
    def _start_run(self, profile: Profile, rehearsal: bool, argv: list[str] | None, queue: bool = False) -> None:
        from training.console import runs

        if rehearsal:
            self._rehearse(profile, argv)
            return
        from training.console.start_checks import check_start

        # The start table (training.console.start_checks): a refusal is this worker's error,
        # shown as a notification; a warning is shown and the run starts.
        # Queued (busy GPUs waited for): the run screen's header shows its place and what it waits for.
        for warning in check_start(profile, self.runs_dir, backend=self.gpu_backend, queue=queue):
            self.call_from_thread(self.notify, warning, title="start", severity="warning", timeout=8)
        self.post_message(messages.OpenRun(runs.start_run(profile, self.runs_dir, argv=argv, queue=queue)))

    def _rehearse(self, profile: Profile, argv: list[str] | None) -> None:
        """The same checklist as `run.py --rehearse` (training.console.rehearse), shown on the run
        screen while its phases run; the verdict and every item land in the run's event log, and
        the headline in a notification."""
        from training.console import rehearse
        from training.errors import TraindeckError
        from tui.feed import wait_for_exit_code

        out = io.StringIO()
        try:
            code = rehearse.rehearse(profile, self.runs_dir, lambda paths, _out, _phase: wait_for_exit_code(paths),
                                     argv=argv, out=out,
                                     on_phase=lambda paths, n: self.post_message(messages.OpenRun(paths)))
        except TraindeckError as exc:
            self.call_from_thread(self.notify, str(exc), title="rehearsal", severity="error", timeout=10)
            return
        lines = [line for line in out.getvalue().splitlines() if line.strip()]
        verdict = next((line for line in lines if line.startswith("rehearsal of ")), lines[-1] if lines else "")
        self.call_from_thread(self.notify, verdict or f"rehearsal ended ({code})", title="rehearsal",
                              severity="information" if code == 0 else "error", timeout=15)

    def on_measure_scaling(self, message: messages.MeasureScaling) -> None:
        self._measure_scaling(message.profile)

    @work(thread=True, exclusive=True, group="start", exit_on_error=False)
    def _measure_scaling(self, profile: Profile) -> None:
        """run.py --scaling from the picker (training.console.scaling): each size's run on the run
        screen as it starts; the speed-ups in a notification, the table saved beside the runs."""
        from training.console.scaling import measure_scaling, scaling_verdict

        result = measure_scaling(profile, self.runs_dir, argv=["--scaling", profile.name],
                                 on_start=lambda paths: self.post_message(messages.OpenRun(paths)))
        self.call_from_thread(self.notify, scaling_verdict(result), title="scaling", timeout=30)

    def on_open_run(self, message: messages.OpenRun) -> None:
        if isinstance(self.screen, RunScreen) and self.screen.paths == message.paths:
            return
        self.push_screen(RunScreen(message.paths))

    def on_show_runs(self, message: messages.ShowRuns) -> None:
        if not isinstance(self.screen, RunsScreen):
            self.push_screen(RunsScreen(self.runs_dir))

    def on_compare_runs(self, message: messages.CompareRuns) -> None:
        self.push_screen(CompareScreen(message.runs, clock=self.clock))

    def on_detach(self, message: messages.Detach) -> None:
        # Detaching returns to the picker or runs list it came from; from --attach it leaves.
        if len(self.screen_stack) > 2:
            self.pop_screen()
        else:
            self.exit()

    async def action_quit(self) -> None:
        # A live run screen asks first: stop the run or detach.
        if isinstance(self.screen, RunScreen):
            self.screen.action_quit_run()
        else:
            self.exit()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR:
            self.notify(str(event.worker.error), title=f"{event.worker.group or event.worker.name} failed",
                        severity="error", timeout=10)
            if event.worker.group == "start" and self.start_profile is not None and len(self.screen_stack) < 2:
                self.push_screen(PickerScreen(self.profiles_dir, self.runs_dir))

    # ---- the command palette: every key of the current screen ------------------------------------
    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        seen = set()
        for key, active in screen.active_bindings.items():
            binding = active.binding
            if active.node is not screen or not active.enabled or not binding.description:
                continue
            if binding.action in seen:
                continue
            seen.add(binding.action)
            yield SystemCommand(binding.description, f"{binding.description} (key {key})",
                                partial(screen.run_action, binding.action))


def make_app(runs_dir: Path, profiles_dir: Path | None = None, profile: Profile | None = None,
             attach: RunPaths | None = None, argv: list[str] | None = None, gpu_backend: Any = None,
             clock: Callable[[], float] = time.time, refresh: float | None = None,
             low_bandwidth: bool = False, cell_diff: bool = True, queue: bool = False,
             show_runs: bool = False) -> TraindeckApp:
    """The console. Tests inject the GPU backend and the clock (wall time, compared with the run's
    recorded times wherever a mark fades with age). `refresh`: the run screen redraws at most
    every that many seconds; `low_bandwidth`: monochrome, no sparklines, the plot every 5 s;
    `cell_diff`: send only the cells that changed (off: Textual's own output, line fragments);
    `queue`: the `profile` start waits in line for busy GPUs (run.py --queue); `show_runs`: open on
    the runs screen (run.py --sweep in a terminal)."""
    return TraindeckApp(runs_dir, profiles_dir=profiles_dir, profile=profile, attach=attach, argv=argv,
                        gpu_backend=gpu_backend, clock=clock, refresh=refresh, low_bandwidth=low_bandwidth,
                        cell_diff=cell_diff, queue=queue, show_runs=show_runs)

"""Fixtures every test folder shares. Plain helper functions live in tests/support/.

    runs_dir            a private, empty runs directory; nothing started in it outlives the test
    recorded_runs_dir   a copy of the recorded runs (tests/data/runs) that a test may change
    clock               a clock frozen at the recorded runs' "now" (SNAPSHOT_NOW); .advance(s)
    backend             the fake 8x B200 NVML behind the real GpuBackend
    recorded_app        make_app(...) over recorded_runs_dir with `backend` and `clock` injected

Tests are grouped by what they exercise: unit/ (one module, no processes or only short-lived
ones), e2e/ (real supervisor, torchrun and workers), reliability/ (faults injected into real runs),
tui/ (the Textual console and the headless printer: marked `ui` here, checked with the clock a
year ahead too: `make test-faketime`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support.locations import RECORDED_RUNS, TESTS
from tests.support.recorded_runs import SNAPSHOT_NOW
from training.console import runs
from training.console import stop as stopping
from training.rundir import list_run_dirs


def pytest_collection_modifyitems(config, items):
    # Everything under tests/tui/ draws the console or prints the headless view: `-m ui` selects it.
    tui = TESTS / "tui"
    for item in items:
        if tui in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.ui)
    _longest_first(config, items)


def _longest_first(config, items) -> None:
    """Under xdist: the slowest tests (tests/slowest.txt, then the other slow-marked ones) first,
    dealt alternately to the workers. xdist's worksteal hands each worker a contiguous share of this
    order and moves the tail of a busy worker's share to an idle one, so a long test collected last
    would run alone at the end while the other worker idles."""
    workers = int(getattr(config, "workerinput", {}).get("workercount", 0))
    if workers < 2:
        return  # serial (or the xdist controller, which does not collect): the order as written
    rank = {name: i for i, name in enumerate(
        line.strip() for line in (TESTS / "slowest.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#"))}
    unknown_slow = len(rank)

    def weight(pair):
        index, item = pair
        if item.nodeid in rank:
            return (rank[item.nodeid], index)
        return (unknown_slow if item.get_closest_marker("slow") else unknown_slow + 1, index)

    ordered = [item for _, item in sorted(enumerate(items), key=weight)]
    dealt = [item for w in range(workers) for item in ordered[w::workers]]
    items[:] = dealt


class FrozenClock:
    """A wall clock that stands still until a test moves it (`advance`). Call it for the time."""

    def __init__(self, t: float) -> None:
        self.t = float(t)

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> float:
        self.t += seconds
        return self.t


@pytest.fixture(autouse=True)
def private_gpu_lock_dir(tmp_path_factory, monkeypatch):
    """Every test takes GPU locks in a directory of its own, never the box's /tmp one (other
    engineers' tests share this machine); subprocesses inherit it."""
    from training.rundir.gpu_locks import LOCK_DIR_ENV

    monkeypatch.setenv(LOCK_DIR_ENV, str(tmp_path_factory.mktemp("gpu-locks")))


@pytest.fixture
def clock() -> FrozenClock:
    """Frozen at SNAPSHOT_NOW: a second after the recorded running run's last telemetry sample."""
    return FrozenClock(SNAPSHOT_NOW)


@pytest.fixture
def runs_dir(tmp_path, monkeypatch):
    """A private runs dir; OMP_NUM_THREADS=1 for every child; nothing of it survives the test."""
    from tests.support.processes import kill_everything_of

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("TRAINDECK_TEST_STEP_DELAY_S", raising=False)
    d = tmp_path / "runs"
    d.mkdir(mode=0o700)
    yield d
    # A failing test must not leak processes into the next one.
    for paths in list_run_dirs(d):
        try:
            if runs.is_live(paths):
                stopping.stop_run(paths, grace_s=0.5)
        except Exception:  # noqa: BLE001 - cleanup must reach the sweep below
            pass
    kill_everything_of(d)


@pytest.fixture
def recorded_runs_dir(tmp_path) -> Path:
    """The recorded runs, copied: nothing a test does can change tests/data/runs."""
    dest = tmp_path / "runs"
    shutil.copytree(RECORDED_RUNS, dest)
    return dest


@pytest.fixture
def backend():
    from tests.fixtures.fake_nvml import eight_b200
    from training.monitor.gpu import GpuBackend

    return GpuBackend(nvml=eight_b200())


@pytest.fixture
def recorded_app(recorded_runs_dir, backend, clock):
    """`recorded_app(run_id=None, **make_app_kwargs)`: the console over the recorded runs, attached to
    `run_id` when given, with the fake 8x B200 and the frozen clock (the runs were recorded in 2026:
    a real clock would make every mark that fades with age depend on today's date)."""
    from training.rundir import RunPaths
    from tui.app import make_app

    def make(run_id: str | None = None, **kwargs):
        kwargs.setdefault("gpu_backend", backend)
        kwargs.setdefault("clock", clock)
        attach = RunPaths(recorded_runs_dir / run_id) if run_id else None
        return make_app(runs_dir=recorded_runs_dir, attach=attach, **kwargs)
    return make

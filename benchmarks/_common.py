"""Shared helpers for the ratio benchmarks: results, medians, a TUI in a pseudo-terminal,
synthetic run directories and a synthetic writer process.

Every benchmark's `run(quick=False) -> list[Result]`; `quick=True` is the tiny size the smoke
test uses (it checks the shape of the figures, never their values).
"""

from __future__ import annotations

import fcntl
import os
import re
import signal
import statistics
import struct
import subprocess
import sys
import termios
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import psutil

from tests.support.fake_runs import make_run_dir as fake_run_dir
from tests.support.fake_runs import (
    supervisor_record,
    synthetic_profile_toml,
    write_exit,
    write_metric_lines,  # noqa: F401 - the benchmarks' long runs
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
ANSI = re.compile(rb"\x1b\[[0-9;?<>=]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\\\)|\x1b[()][0-9A-Za-z]|\x1b[=>78]")


@dataclass
class Result:
    """One figure. `target` is a human string ("<= 1.1x"); `ok` None means informational."""

    name: str
    value: float
    unit: str
    target: str = ""
    ok: bool | None = None
    note: str = ""

    @property
    def verdict(self) -> str:
        return "" if self.ok is None else ("PASS" if self.ok else "MISS")

    def line(self) -> str:
        value = f"{self.value:,.4g}" if abs(self.value) < 1e6 else f"{self.value:,.0f}"
        target = f"target {self.target}" if self.target else ""
        return f"{self.name:<58} {value:>12} {self.unit:<10} {target:<18} {self.verdict:<4} {self.note}".rstrip()


def as_tuples(results: list[Result]) -> list[tuple[str, float, str]]:
    return [(r.name, r.value, r.unit) for r in results]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def load_note() -> str:
    la = os.getloadavg()
    return f"load avg {la[0]:.1f}/{la[1]:.1f}/{la[2]:.1f} on {os.cpu_count()} cores"


def base_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(PROJECT_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.pop("TRAINDECK_RUN_DIR", None)
    env.update(extra)
    return env


# ---- a process in a pseudo-terminal --------------------------------------------------------

class PtyProcess:
    """A child (e.g. `run.py --attach RUN`) on the slave side of a pty of a given size; a thread
    drains the master side (a console that nobody reads would block) and counts the bytes."""

    def __init__(self, argv: list[str], cols: int = 120, rows: int = 36, env: dict[str, str] | None = None,
                 cwd: Path = PROJECT_ROOT):
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        env = dict(env or base_env())
        env.setdefault("TERM", "xterm-256color")
        env["COLUMNS"], env["LINES"] = str(cols), str(rows)
        env.pop("TEXTUAL", None)

        def child_setup() -> None:  # the pty becomes the child's controlling terminal
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=env,
                                     preexec_fn=child_setup, close_fds=True)
        os.close(slave)
        self.master = master
        self.bytes = 0
        self.recording: bytearray | None = None  # set to a bytearray to keep the raw output
        # set to a list to keep every read with its arrival time (time.time()): what the user's
        # terminal received, and when
        self.timed: list[tuple[float, bytes]] | None = None
        self._lock = threading.Lock()
        self._tail = b""
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()
        self.ps = psutil.Process(self.proc.pid)

    def _drain(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                return
            if not data:
                return
            with self._lock:
                self.bytes += len(data)
                if self.recording is not None:
                    self.recording += data
                if self.timed is not None:
                    self.timed.append((time.time(), data))
                self._tail = (self._tail + data)[-65536:]

    def tail(self) -> bytes:
        with self._lock:
            return self._tail

    def write(self, data: bytes) -> None:
        try:
            os.write(self.master, data)
        except OSError:
            pass

    def cpu_seconds(self) -> float:
        t = self.ps.cpu_times()
        return t.user + t.system

    def rss(self) -> int:
        return self.ps.memory_info().rss

    def wait_output(self, needle: bytes, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.tail() or self.proc.poll() is not None:
                return needle in self.tail()
            time.sleep(0.05)
        return False

    def text(self) -> str:
        """The recent output with escape sequences removed (what a user reads, roughly)."""
        return ANSI.sub(b"", self.tail()).decode("utf-8", "replace")

    def wait_text(self, needle: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.text():
                return True
            if self.proc.poll() is not None:
                return False
            time.sleep(0.1)
        return False

    def wait_started(self, timeout: float = 60.0, min_bytes: int = 2000) -> bool:
        """Until the app has painted its first screen (some KB of output) and gone quiet for a moment."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.bytes < min_bytes and self.proc.poll() is None:
            time.sleep(0.05)
        return self.proc.poll() is None and self.bytes >= min_bytes

    def wait_idle(self, timeout: float, window_s: float = 2.0, max_cpu_fraction: float = 0.15) -> float:
        """Poll until the process uses less than `max_cpu_fraction` of a core over `window_s`;
        returns the seconds waited (timeout if it never went idle)."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout and self.proc.poll() is None:
            c0 = self.cpu_seconds()
            time.sleep(window_s)
            if (self.cpu_seconds() - c0) / window_s < max_cpu_fraction:
                break
        return time.monotonic() - t0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.write(b"q")
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                pass
        terminate(self.proc)
        try:
            os.close(self.master)
        except OSError:
            pass


def attach_argv(run_dir: Path) -> list[str]:
    return [PYTHON, str(PROJECT_ROOT / "run.py"), "--runs-dir", str(run_dir.parent), "--attach", str(run_dir)]


# ---- synthetic run directories ------------------------------------------------------------

def make_run_dir(runs_dir: Path, name: str, gpus: int = 8, live_pid: int | None = None,
                 finished: bool = False) -> Path:
    """A run directory that looks like one the supervisor made (tests/support/fake_runs.py, the one
    builder the tests use too). `live_pid` plays the supervisor (the run is live while that process
    is); `finished` writes exit.json and state finished."""
    paths = fake_run_dir(runs_dir, name, profile_toml=synthetic_profile_toml(gpus), world_size=max(1, gpus),
                         state="finished" if finished else "running",
                         supervisor=None if live_pid is None else supervisor_record(live_pid),
                         supervisor_log="synthetic run for benchmarks\n")
    if finished:
        write_exit(paths, returncode=0, state="finished")
    return paths.root


class SyntheticWriter:
    """`python -m benchmarks._writer` in its own process: telemetry at 1 Hz in the fake-NVML
    shape (the real TelemetrySampler over TRAINDECK_FAKE_NVML) plus metric events at `rate`/s."""

    def __init__(self, run_dir: Path, rate: float, telemetry: bool = True, gpus: str = "eight_b200",
                 duration_s: float = 3600.0, extra: list[str] | None = None):
        argv = [PYTHON, "-m", "benchmarks._writer", str(run_dir), "--rate", str(rate),
                "--duration", str(duration_s)] + (["--telemetry"] if telemetry else []) + list(extra or [])
        env = base_env(TRAINDECK_FAKE_NVML=f"tests.fixtures.fake_nvml:{gpus}")
        self.proc = subprocess.Popen(argv, cwd=PROJECT_ROOT, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout: float = 30.0) -> None:
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if "ready" not in line:
            raise RuntimeError(f"synthetic writer did not start: {line!r}")

    def stop(self) -> None:
        terminate(self.proc)


LIVE_RUN_NAME = "20260101-000000-live"


@contextmanager
def console_on_live_run(runs_dir: Path, argv: Callable[[Path], list[str]] = attach_argv, cols: int = 120,
                        rows: int = 36, env: dict[str, str] | None = None, cwd: Path = PROJECT_ROOT,
                        min_bytes: int = 2000, what: str = "the console", timed: bool = False,
                        writer_extra: list[str] | None = None) -> Iterator[tuple[Path, PtyProcess]]:
    """A live synthetic run in `runs_dir` (8 GPUs; a SyntheticWriter at 10 events/s with telemetry
    plays its supervisor) and `argv(run_dir)` (the console attached to it) in a pty, started
    (`min_bytes` drawn); yields (run_dir, pty); on leaving, both are stopped. `timed` keeps the
    pty's reads with their times from the start (PtyProcess.timed)."""
    root = runs_dir / LIVE_RUN_NAME
    root.mkdir()
    writer = SyntheticWriter(root, 10, telemetry=True, extra=writer_extra)
    pty = None
    try:
        make_run_dir(runs_dir, root.name, gpus=8, live_pid=writer.pid)
        writer.wait_ready()
        pty = PtyProcess(argv(root), cols=cols, rows=rows, env=env or base_env(), cwd=cwd)
        if timed:
            pty.timed = []
        if not pty.wait_started(60, min_bytes=min_bytes):
            raise RuntimeError(f"{what} did not start: {pty.tail()[-800:]!r}")
        yield root, pty
    finally:
        if pty is not None:
            pty.stop()
        writer.stop()


def terminate(proc: subprocess.Popen) -> None:
    """SIGTERM a child that is still running; kill it if it has not gone within 5 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def print_results(results: list[Result]) -> None:
    """A benchmark's `main`: each result's line, as it comes."""
    for r in results:
        print(r.line(), flush=True)


def measure_cpu(pty: PtyProcess, seconds: float) -> float:
    """CPU seconds the process used over `seconds` of wall time."""
    c0 = pty.cpu_seconds()
    t0 = time.monotonic()
    time.sleep(seconds)
    return (pty.cpu_seconds() - c0) * seconds / max(1e-9, time.monotonic() - t0)


def timed_loop(fn: Callable[[], Any], seconds: float) -> int:
    n = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        fn()
        n += 1
    return n

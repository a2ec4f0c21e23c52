"""Reliability: the viewer dies, training does not.

`run.py --profile ... --headless` (the viewer that *started* the run) and the Textual app run in a
real pseudo-terminal (pty.fork: the viewer is a session leader with the pty as its controlling
terminal, exactly like a login shell over SSH). Then the SSH connection "drops": the pty master
is closed (the kernel hangs up the terminal and SIGHUPs the session), or the viewer gets SIGHUP
or SIGKILL. The run must keep training, and a later `run.py --attach` must pick it up and see
the step counter moving.
"""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.support.live_runs import wait_step
from tests.support.locations import ROOT
from tests.support.processes import assert_gone, assert_no_processes_of, read_until, recorded
from tests.support.profiles import spin_profile_file
from tests.support.waiting import wait_for
from training.console import runs
from training.console import stop as stopping
from training.rundir import RunPaths, RunState, list_run_dirs

pytestmark = pytest.mark.slow


class PtyViewer:
    """A process on the slave side of a fresh pty; the test holds the master, like sshd does."""

    def __init__(self, argv: list[str], env: dict[str, str]):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # child: become the viewer
            try:
                os.chdir(ROOT)
                os.execve(argv[0], argv, env)
            finally:
                os._exit(127)
        self.output = bytearray()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()
        self.status: int | None = None

    def _drain(self) -> None:
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self.fd], [], [], 0.1)
                if ready:
                    data = os.read(self.fd, 65536)
                    if not data:
                        return
                    self.output += data
            except OSError:
                return

    def text(self) -> str:
        return bytes(self.output).decode("utf-8", "replace")

    def close_master(self) -> None:
        """The SSH connection drops: the terminal is hung up."""
        self._stop.set()
        self._thread.join(2)
        os.close(self.fd)
        self.fd = -1

    def exited(self) -> bool:
        if self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid == self.pid:
                self.status = status
        return self.status is not None

    def cleanup(self) -> None:
        if not self.exited():
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(self.pid, 0)
        if self.fd >= 0:
            self._stop.set()
            self._thread.join(2)
            os.close(self.fd)
            self.fd = -1


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "TERM": "xterm-256color",
                "COLUMNS": "120", "LINES": "40"})
    env.update(extra)
    return env


def _the_run(runs_dir: Path) -> RunPaths:
    return wait_for(lambda: (list_run_dirs(runs_dir) or [None])[0], 60, "the run directory")


def _assert_training_goes_on(paths: RunPaths, viewer: PtyViewer) -> int:
    """The viewer is gone; the run is live and its step counter still moves. Returns the step seen."""
    wait_for(viewer.exited, 30, "the viewer to exit after the hang-up")
    s = runs.run_summary(paths)
    assert s.live and s.state is RunState.RUNNING, s
    step = s.step or 0
    return wait_step(paths, step + 10, timeout=60)


def _attach_sees_progress(runs_dir: Path, paths: RunPaths, after_step: int) -> None:
    """A new `run.py --attach RUN --headless` prints a progress line beyond `after_step`; its
    Ctrl-C detaches and leaves the run training."""
    proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), "--runs-dir", str(runs_dir), "--attach", paths.id,
                             "--headless"], cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        seen = read_until(proc, lambda line: (m := re.search(r"step (\d+)", line)) and int(m.group(1)) > after_step,
                          60)
        assert any((m := re.search(r"step (\d+)", x)) and int(m.group(1)) > after_step for x in seen), seen
        proc.send_signal(signal.SIGINT)  # detach
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert runs.run_summary(paths).live, "detaching stopped the run"


def _stop_and_check(runs_dir: Path, paths: RunPaths) -> None:
    refs = recorded(paths)
    assert stopping.stop_run(paths, grace_s=2) is RunState.STOPPED
    assert_gone(refs + recorded(paths))
    assert_no_processes_of(runs_dir)


@pytest.mark.parametrize("fault", ["close_pty", "sighup", "kill9"])
def test_headless_viewer_that_started_the_run_dies_training_goes_on(runs_dir, tmp_path, fault):
    viewer = PtyViewer([sys.executable, str(ROOT / "run.py"), "--runs-dir", str(runs_dir), "--headless",
                        "--profile", str(spin_profile_file(tmp_path, grace=2))], _env())
    try:
        paths = _the_run(runs_dir)
        wait_step(paths, 5)
        wait_for(lambda: "step" in viewer.text(), 30, "the viewer's first progress line")
        if fault == "close_pty":
            viewer.close_master()
        elif fault == "sighup":
            os.kill(viewer.pid, signal.SIGHUP)
        else:
            os.kill(viewer.pid, signal.SIGKILL)
        step = _assert_training_goes_on(paths, viewer)
        if fault != "kill9":
            assert os.WIFSIGNALED(viewer.status) and os.WTERMSIG(viewer.status) == signal.SIGHUP, viewer.status
        _attach_sees_progress(runs_dir, paths, step)
        _stop_and_check(runs_dir, paths)
    finally:
        viewer.cleanup()


def test_tui_attached_in_a_pty_exits_when_the_terminal_closes_and_training_goes_on(runs_dir, tmp_path):
    from tests.support.profiles import custom_profile

    paths = runs.start_run(custom_profile("spin.py", mode="single", grace=2), runs_dir)
    wait_step(paths, 5)
    viewer = PtyViewer([sys.executable, str(ROOT / "run.py"), "--runs-dir", str(runs_dir), "--attach", paths.id],
                       _env())
    try:
        # The app is up once it has drawn something of the run (its id, in the header).
        wait_for(lambda: paths.id[-8:] in re.sub(r"\x1b\[[0-9;?]*[ -/]*[@-~]", "", viewer.text())
                 or len(viewer.output) > 20000, 60, "the TUI to draw")
        viewer.close_master()
        # A TUI left running on a dead terminal is a leak too: it must exit, and training go on.
        step = _assert_training_goes_on(paths, viewer)
        _attach_sees_progress(runs_dir, paths, step)
        _stop_and_check(runs_dir, paths)
    finally:
        viewer.cleanup()

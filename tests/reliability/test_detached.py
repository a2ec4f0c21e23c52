"""Reliability: a helper that leaves the run's process tree is stopped too (issue 22).

The script (tests/data/scripts/detach.py, torch-free) ignores SIGTERM and double-forks a helper
into a session of its own that ignores SIGTERM too: what wandb's service, a TensorBoard started
from a script or a `setsid` server look like. Each test proves from the helper's own pid and from
a scan of the whole process table that nothing of the run is left, or, where something cannot be
found as the run's, that it is named rather than hidden.

"scan" runs with TRAINDECK_CGROUP=off (records + TRAINDECK_RUN_DIR in the process table only);
"cgroup" with the run's own cgroup, where this box allows one (skipped elsewhere).
"""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import time

import psutil
import pytest

from tests.support.live_runs import statuses
from tests.support.locations import ROOT
from tests.support.processes import assert_no_processes_of, pid_alive
from tests.support.profiles import custom_profile
from tests.support.waiting import wait_for
from training.console import runs, stop
from training.rundir import RunPaths, RunState, read_json, read_run_json
from training.rundir import processes as pg
from training.rundir.cgroups import CGROUP_ENV, detect

pytestmark = pytest.mark.slow

CGROUP_USABLE = detect(environ={}).usable
METHODS = [
    pytest.param("scan", id="scan"),
    pytest.param("cgroup", id="cgroup",
                 marks=pytest.mark.skipif(not CGROUP_USABLE, reason=f"no writable cgroup v2 here: "
                                          f"{detect(environ={}).reason}")),
]


@pytest.fixture(params=METHODS)
def method(request, monkeypatch):
    monkeypatch.setenv(CGROUP_ENV, "off" if request.param == "scan" else "auto")
    return request.param


def start(runs_dir, *args: str, grace: float = 1.0) -> RunPaths:
    paths = runs.start_run(custom_profile("detach.py", mode="single", args=list(args), grace=grace), runs_dir)
    wait_for(lambda: runs.run_summary(paths).state is RunState.RUNNING, 30, "the script running", paths=paths)
    return paths


def helper_pid(paths: RunPaths) -> int:
    return int(wait_for(lambda: (paths.root / "helper.pid").exists() and (paths.root / "helper.pid").read_text(),
                        30, "the helper's pid file", paths=paths))


def kill_supervisor_then_detach(paths: RunPaths) -> int:
    """kill -9 the supervisor, then let the script start its helper: no scan ever recorded it."""
    sup = pg.ProcRef.from_json(read_run_json(paths)["supervisor"], "supervisor")
    os.kill(sup.pid, signal.SIGKILL)
    assert not pg.wait_gone([sup], 10)
    (paths.root / "go").write_text("")
    return helper_pid(paths)


def assert_helper_gone(pid: int) -> None:
    wait_for(lambda: not pid_alive(pid), 10, f"helper {pid} to be gone")


def test_a_live_supervisor_stops_the_detached_helper(runs_dir, method):
    paths = start(runs_dir)
    helper = helper_pid(paths)
    outcome = stop.stop_and_check(paths)
    assert outcome.state is RunState.STOPPED and outcome.nothing_left, outcome
    assert_helper_gone(helper)
    assert_no_processes_of(paths.root)
    exit_data = read_json(paths.exit_json)
    assert exit_data["nothing_left"] is True and exit_data["survivors"] == []
    assert exit_data["stop_method"] == ("cgroup" if method == "cgroup" else "process table")
    assert "gpu_leaks" in exit_data and exit_data["state"] == "stopped"  # the old keys stay


def test_b_after_kill9_of_the_supervisor_run_py_stop_leaves_nothing(runs_dir, method):
    paths = start(runs_dir, "--wait-for", "go", grace=3.0)
    helper = kill_supervisor_then_detach(paths)
    args = [sys.executable, str(ROOT / "run.py"), "--runs-dir", str(runs_dir), "--stop", paths.id]
    if method == "cgroup":
        args.append("--now")
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == f"{paths.id}: stopped", done.stdout  # the outcome alone; the wait on stderr
    if method == "scan":
        # Both the script and its helper ignore SIGTERM: the wait is said, with the time left.
        assert re.search(r"waiting for 2 process\(es\) still running after SIGTERM: pid \d+ .*detach\.py.*"
                         r"; SIGKILL in [0-2] s \(run\.py --stop --now skips the wait\)", done.stderr), done.stderr
    else:
        # --now: no grace, so nothing to wait for (with one, the line above comes after 1 s).
        assert "waiting for" not in done.stderr, done.stderr
    assert_helper_gone(helper)
    assert_no_processes_of(paths.root)
    assert read_json(paths.exit_json)["nothing_left"] is True
    assert statuses(paths)[-1]["state"] == "stopped"


def test_c_a_viewer_that_finds_the_supervisor_dead_reaps_the_run(runs_dir, method):
    from tui.headless import follow

    paths = start(runs_dir, "--wait-for", "go")
    helper = kill_supervisor_then_detach(paths)
    out = io.StringIO()
    code = follow(paths, out=out, interval_s=0.1, history=False)
    text = out.getvalue()
    assert code == 1 and "the run is orphaned" in text, text
    assert_helper_gone(helper)
    assert_no_processes_of(paths.root)
    exit_data = read_json(paths.exit_json)
    assert exit_data["state"] == "failed" and "leftover process(es) killed" in exit_data["message"], exit_data
    assert exit_data["nothing_left"] is True
    assert runs.run_summary(paths).state is RunState.FAILED


def test_a_helper_that_cleared_its_environment_is_named_as_a_survivor(runs_dir, monkeypatch):
    # Without a cgroup, out of the tree and without TRAINDECK_RUN_DIR, the helper cannot be proven
    # the run's; it still writes to the run's log, so it is named, and --stop does not say stopped.
    monkeypatch.setenv(CGROUP_ENV, "off")
    paths = start(runs_dir, "--wait-for", "go", "--clear-env")
    helper = kill_supervisor_then_detach(paths)
    try:
        assert psutil.Process(helper).environ() == {}
        done = subprocess.run([sys.executable, str(ROOT / "run.py"), "--runs-dir", str(runs_dir), "--stop", paths.id,
                               "--now"], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert done.returncode == 1, done.stdout + done.stderr
        assert "stopped\n" not in done.stdout and "NOT stopped completely" in done.stderr, done.stderr
        assert f"pid {helper}, user {psutil.Process(helper).username()}:" in done.stderr
        assert "cleared its environment" in done.stderr and "logs/" in done.stderr
        assert "-c import signal" in done.stderr  # its command
        survivors = read_json(paths.exit_json)["survivors"]
        assert [s["pid"] for s in survivors] == [helper] and read_json(paths.exit_json)["nothing_left"] is False
        assert pid_alive(helper)  # reported, not killed on a guess
        assert_no_processes_of(paths.root)  # everything that carried the key is gone
    finally:
        if pid_alive(helper):
            os.kill(helper, signal.SIGKILL)


def test_20_start_stop_cycles_of_a_detaching_script_leave_no_process(runs_dir, monkeypatch):
    helpers = []
    t0 = time.monotonic()
    for i in range(20):
        # Alternate: the scan alone / the cgroup (where usable); the grace / --now.
        monkeypatch.setenv(CGROUP_ENV, "off" if i % 2 == 0 or not CGROUP_USABLE else "auto")
        paths = start(runs_dir, grace=0.3)
        helpers.append(helper_pid(paths))
        outcome = stop.stop_and_check(paths, now=i % 4 >= 2)
        assert outcome.state is RunState.STOPPED and outcome.nothing_left, (i, outcome)
        assert_helper_gone(helpers[-1])
        assert_no_processes_of(paths.root, timeout=5)
    assert not [h for h in helpers if pid_alive(h)]
    assert_no_processes_of(runs_dir)
    print(f"20 cycles in {time.monotonic() - t0:.1f} s")

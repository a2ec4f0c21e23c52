"""Reliability: processes of a live run killed with SIGKILL (real torchrun, 2 gloo CPU ranks).

Each test injects the fault into a real run and then proves, from run.json's pids + create
times *and* from a scan of the whole process table, that nothing of the run is left.
"""

from __future__ import annotations

import subprocess
import sys
import time

import psutil
import pytest

from tests.support.live_runs import statuses, wait_done, wait_step
from tests.support.locations import ROOT, SCRIPTS
from tests.support.processes import assert_gone, assert_no_processes_of, listeners, recorded, sigkill
from tests.support.profiles import builtin_profile
from tests.support.waiting import wait_for
from training.console import runs
from training.rundir import RunState, read_json, read_run_json
from training.rundir import processes as pg

pytestmark = pytest.mark.slow


def _long_ddp():
    # One long epoch: the kill lands mid-epoch, far from any checkpoint.
    return builtin_profile("ddp", epochs=1, samples=40000, log_every=2)


def test_kill9_of_one_rank_mid_epoch_fails_naming_that_rank_and_leaves_nothing(runs_dir, monkeypatch):
    monkeypatch.setenv("TRAINDECK_TEST_STEP_DELAY_S", "0.05")
    paths = runs.start_run(_long_ddp(), runs_dir)
    wait_step(paths, 4)
    data = read_run_json(paths)
    rank1 = next(pg.ProcRef.from_json(p) for p in data["processes"] if p.get("rank") == 1 and p["role"] == "worker")
    before = recorded(paths)
    sigkill(rank1)
    t0 = time.monotonic()
    s = wait_done(paths, timeout=60)
    took = time.monotonic() - t0
    assert s.state is RunState.FAILED, s
    exit_data = read_json(paths.exit_json)
    final = statuses(paths)[-1]
    assert final["state"] == "failed"
    # The rank that was killed is the one named, not rank 0's collateral "connection reset by peer".
    assert exit_data["failed_rank"] == 1, exit_data
    assert final.get("rank") == 1 and "rank 1" in final["message"], final
    assert "SIGKILL" in final["message"], final
    assert took < 30, f"the run took {took:.1f}s to notice a dead rank"
    assert_gone(before + recorded(paths))
    assert_no_processes_of(runs_dir)
    assert not listeners(data["port"]), f"rendezvous port {data['port']} still bound"


def test_kill9_of_supervisor_then_next_start_reaps_every_process(runs_dir, monkeypatch):
    monkeypatch.setenv("TRAINDECK_TEST_STEP_DELAY_S", "0.05")
    paths = runs.start_run(_long_ddp(), runs_dir)
    wait_step(paths, 4)
    # The supervisor refreshes its process list every ~0.5 s: wait until both ranks are recorded.
    wait_for(lambda: sum(1 for r in recorded(paths) if r.role == "worker") == 2, 10, "both ranks in run.json")
    data = read_run_json(paths)
    victims = recorded(paths)
    sup = pg.ProcRef.from_json(data["supervisor"], "supervisor")
    sigkill(sup)
    pg.wait_gone([sup], 5)
    # Without their supervisor the launcher and ranks go on training (nobody is left to stop them)...
    others = [r for r in victims if r.role != "supervisor"]
    assert len(pg.alive(others)) >= 3, pg.alive(others)
    step_then = runs.run_summary(paths).step or 0

    # ... until the next traindeck start, which reaps orphans before it starts its own run.
    out = subprocess.run([sys.executable, str(ROOT / "run.py"), "--runs-dir", str(runs_dir), "--headless",
                          "--profile", _spin_profile_file(runs_dir)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert_gone(victims, timeout=15)
    after = runs.run_summary(paths)
    assert after.state is RunState.FAILED and not after.live, after
    assert read_run_json(paths)["state"] == "failed"
    exit_data = read_json(paths.exit_json)
    assert exit_data["state"] == "failed" and "orphaned" in exit_data["message"]
    assert "leftover process(es) killed" in exit_data["message"]
    assert statuses(paths)[-1]["state"] == "failed"
    assert (after.step or 0) >= step_then
    assert_no_processes_of(runs_dir)
    assert not listeners(data["port"]), f"rendezvous port {data['port']} still bound"


def _spin_profile_file(runs_dir) -> str:
    path = runs_dir.parent / "spin3.toml"
    path.write_text(f"""name = "spin3"
[launch]
mode = "single"
[train]
script = "{SCRIPTS / 'spin.py'}"
args = ["--steps", "3"]
[telemetry]
interval_s = 0.5
""")
    return str(path)


def test_launcher_dying_right_after_starting_a_grandchild_leaves_nothing(runs_dir):
    # The grandchild is in its own session and its parent dies before the supervisor's next
    # process scan (every 0.5 s) can record it: only re-parenting to the supervisor finds it.
    from tests.support.profiles import custom_profile

    paths = runs.start_run(custom_profile("spin.py", mode="single", grace=2, args=["--child-then-die"]), runs_dir)
    s = wait_done(paths, timeout=60)
    assert s.state is RunState.FAILED, s
    assert "SIGKILL" in statuses(paths)[-1]["message"]
    grandchild = int(wait_for(lambda: (paths.root / "grandchild.pid").read_text() or None, 10, "the pid file"))
    assert_no_processes_of(runs_dir)
    with pytest.raises(psutil.NoSuchProcess):
        p = psutil.Process(grandchild)
        if p.status() == psutil.STATUS_ZOMBIE:
            raise psutil.NoSuchProcess(grandchild)

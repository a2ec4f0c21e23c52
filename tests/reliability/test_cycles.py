"""Reliability: 50 start/stop cycles, mixed ways of ending a run, and nothing left behind.

Cycles rotate through: graceful stop (training.console.stop.stop_run), the same with a script that
ignores SIGTERM and has a grandchild in its own session (SIGKILL escalation), Ctrl-C (SIGINT)
to `run.py --headless`, and SIGKILL of the launcher. Most cycles run a torch-free script in
single mode (a DDP start costs 5-15 s on this loaded 2-core box); 3 of them are real torchrun +
gloo DDP runs. After every cycle: the run is in the expected final state, every recorded process
(pid + create_time) is gone, no process anywhere mentions the run, the rendezvous port is free,
and there is no *.tmp in the run directory. After all of them: the private $TMPDIR every process
of every run inherited is empty.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.live_runs import statuses, tmp_files, wait_done, wait_step
from tests.support.locations import ROOT
from tests.support.processes import assert_gone, assert_no_processes_of, bound, listeners, recorded, sigkill
from tests.support.profiles import custom_profile, spin_profile_file
from tests.support.waiting import wait_for
from training.console import runs
from training.console import stop as stopping
from training.rundir import RunPaths, RunState, list_run_dirs, read_json, read_run_json
from training.rundir import processes as pg

pytestmark = pytest.mark.slow

CYCLES = 50
DDP_CYCLES = {10: "stop", 25: "kill_launcher", 40: "stop"}
ROTATION = ["stop", "stop_escalate", "sigint_headless", "kill_launcher"]


def _sigint_headless(runs_dir: Path, profile_path: Path, env: dict[str, str]) -> RunPaths:
    known = {p.id for p in list_run_dirs(runs_dir)}
    proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), "--runs-dir", str(runs_dir), "--headless",
                             "--profile", str(profile_path)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        paths = wait_for(lambda: next((p for p in list_run_dirs(runs_dir) if p.id not in known), None), 60,
                         "the headless run's directory")
        wait_step(paths, 2)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 130, out.decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return paths


def _one_cycle(i: int, runs_dir: Path, profile_path: Path, env: dict[str, str]) -> tuple[RunPaths, str]:
    ddp = i in DDP_CYCLES
    how = DDP_CYCLES[i] if ddp else ROTATION[i % len(ROTATION)]
    if how == "sigint_headless":
        paths = _sigint_headless(runs_dir, profile_path, env)
        expected = RunState.STOPPED
    else:
        if ddp:
            prof = custom_profile("ddp_spin.py", mode="ddp", grace=2)
        elif how == "stop_escalate":
            prof = custom_profile("spin.py", mode="single", args=["--ignore-term", "--child"], grace=0.5)
        else:
            prof = custom_profile("spin.py", mode="single", args=["--child"] if i % 3 == 0 else [], grace=1)
        paths = runs.start_run(prof, runs_dir)
        wait_step(paths, 2, timeout=120 if ddp else 60)
        if how in ("stop", "stop_escalate"):
            assert stopping.stop_run(paths) is RunState.STOPPED
            expected = RunState.STOPPED
        else:
            launcher = pg.ProcRef.from_json(read_run_json(paths)["launcher"], "launcher")
            sigkill(launcher)
            expected = RunState.FAILED
    s = wait_done(paths, timeout=60)
    assert s.state is expected, (i, how, s, read_json(paths.exit_json))
    assert read_json(paths.exit_json)["state"] == expected.value
    assert statuses(paths)[-1]["state"] == expected.value
    if how == "kill_launcher":
        message = statuses(paths)[-1]["message"]
        assert "SIGKILL" in message, (i, message)
    return paths, how


def test_50_start_stop_cycles_leave_no_process_port_or_temp_file(runs_dir, tmp_path, monkeypatch):
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(private_tmp))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    profile_path = spin_profile_file(tmp_path, grace=1)
    t0 = time.monotonic()
    done: dict[str, int] = {}
    for i in range(CYCLES):
        paths, how = _one_cycle(i, runs_dir, profile_path, env)
        done[how] = done.get(how, 0) + 1
        data = read_run_json(paths)
        refs = recorded(paths)
        assert_gone(refs)
        assert_no_processes_of(paths.root)
        if data.get("port"):
            port = data["port"]
            assert not listeners(port), (i, port, listeners(port))
            assert not bound(port, {r.pid for r in refs})
        assert not tmp_files(paths.root), (i, tmp_files(paths.root))
        assert not runs.run_summary(paths).live
    took = time.monotonic() - t0
    assert sum(done.values()) == CYCLES and min(done.values()) >= 3, done
    assert len(list_run_dirs(runs_dir)) == CYCLES
    assert_no_processes_of(runs_dir)
    leftovers = sorted(p.name for p in private_tmp.iterdir())
    assert not leftovers, f"temp files left in $TMPDIR: {leftovers[:20]}"
    print(f"{CYCLES} cycles in {took:.0f}s: {done}")

"""Finding a run's processes without its supervisor (training.rundir.reaper), on short-lived real
processes that carry TRAINDECK_RUN_DIR, clear it, or only read the run's files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from tests.support.processes import pid_alive
from tests.support.waiting import wait_for
from training.rundir import RUN_DIR_ENV, reaper
from training.rundir import processes as pg

# Ignores SIGTERM; touches argv[1] (if given) once it does.
SLEEP = ("import signal, sys, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
         "sys.argv[1:] and open(sys.argv[1], 'w').close()\nwhile True: time.sleep(0.1)")


@pytest.fixture
def procs(tmp_path):
    started: list[subprocess.Popen] = []

    def spawn(env: dict[str, str] | None, **kwargs) -> subprocess.Popen:
        ready = tmp_path / f"ready-{len(started)}"
        p = subprocess.Popen([sys.executable, "-c", SLEEP, str(ready)], env=env, start_new_session=True, **kwargs)
        started.append(p)
        wait_for(ready.exists, 10, "the child to ignore SIGTERM")
        return p
    yield spawn
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait()


def test_progress_is_said_after_a_second_then_every_five_with_the_time_left():
    t = [100.0]
    said = []
    left = reaper.wait_with_progress(lambda: ["x"], 12.0, said.append,
                                    lambda items, remaining: f"{len(items)} left, {remaining:.0f} s to go",
                                    clock=lambda: t[0], sleep=lambda s: t.__setitem__(0, t[0] + s), poll_s=0.5)
    assert left == ["x"]
    assert said == ["1 left, 11 s to go", "1 left, 6 s to go", "1 left, 1 s to go"]
    t[0], said[:] = 0.0, []
    assert reaper.wait_with_progress(lambda: [], 30.0, said.append, lambda i, r: "never",
                                    clock=lambda: t[0], sleep=lambda s: None) == [] and said == []


def test_a_detached_process_is_found_by_its_environment_and_stopped_after_the_grace(tmp_path, procs):
    run = tmp_path / "run"
    run.mkdir()
    env = {**os.environ, RUN_DIR_ENV: str(run)}
    keyed = procs(env)
    other = procs({**os.environ, RUN_DIR_ENV: str(tmp_path / "another-run")})
    found = reaper.find(run)
    assert [(f.ref.pid, f.how) for f in found] == [(keyed.pid, "environment")]
    said: list[str] = []
    result = reaper.stop_all(run, grace_s=1.2, progress=said.append)
    assert [f.ref.pid for f in result.killed] == [keyed.pid]  # it ignored SIGTERM: SIGKILL
    assert result.survivors == [] and result.exit_fields() == {
        "stop_method": "process table", "nothing_left": True, "survivors": []}
    assert said and "still running after SIGTERM" in said[0] and f"pid {keyed.pid}" in said[0]
    assert keyed.wait(5) == -signal.SIGKILL
    assert other.poll() is None  # another run's process is not touched


def test_recorded_pids_and_their_descendants_are_found_even_without_the_key(tmp_path, procs):
    run = tmp_path / "run"
    run.mkdir()
    code = ("import subprocess, sys, time\n"
            f"subprocess.Popen([sys.executable, '-c', {SLEEP!r}], env={{}})\n"
            "time.sleep(60)")
    parent = subprocess.Popen([sys.executable, "-c", code], env={}, start_new_session=True)
    try:
        ref = pg.ref_of(parent.pid, "launcher")
        wait_for(lambda: pg.descendants(ref), 10, "the child")
        found = {f.how for f in reaper.find(run, recorded=[ref])}
        assert found == {"recorded", "descendant"}
        killed, survivors = reaper.kill_and_verify(run, [ref])
        assert len(killed) == 2 and survivors == []
    finally:
        parent.kill()
        parent.wait()


def test_a_writer_without_the_key_is_a_suspect_and_a_reader_is_not(tmp_path, procs):
    run = tmp_path / "run"
    (run / "logs").mkdir(parents=True)
    log = run / "logs" / "rank-0.log"
    with open(log, "a") as out:
        writer = procs({}, stdout=out)
    with open(log) as reading:
        _reader = procs({}, stdin=reading)  # held open: a reader is never a suspect
    found = reaper.suspects(run)
    assert [s.pid for s in found] == [writer.pid]
    assert "cleared its environment" in found[0].why and "logs/rank-0.log" in found[0].why
    killed, survivors = reaper.kill_and_verify(run)
    assert killed == [] and [s.pid for s in survivors] == [writer.pid]
    assert pid_alive(writer.pid)  # named, never killed on a guess

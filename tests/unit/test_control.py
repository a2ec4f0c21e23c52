"""Control channel (console -> worker) and heartbeats: the worker-side primitives."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest

from traindeck.heartbeat import Heartbeat, read_heartbeats
from training.errors import TraindeckError
from training.rundir import RunPaths, control, create_run_dir, write_json_atomic
from training.rundir.control import ControlChannel, send, send_and_wait
from training.rundir.events_file import append_events, make_event


@pytest.fixture
def paths(tmp_path) -> RunPaths:
    return create_run_dir(tmp_path / "runs", "ctl")


def test_send_numbers_requests_and_poll_sees_each_once(paths):
    channel = ControlChannel(paths.root, since=0, min_interval_s=0)
    assert channel.poll() is None  # no file yet
    assert send(paths, "save") == 1
    cmd = channel.poll()
    assert cmd == "save" and cmd.seq == 1 and cmd.code == control.ACTION_CODES["save"]
    assert channel.poll() is None  # same request is not repeated
    assert send(paths, "pause") == 2
    assert send(paths.root, "resume") == 3  # a plain path works too
    # Only the newest request is in the file; the worker acts on it.
    cmd = channel.poll()
    assert (cmd, cmd.seq) == ("resume", 3)
    assert json.loads(paths.control.read_text())["seq"] == 3


def test_requests_from_before_the_worker_started_are_ignored(paths):
    send(paths, "save-stop")  # left over from before a resume
    # The worker starts after it (its start time injected: request times are rounded to 1 ms, so
    # "now" taken within the same millisecond could sort either way).
    leftover_t = json.loads(paths.control.read_text())["t"]
    channel = ControlChannel(paths.root, since=leftover_t + 0.002, min_interval_s=0)
    assert channel.poll() is None
    time.sleep(0.01)
    send(paths, "save")
    assert channel.poll() == "save"


def test_poll_is_rate_limited(paths):
    channel = ControlChannel(paths.root, since=0, min_interval_s=0.3)
    assert channel.poll() is None
    send(paths, "save")
    assert channel.poll() is None  # within the interval: not even a stat
    time.sleep(0.35)
    assert channel.poll() == "save"


def test_junk_control_file_is_ignored(paths):
    channel = ControlChannel(paths.root, since=0, min_interval_s=0)
    paths.control.write_text("{not json")
    assert channel.poll() is None
    write_json_atomic(paths.control, {"seq": 5, "action": "explode", "t": time.time()})
    assert channel.poll() is None
    assert send(paths, "pause") == 6
    assert channel.poll() == "pause"


def test_unknown_action_is_refused(paths):
    with pytest.raises(TraindeckError, match="unknown control action"):
        send(paths, "reboot")


def test_send_and_wait_returns_the_acknowledgement(paths):
    # A stale acknowledgement with the same seq must not count.
    append_events(paths.events, [make_event("log", level="info", message="old", control="save", seq=1)])

    def fake_worker():
        channel = ControlChannel(paths.root, since=0, min_interval_s=0)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            cmd = channel.poll()
            if cmd:
                append_events(paths.events, [make_event("log", level="info", message=f"did {cmd} #{cmd.seq}",
                                                        control=str(cmd), seq=cmd.seq)])
                return
            time.sleep(0.02)

    paths.control.write_text(json.dumps({"seq": 0, "action": "save", "t": 0}))
    worker = threading.Thread(target=fake_worker)
    worker.start()
    assert send_and_wait(paths, "save", timeout_s=5) == "did save #1"
    worker.join()


def test_send_and_wait_times_out_with_a_clear_error(paths):
    with pytest.raises(TraindeckError, match="did not acknowledge 'pause' within 0.3 s"):
        send_and_wait(paths, "pause", timeout_s=0.3)


def test_send_and_wait_refuses_runs_that_are_not_live(paths):
    write_json_atomic(paths.run_json, {"state": "finished"})
    with pytest.raises(TraindeckError, match="it is finished"):
        send_and_wait(paths, "save", timeout_s=1)
    assert not paths.control.exists()  # nothing sent to a dead run
    write_json_atomic(paths.run_json, {"state": "running"})
    write_json_atomic(paths.exit_json, {"returncode": 1})
    with pytest.raises(TraindeckError, match="already exited"):
        send_and_wait(paths, "save", timeout_s=1)


def test_heartbeat_writes_at_most_about_once_a_second(paths):
    hb = Heartbeat(paths.root, rank=3, interval_s=0.2)
    assert hb.beat(1, epoch=1) is True
    data = json.loads((paths.heartbeats / "rank-3.json").read_text())
    assert data["rank"] == 3 and data["step"] == 1 and data["epoch"] == 1 and data["state"] == "training"
    assert data["pid"] > 0 and abs(data["t"] - time.time()) < 5
    assert hb.beat(2) is False  # rate limited
    assert hb.beat(3, state="paused") is True  # a state change is written at once
    assert hb.beat(4, state="paused", force=True) is True
    time.sleep(0.25)
    assert hb.beat(5, state="paused") is True
    assert read_heartbeats(paths.root)[3]["step"] == 5
    assert not [p for p in paths.heartbeats.iterdir() if p.name.endswith(".tmp")]


def test_heartbeat_call_that_does_not_write_is_cheap(paths):
    hb = Heartbeat(paths.root, rank=0)
    hb.beat(0)
    n = 20000
    t0 = time.perf_counter()
    for i in range(n):
        hb.beat(i)
    per_call_us = (time.perf_counter() - t0) / n * 1e6
    assert per_call_us < 20, per_call_us


def test_heartbeat_survives_a_missing_directory(tmp_path):
    hb = Heartbeat(tmp_path / "gone" / "deeper", rank=0)
    (tmp_path / "gone" / "deeper" / "heartbeats").rmdir()
    assert hb.beat(1) is False  # advisory: never raises into the training loop


def test_two_requests_within_one_clock_tick_are_both_seen(paths, monkeypatch):
    """Same mtime, size and (reused) inode: the second request must not hide behind the first."""
    channel = ControlChannel(paths.root, since=0, min_interval_s=0)
    send(paths, "pause")
    st = os.stat(paths.control)
    assert channel.poll() == "pause"
    send(paths, "resume")
    real_stat = os.stat

    def same_stamp(path, *args, **kwargs):
        result = real_stat(path, *args, **kwargs)
        if str(path) == str(paths.control):
            fields = list(result)
            return os.stat_result(fields[:1] + [st.st_ino] + fields[2:6] + [st.st_size] + fields[7:],
                                  {"st_mtime_ns": st.st_mtime_ns})
        return result

    monkeypatch.setattr(os, "stat", same_stamp)
    assert channel.poll() == "resume"

"""A full or read-only disk never kills a healthy run: the supervisor's writes warn (rate-limited),
wait and retry, and the end of a run is written once there is room (training.rundir.write_failures,
the supervisor's writers, the telemetry sampler). The live run that meets a full disk is
tests/reliability/test_disk.py."""

from __future__ import annotations

import errno
import json
import os
import subprocess

import pytest

from training.monitor import telemetry
from training.monitor.telemetry import TelemetrySampler, read_telemetry
from training.rundir import RunPaths, RunState, create_run_dir, read_json, records, write_json_atomic
from training.rundir.events_file import EventReader
from training.rundir.write_failures import WriteTrouble, describe, retry_until_written
from training.supervise import run_processes, run_writer
from training.supervise.outcome import RunResult, named_for_the_disk
from training.supervise.run_processes import RunProcesses
from training.supervise.run_supervisor import Supervisor

ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def failing(times: int, real):
    """`real`, raising ENOSPC on its first `times` calls."""
    calls = {"n": 0}

    def call(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] <= times:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(*args, **kwargs)

    call.calls = calls
    return call


def test_a_failing_write_warns_at_once_then_at_most_every_30_s_and_once_more_when_it_works_again():
    said, clock = [], Clock()
    trouble = WriteTrouble(warn=said.append, every_s=30.0, clock=clock)
    for _ in range(50):  # a write every 0.2 s for 10 s: one warning, not fifty
        trouble.failed("run.json", ENOSPC)
        clock.now += 0.2
    assert len(said) == 1 and "cannot write run.json: disk full (No space left on device)" in said[0]
    assert "training goes on" in said[0] and "retried" in said[0]
    clock.now += 25.0
    trouble.failed("run.json", ENOSPC)
    assert len(said) == 2 and "51 failures over 35 s" in said[1]
    assert trouble.failing
    trouble.ok("run.json")
    trouble.ok("run.json")  # no failure since: nothing more to say
    assert len(said) == 3 and said[2].startswith("writes to run.json work again after 51 failure(s)")
    summary = trouble.summary()
    assert summary["full"] and summary["failed_writes"] == 51 and summary["files"] == ["run.json"]
    assert summary["seconds"] == pytest.approx(35.0) and not summary["still_failing"]
    assert WriteTrouble().summary() is None
    assert describe(OSError(errno.EROFS, "Read-only file system")).startswith("read-only filesystem")


def test_a_warning_that_cannot_be_written_is_not_a_crash():
    def full_log(_line):
        raise OSError(errno.ENOSPC, "No space left on device")

    trouble = WriteTrouble(warn=full_log)
    trouble.failed("events.jsonl", ENOSPC, dropped=1)
    trouble.ok("events.jsonl")
    assert trouble.dropped == 1


def test_retry_until_written_waits_for_room_with_a_deadline():
    said, slept = [], []
    write = failing(3, lambda: "done")
    assert retry_until_written("exit.json", write, WriteTrouble(warn=said.append), sleep=slept.append)
    assert write.calls["n"] == 4 and slept == [0.1, 0.2, 0.4]
    assert said[-1].startswith("writes to exit.json work again after 3 failure(s)")

    clock = Clock()

    def sleep(s):
        clock.now += s

    never = failing(10**9, lambda: None)
    assert not retry_until_written("exit.json", never, WriteTrouble(warn=said.append), deadline_s=60, sleep=sleep,
                                   clock=clock)
    assert "gave up writing exit.json after 60 s" in said[-1]


@pytest.fixture
def tiny_disk(tmp_path):
    mnt = tmp_path / "disk"
    mnt.mkdir()
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({out.stderr.strip() or out.returncode})")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_run_json_on_a_really_full_disk_keeps_its_old_contents_and_leaves_no_temp_file(tiny_disk):
    paths = RunPaths(tiny_disk)
    write_json_atomic(paths.run_json, {"id": "r", "state": "running", "note": "x" * 1000})
    before = paths.run_json.read_bytes()
    fd = os.open(tiny_disk / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while os.write(fd, b"\0" * 65536):
            pass
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    with pytest.raises(OSError) as caught:
        records.update_run_json(paths, state="finished", note="y" * 20000)
    assert caught.value.errno == errno.ENOSPC
    assert paths.run_json.read_bytes() == before  # never truncated first
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["filler", "run.json"]
    (tiny_disk / "filler").unlink()
    records.update_run_json(paths, state="finished")
    assert read_json(paths.run_json)["state"] == "finished"


def supervisor_of_a_new_run(tmp_path, warn=lambda _line: None) -> tuple[RunPaths, Supervisor]:
    """A supervisor (not started) of a new run directory; its disk warnings go to `warn`."""
    paths = create_run_dir(tmp_path, "t")
    sup = Supervisor(paths)
    sup.writer.disk.warn = warn
    return paths, sup


def test_the_supervisors_writes_wait_while_the_disk_is_full_and_land_in_order_when_it_is_back(tmp_path,
                                                                                             monkeypatch):
    said = []
    paths, sup = supervisor_of_a_new_run(tmp_path, warn=said.append)
    real_update, real_append = run_writer.update_run_json, run_writer.append_events
    monkeypatch.setattr(run_writer, "update_run_json", failing(10**9, real_update))
    monkeypatch.setattr(run_writer, "append_events", failing(10**9, real_append))

    sup.set_state(RunState.RUNNING, "training")  # neither write goes through: no exception either
    assert not sup.writer.run_json(processes=[{"pid": 1}])
    assert not sup.writer.append([run_writer.make_event("log", level="info", message="second")])
    assert not paths.run_json.exists() and not paths.events.exists()
    assert sum("cannot write" in line for line in said) == 2  # one warning per file, not per write

    monkeypatch.setattr(run_writer, "update_run_json", real_update)
    monkeypatch.setattr(run_writer, "append_events", real_append)
    sup.writer.retry_at = 0.0
    sup.writer.retry_pending()
    data = read_json(paths.run_json)
    assert data["state"] == "running" and data["processes"] == [{"pid": 1}]
    got = EventReader(paths.events).read()
    assert [e.get("message") for e in got][:2] == ["training", "second"]
    assert got[-1]["level"] == "warning" and "training went on" in got[-1]["message"]
    assert got[-1]["disk"]["files"] == ["events.jsonl", "run.json"]
    assert any(line.startswith("writes to run.json work again") for line in said)


def test_pending_events_are_bounded_and_what_was_dropped_is_counted(tmp_path, monkeypatch):
    _, sup = supervisor_of_a_new_run(tmp_path)
    monkeypatch.setattr(run_writer, "PENDING_EVENTS_MAX", 5)
    monkeypatch.setattr(run_writer, "append_events", failing(10**9, run_writer.append_events))
    for i in range(8):
        sup.writer.append([{"kind": "log", "message": str(i)}])
    assert [e["message"] for e in sup.writer.pending_events] == ["3", "4", "5", "6", "7"]
    assert sup.writer.disk.dropped == 3


def test_a_run_that_failed_on_a_full_disk_says_disk_full_in_exit_json_written_once_there_is_room(tmp_path,
                                                                                                 monkeypatch):
    said = []
    paths, sup = supervisor_of_a_new_run(tmp_path, warn=said.append)
    sup.writer.retry_sleep = lambda _s: None
    # Nothing of a real run to sweep: this test's process and its children are not the run's.
    monkeypatch.setattr(run_processes.pg, "descendants", lambda _ref: [])
    monkeypatch.setattr(run_processes, "Containment", lambda *_a: type("C", (), {"final_check": lambda self, _k: {}})())
    monkeypatch.setattr(RunProcesses, "gpu_leaks", lambda self: [])
    # The disk filled while the run trained (the supervisor's run.json write failed), and it is
    # still full as the run ends: each end record fails twice before it goes through.
    sup.writer.disk.failed("run.json", ENOSPC)
    for name in ("append_events", "write_json_atomic", "update_run_json"):
        monkeypatch.setattr(records, name, failing(2, getattr(records, name)))
    error = ["OSError: [Errno 28] cannot write checkpoint checkpoints/last.pt: No space left on device"]
    result = sup.finish(RunResult(RunState.FAILED, 1, 0, error, None, f"rank 0 failed: {error[0]}"))

    assert result.message.startswith("disk full: rank 0 failed")
    exit_data = read_json(paths.exit_json)
    assert exit_data["state"] == "failed" and exit_data["message"].startswith("disk full")
    assert "free space on the disk" in exit_data["hint"] and f"--resume {paths.id}" in exit_data["hint"]
    assert exit_data["disk"]["failed_writes"] == 1 and exit_data["disk"]["full"]  # those before exit.json
    assert sup.writer.disk.failures == 7
    assert read_json(paths.run_json)["state"] == "failed"
    statuses = [e for e in EventReader(paths.events).read() if e["kind"] == "status"]
    assert len(statuses) == 1 and statuses[0]["message"].startswith("disk full")  # written once
    assert any(line.startswith("writes to exit.json work again") for line in said)


def test_a_healthy_run_is_not_named_for_the_disk_and_keeps_its_state(tmp_path):
    _, sup = supervisor_of_a_new_run(tmp_path)
    sup.writer.disk.failed("telemetry.jsonl", ENOSPC, dropped=1)
    sup.writer.disk.ok("telemetry.jsonl")
    finished = RunResult(RunState.FINISHED, 0, message="finished")
    assert named_for_the_disk(finished, sup.paths, sup.writer.disk) is finished
    bug = RunResult(RunState.FAILED, 1, 0, ["ValueError: bad"], None, "rank 0 failed: ValueError: bad")
    assert named_for_the_disk(bug, sup.paths, sup.writer.disk) is bug


def test_telemetry_drops_a_sample_on_a_full_disk_warns_once_and_goes_on(tmp_path, monkeypatch):
    paths = RunPaths(tmp_path)
    said = []
    sampler = TelemetrySampler(paths, 0.25, lambda: {}, trouble=WriteTrouble(warn=said.append))
    sampler._fd = os.open(paths.telemetry, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    monkeypatch.setattr(sampler, "sample", lambda: {"v": 1, "kind": "telemetry", "t": 1.0, "gpus": []})
    real_write = os.write
    writes = iter([ENOSPC, ENOSPC, 5, None, None])  # two failures, one short write, then room

    def disk(fd, data):
        how = next(writes)
        if isinstance(how, OSError):
            raise how
        return real_write(fd, data[:how] if how else data)

    monkeypatch.setattr(telemetry.os, "write", disk)
    for _ in range(5):
        sampler._sample_once()
    os.close(sampler._fd)
    assert sampler.samples_dropped == 3 and sampler.samples_written == 2
    assert len([line for line in said if "cannot write telemetry.jsonl" in line]) == 1
    assert "dropped" in said[0]
    # The short write's half line is ended before the next sample: one sample lost, not two.
    assert len(read_telemetry(paths.telemetry)) == 2
    assert all(json.loads(line) for line in paths.telemetry.read_bytes().split(b"\n")[1:] if line)

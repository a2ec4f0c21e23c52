"""training.report round-trips through events.jsonl; the reader survives anything appended to it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.locations import ROOT
from training import report
from training.rundir import RUN_DIR_ENV
from training.rundir.events_file import EventReader, append_events, make_event, read_all


def _run(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k not in (RUN_DIR_ENV, "RANK", "TRAINDECK_RANK")}
    full_env.update(env, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full_env, capture_output=True,
                          text=True, timeout=120)


SCRIPT = """
    from training import report
    report.status("running", "hello", epochs=2)
    for step in range(1, 6):
        report.log(step, epoch=1, loss=1.0 / step, acc=0.5)
    report.log(5, epoch=1, split="val", loss=0.7, f1=0.4)
    report.epoch(1, epochs=2, seconds=1.5, samples_per_s=100.0)
    report.checkpoint("checkpoints/best.pt", epoch=1, step=5, monitor="val_loss", value=0.7, best=True)
    report.message("careful", level="warning")
    print("done")
"""


def test_every_event_kind_round_trips(tmp_path):
    proc = _run(SCRIPT, {RUN_DIR_ENV: str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "done" and proc.stderr == ""
    events = read_all(tmp_path / "events.jsonl")
    kinds = [e["kind"] for e in events]
    assert kinds == ["status"] + ["metric"] * 6 + ["epoch", "checkpoint", "log"]
    assert all(e["v"] == 1 and isinstance(e["t"], float) for e in events)
    assert events[0]["state"] == "running" and events[0]["message"] == "hello" and events[0]["epochs"] == 2
    assert [e["values"]["loss"] for e in events[1:6]] == [1.0, 0.5, 1 / 3, 0.25, 0.2]
    assert events[1]["step"] == 1 and events[1]["epoch"] == 1 and events[1]["split"] == "train"
    assert events[6]["split"] == "val" and events[6]["values"] == {"loss": 0.7, "f1": 0.4}
    assert events[7] == {**events[7], "epoch": 1, "epochs": 2, "seconds": 1.5, "samples_per_s": 100.0}
    assert events[8]["path"] == "checkpoints/best.pt" and events[8]["best"] is True and events[8]["value"] == 0.7
    assert events[9]["level"] == "warning" and events[9]["message"] == "careful"
    # report.log beats the heartbeat too, so the watchdog sees custom scripts
    beat = json.loads((tmp_path / "heartbeats" / "rank-0.json").read_text())
    assert beat["rank"] == 0 and beat["step"] >= 1


def test_no_op_outside_traindeck(tmp_path):
    proc = _run(SCRIPT, {})
    assert proc.returncode == 0 and proc.stdout.strip() == "done" and proc.stderr == ""
    r = report.Reporter(None)
    r.log(1, loss=1.0)
    r.checkpoint("x.pt")
    r.flush()
    assert not r.enabled and r.written == 0


def test_rank_other_than_zero_writes_nothing_unless_all_ranks(tmp_path):
    code = """
        from training import report
        report.log(1, loss=1.0)
        report.message("only rank 0")
        report.message("from every rank", all_ranks=True)
        report.log(1, loss=2.0, all_ranks=True)
    """
    proc = _run(code, {RUN_DIR_ENV: str(tmp_path), "RANK": "1"})
    assert proc.returncode == 0, proc.stderr
    events = read_all(tmp_path / "events.jsonl")
    assert [(e["kind"], e.get("rank")) for e in events] == [("log", 1), ("metric", 1)]
    assert events[0]["message"] == "from every rank" and events[1]["values"] == {"loss": 2.0}
    # every rank beats its own heartbeat
    assert json.loads((tmp_path / "heartbeats" / "rank-1.json").read_text())["rank"] == 1


def test_bad_values_are_dropped_and_never_raise(tmp_path):
    r = report.Reporter(tmp_path, 0, heartbeat=False)

    class Weird:
        def __float__(self):
            raise RuntimeError("a tensor with many elements")

    r.log(1, loss=0.5, bad="abc", weird=Weird(), none=None, flag=True, nan=float("nan"))
    r.log("not a step", loss=1.0)
    r.log(2, epoch=object(), loss=1.0)
    r.checkpoint(object())
    r.emit("log", message="x", obj=object(), flush=True)  # not JSON: the batch is dropped, not raised
    r.flush()
    events = read_all(tmp_path / "events.jsonl")
    assert [e["values"] for e in events] == [{"loss": 0.5, "flag": 1.0, "nan": "nan"}]
    assert r.dropped >= 6


def test_oserror_is_swallowed_and_counted(tmp_path):
    gone = tmp_path / "gone"
    r = report.Reporter(gone, 0, heartbeat=False)  # the run dir does not exist: every write fails
    r.log(1, loss=1.0)
    r.status("running")
    r.flush()
    r.close()
    assert r.errors >= 1 and r.written == 0


def test_points_are_flushed_by_age_without_further_calls(tmp_path):
    r = report.Reporter(tmp_path, 0, heartbeat=False)
    r.log(1, loss=1.0)
    assert not (tmp_path / "events.jsonl").exists() or read_all(tmp_path / "events.jsonl") == []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not read_all(tmp_path / "events.jsonl"):
        time.sleep(0.05)
    assert [e["values"] for e in read_all(tmp_path / "events.jsonl")] == [{"loss": 1.0}]
    r.close()


def test_batches_by_size_and_order_is_kept(tmp_path):
    r = report.Reporter(tmp_path, 0, heartbeat=False)
    for i in range(1, 2 * report.FLUSH_EVENTS + 10):
        r.log(i, loss=float(i))
        if i == 300:
            r.message("in the middle")  # written at once, after everything logged before it
    r.close()
    events = read_all(tmp_path / "events.jsonl")
    assert [e.get("step") for e in events if e["kind"] == "metric"] == list(range(1, 2 * report.FLUSH_EVENTS + 10))
    middle = next(i for i, e in enumerate(events) if e["kind"] == "log")
    assert events[middle - 1]["step"] == 300


def test_a_stalled_reader_does_not_slow_the_writer(tmp_path):
    """Nobody reading (or a reader holding the file open) changes nothing: it is a regular file."""
    r = report.Reporter(tmp_path, 0, heartbeat=False)
    r.log(0, loss=0.0)
    r.flush()
    with open(tmp_path / "events.jsonl", "rb"):  # a reader that never reads
        t0 = time.perf_counter()
        for i in range(20_000):
            r.log(i, loss=1.0, acc=0.5)
        per_call_us = (time.perf_counter() - t0) / 20_000 * 1e6
    r.close()
    assert per_call_us < 200  # typically ~5 us; generous for a loaded shared box
    assert len(read_all(tmp_path / "events.jsonl")) == 20_001


def test_checkpoint_path_is_relative_to_the_run_dir_and_sized(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    ckpt = tmp_path / "checkpoints" / "last.pt"
    ckpt.write_bytes(b"x" * 1234)
    r = report.Reporter(tmp_path, 0, heartbeat=False)
    r.checkpoint(ckpt, epoch=1)
    (event,) = read_all(tmp_path / "events.jsonl")
    assert event["path"] == "checkpoints/last.pt" and event["bytes"] == 1234 and event["best"] is False


# ---- the reader -------------------------------------------------------------------------------

def test_reader_skips_and_counts_garbage_and_waits_for_half_lines(tmp_path):
    path = tmp_path / "events.jsonl"
    append_events(path, [make_event("log", message="one")])
    with open(path, "ab") as f:
        f.write(b"not json\n\x00\xff\xfe\n[1, 2]\n{\"no_kind\": 1}\n" + b"[" * 100_000 + b"\n")
        f.write(b'{"v":1,"t":1.0,"kind":"log","mess')  # half-written
    reader = EventReader(path)
    assert [e["message"] for e in reader.read()] == ["one"]
    assert reader.skipped == 5
    with open(path, "ab") as f:
        f.write(b'age":"two"}\n')
    assert [e["message"] for e in reader.read()] == ["two"]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chunks=st.lists(st.binary(max_size=400), max_size=8))
def test_random_bytes_appended_never_crash_the_reader(tmp_path, chunks):
    path = tmp_path / "events.jsonl"
    path.unlink(missing_ok=True)
    append_events(path, [make_event("log", message="before")])
    reader = EventReader(path, chunk_bytes=97)  # small chunks: lines split across reads too
    seen = []
    for chunk in chunks:
        with open(path, "ab") as f:
            f.write(chunk)
        seen.extend(reader.read())
    with open(path, "ab") as f:
        f.write(b"\n" + (json.dumps(make_event("log", message="after")) + "\n").encode())
    while not reader.at_end:
        seen.extend(reader.read())
    seen.extend(reader.read())
    messages = [e.get("message") for e in seen]
    assert messages[0] == "before" and messages[-1] == "after"
    assert all(isinstance(e, dict) and "kind" in e for e in seen)

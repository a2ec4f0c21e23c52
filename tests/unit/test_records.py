"""The run directory's typed records: the keys on disk stay as they are, and one finish_run ends a run."""

from __future__ import annotations

import json

from tests.support.fake_runs import make_run_dir
from training.rundir import read_json, read_run_json
from training.rundir.records import (
    CheckpointEvent,
    ExitRecord,
    RunRecord,
    finish_run,
    parse_event,
)


def test_exit_record_reads_and_writes_the_keys_the_supervisor_writes():
    data = {"returncode": 1, "state": "failed", "failed_rank": 2, "error": ["Traceback", "ValueError: x"],
            "hint": "see logs", "message": "rank 2 exited with code 1", "t": 5.0, "seconds": 3.5,
            "gpu_leaks": []}
    record = ExitRecord.from_json(data)
    assert record.error == ("Traceback", "ValueError: x") and record.failed_rank == 2
    assert record.to_json() == data  # same keys, same values: older runs and outside tools read them
    assert ExitRecord.from_json({"returncode": 0}).final_state == "finished"
    assert ExitRecord.from_json({"returncode": True, "failed_rank": False}).returncode is None


def test_parse_event_types_numbers_once():
    e = parse_event({"kind": "checkpoint", "t": 1, "path": "checkpoints/best.pt", "step": True, "bytes": 2048,
                     "value": float("nan"), "best": 1})
    assert isinstance(e, CheckpointEvent) and e.step is None and e.bytes == 2048 and e.value is None and e.best
    assert parse_event({"kind": "unknown"}) is None


def test_finish_run_writes_exit_json_run_json_state_and_the_status_event(tmp_path):
    paths = make_run_dir(tmp_path, "20261124-183000-cpu", state="running")
    finish_run(paths, ExitRecord(state="stopped", message="stop requested"), processes=[],
               status={"source": "console"})
    exit_data = read_json(paths.exit_json)
    assert set(exit_data) == set(ExitRecord.KEYS) and exit_data["state"] == "stopped"
    run = RunRecord.from_json(read_run_json(paths))
    assert run.state == "stopped" and run.state_t is not None and read_run_json(paths)["processes"] == []
    events = [json.loads(line) for line in paths.events.read_text().splitlines()]
    assert events[-1]["kind"] == "status" and events[-1]["state"] == "stopped" and events[-1]["source"] == "console"


def test_finish_run_writes_the_final_status_before_either_file_says_the_run_ended(tmp_path, monkeypatch):
    """A reader that stops at exit.json, or at run.json's final state (`--runs`, a viewer, a test's
    wait for the run to end), must find the final status event already in events.jsonl."""
    from training.rundir import records

    paths = make_run_dir(tmp_path, "20261124-183000-cpu", state="running")
    seen: dict[str, list[str]] = {}

    def final_statuses() -> list[str]:
        return [e["state"] for e in map(json.loads, paths.events.read_text().splitlines())
                if e.get("kind") == "status" and e.get("state") == "failed"]

    real_write, real_update = records.write_json_atomic, records.update_run_json

    def write_json_atomic(path, data, *a, **k):
        seen.setdefault(path.name, final_statuses())
        return real_write(path, data, *a, **k)

    def update_run_json(p, **fields):
        seen.setdefault("run.json", final_statuses())
        return real_update(p, **fields)

    monkeypatch.setattr(records, "write_json_atomic", write_json_atomic)
    monkeypatch.setattr(records, "update_run_json", update_run_json)
    finish_run(paths, ExitRecord(state="failed", message="rank 1 died"), status={"source": "supervisor"})
    assert seen == {"exit.json": ["failed"], "run.json": ["failed"]}


def test_a_metric_event_is_typed_once_with_the_one_number_rule():
    """traindeck.numbers: NaN and Infinity kept (as written, "nan" text too), a number's text and a
    bool are no number; a step or an epoch is an int."""
    import math

    from training.rundir.records import MetricEvent

    e = parse_event({"kind": "metric", "step": 3, "epoch": 1.5, "t": "x",
                     "values": {"loss": "nan", "acc": 1, "lr": 0.1, "text": "0.5", "flag": True}})
    assert isinstance(e, MetricEvent) and e.step == 3 and e.epoch is None and e.t is None and e.split == "train"
    assert set(e.numbers) == {"loss", "acc", "lr"} and math.isnan(e.numbers["loss"]) and e.numbers["acc"] == 1.0
    assert e.values["text"] == "0.5" and e.raw["kind"] == "metric"  # as written, for the describer
    assert parse_event({"kind": "metric", "values": [1]}).numbers is None


def test_run_json_is_created_by_one_function_and_exit_json_amended_through_finish_run(tmp_path):
    from training.rundir import RunPaths
    from training.rundir.records import create_run_json

    paths = RunPaths(tmp_path / "run")
    paths.root.mkdir()
    data = create_run_json(paths, RunRecord(id="r", profile="cpu", mode="ddp", world_size=2, argv=("--x",),
                                            host="box", created=1.0, state="starting", state_t=1.0, cwd="/w"),
                           queue=False)
    assert list(data) == ["id", "profile", "mode", "world_size", "argv", "host", "created", "rehearsal",
                          "supervisor", "launcher", "processes", "port", "env", "state", "state_t", "cwd", "queue"]
    assert read_run_json(paths) == data and data["supervisor"] == {"pid": None, "create_time": None}
    finish_run(paths, ExitRecord(state="stopped", message="m"))
    state_t = read_run_json(paths)["state_t"]
    record = ExitRecord.from_json(read_json(paths.exit_json))
    finish_run(paths, record.with_extra(survivors=[], nothing_left=True), run_json=False)
    assert read_json(paths.exit_json)["nothing_left"] is True and read_json(paths.exit_json)["state"] == "stopped"
    assert read_run_json(paths)["state_t"] == state_t

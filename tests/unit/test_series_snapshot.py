"""The series snapshot (training/rundir/snapshot.py): trusted only when it matches events.jsonl,
rebuilt and saved when missing, corrupt, stale or from another file, and never hiding the events
written after it (the viewers read the tail from its offset)."""

from __future__ import annotations

from pathlib import Path

from tests.support.fake_runs import encode_line, event, write_metric_lines
from training.rundir import RunPaths
from training.rundir.snapshot import SnapshotWriter, fold_file, load, load_or_rebuild, snapshot_path
from tui.feed import RunFeed


def story(n: int, t0: float = 1000.0) -> str:
    return "".join(encode_line(event(t0 + e, "checkpoint", path="checkpoints/last.pt", epoch=e, step=e * 10,
                                     monitor="val_loss", value=1.0 / e, best=True)) for e in range(1, n + 1))


def run_dir(tmp_path: Path, metrics: int = 300) -> RunPaths:
    paths = RunPaths(tmp_path / "20260101-000000-x")
    paths.root.mkdir()
    paths.events.write_text(story(3), encoding="utf-8")
    write_metric_lines(paths.events, metrics, t0=2000.0)
    return paths


def loss_count(store) -> int:
    return store.get(("train", "loss")).count


def test_writer_saves_a_snapshot_that_matches_a_full_fold(tmp_path):
    paths = run_dir(tmp_path)
    writer = SnapshotWriter(paths.events)
    assert writer.step()  # built from events.jsonl and saved
    loaded = load(paths.events)
    full = fold_file(paths.events)
    assert loaded is not None and loaded.offset == full.offset == paths.events.stat().st_size
    assert loss_count(loaded.store) == loss_count(full.store) == 300
    assert loaded.store.view(("train", "loss"), 50) == full.store.view(("train", "loss"), 50)
    assert [e["kind"] for e in loaded.replay()] == ["checkpoint"] * 3 + ["metric"]
    write_metric_lines(paths.events, 7, start_step=301, t0=3000.0)
    assert writer.step() and loss_count(load(paths.events).store) == 307
    assert not writer.step()  # nothing new: not saved again


def test_corrupt_snapshot_is_rebuilt_and_saved(tmp_path):
    paths = run_dir(tmp_path)
    SnapshotWriter(paths.events).step()
    data = bytearray(snapshot_path(paths.events).read_bytes())
    data[len(data) // 2: len(data) // 2 + 64] = b"\0" * 64
    snapshot_path(paths.events).write_bytes(bytes(data))
    assert load(paths.events) is None
    folded, rebuilt = load_or_rebuild(paths.events)
    assert rebuilt and loss_count(folded.store) == 300
    assert load(paths.events) is not None  # saved: the next attach is fast again


def test_snapshot_of_another_file_is_not_trusted(tmp_path):
    paths = run_dir(tmp_path)
    SnapshotWriter(paths.events).step()
    # The run directory's events.jsonl replaced by a longer, different history.
    paths.events.write_text(story(5, t0=50.0), encoding="utf-8")
    write_metric_lines(paths.events, 400, t0=9000.0)
    folded, rebuilt = load_or_rebuild(paths.events)
    assert rebuilt and loss_count(folded.store) == 400 and len(folded.replay()) == 6
    # Truncated below the snapshot's offset: rebuilt too.
    paths.events.write_text(story(1), encoding="utf-8")
    folded, rebuilt = load_or_rebuild(paths.events)
    assert rebuilt and ("train", "loss") not in folded.store and len(folded.replay()) == 1


def test_stale_snapshot_never_hides_events_written_after_it(tmp_path):
    paths = run_dir(tmp_path)
    SnapshotWriter(paths.events).step()
    # Written after the snapshot: 50 metric events, a checkpoint, and half a line still being written.
    write_metric_lines(paths.events, 50, start_step=301, t0=5000.0)
    with open(paths.events, "a", encoding="utf-8") as f:
        f.write(encode_line(event(6000.0, "checkpoint", path="checkpoints/best.pt", epoch=9, step=350,
                                  monitor="val_loss", value=0.01, best=True)))
        f.write('{"v":1,"t":6001.0,"kind":"metric","split":"train","step":351,"values":{"lo')
    feed = RunFeed(paths)
    batch = feed.poll()
    assert batch.base is not None and batch.base.offset < paths.events.stat().st_size
    store = batch.base.store
    store.add_events(batch.events)
    assert loss_count(store) == 350
    assert [e.get("epoch") for e in batch.events if e["kind"] == "checkpoint"] == [9]
    with open(paths.events, "a", encoding="utf-8") as f:
        f.write('ss":0.5}}\n')
    later = feed.poll()
    assert later.base is None and [e.get("step") for e in later.events] == [351]

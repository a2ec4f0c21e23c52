"""[checkpoint] watch: files a script writes -> checkpoint events, each once it has settled.

The watcher's clock is a list the test moves by hand; polls are called directly (no thread)."""

from __future__ import annotations

import os
import time

from training.monitor.checkpoint_watch import SETTLE_S, CheckpointWatcher
from training.rundir.events import read_all


def make(tmp_path, pattern="out/*.pt", since=None):
    now = [100.0]
    run_dir = tmp_path / "run"
    run_dir.mkdir(exist_ok=True)
    cwd = tmp_path / "project [1]"  # a directory name that is a glob pattern of its own
    (cwd / "out").mkdir(parents=True, exist_ok=True)
    watcher = CheckpointWatcher(pattern, run_dir / "events.jsonl", run_dir, cwd,
                                since=time.time() if since is None else since, clock=lambda: now[0])
    return watcher, cwd, now


def write(path, data: bytes, mtime: float | None = None):
    path.write_bytes(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))


def test_a_new_file_is_reported_once_it_has_settled_with_size_and_time(tmp_path):
    watcher, cwd, now = make(tmp_path)
    ckpt = cwd / "out" / "ckpt.pt"
    write(ckpt, b"x" * 10)
    assert watcher.poll_once() == []            # just seen: it may still be growing
    now[0] += SETTLE_S / 2
    write(ckpt, b"x" * 100)                     # it was: the wait starts again
    assert watcher.poll_once() == []
    now[0] += SETTLE_S / 2
    assert watcher.poll_once() == []
    now[0] += SETTLE_S / 2
    [event] = watcher.poll_once()
    assert event["kind"] == "checkpoint" and event["path"] == "out/ckpt.pt" and event["bytes"] == 100
    assert event["source"] == "watch" and abs(event["mtime"] - ckpt.stat().st_mtime) < 0.01
    now[0] += 10
    assert watcher.poll_once() == []            # unchanged: never reported twice
    assert [e["bytes"] for e in read_all(watcher.events_path)] == [100]


def test_a_rewritten_file_is_a_new_checkpoint_and_other_names_are_ignored(tmp_path):
    watcher, cwd, now = make(tmp_path)
    ckpt = cwd / "out" / "last.pt"
    (cwd / "out" / "notes.txt").write_text("not a checkpoint")
    for size, mtime in ((10, 1_000.0), (10, 2_000.0)):  # same size, another mtime: rewritten
        write(ckpt, b"y" * size, mtime=time.time() + mtime)
        watcher.poll_once()
        now[0] += SETTLE_S
        assert [e["path"] for e in watcher.poll_once()] == ["out/last.pt"]
    tmp = cwd / "out" / "last.pt.tmp"
    write(tmp, b"z" * 7)
    os.replace(tmp, ckpt)                            # an atomic save: a new inode
    watcher.poll_once()
    now[0] += SETTLE_S
    assert [e["bytes"] for e in watcher.poll_once()] == [7]


def test_files_from_before_the_start_are_the_baseline_unless_rewritten(tmp_path):
    old = tmp_path / "project [1]" / "out" / "old.pt"
    old.parent.mkdir(parents=True)
    write(old, b"old", mtime=time.time() - 3600)
    watcher, cwd, now = make(tmp_path)
    watcher.poll_once()
    now[0] += SETTLE_S
    assert watcher.poll_once() == []
    write(old, b"newer")
    watcher.poll_once()
    now[0] += SETTLE_S
    assert [e["bytes"] for e in watcher.poll_once()] == [5]


def test_stop_reports_what_changed_even_if_not_settled_yet(tmp_path):
    watcher, cwd, now = make(tmp_path)
    write(cwd / "out" / "final.pt", b"f" * 3)
    watcher.stop()                                   # never started: stop is the final poll
    assert [(e["path"], e["bytes"]) for e in read_all(watcher.events_path)] == [("out/final.pt", 3)]


def test_paths_inside_the_run_directory_are_relative_to_it(tmp_path):
    run_dir = tmp_path / "run"
    watcher, cwd, now = make(tmp_path, pattern=str(run_dir / "checkpoints" / "*.pt"))
    (run_dir / "checkpoints").mkdir()
    write(run_dir / "checkpoints" / "a.pt", b"a")
    watcher.poll_once()
    now[0] += SETTLE_S
    assert [e["path"] for e in watcher.poll_once()] == ["checkpoints/a.pt"]

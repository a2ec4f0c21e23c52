"""[checkpoint] watch: files a script writes -> checkpoint events, each once it has settled.

The watcher's clock is a list the test moves by hand; polls are called directly (no thread)."""

from __future__ import annotations

import os
import time

from training.monitor.checkpoint_watch import CHECKPOINT_NAMES, SETTLE_S, CheckpointScan, CheckpointWatcher
from training.monitor.metric_presets import PRESET_CHECKPOINT_NAMES
from training.rundir.events_file import read_all


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


# ---- no [checkpoint] watch: checkpoints found by name under the working directory ------------


def scanning(tmp_path, names=CHECKPOINT_NAMES):
    now = [100.0]
    cwd = tmp_path / "project"
    runs = cwd / "runs"
    run_dir = runs / "20260101-000000-mine"
    run_dir.mkdir(parents=True)
    scan = CheckpointScan(cwd, names, skip=(runs,), also=(run_dir,))
    watcher = CheckpointWatcher(None, run_dir / "events.jsonl", run_dir, cwd, since=time.time(),
                                clock=lambda: now[0], scan=scan)
    return watcher, cwd, run_dir, now


def settled(watcher, now):
    watcher.poll_once()
    now[0] += SETTLE_S
    return watcher.poll_once()


def test_the_frameworks_default_places_are_found_with_the_step_their_names_carry(tmp_path):
    watcher, cwd, run_dir, now = scanning(tmp_path, CHECKPOINT_NAMES + PRESET_CHECKPOINT_NAMES["keras"])
    lightning = cwd / "lightning_logs" / "version_0" / "checkpoints"
    lightning.mkdir(parents=True)
    write(lightning / "epoch=1-step=16.ckpt", b"l" * 5)
    trainer = cwd / "out-hf" / "checkpoint-40"
    trainer.mkdir(parents=True)
    for name, size in (("model.safetensors", 30), ("optimizer.pt", 20), ("trainer_state.json", 3)):
        write(trainer / name, b"t" * size)
    (cwd / "ckpt").mkdir()
    write(cwd / "ckpt" / "model-03.keras", b"k" * 7)
    (run_dir / "out").mkdir()
    write(run_dir / "out" / "last.pt", b"p" * 2)
    (cwd / "notes.txt").write_text("not a checkpoint")
    events = {e["path"]: e for e in settled(watcher, now)}
    assert set(events) == {"lightning_logs/version_0/checkpoints/epoch=1-step=16.ckpt", "out-hf/checkpoint-40",
                           "ckpt/model-03.keras", "out/last.pt"}  # the run's own, relative to it
    # The Trainer's directory is one checkpoint of all its files, not one per file inside it.
    assert events["out-hf/checkpoint-40"]["bytes"] == 53 and events["out-hf/checkpoint-40"]["step"] == 40
    lightning_event = events["lightning_logs/version_0/checkpoints/epoch=1-step=16.ckpt"]
    assert lightning_event["step"] == 16 and lightning_event["epoch"] == 2  # Lightning counts from 0
    assert "step" not in events["ckpt/model-03.keras"]


def test_a_checkpoint_directory_settles_when_its_last_file_is_written(tmp_path):
    watcher, cwd, _, now = scanning(tmp_path)
    trainer = cwd / "out" / "checkpoint-6"
    trainer.mkdir(parents=True)
    write(trainer / "model.safetensors", b"m" * 10)
    assert watcher.poll_once() == []
    now[0] += SETTLE_S
    write(trainer / "optimizer.pt", b"o" * 5)  # the Trainer is still saving
    assert watcher.poll_once() == []
    now[0] += SETTLE_S
    [event] = watcher.poll_once()
    assert event["path"] == "out/checkpoint-6" and event["bytes"] == 15 and event["step"] == 6


def test_other_runs_hidden_folders_and_caches_are_not_walked_and_old_files_are_the_baseline(tmp_path):
    old = time.time() - 3600
    cwd = tmp_path / "project"
    for folder in ("runs/20250101-000000-old/checkpoints", ".venv/lib", "__pycache__", "out"):
        (cwd / folder).mkdir(parents=True)
    write(cwd / "runs/20250101-000000-old/checkpoints/last.pt", b"x")
    write(cwd / ".venv/lib/weights.safetensors", b"x")
    write(cwd / "__pycache__/x.pt", b"x")
    write(cwd / "out/before.pt", b"x", mtime=old)  # a previous run's: reported only when rewritten
    watcher, _, _, now = scanning(tmp_path)
    assert settled(watcher, now) == []
    deep = cwd.joinpath(*"abcdefgh")
    deep.mkdir(parents=True)
    write(deep / "too-deep.pt", b"x")
    assert settled(watcher, now) == []


def test_a_checkpoint_replaced_before_it_settled_is_still_reported_once(tmp_path):
    watcher, cwd, _, now = scanning(tmp_path)
    folder = cwd / "lightning_logs" / "version_0" / "checkpoints"
    folder.mkdir(parents=True)
    write(folder / "epoch=0-step=8.ckpt", b"a" * 4)
    assert watcher.poll_once() == []
    (folder / "epoch=0-step=8.ckpt").unlink()  # save_top_k=1: the next epoch's replaces it
    write(folder / "epoch=1-step=16.ckpt", b"b" * 4)
    [gone] = watcher.poll_once()
    assert gone["path"].endswith("epoch=0-step=8.ckpt") and gone["removed"] and gone["step"] == 8
    now[0] += SETTLE_S
    assert [e["step"] for e in watcher.poll_once()] == [16]
    now[0] += 10
    assert watcher.poll_once() == []


def test_a_retired_scan_reports_nothing_more(tmp_path):
    watcher, cwd, _, now = scanning(tmp_path)
    write(cwd / "last.pt", b"x")
    watcher.poll_once()
    watcher.retire()  # the script reports its own checkpoints
    now[0] += SETTLE_S
    assert watcher.poll_once() == [] and watcher.poll_once(final=True) == []

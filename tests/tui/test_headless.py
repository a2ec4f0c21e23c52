"""The headless printer on run directories written by hand: line formats, exit codes, Ctrl-C."""

from __future__ import annotations

import io
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import psutil
import pytest

from tests.support.locations import ROOT
from tests.support.processes import read_until
from training.rundir import RunPaths, RunState, hostname, write_json_atomic
from training.rundir.events_file import append_events, make_event
from tui import headless
from tui.headless import follow

T0 = 1_764_000_000.0
ANSI = re.compile(r"\x1b")


def make_run(tmp_path: Path, supervisor: dict | None = None, name: str = "20261124-183000-cpu") -> RunPaths:
    paths = RunPaths(tmp_path / name)
    for sub in ("logs", "checkpoints", "heartbeats"):
        (paths.root / sub).mkdir(parents=True)
    me = psutil.Process()
    write_json_atomic(paths.run_json, {
        "id": paths.id, "profile": "cpu", "mode": "ddp", "world_size": 2, "host": hostname(), "created": T0,
        "supervisor": supervisor or {"pid": me.pid, "create_time": me.create_time()}, "state": "running"})
    return paths


def history(paths: RunPaths) -> None:
    ev = [make_event("status", t=T0 + 1, state="running", message="training tiny: 2 x cpu, 2 epochs x 3 steps",
                     world_size=2, epochs=2, steps_per_epoch=3, start_step=0)]
    for step in (1, 2, 3):
        ev.append(make_event("metric", t=T0 + 1 + step, step=step, epoch=1, split="train",
                             values={"loss": 1.0 / step, "loss/conflict": 0.41, "loss/entropy": 0.12,
                                     "lr": 3e-3, "samples_per_s": 5012.0}))
    ev.append(make_event("metric", t=T0 + 5, step=3, epoch=1, split="val", values={"loss": 0.79, "acc": 0.5}))
    ev.append(make_event("epoch", t=T0 + 5, epoch=1, epochs=2, step=3, seconds=35.2, samples_per_s=5012.0))
    ev.append(make_event("checkpoint", t=T0 + 6, path="checkpoints/best.pt", epoch=1, step=3, monitor="val_loss",
                         value=0.79, best=True, bytes=1_200_000, seconds=0.4))
    ev.append(make_event("log", t=T0 + 6, level="warning", message="\x1b[31mloss spiked\x1b[0m", rank=1))
    append_events(paths.events, ev)
    with open(paths.telemetry, "w") as f:
        f.write(json.dumps({"t": T0 + 6, "source": "cpu", "host": {"cpu_percent": 50.0},
                            "workers": [{"rank": 1, "pid": 11, "cpu_percent": 97.0, "rss_mib": 405.0},
                                        {"rank": 0, "pid": 10, "cpu_percent": 98.0, "rss_mib": 410.2}]}) + "\n")
        f.write('{"t": 1, "half a line')


def follow_on_a_fake_clock(paths: RunPaths, out: io.StringIO, on_sleep: Callable[[int, float], None],
                           start: float = T0 + 10.0, interval_s: float = 2.0) -> int:
    """follow() on a fake clock from `start`: each of its sleeps moves the clock on and then calls
    on_sleep(n, now), n counting the sleeps from 1."""
    clock = [start]
    sleeps = itertools.count(1)

    def fake_sleep(s):
        clock[0] += s
        on_sleep(next(sleeps), clock[0])

    return follow(paths, out=out, interval_s=interval_s, clock=lambda: clock[0], sleep=fake_sleep)


def lines_of(out: io.StringIO) -> list[str]:
    text = out.getvalue()
    assert not ANSI.search(text)
    return text.splitlines()


def test_finished_run_prints_history_compactly_then_summary(tmp_path):
    paths = make_run(tmp_path)
    history(paths)
    append_events(paths.events, [make_event("status", t=T0 + 125, state="finished", message="")])
    write_json_atomic(paths.exit_json, {"returncode": 0, "state": "finished", "failed_rank": None, "error": [],
                                        "hint": None, "seconds": 125.0})
    out = io.StringIO()
    assert follow(paths, out=out, sleep=lambda s: pytest.fail("a finished run must not wait")) == 0
    lines = lines_of(out)
    assert lines == [
        "status running: training tiny: 2 x cpu, 2 epochs x 3 steps, world size 2",
        "epoch 1/2 done in 35.2 s, 5,012 samples/s, loss 0.3333 (conflict 0.41 entropy 0.12) lr 0.003 "
        "val_loss 0.79 val_acc 0.5",
        "checkpoint best.pt epoch 1 step 3 val_loss 0.79 best 1.1 MiB in 0.40 s",
        "warning: [rank 1] loss spiked",
        "status finished",
        "[02:05] epoch 1/2 step 3 loss 0.3333 (conflict 0.41 entropy 0.12) lr 0.003 val_loss 0.79 val_acc 0.5"
        " | 5012 samples/s | cpu w0 98% 410M w1 97% 405M",
        "run 20261124-183000-cpu finished: 1/2 epochs, 3 steps, best val_loss 0.79 (epoch 1), 2m05s, "
        "1 warnings, 0 errors",
        f"  run dir: {paths.root}",
    ]


def test_failed_run_prints_rank_error_lines_and_returns_its_code(tmp_path):
    paths = make_run(tmp_path)
    history(paths)
    with open(paths.events, "ab") as f:
        f.write(b"\x00\xffjunk\n{not json}\n")
    write_json_atomic(paths.exit_json, {
        "returncode": 3, "state": "failed", "failed_rank": 1,
        "error": ["Traceback (most recent call last):", "RuntimeError: CUDA out of memory"],
        "hint": "lower train.batch_size", "message": "rank 1 exited with code 3", "seconds": 9.0})
    out = io.StringIO()
    assert follow(paths, out=out) == 3
    lines = lines_of(out)
    summary = lines.index(next(x for x in lines if x.startswith("run ")))
    assert lines[summary].startswith("run 20261124-183000-cpu failed (exit 3): 1/2 epochs, 3 steps")
    assert lines[summary + 1:] == [
        "  failed rank: 1",
        "  | Traceback (most recent call last):",
        "  | RuntimeError: CUDA out of memory",
        "  rank 1 exited with code 3",
        "  hint: lower train.batch_size",
        "  (2 unreadable lines in events.jsonl skipped)",
        f"  run dir: {paths.root}",
    ]


@pytest.mark.parametrize("info,code", [
    ({"state": "finished", "returncode": 0}, 0),
    ({"state": "failed", "returncode": None}, 1),
    ({"state": "stopped", "returncode": None}, 130),
    ({"state": "failed", "returncode": -9}, 137),
    ({"state": "stopped", "returncode": 143}, 143),
    ({"state": "stopped", "returncode": 0, "health": {"rule": "nan"}}, headless.HEALTH_EXIT),
])
def test_exit_codes(info, code):
    assert headless.exit_code(info, stopped_by_us=False) == code
    assert headless.exit_code(info, stopped_by_us=True) == 130


def test_a_health_stopped_run_prints_the_event_and_exits_non_zero_naming_the_rule(tmp_path):
    paths = make_run(tmp_path)
    history(paths)
    message = "loss is nan at step 3; saving the last good checkpoint and stopping"
    append_events(paths.events, [make_event("health", t=T0 + 7, rule="nan", value="nan", step=3, rank=None,
                                            action="save-stop", asked="stop", message=message)])
    write_json_atomic(paths.exit_json, {
        "returncode": 0, "state": "stopped", "failed_rank": None, "error": [], "seconds": 9.0,
        "message": f"saved and stopped by the health rule 'nan': {message}",
        "hint": "checkpoints/last.pt is the last good checkpoint", "health": {"rule": "nan", "action": "save-stop"}})
    out = io.StringIO()
    assert follow(paths, out=out) == headless.HEALTH_EXIT
    lines = lines_of(out)
    assert f"health nan: {message}" in lines
    summary = lines.index(next(x for x in lines if x.startswith("run ")))
    assert lines[summary].startswith(f"run 20261124-183000-cpu stopped (exit {headless.HEALTH_EXIT})")
    assert f"  saved and stopped by the health rule 'nan': {message}" in lines


def test_gpu_telemetry_format():
    gpus = [{"index": i, "util": 97 - i % 2, "mem_used_mib": 81 * 1024 - i, "mem_total_mib": 183 * 1024,
             "temp_c": 55 + i, "throttle": []} for i in range(8)]
    gpus[3]["util"] = None  # N/A stays N/A
    line = headless.fmt_telemetry({"source": "nvml", "gpus": gpus})
    assert line == "gpu 0-7 util 97/96/97/-/97/96/97/96 mem 81/183 GiB 62C"
    assert headless.fmt_telemetry({"gpus": [{"index": 0}, {"index": 2}, {"index": 3}]}) == "gpu 0,2-3 util -/-/-"
    assert headless.fmt_telemetry(None) == "" and headless.fmt_telemetry({"t": 1}) == ""


def test_live_run_progress_lines_then_exit(tmp_path):
    """A run in progress: one progress line per interval while it moves, then the summary."""
    paths = make_run(tmp_path)
    out = io.StringIO()

    def on_sleep(n, now):
        if n <= 3:
            append_events(paths.events, [make_event("metric", t=now, step=10 * n, epoch=1, split="train",
                                                    values={"loss": 1.0 / n})])
        elif n == 5:
            append_events(paths.events, [make_event("checkpoint", t=now, path="checkpoints/last.pt",
                                                    epoch=1, step=30, bytes=2048, seconds=0.05)])
        elif n == 7:
            write_json_atomic(paths.exit_json, {"returncode": 0, "state": "finished", "seconds": 25.0})

    assert follow_on_a_fake_clock(paths, out, on_sleep) == 0
    lines = lines_of(out)
    assert lines[0] == "[00:10] waiting for the first step (starting)"
    assert lines[1:4] == ["[00:12] epoch 1 step 10 loss 1", "[00:14] epoch 1 step 20 loss 0.5",
                          "[00:16] epoch 1 step 30 loss 0.3333"]
    assert lines[4] == "checkpoint last.pt epoch 1 step 30 2.0 KiB in 0.05 s"  # no repeat progress line: nothing moved
    assert lines[5].startswith("run 20261124-183000-cpu finished: 1 epochs, 30 steps, last loss 0.3333, 25s")


def test_the_end_of_a_run_is_seen_without_waiting_out_the_progress_interval(tmp_path):
    """Progress lines come every interval; the run's end (exit.json) is looked for between them."""
    paths = make_run(tmp_path, supervisor={"pid": os.getpid(), "create_time": psutil.Process().create_time()})
    append_events(paths.events, [make_event("metric", step=1, epoch=1, split="train", values={"loss": 1.0})])
    def end_soon():  # a plain sleep: libfaketime (make test-faketime) stalls timed waits such as Timer's
        time.sleep(0.3)
        write_json_atomic(paths.exit_json, {"returncode": 0, "state": "finished"})

    threading.Thread(target=end_soon, daemon=True).start()
    t0 = time.monotonic()
    assert follow(paths, out=io.StringIO(), interval_s=60.0) == 0
    assert time.monotonic() - t0 < 30, "the follower slept out its 60 s interval after the run ended"


def test_a_custom_script_without_metrics_gets_a_line_every_interval_while_it_prints(tmp_path):
    """No step ever reported: rank 0's output moving is progress, shown as its last line (\r redraws too)."""
    paths = make_run(tmp_path)
    log = paths.logs / "rank-0.log"
    out = io.StringIO()

    def on_sleep(n, now):
        if n <= 3:
            with open(log, "a") as f:
                f.write(f"reading shard {n}\n" if n < 3 else "batch 7/9 \x1b[32mok\x1b[0m\rbatch 9/9 ok")
        elif n == 6:
            write_json_atomic(paths.exit_json, {"returncode": 0, "state": "finished", "seconds": 22.0})

    assert follow_on_a_fake_clock(paths, out, on_sleep) == 0
    progress = [x for x in lines_of(out) if x.startswith("[")]
    assert progress == ["[00:10] waiting for the first step (starting)",
                        "[00:12] starting, no metric yet; rank 0: reading shard 1",
                        "[00:14] starting, no metric yet; rank 0: reading shard 2",
                        "[00:16] starting, no metric yet; rank 0: batch 9/9 ok"]  # quiet since: no repeat


def test_a_stalled_run_repeats_its_line_rarely_and_says_so(tmp_path):
    paths = make_run(tmp_path)
    append_events(paths.events, [make_event("metric", t=T0, step=5, values={"loss": 2.0})])
    out = io.StringIO()

    def on_sleep(n, now):
        if now - T0 > 65:
            write_json_atomic(paths.exit_json, {"returncode": 0, "state": "finished"})

    follow_on_a_fake_clock(paths, out, on_sleep, start=T0, interval_s=1.0)
    progress = [x for x in lines_of(out) if x.startswith("[")]
    assert len(progress) == 3  # the first, then one every 30 s while nothing moves
    assert progress[1].endswith("| no new step for 30s") and progress[2].endswith("| no new step for 1m00s")


def test_dead_supervisor_without_exit_json_is_reported_not_waited_on(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    paths = make_run(tmp_path, supervisor={"pid": dead.pid, "create_time": T0})
    history(paths)
    out = io.StringIO()
    code = follow(paths, out=out, interval_s=0.01)
    lines = lines_of(out)
    assert code == 1
    assert any("is gone without writing exit.json; the run is orphaned" in x and "--stop" in x for x in lines)
    assert any(x.startswith("run 20261124-183000-cpu failed (exit 1)") for x in lines)


def test_ctrl_c_stops_the_run_and_returns_130(tmp_path):
    paths = make_run(tmp_path)
    history(paths)
    calls = []

    def fake_stop(p, grace_s=None, wait=True):
        calls.append((p, grace_s, wait))
        append_events(p.events, [make_event("status", state="stopped", message="stopped by the user")])
        write_json_atomic(p.exit_json, {"returncode": -15, "state": "stopped", "seconds": 30.0})
        return RunState.STOPPED

    def interrupt(_s):
        raise KeyboardInterrupt

    out = io.StringIO()
    assert follow(paths, out=out, stop_on_interrupt=True, stop_fn=fake_stop, sleep=interrupt) == 130
    lines = lines_of(out)
    assert calls == [(paths, None, True)]
    assert f"stopping run {paths.id} (Ctrl-C) ..." in lines
    assert "status stopped: stopped by the user" in lines
    assert any(x.startswith(f"run {paths.id} stopped (exit 130)") for x in lines)


def test_second_ctrl_c_kills_without_grace(tmp_path):
    paths = make_run(tmp_path)
    calls = []

    def fake_stop(p, grace_s=None, wait=True):
        calls.append(grace_s)
        if len(calls) == 1:
            raise KeyboardInterrupt  # the user pressed Ctrl-C again during the grace period
        write_json_atomic(p.exit_json, {"returncode": -9, "state": "stopped"})
        return RunState.STOPPED

    def interrupt(_s):
        raise KeyboardInterrupt

    out = io.StringIO()
    assert follow(paths, out=out, stop_on_interrupt=True, stop_fn=fake_stop, sleep=interrupt) == 130
    assert calls == [None, 0.0]
    assert f"second Ctrl-C: killing run {paths.id} now ..." in lines_of(out)


def test_ctrl_c_on_attach_detaches(tmp_path):
    paths = make_run(tmp_path)

    def interrupt(_s):
        raise KeyboardInterrupt

    out = io.StringIO()
    code = follow(paths, out=out, stop_fn=lambda *a, **k: pytest.fail("attach must not stop the run"),
                  sleep=interrupt)
    assert code == 130
    assert lines_of(out)[-1] == (f"detached from run {paths.id}; it keeps running. "
                                 f"Re-attach with: python run.py --attach {paths.id}")


def test_follows_a_run_written_by_another_thread_in_real_time(tmp_path):
    paths = make_run(tmp_path)

    def writer():
        for step in range(1, 6):
            append_events(paths.events, [make_event("metric", step=step, epoch=1, values={"loss": 1.0 / step})])
            time.sleep(0.03)
        write_json_atomic(paths.exit_json, {"returncode": 2, "state": "failed", "failed_rank": 0,
                                            "error": ["boom"]})

    thread = threading.Thread(target=writer)
    thread.start()
    out = io.StringIO()
    code = follow(paths, out=out, interval_s=0.02)
    thread.join()
    assert code == 2
    text = out.getvalue()
    assert "step 5 loss 0.2" in text and "  | boom" in text


# ---- end to end: run.py --headless and Ctrl-C ------------------------------------------------

@pytest.mark.slow
@pytest.mark.timeout(240)
def test_run_py_headless_ctrl_c_stops_the_run(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "run.py"), "--profile", "cpu", "--headless", "--runs-dir", str(tmp_path),
         "--set", "train.epochs=1", "--set", "task.samples=200000"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        lines = read_until(proc, lambda line: re.match(r"\[\d\d:\d\d\] .*step \d+", line), 120)
        assert any(re.match(r"\[\d\d:\d\d\] .*step \d+", x) for x in lines), "\n".join(lines)
        os.kill(proc.pid, signal.SIGINT)
        rest, _ = proc.communicate(timeout=120)
        lines += rest.splitlines()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = "\n".join(lines)
    assert proc.returncode == 130, text
    assert "(Ctrl-C) ..." in text and re.search(r"^run \S+ stopped", text, re.M), text
    run_dir = next(p for p in tmp_path.iterdir() if p.is_dir())
    data = json.loads((run_dir / "run.json").read_text())
    refs = [data.get("supervisor") or {}, data.get("launcher") or {}] + list(data.get("processes") or [])

    def ours_alive(ref):
        try:
            proc = psutil.Process(ref["pid"])
            return (abs(proc.create_time() - (ref.get("create_time") or 0)) < 0.5
                    and proc.status() != psutil.STATUS_ZOMBIE)
        except psutil.NoSuchProcess:
            return False

    left = [r for r in refs if r.get("pid")]
    deadline = time.monotonic() + 10  # an exited supervisor may take a moment to be reaped by init
    while left and time.monotonic() < deadline:
        left = [r for r in left if ours_alive(r)]
        time.sleep(0.2)
    assert not left, f"left behind: {[(r, psutil.Process(r['pid']).cmdline()) for r in left]}\n{text}"

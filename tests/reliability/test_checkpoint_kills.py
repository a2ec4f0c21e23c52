"""Reliability: kill -9 while checkpoints are being written, over and over, then resume.

The real built-in worker, started with exactly the argv/env the supervisor builds (training.supervise.launch), is
SIGKILLed 20 times in a row (half the kills aimed at a write in progress, half at random
moments) and resumed each time in the same run directory.

`import torch` costs 5+ s on this loaded 2-core box, so 21 plain launches would take minutes: the
first kill and the final resume use the supervisor's exact launch (training.supervise.launch.build_launch);
the 19 kills in between hit workers forked from tests/data/scripts/zygote.py, which imported
torch once. Each is still its own process running training.worker.main, killed with SIGKILL.
"""

from __future__ import annotations

import random
import signal
import subprocess
import time

import psutil
import pytest

from tests.support.live_runs import events, tmp_files
from tests.support.locations import SCRIPTS
from tests.support.profiles import builtin_profile
from tests.support.waiting import wait_for
from traindeck.heartbeat import read_heartbeats
from training.engine.checkpoint import load_checkpoint
from training.rundir import create_run_dir
from training.supervise.launch import build_launch

pytestmark = pytest.mark.slow

EVERY_STEPS = 3
ITERATIONS = 20


def _start(spec, log) -> subprocess.Popen:
    return subprocess.Popen(list(spec.argv), env=spec.environ(), cwd=spec.cwd, stdin=subprocess.DEVNULL,
                            stdout=log, stderr=subprocess.STDOUT)


class Forked:
    """A worker forked by the zygote, with the bits of Popen the loop uses."""

    def __init__(self, zygote: subprocess.Popen):
        zygote.stdin.write("go\n")
        zygote.stdin.flush()
        line = zygote.stdout.readline()
        assert line.strip().isdigit(), f"zygote said {line!r}"
        self.proc = psutil.Process(int(line))
        self.returncode = None

    def poll(self):
        if self.returncode is None and (not self.proc.is_running() or self.proc.status() == psutil.STATUS_ZOMBIE):
            self.returncode = -1
        return self.returncode

    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def wait(self, timeout=None):
        self.proc.wait(timeout)  # the zygote reaps it; psutil waits for the pid to go away
        self.returncode = -9
        return self.returncode

    def kill(self):
        self.proc.kill()


def _observed_step(paths) -> int:
    """A lower bound of how far training got: heartbeats and metric events (both lag a little)."""
    beats = read_heartbeats(paths.root)
    steps = [b.get("step") or 0 for b in beats.values()]
    steps += [e.get("step") or 0 for e in events(paths, "metric")]
    steps += [e.get("step") or 0 for e in events(paths, "checkpoint")]
    return max(steps, default=0)


def test_kill9_during_checkpoint_writes_20_times_last_pt_loads_and_resume_loses_at_most_one_interval(tmp_path,
                                                                                                      monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    # ~13 MB checkpoints (1M parameters + AdamW state) every 3 steps: the worker spends most of its
    # time writing, so kills land inside writes.
    prof = builtin_profile("single", epochs=1, samples=60000, hidden=1024, log_every=EVERY_STEPS,
                   extra=f"[checkpoint]\nevery_steps = {EVERY_STEPS}\nevery_epochs = 0\nkeep_last = 0\n")
    paths = create_run_dir(tmp_path / "runs", prof.name)
    paths.profile.write_text(prof.to_toml())
    spec = build_launch(prof, paths)
    rng = random.Random(20261124)
    log = open(paths.logs / "rank-0.log", "ab")
    zygote = subprocess.Popen([spec.argv[0], str(SCRIPTS / "zygote.py"), str(paths.root), str(paths.logs / "rank-0.log")],
                              env=spec.environ(), cwd=spec.cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    kills_in_write = 0
    expected_start = 0
    last_ckpt_event_step = 0
    try:
        for i in range(ITERATIONS):
            running_before = len([e for e in events(paths, "status") if e.get("state") == "running"])
            proc = _start(spec, log) if i == 0 else Forked(zygote)
            try:
                running = wait_for(lambda: [e for e in events(paths, "status") if e.get("state") == "running"]
                                   [running_before:] or (proc.poll() is not None and ["exited"]), 90,
                                   f"iteration {i} to start training")
                assert running != ["exited"], f"worker exited {proc.returncode}:\n" \
                                              f"{(paths.logs / 'rank-0.log').read_text()[-3000:]}"
                start_step = running[0]["start_step"]
                # Resume continues exactly where last.pt left off, never before the last reported checkpoint.
                assert start_step == expected_start, (i, start_step, expected_start)
                assert start_step >= last_ckpt_event_step, (i, start_step, last_ckpt_event_step)
                if i % 2 == 0:
                    # Aim at a write in progress: its temp file exists.
                    wait_for(lambda: any(p.name.endswith(".tmp") for p in paths.checkpoints.iterdir()), 60,
                             "a checkpoint write in progress", poll=0.002)
                    time.sleep(rng.uniform(0, 0.03))
                else:
                    wait_for(lambda: _observed_step(paths) > start_step, 60, "a step of progress")
                    time.sleep(rng.uniform(0.05, 0.8))
                in_write = any(p.name.endswith(".tmp") for p in paths.checkpoints.iterdir())
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=30)
                kills_in_write += in_write
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            reached = _observed_step(paths)
            if not (paths.checkpoints / "last.pt").exists():
                # Killed inside the very first write: nothing saved yet, and nothing claimed saved.
                assert expected_start == 0 and reached <= EVERY_STEPS, (i, reached)
                assert not events(paths, "checkpoint")
                continue
            ckpt = load_checkpoint(paths.checkpoints / "last.pt")  # torch.load(weights_only=True)
            assert ckpt["format"] == "traindeck/1" and ckpt["step"] % EVERY_STEPS == 0
            assert ckpt["step"] >= expected_start
            # At most one checkpoint interval of work is lost.
            assert reached - ckpt["step"] <= EVERY_STEPS, (i, reached, ckpt["step"])
            ckpt_events = [e for e in events(paths, "checkpoint") if str(e.get("path", "")).endswith("last.pt")]
            if ckpt_events:
                last_ckpt_event_step = ckpt_events[-1]["step"]
                assert ckpt["step"] >= last_ckpt_event_step
            expected_start = ckpt["step"]

        # One last resume: it starts from last.pt, cleans the dead writers' temp files and saves again.
        running_before = len([e for e in events(paths, "status") if e.get("state") == "running"])
        proc = _start(spec, log)
        try:
            running = wait_for(lambda: [e for e in events(paths, "status") if e.get("state") == "running"]
                               [running_before:], 90, "the final resume")
            assert running[0]["start_step"] == expected_start
            wait_for(lambda: any(e["step"] > expected_start for e in events(paths, "checkpoint")), 60,
                     "a checkpoint after the final resume")
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 143
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    finally:
        log.close()
        zygote.stdin.close()
        try:
            zygote.wait(timeout=30)
        except subprocess.TimeoutExpired:
            zygote.kill()
            zygote.wait()
        zygote.stdout.close()
    assert load_checkpoint(paths.checkpoints / "last.pt")["step"] > expected_start
    assert not tmp_files(paths.checkpoints), tmp_files(paths.checkpoints)
    # The test means something only if many kills hit a write in progress.
    assert kills_in_write >= ITERATIONS // 4, kills_in_write
    # The step counter only moves forward across all the resumes.
    starts = [e["start_step"] for e in events(paths, "status") if e.get("state") == "running"]
    assert starts == sorted(starts) and len(starts) == ITERATIONS + 1

"""Watchdog: unit tests of check() on fabricated heartbeat files, and a real 2-process gloo hang."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from tests.support.locations import DATA, ROOT
from tests.support.processes import free_port, kill_tree
from training.monitor import watchdog as watchdog_module
from training.monitor.watchdog import AUTO_MIN_S, STARTUP_S, STRAGGLER_CHECKS, Watchdog
from training.profile import Profile
from training.rundir import create_run_dir, write_json_atomic
from training.rundir.events_file import read_all

SCRIPTS = DATA / "watchdog"


def make_profile(hang_after_s: float = 0.0, straggler_ratio: float = 1.5) -> Profile:
    profile = Profile(name="wd")
    profile.watchdog.hang_after_s = hang_after_s
    profile.watchdog.straggler_ratio = straggler_ratio
    return profile


class Fleet:
    """Fabricated heartbeat files for a few ranks, written the way traindeck.heartbeat writes them."""

    def __init__(self, tmp_path: Path, hang_after_s: float = 5.0, straggler_ratio: float = 1.5, utils=None):
        self.paths = create_run_dir(tmp_path / "runs", "wd")
        self.emitted: list[dict] = []
        lookup = (lambda rank: utils.get(rank)) if utils is not None else None
        self.wd = Watchdog(self.paths, make_profile(hang_after_s, straggler_ratio), emit=self.emitted.extend,
                           telemetry_lookup=lookup, since=0.0)

    def beat(self, rank: int, step: int, t: float, state: str = "training", pid: int | None = None) -> None:
        write_json_atomic(self.paths.heartbeats / f"rank-{rank}.json",
                          {"rank": rank, "pid": pid or 1000 + rank, "step": step, "epoch": 1, "t": t, "state": state})

    def check(self, now: float) -> list[dict]:
        return self.wd.check(now)

    def run_lockstep(self, ranks: int, steps: int, step_s: float, t0: float = 1000.0) -> float:
        """All ranks advance together, one heartbeat and one check per step; returns the last time."""
        t = t0
        for step in range(1, steps + 1):
            t = t0 + step * step_s
            for rank in range(ranks):
                self.beat(rank, step, t)
            assert self.check(t) == []
        return t


def hangs(events: list[dict]) -> list[dict]:
    return [e for e in events if e.get("watchdog") == "hang"]


def test_hung_rank_is_named_once_and_recovery_follows(tmp_path):
    fleet = Fleet(tmp_path, hang_after_s=5.0)
    t = fleet.run_lockstep(ranks=2, steps=10, step_s=1.0)
    # Rank 1 stalls after step 10; rank 0 finishes step 11 and waits for it in the next all-reduce.
    fleet.beat(0, 11, t + 1.0)
    events = []
    for dt in range(1, 12):
        events += fleet.check(t + dt)
    [warning] = hangs(events)
    assert warning["kind"] == "log" and warning["level"] == "warning"
    assert warning["rank"] == 1 and warning["step"] == 10
    assert warning["other_steps"] == {"0": 11}
    assert 5.0 <= warning["stalled_s"] <= 6.5
    assert "rank 1 has not finished a step for" in warning["message"]
    assert "stuck at step 10" in warning["message"] and "rank 0 at step 11 is waiting" in warning["message"]
    assert "gpu_util" not in warning
    # It moves again: one info event, no new warning.
    fleet.beat(1, 11, t + 20)
    fleet.beat(0, 12, t + 20.5)
    after = fleet.check(t + 21) + fleet.check(t + 22)
    assert hangs(after) == []
    [recovered] = [e for e in after if e.get("watchdog") == "recovered"]
    assert recovered["level"] == "info" and recovered["rank"] == 1
    assert "moving again" in recovered["message"]
    assert recovered["stalled_s"] == pytest.approx(20.0, abs=0.01)  # step 10 at t, step 11 at t + 20


def test_paused_ranks_are_not_hung_and_pause_time_is_not_step_time(tmp_path):
    fleet = Fleet(tmp_path, hang_after_s=5.0)
    t = fleet.run_lockstep(ranks=2, steps=5, step_s=1.0)
    for rank in range(2):
        fleet.beat(rank, 5, t + 0.5, state="paused")
    for dt in range(1, 120, 5):
        assert fleet.check(t + dt) == []
    # Resume: the stall clock starts at the resume, not at the last step before the pause.
    for rank in range(2):
        fleet.beat(rank, 5, t + 200, state="training")
    assert fleet.check(t + 201) == []
    assert fleet.check(t + 204) == []
    assert hangs(fleet.check(t + 206))
    # The rate history restarted too: the pause does not make a step look 100 s long.
    assert fleet.wd.median_step_time() is None


def test_ended_ranks_are_not_hung(tmp_path):
    fleet = Fleet(tmp_path, hang_after_s=5.0)
    t = fleet.run_lockstep(ranks=2, steps=3, step_s=1.0)
    fleet.beat(0, 3, t + 0.1, state="finished")
    fleet.beat(1, 3, t + 0.1, state="failed")
    assert fleet.check(t + 100) == []


def test_a_rank_stuck_while_others_advance_is_named(tmp_path):
    fleet = Fleet(tmp_path, hang_after_s=5.0)
    t = fleet.run_lockstep(ranks=3, steps=4, step_s=1.0)
    events = []
    for i in range(1, 10):  # ranks 0 and 2 keep going (no collective couples them here)
        fleet.beat(0, 4 + i, t + i)
        fleet.beat(2, 4 + i, t + i)
        events += fleet.check(t + i)
    [warning] = hangs(events)
    assert warning["rank"] == 1 and warning["step"] == 4
    assert "ranks 0, 2" not in warning["message"] or "still advancing" in warning["message"]
    assert "still advancing" in warning["message"]


def test_equal_steps_with_fast_steps_do_not_blame_a_rank(tmp_path):
    # Ten steps per heartbeat interval: a heartbeat file may trail its rank by several steps, so a
    # gap of 3 steps is no evidence of who is stuck.
    fleet = Fleet(tmp_path, hang_after_s=5.0)
    t0 = 1000.0
    for i in range(1, 11):
        for rank in range(2):
            fleet.beat(rank, i * 10, t0 + i)
        fleet.check(t0 + i)
    fleet.beat(0, 103, t0 + 10.5)
    events = []
    for dt in range(1, 10):
        events += fleet.check(t0 + 10 + dt)
    [warning] = hangs(events)
    assert warning["rank"] is None and warning["ranks"] == [0, 1]
    assert "cannot tell" in warning["message"] and "--dump" in warning["message"]


def test_gpu_utilisation_separates_the_stuck_rank_from_the_waiting_ones(tmp_path):
    # NCCL keeps a waiting rank's GPU at ~100%; a rank stuck in Python or I/O leaves its GPU idle.
    fleet = Fleet(tmp_path, hang_after_s=5.0, utils={0: 100.0, 1: 0.0})
    t = fleet.run_lockstep(ranks=2, steps=10, step_s=1.0)
    events = []
    for dt in range(1, 8):
        events += fleet.check(t + dt)
    [warning] = hangs(events)
    assert warning["rank"] == 1
    assert warning["gpu_util"] == {"0": 100.0, "1": 0.0}
    assert "GPU util" in warning["message"]


def test_auto_threshold_is_ten_step_times_with_a_floor(tmp_path):
    fleet = Fleet(tmp_path, hang_after_s=0.0)
    assert fleet.wd.threshold_s(None) == STARTUP_S
    t = fleet.run_lockstep(ranks=2, steps=6, step_s=2.0)
    assert fleet.wd.median_step_time() == pytest.approx(2.0)
    assert fleet.wd.threshold_s(2.0) == AUTO_MIN_S
    assert fleet.check(t + AUTO_MIN_S - 1) == []
    assert hangs(fleet.check(t + AUTO_MIN_S + 1))

    slow = Fleet(tmp_path / "slow", hang_after_s=0.0)
    t = slow.run_lockstep(ranks=2, steps=6, step_s=10.0)
    assert slow.check(t + 95) == []
    [warning] = hangs(slow.check(t + 101))
    assert warning["threshold_s"] == pytest.approx(100.0)


def test_auto_threshold_before_any_step_time_is_the_startup_allowance(tmp_path):
    fleet = Fleet(tmp_path, hang_after_s=0.0)
    for rank in range(2):
        fleet.beat(rank, 0, 1000.0, state="starting")
    assert fleet.check(1000.0 + STARTUP_S - 1) == []
    assert hangs(fleet.check(1000.0 + STARTUP_S + 1))


def test_straggler_is_reported_after_consistent_slowness_and_rate_limited(tmp_path):
    fleet = Fleet(tmp_path, hang_after_s=30.0, straggler_ratio=1.5)
    t0 = 1000.0
    events = []
    for i in range(1, 41):  # rank 0: 4 steps/s, rank 1: 1 step/s, checked once a second
        fleet.beat(0, 4 * i, t0 + i)
        fleet.beat(1, i, t0 + i)
        events += fleet.check(t0 + i)
    stragglers = [e for e in events if e.get("watchdog") == "straggler"]
    assert len(stragglers) == 1
    [warning] = stragglers
    assert warning["rank"] == 1 and warning["level"] == "warning"
    assert warning["steps_per_s"] == pytest.approx(1.0) and warning["median_steps_per_s"] == pytest.approx(4.0)
    assert "rank 1 is a straggler" in warning["message"]
    assert hangs(events) == []


def test_no_straggler_within_the_ratio_or_for_brief_slowness(tmp_path):
    fleet = Fleet(tmp_path, hang_after_s=30.0, straggler_ratio=1.5)
    t0 = 1000.0
    events = []
    for i in range(1, 30):  # 1.25x slower only
        fleet.beat(0, 5 * i, t0 + i)
        fleet.beat(1, 4 * i, t0 + i)
        events += fleet.check(t0 + i)
    assert events == []
    assert STRAGGLER_CHECKS > 1


def test_restarted_process_starts_a_fresh_history(tmp_path):
    fleet = Fleet(tmp_path, hang_after_s=5.0)
    t = fleet.run_lockstep(ranks=1, steps=10, step_s=1.0)
    fleet.beat(0, 2, t + 30, pid=4242)  # torchrun restarted the worker from an earlier checkpoint
    assert fleet.check(t + 31) == []
    assert fleet.wd._ranks[0].pid == 4242 and fleet.wd._ranks[0].since == t + 30


def test_unchanged_files_are_not_reparsed(tmp_path, monkeypatch):
    fleet = Fleet(tmp_path, hang_after_s=50.0)
    fleet.run_lockstep(ranks=2, steps=3, step_s=1.0)
    reads = []
    real = watchdog_module.read_json_object
    monkeypatch.setattr(watchdog_module, "read_json_object", lambda path, *a: reads.append(path) or real(path, *a))
    fleet.check(1010.0)
    assert reads == []
    (fleet.paths.heartbeats / "rank-0.json").write_text("{half a")
    fleet.check(1011.0)  # junk is skipped, not fatal
    assert len(reads) == 1


def test_heartbeats_from_before_the_watchdog_started_are_ignored(tmp_path):
    # A resumed run's directory still holds the crashed life's "training" heartbeats.
    paths = create_run_dir(tmp_path / "runs", "wd")
    write_json_atomic(paths.heartbeats / "rank-0.json",
                      {"rank": 0, "pid": 1, "step": 50, "epoch": 1, "t": time.time() - 3600, "state": "training"})
    wd = Watchdog(paths, make_profile(hang_after_s=5.0), emit=lambda events: None)
    assert wd.check(time.time()) == []
    write_json_atomic(paths.heartbeats / "rank-0.json",  # the new life beats
                      {"rank": 0, "pid": 2, "step": 3, "epoch": 1, "t": time.time(), "state": "training"})
    [warning] = hangs(wd.check(time.time() + 10))
    assert warning["rank"] == 0 and warning["step"] == 3


def test_thread_emits_through_the_callback(tmp_path):
    fleet = Fleet(tmp_path, hang_after_s=1.0)
    fleet.wd.interval_s = 0.1
    fleet.beat(0, 7, time.time() - 30)
    fleet.wd.start()
    try:
        deadline = time.time() + 5
        while not fleet.emitted and time.time() < deadline:
            time.sleep(0.05)
    finally:
        fleet.wd.stop()
    assert [e["rank"] for e in hangs(fleet.emitted)] == [0]


# ------------------------------------------------------------------ real processes


@pytest.mark.slow
def test_real_gloo_run_with_a_sleeping_rank_is_reported_hung(tmp_path):
    """Two real torchrun ranks on gloo; rank 1 sleeps inside step 4. The watchdog names rank 1."""
    import subprocess

    paths = create_run_dir(tmp_path / "runs", "wd")
    env = dict(os.environ, OMP_NUM_THREADS="1", TRAINDECK_RUN_DIR=str(paths.root),
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               WD_HANG_RANK="1", WD_HANG_STEP="4", WD_HANG_S="60")
    log = open(tmp_path / "torchrun.log", "w")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(free_port()), str(SCRIPTS / "hang_script.py")]
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    threshold = 4.0
    emitted: list[dict] = []
    wd = Watchdog(paths, make_profile(hang_after_s=threshold), emit=emitted.extend, interval_s=0.5)
    wd.start()
    try:
        deadline = time.time() + 35
        while not hangs(emitted) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        found_at = time.time()
    finally:
        wd.stop()
        kill_tree(proc)
        log.close()
    assert hangs(emitted), (tmp_path / "torchrun.log").read_text()[-3000:]
    [warning] = hangs(emitted)
    assert warning["rank"] == 1, warning["message"]
    assert warning["step"] == 3 and warning["other_steps"] == {"0": 4}
    assert threshold <= warning["stalled_s"] <= threshold + 2.5
    # It was noticed within the threshold of the stall (plus a check interval), not much later.
    hb1 = json.loads((paths.heartbeats / "rank-1.json").read_text())
    assert found_at - hb1["t"] <= threshold + 2.5
    # The script really reported through the public API too.
    assert any(e["kind"] == "metric" for e in read_all(paths.events))


@pytest.mark.slow
def test_supervisor_runs_the_watchdog_and_records_the_hang_in_events(tmp_path, monkeypatch):
    """The same hang through the product path: runs.start_run -> supervisor -> torchrun."""
    from tests.support.live_runs import stop_quietly
    from tests.support.waiting import wait_for
    from training.console import runs
    from training.profile import parse_profile

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    profile = parse_profile(f"""
name = "hang"
[launch]
mode = "ddp"
nproc_per_node = 2
backend = "gloo"
stop_grace_s = 1
[train]
script = "{SCRIPTS / 'hang_script.py'}"
[watchdog]
hang_after_s = 4
""", path=str(tmp_path / "hang.toml"))
    profile.launch.env = {"WD_HANG_RANK": "1", "WD_HANG_STEP": "3", "WD_HANG_S": "60"}
    paths = runs.start_run(profile, tmp_path / "runs")
    try:
        warning = wait_for(lambda: next((e for e in read_all(paths.events) if e.get("watchdog") == "hang"), None),
                           35, "a hang warning in events.jsonl", paths=paths)
    finally:
        stop_quietly(paths)
    assert warning["level"] == "warning" and warning["rank"] == 1 and warning["step"] == 2
    assert warning["other_steps"] == {"0": 3}
    assert warning["message"].startswith("rank 1 has not finished a step for ")
    assert f"traindeck --dump {paths.id}" in warning["message"]


def test_long_non_step_states_get_the_startup_allowance_in_auto_mode(tmp_path):
    fleet = Fleet(tmp_path, hang_after_s=0.0)
    t = fleet.run_lockstep(ranks=2, steps=6, step_s=2.0)
    for rank in range(2):
        fleet.beat(rank, 6, t + 0.5, state="validating")
    assert fleet.check(t + AUTO_MIN_S + 30) == []
    assert hangs(fleet.check(t + STARTUP_S + 1))


def test_gpu_util_lookup_reads_the_newest_telemetry_sample(tmp_path):
    from training.monitor.watchdog import telemetry_gpu_util

    paths = create_run_dir(tmp_path / "runs", "tel")
    lookup = telemetry_gpu_util(paths)
    assert lookup(0) is None  # no telemetry yet
    samples = [
        {"v": 1, "kind": "telemetry", "t": 1.0, "source": "nvml", "gpus": [{"index": 0, "util": 5, "processes": [{"pid": 10, "rank": 0}]}]},
        {"v": 1, "kind": "telemetry", "t": 2.0, "source": "nvml", "gpus": [
            {"index": 0, "util": 99, "processes": [{"pid": 10, "rank": 0, "mem_mib": 100}]},
            {"index": 1, "util": 0, "processes": [{"pid": 11, "rank": 1, "mem_mib": 100}]},
            {"index": 2, "util": None, "processes": [{"pid": 12, "rank": 2, "mem_mib": 100}]}]},
    ]
    paths.telemetry.write_text("".join(json.dumps(s) + "\n" for s in samples))
    assert (lookup(0), lookup(1), lookup(2), lookup(3)) == (99.0, 0.0, None, None)
    paths.telemetry.write_text(json.dumps({"v": 1, "kind": "telemetry", "t": 3.0, "source": "cpu", "workers": [{"rank": 0}]}) + "\n")
    assert lookup(0) is None  # CPU runs have no GPU utilisation


# ---- a multi-node run: the head's watchdog reads every node's heartbeats ---------------------

class Nodes:
    """A head run directory with gpu-a's ranks 0, 1 in heartbeats/ and gpu-b's 2, 3 in
    nodes/gpu-b/heartbeats/ (where the head's follower copies them), as they are written there."""

    def __init__(self, tmp_path: Path, hang_after_s: float = 5.0, utils=None):
        from training.rundir.node_views import node_dirs

        self.paths = create_run_dir(tmp_path / "runs", "multi")
        nodes = node_dirs(self.paths, ["gpu-a", "gpu-b"])
        self.dirs = {n.host: n.paths for n in nodes}
        lookup = (lambda rank: utils.get(rank)) if utils is not None else None
        self.wd = Watchdog(self.paths, make_profile(hang_after_s), emit=lambda evs: None, since=0.0,
                           telemetry_lookup=lookup, nodes=nodes)

    def beat(self, rank: int, step: int, t: float) -> None:
        host = "gpu-a" if rank < 2 else "gpu-b"
        self.dirs[host].heartbeats.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.dirs[host].heartbeats / f"rank-{rank}.json",
                          {"rank": rank, "pid": 1000 + rank, "step": step, "epoch": 1, "t": t, "state": "training"})


def test_a_hung_rank_on_another_node_is_named_with_its_host(tmp_path):
    nodes = Nodes(tmp_path, hang_after_s=60.0)
    for step in range(1, 5):
        for rank in range(4):
            nodes.beat(rank, step, 1000.0 + step)
        assert nodes.wd.check(1000.0 + step) == []
    # Rank 2 (gpu-b) stops at step 4; the others wait for it one step on, in lock-step DDP.
    for rank in (0, 1, 3):
        nodes.beat(rank, 5, 1005.0)
    events = []
    for now in (1030.0, 1060.0, 1066.0):
        events += nodes.wd.check(now)
    [warning] = hangs(events)
    assert warning["rank"] == 2 and warning["node"] == "gpu-b"
    assert warning["message"].startswith("rank 2 on gpu-b has not finished a step for 62 s (stuck at step 4)")
    assert "ranks 0, 1 on gpu-a and rank 3 on gpu-b at step 5 are waiting" in warning["message"]


def test_a_node_whose_heartbeats_have_not_arrived_yet_is_no_error(tmp_path):
    nodes = Nodes(tmp_path, hang_after_s=5.0)
    nodes.beat(0, 1, 1000.0)
    nodes.beat(1, 1, 1000.0)
    assert not nodes.dirs["gpu-b"].heartbeats.exists()
    [warning] = hangs(nodes.wd.check(1010.0))
    assert "ranks 0, 1 on gpu-a" in warning["message"] and warning["node"] == "gpu-a"


def test_a_straggler_on_another_node_is_named_with_its_host(tmp_path):
    nodes = Nodes(tmp_path, hang_after_s=600.0)
    events = []
    for i in range(40):
        t = 1000.0 + i
        for rank in (0, 1, 2):
            nodes.beat(rank, i * 2, t)
        nodes.beat(3, i, t)  # half the others' rate
        events += nodes.wd.check(t)
    [slow] = [e for e in events if e.get("watchdog") == "straggler"]
    assert slow["rank"] == 3 and slow["node"] == "gpu-b"
    assert slow["message"].startswith("rank 3 on gpu-b is a straggler")


def test_gpu_util_lookup_reads_every_nodes_telemetry(tmp_path):
    from training.monitor.watchdog import telemetry_gpu_util
    from training.rundir.node_views import node_dirs

    paths = create_run_dir(tmp_path / "runs", "tel")
    nodes = node_dirs(paths, ["gpu-a", "gpu-b"])
    lookup = telemetry_gpu_util(paths, nodes)
    nodes[1].paths.root.mkdir(parents=True)
    nodes[1].paths.telemetry.write_text(json.dumps({"v": 1, "kind": "telemetry", "t": 2.0, "source": "nvml", "gpus": [
        {"index": 0, "util": 3, "ranks": [2]}]}) + "\n")
    paths.telemetry.write_text(json.dumps({"v": 1, "kind": "telemetry", "t": 2.0, "source": "nvml", "gpus": [
        {"index": 0, "util": 97, "ranks": [0]}]}) + "\n")
    assert (lookup(0), lookup(2), lookup(1)) == (97.0, 3.0, None)

"""The supervisor end to end: real torchrun, 2 gloo CPU processes, the scripts in tests/data/scripts.

Every test here spawns processes and is marked slow. Each checks, by walking the pids recorded in
run.json (matched by pid + create_time), that nothing of the run is left behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.support.live_runs import assert_no_health_alarms, statuses, wait_done, wait_running
from tests.support.locations import ROOT
from tests.support.processes import assert_nothing_left, recorded
from tests.support.profiles import custom_profile, tiny_cpu_profile
from tests.support.waiting import wait_for
from training.console import runs
from training.console import stop as stopping
from training.errors import TraindeckError
from training.profile import parse_profile
from training.rundir import RunState, read_json, read_run_json
from training.rundir import processes as pg
from training.rundir.events_file import read_all
from training.rundir.logs import rank_logs

# ---- tests --------------------------------------------------------------------------------

@pytest.mark.slow
def test_ddp_run_finishes_with_exit_json_and_per_rank_logs(runs_dir):
    paths = runs.start_run(custom_profile("train_prints.py", args=["--steps", "12"]), runs_dir, argv=["--x"])
    s = wait_done(paths)
    assert s.state is RunState.FINISHED, paths.supervisor_log.read_text()
    exit_data = read_json(paths.exit_json)
    assert exit_data["returncode"] == 0 and exit_data["state"] == "finished" and exit_data["failed_rank"] is None
    data = read_run_json(paths)
    assert data["mode"] == "ddp" and data["world_size"] == 2 and data["argv"] == ["--x"]
    assert data["state"] == "finished" and data["state_t"] >= data["created"]
    assert isinstance(data["port"], int) and f"127.0.0.1:{data['port']}" in data["launch_argv"]
    assert data["env"]["TRAINDECK_RUN_DIR"] == str(paths.root) and data["env"]["PYTHONUNBUFFERED"] == "1"
    assert {p["rank"] for p in data["processes"] if p["role"] == "worker"} == {0, 1}
    logs = rank_logs(paths)
    assert sorted(logs) == [0, 1]
    rank0_out = [f for f in logs[0] if f.name == "stdout.log"][0].read_text()
    assert "step 12 loss" in rank0_out and "rank 1 done" in [f for f in logs[1] if f.name == "stdout.log"][0].read_text()
    assert [e["state"] for e in statuses(paths)] == ["starting", "running", "finished"]
    assert s.step == 12 and s.last_loss is not None
    assert paths.telemetry.exists()
    assert_nothing_left(paths)


@pytest.mark.slow
def test_rank_failure_names_the_rank_and_its_error_and_leaves_nothing(runs_dir):
    paths = runs.start_run(custom_profile("raise_on_rank1.py"), runs_dir)
    s = wait_done(paths)
    assert s.state is RunState.FAILED
    exit_data = read_json(paths.exit_json)
    assert exit_data["failed_rank"] == 1, exit_data
    assert exit_data["error"][0] == "ValueError: planted failure on rank 1 at step 5"
    assert any("raise_on_rank1.py" in line for line in exit_data["error"])
    failed = statuses(paths)[-1]
    assert failed["state"] == "failed" and failed["rank"] == 1
    assert "rank 1" in failed["message"] and "planted failure" in failed["message"]
    # From the moment rank 1 died (its stderr's last write) to the run being failed.
    rank1_err = [f for f in rank_logs(paths)[1] if f.name == "stderr.log"][0]
    # (~2 s on an idle box; the margin is for 2 cores shared with other test runs. torchrun's own
    # shutdown timeout, the thing this guards against, is 30 s.)
    assert failed["t"] - rank1_err.stat().st_mtime < 5.0
    assert_nothing_left(paths)


@pytest.mark.slow
def test_rank_failure_ends_the_run_even_when_another_rank_ignores_sigterm(runs_dir):
    # torchrun would wait its whole shutdown timeout (= stop_grace_s, 30 s) for the hung rank 0.
    paths = runs.start_run(custom_profile("raise_on_rank1.py", args=["--hang-rank0"], grace=30), runs_dir)
    s = wait_done(paths, timeout=40)
    assert s.state is RunState.FAILED
    exit_data = read_json(paths.exit_json)
    assert exit_data["failed_rank"] == 1 and "rank 0 hangs" in exit_data["error"][0]
    rank1_err = [f for f in rank_logs(paths)[1] if f.name == "stderr.log"][0]
    assert statuses(paths)[-1]["t"] - rank1_err.stat().st_mtime < 8.0
    assert_nothing_left(paths)


@pytest.mark.slow
def test_stop_escalates_to_sigkill_and_reaches_grandchildren(runs_dir):
    profile = custom_profile("sleep_forever.py", args=["--ignore-term", "--spawn-child"], grace=1)
    paths = runs.start_run(profile, runs_dir)
    wait_running(paths, min_step=3)
    grandchildren = wait_for(lambda: [int(p.read_text()) for p in paths.root.glob("grandchild-*.pid")
                                      if p.read_text()] if len(list(paths.root.glob("grandchild-*.pid"))) == 2
                             else None, 10, "both grandchildren")
    # The supervisor records descendants every ~0.5 s; make sure the grandchildren are in run.json.
    wait_for(lambda: set(grandchildren) <= {r.pid for r in recorded(paths)}, 5, "grandchildren recorded")
    t0 = time.monotonic()
    assert stopping.stop_run(paths) is RunState.STOPPED
    assert time.monotonic() - t0 < 1 + 8
    assert read_json(paths.exit_json)["state"] == "stopped"
    assert statuses(paths)[-1]["state"] == "stopped"
    assert_nothing_left(paths, grandchildren)


@pytest.mark.slow
def test_cli_stop_during_training(runs_dir):
    paths = runs.start_run(custom_profile("sleep_forever.py"), runs_dir)
    wait_running(paths, min_step=2)
    out = subprocess.run([sys.executable, str(ROOT / "run.py"), "--runs-dir", str(runs_dir), "--stop", paths.id[:15]],
                         capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"{paths.id}: stopped"
    assert runs.run_summary(paths).state is RunState.STOPPED
    assert_nothing_left(paths)


@pytest.mark.slow
def test_supervisor_killed_with_sigkill_then_stop_cleans_up_from_run_json(runs_dir):
    paths = runs.start_run(custom_profile("sleep_forever.py", args=["--spawn-child"]), runs_dir)
    wait_running(paths, min_step=2)
    grandchildren = wait_for(lambda: [int(p.read_text()) for p in paths.root.glob("grandchild-*.pid")
                                      if p.read_text()] if len(list(paths.root.glob("grandchild-*.pid"))) == 2
                             else None, 10, "both grandchildren")
    # The supervisor records what it sees every 0.5 s: both ranks and both grandchildren in run.json
    # before it dies (a loaded box once killed it with rank 1 not yet recorded).
    wait_for(lambda: set(grandchildren) <= {r.pid for r in recorded(paths)}
             and sum(r.role == "worker" for r in recorded(paths)) == 2, 10, "both ranks and grandchildren recorded")
    sup = pg.ProcRef.from_json(read_run_json(paths)["supervisor"])
    os.kill(sup.pid, signal.SIGKILL)
    pg.wait_gone([sup], 5)
    orphan = runs.run_summary(paths)
    assert orphan.state is RunState.FAILED and orphan.note == "orphaned" and not orphan.live
    # The workers keep running without their supervisor until someone stops them.
    assert len(pg.alive([r for r in recorded(paths) if r.role == "worker"])) == 2
    assert stopping.stop_run(paths, grace_s=1) is RunState.STOPPED
    assert read_run_json(paths)["state"] == "stopped"
    assert read_json(paths.exit_json)["state"] == "stopped"
    assert_nothing_left(paths, grandchildren)


@pytest.mark.slow
def test_builtin_cpu_profile_ddp_finishes(runs_dir):
    paths = runs.start_run(tiny_cpu_profile(), runs_dir)
    s = wait_done(paths)
    assert s.state is RunState.FINISHED, paths.supervisor_log.read_text()
    assert (s.epoch, s.epochs) == (2, 2) and s.step and s.step > 0
    running = [e for e in statuses(paths) if e["state"] == "running"]
    assert len(running) == 1 and running[0].get("world_size") == 2  # the worker's own event, not ours too
    assert read_run_json(paths)["state"] == "finished"
    assert (paths.checkpoints / "last.pt").exists()
    assert_no_health_alarms(paths)
    assert_nothing_left(paths)


@pytest.mark.slow
def test_builtin_single_run_resumes_in_its_own_directory(runs_dir):
    paths = runs.start_run(tiny_cpu_profile("launch.mode=single", "launch.nproc_per_node=1"), runs_dir)
    s = wait_done(paths)
    assert s.state is RunState.FINISHED, paths.supervisor_log.read_text()
    assert rank_logs(paths) == {0: [paths.logs / "rank-0.log"]}
    steps_before = s.step
    assert runs.resume_run(paths) == paths
    with pytest.raises(TraindeckError, match="still"):
        runs.resume_run(paths)
    s2 = wait_done(paths)
    assert s2.state is RunState.FINISHED, paths.supervisor_log.read_text()
    logs = [e for e in read_all(paths.events) if e["kind"] == "log" and e.get("source") == "console"]
    assert logs[-1]["message"] == f"resumed from step {steps_before}"
    assert [e["state"] for e in statuses(paths)].count("finished") == 2
    assert_no_health_alarms(paths)  # both lives, the resumed one with its own baselines
    assert_nothing_left(paths)


@pytest.mark.slow
def test_metrics_regexes_turn_a_plain_scripts_output_into_events(runs_dir):
    profile = custom_profile("train_prints.py", mode="single", args=["--steps", "8", "--no-report"],
                             extra="[metrics]\ntrain = ['step (?P<step>\\d+) loss (?P<loss>[\\d.]+)']")
    paths = runs.start_run(profile, runs_dir)
    s = wait_done(paths)
    assert s.state is RunState.FINISHED, paths.supervisor_log.read_text()
    metrics = [e for e in read_all(paths.events) if e["kind"] == "metric"]
    assert [e["step"] for e in metrics] == list(range(1, 9))
    assert s.step == 8 and s.last_loss == metrics[-1]["values"]["loss"]
    assert_nothing_left(paths)


# ---- fast: diagnosis of a failed run from the files it left -----------------------------------

def _fake_torchrun_run(tmp_path, stderr_by_rank: dict[int, str], batch_size: int = 64):
    from training.rundir import create_run_dir, write_json_atomic

    paths = create_run_dir(tmp_path / "runs", "diag")
    write_json_atomic(paths.run_json, {"state": "running"})
    for i, (rank, text) in enumerate(stderr_by_rank.items()):
        d = paths.logs / "torchrun" / "job_x" / "attempt_0" / str(rank)
        d.mkdir(parents=True)
        (d / "stdout.log").write_text("")
        (d / "stderr.log").write_text(text)
        os.utime(d / "stderr.log", (1000 + i, 1000 + i))
    profile = parse_profile(f'[train]\ntask = "tiny"\nbatch_size = {batch_size}')
    return paths, profile


COLLATERAL = """[rank{r}]: Traceback (most recent call last):
[rank{r}]:   File "/x/train.py", line 9, in <module>
[rank{r}]:     dist.all_reduce(t)
[rank{r}]: RuntimeError: [../gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:1
"""
OOM = """Traceback (most recent call last):
  File "/x/train.py", line 30, in <module>
    out = model(x)
torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 2 has a total capacity of 79 GiB
"""


def test_diagnose_prefers_the_genuine_error_over_earlier_collateral_ones(tmp_path):
    from training.supervise.diagnosis import diagnose

    # Rank 0's collateral error was written *earlier* than rank 2's real one; rank 2 still wins.
    paths, profile = _fake_torchrun_run(tmp_path, {0: COLLATERAL.format(r=0), 1: "", 2: OOM, 3: COLLATERAL.format(r=3)},
                                        batch_size=64)
    d = diagnose(paths, profile, 1)
    assert d.failed_rank == 2
    assert d.error[0].startswith("torch.OutOfMemoryError: CUDA out of memory")
    assert d.error[1] == 'File "/x/train.py", line 30, in <module>' and d.error[2] == "out = model(x)"
    assert d.hint == "CUDA out of memory on rank 2 with batch_size 64: try batch_size 32 or enable amp (train.amp = \"bf16\")"


def test_diagnose_falls_back_to_the_first_collateral_rank_and_the_launcher(tmp_path):
    from training.supervise.diagnosis import diagnose

    paths, profile = _fake_torchrun_run(tmp_path, {0: COLLATERAL.format(r=0), 1: "\n"})
    d = diagnose(paths, profile, 1)
    assert d.failed_rank == 0 and "Connection closed by peer" in d.error[0] and d.hint is None
    paths, profile = _fake_torchrun_run(tmp_path / "b", {0: "", 1: ""})
    (paths.logs / "launcher.log").write_text("torch.distributed.DistNetworkError: The server socket has failed to "
                                             "listen on any local network address. port: 29500, "
                                             "useIpv6: False, code: -98, name: EADDRINUSE, message: address "
                                             "already in use\n")
    d = diagnose(paths, profile, 1)
    assert d.failed_rank is None and "EADDRINUSE" in d.error[-1] and "free port" in d.hint

"""training.console.runs: the client API. Fast tests on hand-made run directories; slow ones with real runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.fake_runs import make_run_dir
from tests.support.live_runs import wait_done, wait_running
from tests.support.locations import ROOT, SCRIPTS
from tests.support.processes import assert_nothing_left
from tests.support.profiles import custom_profile
from tests.support.waiting import wait_for
from training.console import runs
from training.console import stop as stopping
from training.errors import RunNotFound, TraindeckError
from training.rundir import (
    RunPaths,
    RunState,
    create_run_dir,
    read_json,
    read_run_json,
)
from training.rundir import processes as pg
from training.rundir.events_file import append_events, make_event, read_all
from training.rundir.logs import rank_logs
from training.supervise.launch import IMPORT_DIR, PROJECT_ROOT

NASTY_TEMPLATE = "; rm -rf {marker}; echo $HOME `id` | cat"


def make_run(where: Path, name: str = "p", state: str = "finished", now: float | None = None,
             **fields) -> RunPaths:
    """A fake run named like a real one (its stamp from `now`); a dead supervisor unless `supervisor=` says."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(time.time() if now is None else now))
    fields.setdefault("supervisor", {"pid": 999999, "create_time": 1.0})
    return make_run_dir(where, f"{stamp}-{name}", profile_name=name, state=state, created=time.time(),
                        supervisor_log=None, **fields)


def me() -> dict:
    return pg.pid_create_time()


@pytest.fixture
def sleeper():
    procs = []

    def start() -> pg.ProcRef:
        p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        procs.append(p)
        return pg.ref_of(p.pid, "worker", 0)

    yield start
    for p in procs:
        p.kill()
        p.wait()


# ---- fast: listing, finding, summaries -------------------------------------------------------

def test_format_runs_table_aligns_columns():
    now = time.time()
    rows = [runs.RunSummary("20261124-183000-cpu", Path("x"), "cpu", "ddp", RunState.RUNNING, True, now, 1234,
                            2, 4, 0.81234, rehearsal=True),
            runs.RunSummary("20261124-180000-4x2080ti-long", Path("y"), "4x2080ti", "dp", RunState.FAILED, False,
                            now, None, None, 10, None, note="orphaned")]
    table = runs.format_runs_table(rows).splitlines()
    assert table[0].split() == ["RUN", "STATE", "PROFILE", "MODE", "STARTED", "EPOCH", "STEP", "LOSS"]
    assert "failed (orphaned)" in table[2] and "cpu (rehearsal)" in table[1]
    assert "2/4" in table[1] and "1234" in table[1] and "0.8123" in table[1] and "-/10" in table[2]
    # Left columns start at the same offsets on every line; numbers end at the same offsets.
    for col in ("STATE", "PROFILE", "MODE", "STARTED"):
        start = table[0].index(col)
        assert all(line[start - 2:start] == "  " and line[start] != " " for line in table)
    step_end = table[0].index("STEP") + len("STEP")
    assert table[1][:step_end].endswith("1234") and table[2][:step_end].endswith("   -")
    assert runs.format_runs_table([]).startswith("no runs yet")


def test_find_run_by_id_prefix_path_and_newest_live(tmp_path):
    d = tmp_path / "runs"
    noon = time.mktime((2026, 11, 24, 12, 0, 0, 0, 0, -1))  # one day for all three stamps, whatever the clock
    a = make_run(d, "alpha", now=noon - 100)
    b = make_run(d, "beta", now=noon - 50)
    live = make_run(d, "gamma", state="running", supervisor=me(), now=noon)
    assert runs.find_run(d, a.id) == a
    assert runs.find_run(d, str(b.root)) == RunPaths(b.root)
    assert runs.find_run(d, live.id[:-2]) == live
    assert runs.find_run(d, None) == live
    with pytest.raises(RunNotFound, match="matches 3 runs"):
        runs.find_run(d, a.id[:9])
    with pytest.raises(RunNotFound) as err:
        runs.find_run(d, "nope")
    assert a.id in str(err.value) and "(running)" in str(err.value)
    with pytest.raises(RunNotFound, match="no live run"):
        runs.find_run(d, a.id, live_only=True)


def test_run_summary_reads_only_the_tail_of_a_huge_event_file(tmp_path):
    paths = make_run(tmp_path / "runs", state="running", supervisor=me())
    append_events(paths.events, [make_event("status", state="running", epochs=7)])
    line = json.dumps(make_event("metric", step=1, epoch=1, split="train", values={"loss": 9.0})) + "\n"
    with open(paths.events, "a") as f:
        f.write(line * 300_000)  # ~30 MB of old history
        f.write('{"v":1,"kind":"metric","step": 5 this line is junk\n')
    append_events(paths.events, [make_event("metric", step=5000, epoch=3, split="train", values={"loss": 0.25}),
                                 make_event("metric", step=5000, epoch=3, split="val", values={"loss": 0.5})])
    t0 = time.perf_counter()
    s = runs.run_summary(paths)
    assert time.perf_counter() - t0 < 0.5
    assert (s.step, s.epoch, s.last_loss, s.state, s.live) == (5000, 3, 0.25, RunState.RUNNING, True)
    # The status event with epochs is 30 MB back: epochs come from profile.toml then (absent here).
    assert s.epochs is None


def test_orphaned_run_is_shown_failed_and_reaped(tmp_path, sleeper):
    d = tmp_path / "runs"
    leftover = sleeper()
    paths = make_run(d, state="running", processes=[leftover.to_json()])
    s = runs.run_summary(paths)
    assert (s.state, s.live, s.note) == (RunState.FAILED, False, "orphaned")
    fresh = make_run(d, "young", state="starting", supervisor={"pid": None, "create_time": None})
    assert runs.run_summary(fresh).live  # start_run has not recorded the supervisor yet
    assert stopping.reap_orphans(d) == [paths]
    assert not pg.is_alive(leftover)
    assert read_run_json(paths)["state"] == "failed"
    assert read_json(paths.exit_json)["state"] == "failed"
    assert read_all(paths.events)[-1]["message"].startswith("orphaned")
    assert stopping.reap_orphans(d) == []


def test_stop_run_takes_over_from_a_dead_supervisor(tmp_path, sleeper):
    d = tmp_path / "runs"
    launcher = sleeper()
    paths = make_run(d, state="running", launcher={**launcher.to_json(), "role": "launcher"})
    assert stopping.stop_run(paths, grace_s=1) is RunState.STOPPED
    assert not pg.is_alive(launcher)
    assert read_run_json(paths)["state"] == "stopped"
    crashed = make_run(d, "crashed", state="running")
    assert stopping.stop_run(crashed, grace_s=1) is RunState.FAILED
    assert stopping.stop_run(make_run(d, "done"), grace_s=1) is RunState.FINISHED


def test_resume_refuses_live_runs_and_runs_without_a_checkpoint(tmp_path):
    d = tmp_path / "runs"
    live = make_run(d, "live", state="running", supervisor=me())
    with pytest.raises(TraindeckError, match="still running"):
        runs.resume_run(live)
    done = make_run(d, "done", state="failed")
    with pytest.raises(TraindeckError, match="no checkpoint"):
        runs.resume_run(done)


def test_rank_logs_both_layouts(tmp_path):
    d = tmp_path / "runs"
    direct = make_run(d, "single")
    (direct.logs / "rank-0.log").write_text("x")
    (direct.logs / "supervisor.log").write_text("x")
    assert rank_logs(direct) == {0: [direct.logs / "rank-0.log"]}

    tr = make_run(d, "tr", rank_offset=4)
    files = []
    for job, attempts in (("r_aaa", (0, 1)), ("r_bbb", (0,))):
        for attempt in attempts:
            for local in (0, 1):
                for name in ("stdout.log", "stderr.log"):
                    f = tr.logs / "torchrun" / job / f"attempt_{attempt}" / str(local) / name
                    f.parent.mkdir(parents=True, exist_ok=True)
                    f.write_text(name)
                    files.append(f)
        os.utime(tr.logs / "torchrun" / job, (1000 + len(job) + attempts[-1], 1000 + attempts[-1]))
    os.utime(tr.logs / "torchrun" / "r_bbb", (5000, 5000))
    logs = rank_logs(tr)
    assert sorted(logs) == [4, 5]
    assert [str(f.relative_to(tr.logs / "torchrun")) for f in logs[4]] == [
        "r_aaa/attempt_0/0/stdout.log", "r_aaa/attempt_0/0/stderr.log",
        "r_aaa/attempt_1/0/stdout.log", "r_aaa/attempt_1/0/stderr.log",
        "r_bbb/attempt_0/0/stdout.log", "r_bbb/attempt_0/0/stderr.log"]


# ---- slow: real runs ------------------------------------------------------------------------

def _profile_file(tmp_path: Path, script: str, args: list[str], mode: str = "ddp") -> Path:
    nproc = "nproc_per_node = 2" if mode == "ddp" else ""
    f = tmp_path / "p.toml"
    f.write_text(f'name = "hup"\n[launch]\nmode = "{mode}"\n{nproc}\nstop_grace_s = 2\n'
                 f'[train]\nscript = "{SCRIPTS / script}"\nargs = {json.dumps(args)}\n')
    return f


@pytest.mark.slow
def test_sighup_to_the_console_does_not_stop_training_and_attach_sees_the_same_steps(runs_dir, tmp_path):
    profile = _profile_file(tmp_path, "train_prints.py", ["--steps", "40", "--sleep", "0.06"])
    console = subprocess.Popen([sys.executable, str(ROOT / "run.py"), "--profile", str(profile), "--headless",
                                "--runs-dir", str(runs_dir)], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, start_new_session=True)
    try:
        paths = wait_for(lambda: runs.list_run_dirs(runs_dir)[:1] and runs.list_run_dirs(runs_dir)[0], 10, "run dir")
        wait_running(paths, min_step=3)
        # What a dropped SSH connection does: SIGHUP to the console's whole session.
        os.killpg(console.pid, signal.SIGHUP)
        console.wait(timeout=10)
        assert console.returncode != 0
        step_at_hup = runs.run_summary(paths).step
        wait_for(lambda: (runs.run_summary(paths).step or 0) > step_at_hup + 5, 15, "training to continue")
        assert runs.run_summary(paths).live
        # Re-attach from a new console: it follows the same run to its end with the run's exit code.
        attach = subprocess.run([sys.executable, str(ROOT / "run.py"), "--attach", "--headless",
                                 "--runs-dir", str(runs_dir)], cwd=ROOT, capture_output=True, text=True,
                                timeout=40)
        assert attach.returncode == 0, attach.stdout + attach.stderr
    finally:
        if console.poll() is None:
            os.killpg(console.pid, signal.SIGKILL)
            console.wait()
    s = runs.run_summary(runs.find_run(runs_dir, paths.id))
    assert s.state is RunState.FINISHED and s.step == 40
    stdout0 = [f for f in rank_logs(paths)[0] if f.name == "stdout.log"][0].read_text()
    assert f"step {s.step} loss" in stdout0 and f"step {s.step + 1} " not in stdout0
    assert_nothing_left(paths)


@pytest.mark.slow
def test_two_ddp_runs_at_once_both_finish_on_different_ports(runs_dir):
    profile = custom_profile("train_prints.py", args=["--steps", "5"])
    first = runs.start_run(profile, runs_dir)
    second = runs.start_run(profile, runs_dir)
    assert first != second
    assert wait_done(first, 40).state is RunState.FINISHED, first.supervisor_log.read_text()
    assert wait_done(second, 40).state is RunState.FINISHED, second.supervisor_log.read_text()
    assert read_run_json(first)["port"] != read_run_json(second)["port"]
    assert_nothing_left(first)
    assert_nothing_left(second)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["ddp", "single"])
def test_shell_metacharacters_reach_the_script_as_one_argument(runs_dir, tmp_path, mode):
    marker = tmp_path / "x"
    marker.mkdir()
    nasty = NASTY_TEMPLATE.format(marker=marker)
    profile = custom_profile("echo_argv.py", mode=mode, args=[nasty, "two words", "$(touch pwned)"])
    paths = runs.start_run(profile, runs_dir)
    assert wait_done(paths).state is RunState.FINISHED, paths.supervisor_log.read_text()
    ranks = ["0", "1"] if mode == "ddp" else ["0"]
    for rank in ranks:
        seen = json.loads((paths.root / f"argv-{rank}.json").read_text())
        assert seen["argv"] == [nasty, "two words", "$(touch pwned)"]
        # Where the test (like a user) started it; on PYTHONPATH only the run's traindeck folder.
        assert seen["cwd"] == os.getcwd()
        assert seen["pythonpath"].split(os.pathsep)[0] == str(paths.root / IMPORT_DIR)
        assert str(PROJECT_ROOT) not in seen["pythonpath"].split(os.pathsep)
    assert marker.exists() and not (PROJECT_ROOT / "pwned").exists()
    if mode == "single":
        assert rank_logs(paths) == {0: [paths.logs / "rank-0.log"]}
        assert read_run_json(paths)["port"] is None


def test_a_run_directory_without_run_json_yet_is_starting_then_failed_when_old(tmp_path):
    """The window between create_run_dir and run.json must not look like a failed run."""

    paths = create_run_dir(tmp_path / "runs", "young")
    summary = runs.run_summary(paths)
    assert (summary.state, summary.live) == (RunState.STARTING, True)
    old = time.time() - 3600
    os.utime(paths.root, (old, old))
    summary = runs.run_summary(paths)
    assert (summary.state, summary.live, summary.note) == (RunState.FAILED, False, "no run.json")


def test_a_worker_first_seen_before_its_exec_is_recorded_as_a_worker_once_it_has_its_rank(tmp_path):
    """torchrun forks, then execs the worker with RANK in its environment. A poll between the two
    sees torchrun's environment: a "child". The next poll must make it the rank it is (a fresh
    clone's rehearsal counted 3 of 4 workers and never said "running")."""
    gate = tmp_path / "exec-now"
    # The child waits (no RANK yet), then execs a sleeper with RANK=0, as torchrun's workers are.
    child = ("import os, sys, time\n"
             f"while not os.path.exists({str(gate)!r}): time.sleep(0.02)\n"
             "os.execve(sys.executable, [sys.executable, '-c', 'import time; time.sleep(60)'], "
             "dict(os.environ, RANK='0'))\n")
    env = {k: v for k, v in os.environ.items() if k != "RANK"}
    launcher = subprocess.Popen([sys.executable, "-c", f"import subprocess, sys; subprocess.run([sys.executable, '-c', {child!r}])"],
                                env=env)
    try:
        root = pg.ref_of(launcher.pid, "launcher")
        known: dict[int, pg.ProcRef] = {}
        wait_for(lambda: pg.descendants(root), what="the launcher's child")
        pg.remember(known, pg.descendants(root))
        assert [r.role for r in known.values()] == ["child"]
        gate.touch()
        wait_for(lambda: any(r.role == "worker" for r in pg.descendants(root)), what="the child's exec with RANK")
        pg.remember(known, pg.descendants(root))
        assert [(r.role, r.rank) for r in known.values()] == [("worker", 0)]
    finally:
        for p in pg.descendants(pg.ref_of(launcher.pid, "launcher")) if launcher.poll() is None else []:
            os.kill(p.pid, signal.SIGKILL)
        launcher.kill()
        launcher.wait()

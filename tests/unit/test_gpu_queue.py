"""The GPU queue's pieces (issue 20), without real runs: what a start with --queue is refused for
(at once), what it waits for, where viewers read its place, and that `queued` is live everywhere.
The end-to-end runs are in tests/e2e/test_gpu_queue.py."""

from __future__ import annotations

import time

import pytest

from tests.fixtures.fake_nvml import four_2080ti, shared_2080ti
from tests.support.fake_runs import make_run_dir, supervisor_record
from tests.support.locations import ROOT
from training.console import preflight, runs
from training.console import stop as stopping
from training.console.start_checks import StartRefused, check_start
from training.monitor import gpu
from training.monitor.gpu import GpuBackend
from training.profile import load_profile
from training.rundir import RunState, list_run_dirs, read_json, read_run_json
from training.rundir.events_file import read_all
from training.rundir.gpu_locks import GpuLocks, lock_dir_for
from training.rundir.liveness import not_live_reason, verified_state
from training.supervise.gpu_select import Waiting, claim_gpus
from tui.headless.lines import progress_line
from tui.run_model import RunModel

WAITING_FOR = "GPU 0 held by pid 4190001, outside this container, 9.5 GiB"


def _four_gpus():
    return load_profile("4x2080ti")


def _two_gpu_box() -> GpuBackend:
    fake = four_2080ti(pids=[])
    fake.devices = fake.devices[:2]
    return GpuBackend(nvml=fake)


# ---- refused at once -----------------------------------------------------------------------

def test_queue_for_4_gpus_on_a_box_without_gpus_is_refused_at_once(tmp_path, monkeypatch, capsys):
    import run

    monkeypatch.setenv(gpu.FAKE_NVML_ENV, "tests.fixtures.fake_nvml:zero_devices")
    gpu.reset_backend()
    runs_dir = tmp_path / "runs"
    t0 = time.monotonic()
    try:
        code = run.main(["--profile", "4x2080ti", "--queue", "--headless", "--runs-dir", str(runs_dir)])
    finally:
        gpu.reset_backend()
    took = time.monotonic() - t0
    err = capsys.readouterr().err
    assert code == 2 and took < 2.0, (code, took, err)
    assert err.startswith("traindeck: not starting profile 4x2080ti: [FAIL] gpus: ")
    assert "Waiting in the queue (--queue) cannot help" in err and "--set hardware.gpus=0" in err
    assert err.count("\n") == 1 and "Traceback" not in err  # one paragraph
    assert list_run_dirs(runs_dir) == []  # nothing was started, nothing waits


def test_queue_for_more_gpus_than_the_box_has_is_refused_and_takes_no_place_in_line(tmp_path):
    with pytest.raises(StartRefused) as err:
        check_start(_four_gpus(), tmp_path, backend=_two_gpu_box(), queue=True)
    assert "cannot help" in str(err.value) and "\n" not in str(err.value)
    # The supervisor's claim refuses it too (a start that got past a console), before drawing a ticket.
    from training.errors import TraindeckError

    with pytest.raises(TraindeckError, match="can never start on this box"):
        claim_gpus(load_profile("4x2080ti", ["hardware.select=free"]), "r", _two_gpu_box(), wait=True,
                   sleep=lambda s: pytest.fail("waited for what can never come"))
    assert GpuLocks(lock_dir_for()).queue() == []


def test_busy_gpus_are_refused_suggesting_queue_and_waited_for_with_it(tmp_path):
    busy = GpuBackend(nvml=shared_2080ti())
    with pytest.raises(StartRefused) as err:
        check_start(_four_gpus(), tmp_path, backend=busy)
    text = str(err.value)
    assert WAITING_FOR in text and "'run.py --profile 4x2080ti --queue' waits for them in line" in text
    assert check_start(_four_gpus(), tmp_path, backend=busy, queue=True) == []


def test_a_start_without_queue_does_not_jump_the_line(tmp_path):
    """Free GPUs, but another start already waits: the check says so (the supervisor would refuse)."""
    locks = GpuLocks(lock_dir_for())
    seen = []

    def while_waiting(_place, _why):  # called outside the lock directory's mutex
        seen.append(preflight.select_check(load_profile("4x2080ti", ["hardware.gpus=1", "launch.nproc_per_node=1"]),
                                           GpuBackend(nvml=four_2080ti(pids=[]))))

    locks.acquire(lambda held: (None, "busy"), {"run_id": "early-bird"}, wait=True, on_wait=while_waiting,
                  should_stop=lambda: True, sleep=lambda s: None)
    check = seen[0]
    assert not check.ok and "1 start(s) already wait for GPUs" in check.detail and "early-bird" in check.detail


def test_check_runs_the_busy_gpu_check_and_names_queue(tmp_path):
    report = preflight.run_preflight(_four_gpus(), tmp_path, backend=GpuBackend(nvml=shared_2080ti()), holders=True)
    select = next(c for c in report.checks if c.name == "select")
    assert not select.ok and WAITING_FOR in select.detail
    assert "--queue" in report.lines[-1]
    picker = preflight.run_preflight(_four_gpus(), tmp_path, backend=GpuBackend(nvml=shared_2080ti()))
    assert "select" not in [c.name for c in picker.checks]


# ---- what the supervisor writes while queued -------------------------------------------------

def test_the_supervisor_writes_its_place_when_it_changes_not_on_every_look(tmp_path):
    from training.supervise.run_supervisor import Supervisor

    paths = make_run_dir(tmp_path, "20260101-000000-q", state="starting", supervisor=supervisor_record())
    sup = Supervisor(paths)
    first = Waiting(2, "behind 1 earlier start(s), next: r1 (user alice)", (2, "r1"))
    for _ in range(3):
        sup._queued(first)
    sup._queued(Waiting(1, WAITING_FOR, (1, ((0, 4190001, None, True, False),))))
    # The same holders with their memory drifted: the same wait.
    sup._queued(Waiting(1, WAITING_FOR.replace("9.5", "9.7"), (1, ((0, 4190001, None, True, False),))))
    statuses = [e for e in read_all(paths.events) if e["kind"] == "status"]
    assert [(e["state"], e["place"]) for e in statuses] == [("queued", 2), ("queued", 1)]
    assert statuses[1]["waiting_for"] == WAITING_FOR
    data = read_run_json(paths)
    assert data["state"] == "queued"
    assert data["gpu_queue"]["place"] == 1 and data["gpu_queue"]["waiting_for"] == WAITING_FOR
    assert data["gpu_queue"]["since"] <= data["gpu_queue"]["t"]  # since the first look, as of the last change


# ---- queued is live wherever liveness matters ------------------------------------------------

def _queued_run(runs_dir, supervisor, name="20260101-000000-q"):
    return make_run_dir(runs_dir, name, state="queued", supervisor=supervisor, queue=True,
                        gpu_queue={"place": 2, "waiting_for": WAITING_FOR, "since": 1.0, "t": 2.0})


def test_a_queued_run_is_live_listed_with_its_wait_and_found_by_attach(tmp_path):
    paths = _queued_run(tmp_path, supervisor_record())
    assert verified_state(paths) == (RunState.QUEUED, True, "")
    assert runs.find_run(tmp_path, None, live_only=True) == paths  # --attach without a run id
    summary = runs.run_summary(paths)
    assert summary.waiting == f"#2, waiting for {WAITING_FOR}"
    table = runs.format_runs_table([summary])
    assert table.splitlines()[1].split()[:2] == [paths.id, "queued"]
    assert table.splitlines()[2] == f"  queued #2, waiting for {WAITING_FOR}"
    assert "no workers yet" in not_live_reason(paths)  # control requests are refused, with why


def test_the_orphan_reaper_reaps_a_queued_run_whose_supervisor_died(tmp_path):
    paths = _queued_run(tmp_path, {"pid": 999_999, "create_time": 1.0})
    assert verified_state(paths)[1] is False
    assert stopping.reap_orphans(tmp_path) == [paths]
    assert read_json(paths.exit_json)["state"] == "failed"


def test_the_run_model_and_the_headless_line_show_the_place_and_what_it_waits_for(tmp_path):
    paths = _queued_run(tmp_path, supervisor_record())
    model = RunModel(run_id=paths.id)
    model.apply_run_json(read_run_json(paths))
    assert model.live and model.header(now=10.0).waiting == f"#2, waiting for {WAITING_FOR}"
    headless = RunModel(run_id=paths.id)  # the headless printer folds the events only
    headless.apply_events([{"v": 1, "t": 1.0, "kind": "status", "state": "queued", "place": 1,
                            "waiting_for": WAITING_FOR, "message": "#1, waiting for ..."}])
    line = progress_line(headless, 75.0, None, stalled_s=600.0)
    assert line == f"[01:15] queued #1, waiting for {WAITING_FOR}"  # no "no new step" while queued
    headless.apply_events([{"v": 1, "t": 9.0, "kind": "status", "state": "starting", "message": "launching"}])
    assert headless.header(now=10.0).waiting == ""


def test_run_py_rejects_queue_without_a_start_to_queue(capsys):
    import run

    assert run.main(["--queue", "--attach", "x", "--runs-dir", str(ROOT / "nonexistent-runs")]) == 2
    assert "--queue goes with --profile NAME or --resume RUN" in capsys.readouterr().err


def test_resume_claims_gpus_afresh_through_the_same_check(tmp_path, monkeypatch, capsys):
    """The GPUs a stopped run had may be someone else's now: --resume is refused like a start (and
    told about --queue), before anything is spawned."""
    import run

    monkeypatch.setenv(gpu.FAKE_NVML_ENV, "tests.fixtures.fake_nvml:shared_2080ti")
    gpu.reset_backend()
    paths = make_run_dir(tmp_path, "20260101-000000-4x2080ti", state="stopped",
                         profile_toml=_four_gpus().to_toml(), supervisor={"pid": 999_999, "create_time": 1.0})
    (paths.checkpoints / "last.pt").write_bytes(b"")
    try:
        code = run.main(["--resume", paths.id, "--headless", "--runs-dir", str(tmp_path)])
    finally:
        gpu.reset_backend()
    err = capsys.readouterr().err
    assert code == 2 and WAITING_FOR in err and "--queue' waits for them in line" in err
    assert read_run_json(paths)["state"] == "stopped" and read_run_json(paths).get("resumes") is None

"""GPU-leak check after a run, against the fake NVML."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tests.fixtures import fake_nvml
from tests.support.fake_runs import two_node_head
from tests.support.locations import DATA
from training.monitor import gpu
from training.monitor.gpu import GpuBackend
from training.monitor.gpu_leaks import describe_leak, find_gpu_leaks, leak_events
from training.rundir import list_run_dirs, read_run_json


@pytest.fixture
def sleeper():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def record(pid: int, rank: int | None = 0, role: str = "worker", create_time: float | None = None) -> dict:
    if create_time is None:
        create_time = psutil.Process(pid).create_time()
    return {"pid": pid, "create_time": create_time, "role": role, "rank": rank}


def backend_with(placements: dict[int, list[tuple[int, int | None]]]) -> GpuBackend:
    fake = fake_nvml.four_2080ti(pids=[])
    for index, procs in placements.items():
        fake.set_processes(index, procs)
    return GpuBackend(nvml=fake)


def test_a_process_of_the_run_still_holding_memory_is_reported(sleeper):
    other = 999_999  # someone else's job on GPU 0 is not our leak
    backend = backend_with({0: [(other, 4000)], 2: [(sleeper.pid, 5120)]})
    leaks = find_gpu_leaks(backend, [record(sleeper.pid, rank=1), record(psutil.Process().pid, rank=0)])
    assert leaks == [{"pid": sleeper.pid, "rank": 1, "role": "worker", "gpu": 2, "used_mib": 5120,
                      "state": psutil.Process(sleeper.pid).status(), "name": psutil.Process(sleeper.pid).name()}]
    message = describe_leak(leaks[0])
    assert f"pid {sleeper.pid} (rank 1) still holds 5120 MiB on GPU 2" in message
    [event] = leak_events(leaks)
    assert event["kind"] == "log" and event["level"] == "warning" and event["gpu_leak"] == leaks[0]
    assert event["rank"] == 1


def test_no_holders_means_no_leaks(sleeper):
    assert find_gpu_leaks(backend_with({}), [record(sleeper.pid)]) == []
    assert find_gpu_leaks(backend_with({0: [(sleeper.pid, 100)]}), []) == []


def test_a_reused_pid_is_not_ours(sleeper):
    backend = backend_with({1: [(sleeper.pid, 700)]})
    stale = record(sleeper.pid, create_time=psutil.Process(sleeper.pid).create_time() - 3600)
    assert find_gpu_leaks(backend, [stale]) == []


def test_an_exited_pid_the_driver_still_lists_is_reported_gone():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    rec = record(proc.pid)
    proc.wait()
    leaks = find_gpu_leaks(backend_with({3: [(proc.pid, None)]}), [rec])
    assert [(leak["gpu"], leak["state"], leak["used_mib"]) for leak in leaks] == [(3, "gone", None)]
    assert "size not reported" in describe_leak(leaks[0])


def test_a_process_in_d_state_is_named_with_its_state(sleeper, monkeypatch):
    # A real D-state process cannot be made on demand; psutil's answer for it is substituted.
    real_status = psutil.Process.status
    monkeypatch.setattr(psutil.Process, "status",
                        lambda self: "disk-sleep" if self.pid == sleeper.pid else real_status(self))
    leaks = find_gpu_leaks(backend_with({0: [(sleeper.pid, 81000)]}), [record(sleeper.pid, rank=0)])
    assert leaks[0]["state"] == "disk-sleep"
    assert "state D" in describe_leak(leaks[0])


def test_without_nvml_there_is_nothing_to_report(sleeper):
    assert find_gpu_leaks(GpuBackend(nvml=fake_nvml.no_driver()), [record(sleeper.pid)]) == []


_PLACED: fake_nvml.FakeNvml | None = None


def placed_fake() -> fake_nvml.FakeNvml:
    """Factory for $TRAINDECK_FAKE_NVML: the fake the test prepared."""
    assert _PLACED is not None
    return _PLACED


def test_through_the_process_wide_backend_from_the_environment(sleeper, monkeypatch):
    # The supervisor uses training.monitor.gpu.get_backend(), configured by $TRAINDECK_FAKE_NVML in tests.
    global _PLACED
    _PLACED = fake_nvml.four_2080ti(pids=[])
    _PLACED.set_processes(1, [(sleeper.pid, 2048)])
    monkeypatch.setenv(gpu.FAKE_NVML_ENV, f"{__name__}:placed_fake")
    gpu.reset_backend()
    try:
        leaks = find_gpu_leaks(gpu.get_backend(), [record(sleeper.pid, rank=0)])
    finally:
        gpu.reset_backend()
        _PLACED = None
    assert [(leak["pid"], leak["gpu"], leak["used_mib"]) for leak in leaks] == [(sleeper.pid, 1, 2048)]


# ------------------------------------------------------------------ through the supervisor


class RunHoldsGpu(fake_nvml.FakeNvml):
    """A fake NVML in which rank 1 of the run under $LEAK_TEST_RUNS_DIR never lets go of GPU 1.

    run.json lists only live processes while the run goes on, so the fake remembers the rank-1
    pid it saw (telemetry queries it every interval)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.rank1_pids: set[int] = set()

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        self._dev(handle, "nvmlDeviceGetComputeRunningProcesses")
        for paths in list_run_dirs(Path(os.environ["LEAK_TEST_RUNS_DIR"])):
            for record in read_run_json(paths).get("processes") or []:
                if record.get("role") == "worker" and record.get("rank") == 1:
                    self.rank1_pids.add(int(record["pid"]))
        if handle.index != 1:
            return []
        return self._proc_objects([(pid, 1234) for pid in sorted(self.rank1_pids)])


def run_holds_gpu() -> RunHoldsGpu:
    base = fake_nvml.four_2080ti(pids=[])
    return RunHoldsGpu(base.devices, driver_version=base.driver_version)


@pytest.mark.slow
def test_supervisor_reports_a_leak_in_exit_json_and_events(tmp_path, monkeypatch):
    from tests.support.live_runs import stop_quietly, wait_done
    from training.console import runs
    from training.profile import parse_profile
    from training.rundir.events_file import read_all

    runs_dir = tmp_path / "runs"
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("LEAK_TEST_RUNS_DIR", str(runs_dir))
    monkeypatch.setenv(gpu.FAKE_NVML_ENV, f"{__name__}:run_holds_gpu")
    script = DATA / "watchdog" / "hang_script.py"
    profile = parse_profile(f"""
name = "leak"
[hardware]
gpus = 2  # a GPU run: with gpus = 0 its processes would see no GPU and telemetry would not look
[launch]
mode = "ddp"
nproc_per_node = 2
backend = "gloo"
[train]
script = "{script}"
[telemetry]
interval_s = 0.5
""", path=str(tmp_path / "leak.toml"))
    # hang_script with no hang: 3 steps of ~1 s, then it ends.
    profile.launch.env = {"WD_HANG_STEP": "0", "WD_STEPS": "3"}
    paths = runs.start_run(profile, runs_dir)
    try:
        # Until the supervisor is gone: it releases its GPU locks and checks for leaks at its end.
        wait_done(paths, 40)
    finally:
        stop_quietly(paths)
    exit_data = json.loads(paths.exit_json.read_text())
    assert exit_data["state"] == "finished", paths.supervisor_log.read_text()[-2000:]
    [leak] = exit_data["gpu_leaks"]
    assert (leak["rank"], leak["gpu"], leak["used_mib"], leak["state"]) == (1, 1, 1234, "gone")
    [event] = [e for e in read_all(paths.events) if e.get("gpu_leak")]
    assert event["level"] == "warning" and f"pid {leak['pid']} (rank 1) still holds 1234 MiB on GPU 1" in event["message"]
    # The warning comes before the final status, which viewers treat as the end of the run.
    assert read_all(paths.events)[-1]["kind"] == "status"


def test_the_head_lists_every_nodes_gpu_leaks_with_its_host(tmp_path):
    """Each node checks its own GPUs at its end; the head's exit.json names the host of each leak."""
    leak = {"pid": 4242, "rank": 2, "gpu": 0, "used_mib": 900, "state": "running"}
    _, sup = two_node_head(tmp_path, {"state": "failed", "gpu_leaks": [leak, "not a leak"]})
    [found] = sup.nodes.other_nodes_gpu_leaks()
    assert found == {**leak, "node": "gpu-b"}
    assert describe_leak(found).startswith("pid 4242 (rank 2) still holds 900 MiB on GPU 0 on gpu-b after the run")

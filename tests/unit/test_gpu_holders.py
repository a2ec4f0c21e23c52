"""`run.py --gpus`: who holds which GPU, with the fake NVML and real GPU locks."""

from __future__ import annotations

import os

from tests.fixtures.fake_nvml import no_library, shared_2080ti
from training.console.gpu_holders import format_gpu_holders
from training.monitor import gpu
from training.monitor.gpu import GpuBackend
from training.rundir.gpu_locks import GpuLocks, lock_dir_for
from training.supervise.gpu_select import lock_key


def test_runs_by_id_and_user_others_by_pid_user_and_memory_unknown_pids_outside():
    fake = shared_2080ti()
    fake.set_processes(2, [(os.getpid(), 2_000)])  # a process this table has: named with its user
    backend = GpuBackend(nvml=fake)
    uuid1 = backend.devices()[1].uuid
    locks = GpuLocks(lock_dir_for())
    hold, _ = locks.acquire(lambda held: ([lock_key(1, uuid1)], None), {"run_id": "20260101-120000-4x2080ti"},
                            wait=False)
    try:
        text = format_gpu_holders(backend)
    finally:
        hold.release()
    rows = {line.split()[0]: line for line in text.splitlines()[1:5]}
    assert rows["0"].endswith("pid 4190001, outside this container, 9.5 GiB")
    assert rows["1"].endswith(f"traindeck run 20260101-120000-4x2080ti, user {hold.record['user']}, pid {os.getpid()}")
    assert f"pid {os.getpid()}, user {hold.record['user']}, " in rows["2"] and rows["2"].endswith("2.0 GiB")
    assert rows["3"].endswith("free") and uuid1 in rows["1"]
    assert "(simulated GPUs" in text


def test_a_box_without_gpus_says_so_in_one_line():
    text = format_gpu_holders(GpuBackend(nvml=no_library()))
    assert text.startswith("no GPUs on this box: ") and "\n" not in text


def test_run_py_gpus(monkeypatch, capsys):
    import run

    monkeypatch.setenv(gpu.FAKE_NVML_ENV, "tests.fixtures.fake_nvml:zero_devices")
    gpu.reset_backend()
    try:
        assert run.main(["--gpus"]) == 0
    finally:
        gpu.reset_backend()
    out = capsys.readouterr().out
    assert out.strip() == "no GPUs on this box: no NVIDIA driver/GPU found: the driver is loaded but reports no devices"

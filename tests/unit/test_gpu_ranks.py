"""Ranks matched to GPUs by device UUID, PIDs only as the fallback (issue 15, item 6), and fake
telemetry that never passes for real GPUs (item 9), with the fake NVML."""

from __future__ import annotations

import json

import psutil

from tests.fixtures import fake_nvml
from traindeck.heartbeat import Heartbeat, read_heartbeats
from training.monitor.gpu import GpuBackend
from training.monitor.gpu_leaks import gpu_baseline, gpu_leaks_after_exit, unseen_holders
from training.monitor.telemetry import TelemetrySampler, device_ranks
from training.monitor.watchdog import telemetry_gpu_util
from training.rundir import RunPaths


def _unused_pids(n: int) -> list[int]:
    """PIDs no process here has: what NVML lists inside a container (host PIDs)."""
    out, pid = [], 4_000_000
    while len(out) < n:
        if not psutil.pid_exists(pid):
            out.append(pid)
        pid += 1
    return out


def _beat(run_dir, rank: int, uuid: str | None) -> None:
    hb = Heartbeat(run_dir, rank)
    if uuid:
        hb.devices = [{"uuid": uuid, "pci_bus_id": None}]
    hb.beat(5, epoch=1, force=True)


def _sample(paths: RunPaths, fake, ranks_by_pid=dict, **kwargs) -> dict:
    sampler = TelemetrySampler(paths, 1.0, ranks_by_pid, backend=GpuBackend(nvml=fake), **kwargs)
    sampler.source = GpuBackend(nvml=fake).source
    return sampler.sample()


def test_the_heartbeat_carries_the_ranks_devices(tmp_path):
    _beat(tmp_path, 2, "GPU-abc")
    assert read_heartbeats(tmp_path)[2]["devices"] == [{"uuid": "GPU-abc", "pci_bus_id": None}]
    _beat(tmp_path, 3, None)
    assert "devices" not in read_heartbeats(tmp_path)[3]


def test_container_pids_still_map_ranks_by_uuid(tmp_path):
    fake = fake_nvml.eight_b200(pids=[])
    for gpu, pid in enumerate(_unused_pids(3)):
        fake.set_processes(gpu, [(pid, 40_000)])
    paths = RunPaths(tmp_path)
    # torch's device properties spell the UUID without NVML's "GPU-" prefix: both match.
    _beat(tmp_path, 0, fake.devices[0].uuid)
    _beat(tmp_path, 1, fake.devices[1].uuid.removeprefix("GPU-"))
    _beat(tmp_path, 2, fake.devices[2].uuid.upper())
    line = _sample(paths, fake, ranks_by_pid=lambda: {101: 0, 102: 1, 103: 2})  # the container's PIDs
    gpus = {g["index"]: g for g in line["gpus"]}
    assert [gpus[i]["ranks"] for i in range(8)] == [[0], [1], [2], [], [], [], [], []]
    assert all(p["rank"] is None for g in line["gpus"] for p in g["processes"])  # PIDs match nothing


def test_pids_are_the_fallback_when_no_heartbeat_names_a_gpu(tmp_path):
    fake = fake_nvml.eight_b200(pids=range(700, 708))
    line = _sample(RunPaths(tmp_path), fake, ranks_by_pid=lambda: {700 + i: i for i in range(8)})
    assert [g["ranks"] for g in line["gpus"]] == [[i] for i in range(8)]


def test_a_dp_rank_is_on_every_gpu_it_names(tmp_path):
    fake = fake_nvml.eight_b200(pids=[])
    hb = Heartbeat(tmp_path, 0)
    hb.devices = [{"uuid": fake.devices[i].uuid, "pci_bus_id": None} for i in (0, 1)]
    hb.beat(1, force=True)
    assert device_ranks(read_heartbeats(tmp_path))[fake.devices[1].uuid.lower()[4:]] == [0]
    line = _sample(RunPaths(tmp_path), fake)
    assert [g["ranks"] for g in line["gpus"]][:3] == [[0], [0], []]


def test_only_the_gpus_the_run_can_see_are_sampled(tmp_path):
    fake = fake_nvml.eight_b200()
    line = _sample(RunPaths(tmp_path), fake, gpu_indices=[5, 2])
    assert [g["index"] for g in line["gpus"]] == [2, 5]
    sampler = TelemetrySampler(RunPaths(tmp_path), 1.0, dict, backend=GpuBackend(nvml=fake), gpu_indices=[])
    sampler.start()
    sampler.stop()
    assert sampler.source == "cpu"  # a run that sees no GPU (gpus = 0) shows its workers


def test_fake_nvml_is_labelled_and_real_nvml_is_not(tmp_path):
    assert GpuBackend(nvml=fake_nvml.eight_b200()).source == "fake-nvml"

    class LooksReal(fake_nvml.FakeNvml):
        TRAINDECK_FAKE = False

    assert GpuBackend(nvml=LooksReal(fake_nvml.eight_b200().devices)).source == "nvml"
    sampler = TelemetrySampler(RunPaths(tmp_path), 0.25, dict, backend=GpuBackend(nvml=fake_nvml.eight_b200()))
    sampler.start()
    sampler.stop()
    first = json.loads(RunPaths(tmp_path).telemetry.read_text().splitlines()[0])
    assert first["source"] == "fake-nvml"


def test_the_watchdog_finds_a_ranks_gpu_util_by_uuid(tmp_path):
    paths = RunPaths(tmp_path)
    sample = {"v": 1, "kind": "telemetry", "t": 1.0, "source": "nvml", "gpus": [
        {"index": 0, "util": 97, "ranks": [0], "processes": [{"pid": 3_900_001, "rank": None}]},
        {"index": 1, "util": 3, "ranks": [1], "processes": [{"pid": 3_900_002, "rank": None}]},
        {"index": 2, "util": 0, "ranks": [], "processes": []}]}
    paths.telemetry.write_text(json.dumps(sample) + "\n")
    lookup = telemetry_gpu_util(paths)
    assert (lookup(0), lookup(1), lookup(2)) == (97.0, 3.0, None)


def test_the_leak_check_finds_host_pids_on_the_runs_gpus(tmp_path):
    fake = fake_nvml.four_2080ti(pids=[])
    other_before, leaked, elsewhere = _unused_pids(3)
    fake.set_processes(1, [(other_before, 500)])
    backend = GpuBackend(nvml=fake)
    baseline = gpu_baseline(backend)
    # During the run: a rank (seen by its host PID) on GPU 1, somebody else's job on GPU 3.
    fake.set_processes(1, [(other_before, 500), (leaked, 9000)])
    fake.set_processes(3, [(elsewhere, 100)])
    run_uuids = [fake.devices[1].uuid.removeprefix("GPU-")]
    [leak] = unseen_holders(backend, run_uuids, baseline)
    assert (leak["pid"], leak["gpu"], leak["used_mib"], leak["state"]) == (leaked, 1, 9000, "unseen")
    leaks = gpu_leaks_after_exit(backend, [], settle_s=0, run_uuids=run_uuids, baseline=baseline)
    assert [entry["pid"] for entry in leaks] == [leaked]
    fake.set_processes(1, [(other_before, 500)])  # it let go
    assert gpu_leaks_after_exit(backend, [], settle_s=0, run_uuids=run_uuids, baseline=baseline) == []


def test_a_process_visible_here_is_not_an_unseen_leak(tmp_path):
    import os

    fake = fake_nvml.four_2080ti(pids=[])
    backend = GpuBackend(nvml=fake)
    baseline = gpu_baseline(backend)
    fake.set_processes(0, [(os.getpid(), 100)])  # a PID of this namespace: PID matching's business
    assert unseen_holders(backend, [fake.devices[0].uuid], baseline) == []

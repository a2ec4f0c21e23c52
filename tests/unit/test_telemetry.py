"""training.monitor.telemetry: NVML lines from the fake, CPU lines from real processes (incl. a gloo run)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from tests.fixtures import fake_nvml
from tests.support.processes import free_port
from training.errors import TraindeckError
from training.monitor import telemetry
from training.monitor.gpu import GpuBackend
from training.monitor.telemetry import TelemetrySampler, read_telemetry
from training.rundir import RunPaths
from training.rundir.events_file import EventReader

GPU_KEYS = {"index", "name", "util", "mem_util", "mem_used_mib", "mem_total_mib", "temp_c", "power_w",
            "power_limit_w", "sm_clock_mhz", "sm_clock_max_mhz", "fan_pct", "throttle", "pcie_rx_kbs",
            "pcie_tx_kbs", "processes", "error", "uuid", "ranks"}


@pytest.fixture
def paths(tmp_path) -> RunPaths:
    return RunPaths(tmp_path)


def run_for(sampler: TelemetrySampler, seconds: float) -> list[dict]:
    sampler.start()
    time.sleep(seconds)
    sampler.stop()
    return read_telemetry(sampler.paths.telemetry)


def test_nvml_lines_for_eight_gpus(paths, monkeypatch):
    fake = fake_nvml.eight_b200(pids=range(700, 708))
    ranks = {700 + i: i for i in range(7)}  # pid 707 is not one of ours: rank null
    writes = []
    real_write = os.write
    monkeypatch.setattr(telemetry.os, "write", lambda fd, data: writes.append(data) or real_write(fd, data))
    lines = run_for(TelemetrySampler(paths, 0.25, lambda: ranks, backend=GpuBackend(nvml=fake)), 1.15)

    assert 4 <= len(lines) <= 7  # ~4 on the 0.25 s grid, plus the final one
    assert len(writes) == len(lines) and all(w.endswith(b"\n") and w.count(b"\n") == 1 for w in writes)
    first = lines[0]
    assert first["sample_cost_ms"] >= 0 and first["interval_s"] == 0.25
    assert all("sample_cost_ms" not in line for line in lines[1:])
    assert lines[-1]["final"] is True
    for line in lines:
        assert line["kind"] == "telemetry" and line["source"] == "fake-nvml" and line["v"] == 1
        assert set(line["host"]) == {"cpu_percent", "mem_used_mib", "mem_total_mib"}
        assert line["host"]["mem_total_mib"] > line["host"]["mem_used_mib"] > 0
        assert [g["index"] for g in line["gpus"]] == list(range(8))
        for g in line["gpus"]:
            assert set(g) == GPU_KEYS and g["error"] is None
            assert g["fan_pct"] is None  # N/A stays null
            assert isinstance(g["throttle"], list)
            assert g["processes"] == [{"pid": 700 + g["index"], "rank": ranks.get(700 + g["index"]),
                                       "mem_mib": 81_000}]
    assert lines[0]["gpus"][7]["processes"][0]["rank"] is None
    # the monotonic grid: samples 0.25 s apart, not 0.25 s + the cost of a sample
    # (under load a tick may be skipped, but samples stay on the grid)
    stamps = [line["t"] for line in lines[:-1]]
    offsets = [(t - stamps[0]) / 0.25 for t in stamps]
    assert all(abs(o - round(o)) < 0.4 for o in offsets), offsets
    assert len(set(round(o) for o in offsets)) == len(offsets)
    # EventReader (which wants "kind") reads the same file
    assert len(EventReader(paths.telemetry).read()) == len(lines)


def test_device_error_mid_run_keeps_sampling(paths):
    backend = GpuBackend(nvml=fake_nvml.lost_after(2))
    lines = run_for(TelemetrySampler(paths, 0.25, dict, backend=backend), 1.4)
    assert len(lines) >= 4
    assert lines[0]["gpus"][1]["error"] is None
    last = lines[-1]["gpus"]
    assert last[1]["error"] == "GPU is lost" and last[1]["util"] is None
    assert last[0]["error"] is None and last[0]["util"] is not None


@pytest.mark.parametrize("interval", [0.1, 0.2499, 0.0, -1.0, math.nan])
def test_too_short_interval_is_refused(paths, interval):
    with pytest.raises(TraindeckError) as info:
        TelemetrySampler(paths, interval, dict, backend=GpuBackend(nvml=fake_nvml.no_library()))
    message = str(info.value)
    assert "0.25" in message and "1/6 s to 1 s" in message and "interval_s" in message
    assert not paths.telemetry.exists()


def test_stop_is_prompt_and_writes_a_final_sample(paths):
    sampler = TelemetrySampler(paths, 30.0, dict, backend=GpuBackend(nvml=fake_nvml.four_2080ti()))
    sampler.start()
    t0 = time.monotonic()
    sampler.stop()
    assert time.monotonic() - t0 < 1.0
    (line,) = read_telemetry(paths.telemetry)
    assert line["final"] is True and "sample_cost_ms" in line and len(line["gpus"]) == 4
    sampler.stop()  # twice is fine


def test_cpu_source_without_gpus(paths):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    calls = {"n": 0}

    def ranks_by_pid():
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("a flaky callback must not blank the ranks")
        return {os.getpid(): 0, child.pid: 1, gone.pid: 2}

    try:
        # the real pynvml on this machine: no driver -> CPU telemetry, not a crash
        lines = run_for(TelemetrySampler(paths, 0.25, ranks_by_pid, backend=GpuBackend()), 0.8)
    finally:
        child.kill()
        child.wait()
    if lines[0]["source"] == "nvml":
        pytest.skip("this machine has NVIDIA GPUs")
    assert len(lines) >= 3
    for line in lines:
        assert line["source"] == "cpu" and "gpus" not in line
        workers = line["workers"]
        assert [(w["rank"], w["pid"]) for w in workers] == [(0, os.getpid()), (1, child.pid)]  # gone: skipped
        for w in workers:
            assert w["cpu_percent"] >= 0 and w["rss_mib"] > 1 and w["threads"] >= 1
    assert lines[0]["workers"][0]["rss_mib"] > 20  # this pytest process


def test_read_telemetry_tail_skips_junk_and_partial_lines(paths):
    rows = [json.dumps({"v": 1, "t": i, "kind": "telemetry", "source": "cpu", "pad": "x" * 5000})
            for i in range(100)]
    paths.telemetry.write_text("not json\n" + "\n".join(rows[:50]) + '\n{"kind": "other"}\n'
                               + "\n".join(rows[50:]) + '\n{"v":1,"t":')
    assert [r["t"] for r in read_telemetry(paths.telemetry, last_n=3)] == [97, 98, 99]
    assert [r["t"] for r in read_telemetry(paths.telemetry)] == list(range(100))
    assert len(read_telemetry(paths.telemetry, last_n=1000)) == 100
    assert read_telemetry(paths.telemetry, last_n=0) == []
    assert read_telemetry(paths.root / "missing.jsonl") == []


GLOO_SCRIPT = textwrap.dedent("""
    import os, time
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    open(os.path.join(os.environ["READY_DIR"], "rank-" + os.environ["RANK"]), "w").close()
    x = torch.ones(256, 256)
    deadline = time.monotonic() + float(os.environ.get("SECONDS_TO_RUN", "20"))
    while time.monotonic() < deadline:
        y = x @ x
        dist.all_reduce(y)
    dist.destroy_process_group()
""")


def _ranks_of(launcher: psutil.Process) -> dict[int, int]:
    ranks = {}
    for proc in launcher.children(recursive=True):
        try:
            rank = proc.environ().get("RANK")
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        if rank is not None:
            ranks[proc.pid] = int(rank)
    return ranks


@pytest.mark.slow
def test_cpu_telemetry_of_a_real_two_process_gloo_run(tmp_path):
    script = tmp_path / "allreduce.py"
    script.write_text(GLOO_SCRIPT)
    paths = RunPaths(tmp_path)
    env = dict(os.environ, OMP_NUM_THREADS="1", SECONDS_TO_RUN="20", READY_DIR=str(tmp_path))
    proc = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--rdzv-backend", "c10d",
         "--rdzv-endpoint", f"127.0.0.1:{free_port()}", str(script)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    launcher = psutil.Process(proc.pid)
    try:
        deadline = time.monotonic() + 30
        # sample once both ranks are in the all-reduce loop (the pids exist well before that)
        while not all((tmp_path / f"rank-{r}").exists() for r in (0, 1)) or len(_ranks_of(launcher)) < 2:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "torchrun did not start 2 gloo workers in 30 s"
            time.sleep(0.1)
        sampler = TelemetrySampler(paths, 0.3, lambda: _ranks_of(launcher),
                                   backend=GpuBackend(nvml=fake_nvml.no_library()))
        lines = run_for(sampler, 2.0)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stderr.close()

    assert len(lines) >= 5 and "sample_cost_ms" in lines[0]
    workers = [w for line in lines for w in line["workers"]]
    for rank in (0, 1):
        mine = [w for w in workers if w["rank"] == rank]
        assert len(mine) >= 5, f"rank {rank} missing from telemetry"
        assert all(w["rss_mib"] > 50 for w in mine)  # torch is loaded in there
        assert max(w["cpu_percent"] for w in mine) > 5  # it is doing all-reduces
        assert all(w["threads"] >= 1 for w in mine)

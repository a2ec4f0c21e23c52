"""Starting a run applies preflight's table (training.console.start_checks): refuse a busy explicit
port, too little disk or too few GPUs with --check's line and the fix; warn on another GPU model;
re-pick an automatic port. And `--check` closes with the fix that fits the failure."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from tests.fixtures.fake_nvml import eight_b200, four_2080ti
from tests.support.locations import ROOT
from tests.support.profiles import profile_from
from training.console import preflight
from training.console.check_table import START_RULES
from training.console.start_checks import StartRefused, check_start
from training.monitor.gpu import GpuBackend
from training.profile import load_profile


@pytest.fixture
def busy_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    yield s.getsockname()[1]
    s.close()


def _ddp_on(port: int, name: str = "busy"):
    return profile_from(f"""
[launch]
mode = "ddp"
nproc_per_node = 2
backend = "gloo"
rdzv_endpoint = "127.0.0.1:{port}"
[train]
task = "tiny"
""", name=name)


def test_the_table_has_one_row_per_case():
    assert [(r.check, r.on_start) for r in START_RULES] == [
        ("gpus", "refuse"), ("gpus", "warn"), ("select", "refuse"), ("select", "refuse"), ("port", "refuse"), ("port", "re-pick"), ("disk", "refuse"),
        ("locks", "refuse")]


def test_an_unsafe_lock_directory_is_refused_with_its_own_fix_even_with_queue(tmp_path, monkeypatch):
    from training.rundir.gpu_locks import LOCK_DIR_ENV

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    link = tmp_path / "locks"
    link.symlink_to(elsewhere)  # what a neighbour plants where the lock directory should be
    monkeypatch.setenv(LOCK_DIR_ENV, str(link))
    for queue in (False, True):
        with pytest.raises(StartRefused) as err:
            check_start(load_profile("4x2080ti", ["hardware.gpus=2", "launch.nproc_per_node=2"]), tmp_path,
                        backend=GpuBackend(nvml=four_2080ti(pids=[])), queue=queue)
        text = str(err.value)
        assert "[FAIL] locks:" in text and str(link) in text and "install -d -m 1777 -o root" in text, text
        assert "--queue' waits" not in text and "\n" not in text
    assert list(elsewhere.iterdir()) == []


def test_a_busy_explicit_port_is_refused_with_the_preflight_line_and_its_fix(tmp_path, busy_port):
    with pytest.raises(StartRefused) as err:
        check_start(_ddp_on(busy_port), tmp_path, backend=GpuBackend(nvml=eight_b200()))
    text = str(err.value)
    report = preflight.run_preflight(_ddp_on(busy_port), tmp_path, backend=GpuBackend(nvml=eight_b200()))
    port_line = next(line for line in report.lines if line.startswith("[FAIL] port"))
    assert port_line.rstrip(".") in text  # --check's own words
    assert f"free port {busy_port}" in text and "--rehearse" not in text
    assert "Nothing was started" in text and "\n" not in text


def test_fewer_gpus_than_wanted_is_refused_with_rehearse_and_cpu_fixes(tmp_path):
    with pytest.raises(StartRefused) as err:
        check_start(load_profile("8xb200-gnn"), tmp_path, backend=GpuBackend(nvml=four_2080ti()))
    text = str(err.value)
    assert "[FAIL] gpus: 8 wanted (B200), 4 found" in text
    assert "'run.py --profile 8xb200-gnn --rehearse'" in text and "'--set hardware.gpus=0'" in text
    # ... and the CPU fix does what it says: the same profile with gpus = 0 starts.
    assert check_start(load_profile("8xb200-gnn", ["hardware.gpus=0"]), tmp_path,
                       backend=GpuBackend(nvml=four_2080ti())) == []


def test_another_gpu_model_warns_and_an_automatic_port_is_not_checked_for_a_start(tmp_path):
    # An idle 8-GPU box: the 4 GPUs are free to take, only the model differs.
    warnings = check_start(load_profile("4x2080ti"), tmp_path, backend=GpuBackend(nvml=eight_b200(pids=[])))
    assert len(warnings) == 1 and "[warn] gpus: 4 wanted (2080 Ti)" in warnings[0] and "different model" in warnings[0]
    assert check_start(load_profile("cpu"), tmp_path, backend=GpuBackend(nvml=eight_b200())) == []


def test_too_little_disk_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(preflight, "MIN_FREE_DISK_GIB", 10**9)
    with pytest.raises(StartRefused) as err:
        check_start(load_profile("cpu"), tmp_path, backend=GpuBackend(nvml=eight_b200()))
    assert "[FAIL] disk:" in str(err.value) and "--runs-dir" in str(err.value)


def test_check_closes_with_the_fix_that_fits(tmp_path, busy_port):
    port_report = preflight.run_preflight(_ddp_on(busy_port), tmp_path, backend=GpuBackend(nvml=eight_b200()))
    assert port_report.lines[-1].startswith("preflight FAILED (port); nothing was started. Fix: free port")
    assert "--rehearse" not in port_report.lines[-1]
    gpu_report = preflight.run_preflight(load_profile("8xb200-gnn"), tmp_path,
                                         backend=GpuBackend(nvml=four_2080ti()))
    assert "preflight FAILED (gpus" in gpu_report.lines[-1] and "--rehearse" in gpu_report.lines[-1]


def test_run_py_refuses_a_busy_explicit_port_within_2_s(tmp_path, busy_port):
    profile = tmp_path / "busy.toml"
    profile.write_text(f'name = "busy"\n[launch]\nmode = "ddp"\nnproc_per_node = 2\nbackend = "gloo"\n'
                       f'rdzv_endpoint = "127.0.0.1:{busy_port}"\n[train]\ntask = "tiny"\n')
    runs_dir = tmp_path / "runs"
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, str(ROOT / "run.py"), "--profile", str(profile), "--headless",
                           "--runs-dir", str(runs_dir)], cwd=ROOT, capture_output=True, text=True, timeout=30)
    took = time.monotonic() - t0
    assert done.returncode == 2, done.stdout + done.stderr
    assert took < 2.0, f"refused after {took:.2f} s"
    assert done.stderr.startswith("traindeck: not starting profile busy: [FAIL] port: rendezvous "
                                  f"127.0.0.1:{busy_port} cannot be bound here: Address already in use.")
    assert "Traceback" not in done.stderr and not list(runs_dir.glob("*"))  # nothing was started
    check = subprocess.run([sys.executable, str(ROOT / "run.py"), "--check", "--profile", str(profile),
                            "--runs-dir", str(runs_dir)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert check.returncode == 1 and f"free port {busy_port}" in check.stdout
    assert "stop method on this box: " in check.stdout


def _shared_2080ti():
    """4 x 2080 Ti with processes of others on GPUs 0 and 2 (this test's own pid: a real, named one)."""
    fake = four_2080ti(pids=[])
    fake.set_processes(0, [(os.getpid(), 9_728)])
    fake.set_processes(2, [(999_999, 2_000)])
    return fake


def test_a_start_on_a_shared_box_takes_the_free_gpus(tmp_path):
    profile = load_profile("4x2080ti", ["hardware.gpus=2", "launch.nproc_per_node=2"])
    assert check_start(profile, tmp_path, backend=GpuBackend(nvml=_shared_2080ti())) == []


def test_a_start_whose_gpus_are_busy_is_refused_naming_who_and_the_fix(tmp_path):
    with pytest.raises(StartRefused) as err:
        check_start(load_profile("4x2080ti"), tmp_path, backend=GpuBackend(nvml=_shared_2080ti()))
    text = str(err.value)
    assert f"GPU 0 held by pid {os.getpid()}, user " in text and "9.5 GiB" in text
    assert "GPU 2 held by pid 999999, outside this container, 2.0 GiB" in text
    assert "'run.py --gpus'" in text and "--set hardware.gpus=N" in text
    assert "Nothing was started" in text and "\n" not in text


def test_a_select_the_box_can_never_meet_is_refused_without_suggesting_a_wait(tmp_path):
    profile = load_profile("4x2080ti", ["hardware.gpus=2", "launch.nproc_per_node=2", "hardware.select=3,4"])
    with pytest.raises(StartRefused) as err:
        check_start(profile, tmp_path, backend=GpuBackend(nvml=four_2080ti(pids=[])))
    text = str(err.value)
    assert "names GPU 4, but this box has 4 GPU(s)" in text and "change hardware.select" in text
    assert "run.py --gpus" not in text

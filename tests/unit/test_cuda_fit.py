"""A GPU profile never trains on the CPU without a word, and a box that cannot run it is named
before the start with the fix (issue 30, items 1, 2 and 10): torch that cannot use the GPUs NVML
sees (a driver older than the wheel), a wheel without the GPU's architecture, a container's small
/dev/shm. Fakes: monkeypatched torch.cuda / torch.version.cuda, the fake NVML, a fake statvfs."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from tests.fixtures.fake_nvml import FakeNvml, eight_b200, four_2080ti
from training.console.preflight import arch_check, cuda_check, shm_check
from training.engine import rank_main as worker_module
from training.engine import rank_setup
from training.engine.cuda_fit import runs_on
from training.monitor.gpu import GpuBackend
from training.profile import load_profile
from training.supervise.visibility import run_gpus

# The arch list of a CUDA 12.4 wheel: no sm_100, no PTX (a B200 has no kernel image in it).
CU124_ARCHS = ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"]


class RealLookingNvml(FakeNvml):
    """The fake NVML without its "simulated" mark: the worker treats these GPUs as real."""

    TRAINDECK_FAKE = False


def _cuda_wheel(monkeypatch, available: bool, count: int = 0, archs=CU124_ARCHS, cuda: str = "12.8"):
    monkeypatch.setattr(torch.version, "cuda", cuda)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: list(archs))


def test_a_driver_older_than_the_wheel_fails_preflight_with_the_driver_and_the_wheel_to_install(monkeypatch):
    _cuda_wheel(monkeypatch, available=False)
    fake = eight_b200()
    fake.cuda_driver_version = 12020  # R535: CUDA 12.2, the wheel wants 12.8
    backend = GpuBackend(nvml=fake)
    profile = load_profile("8xb200-gnn")
    check = cuda_check(profile, run_gpus(profile, backend, environ={}), backend)
    assert check is not None and not check.ok
    assert "12.2" in check.detail and "12.8" in check.detail and "whl/cu122" in check.detail


def test_torch_seeing_fewer_gpus_than_wanted_fails_and_enough_passes(monkeypatch):
    backend = GpuBackend(nvml=eight_b200())
    profile = load_profile("8xb200-gnn")
    visible = run_gpus(profile, backend, environ={})
    _cuda_wheel(monkeypatch, available=True, count=2)
    check = cuda_check(profile, visible, backend)
    assert not check.ok and "only 2" in check.detail
    _cuda_wheel(monkeypatch, available=True, count=8)
    assert cuda_check(profile, visible, backend).ok


def test_a_wheel_without_the_gpus_architecture_fails_preflight(monkeypatch):
    _cuda_wheel(monkeypatch, available=True, count=8)
    profile = load_profile("8xb200-gnn")
    check = arch_check(profile, run_gpus(profile, GpuBackend(nvml=eight_b200()), environ={}))
    assert check is not None and not check.ok
    assert "sm_100" in check.detail and "12.8" in check.detail and "no kernel image" in check.detail
    turing = load_profile("4x2080ti")
    assert arch_check(turing, run_gpus(turing, GpuBackend(nvml=four_2080ti()), environ={})).ok


def test_which_architectures_run_where():
    assert runs_on(["sm_80"], (8, 6)) and not runs_on(["sm_86"], (8, 0))
    assert not runs_on(CU124_ARCHS, (10, 0)) and runs_on(CU124_ARCHS + ["sm_100"], (10, 0))
    assert runs_on(["compute_90"], (10, 0))  # PTX: the driver compiles it
    assert not runs_on(["sm_90a"], (10, 0)) and runs_on(["sm_90a"], (9, 0))


def _statvfs(size: int, free: int):
    return lambda path: SimpleNamespace(f_blocks=size // 4096, f_bavail=free // 4096, f_frsize=4096)


def test_a_containers_64mb_dev_shm_fails_for_the_video_profiles_loader_workers():
    profile = load_profile("3xb200-video")  # ~308 MB a batch, 4 workers x 3 ranks on a 48-CPU box
    small = shm_check(profile, 8, statvfs=_statvfs(64 << 20, 64 << 20), cpus=48)
    assert small is not None and not small.ok
    assert "--ipc=host" in small.detail and "--shm-size" in small.detail and "medium: Memory" in small.detail
    assert "4 worker(s) x prefetch 2 x 3 rank(s)" in small.detail
    assert shm_check(profile, 8, statvfs=_statvfs(64 << 30, 64 << 30), cpus=48).ok
    # CPU ranks: no loader workers, no NCCL, nothing in /dev/shm to judge.
    assert shm_check(load_profile("cpu"), 0, statvfs=_statvfs(64 << 20, 64 << 20)) is None


def test_the_worker_refuses_to_train_a_gpu_profile_on_the_cpu_where_nvml_sees_gpus(monkeypatch):
    _cuda_wheel(monkeypatch, available=False)
    real = GpuBackend(nvml=RealLookingNvml(eight_b200().devices, cuda_driver_version=12020))
    problem = rank_setup.unusable_gpus(8, 0, backend=real, environ={})
    assert "12.2" in problem and "whl/cu122" in problem
    # The CPU build (make's default install): the same refusal, naming the CUDA wheel.
    monkeypatch.setattr(torch.version, "cuda", None)
    assert "CPU build" in rank_setup.unusable_gpus(8, 0, backend=real, environ={})
    # Nothing to refuse: no GPU wanted, GPUs hidden on purpose, or simulated GPUs (the CPU tests).
    assert rank_setup.unusable_gpus(0, 0, backend=real, environ={}) == ""
    assert rank_setup.unusable_gpus(8, 0, backend=real, environ={"CUDA_VISIBLE_DEVICES": ""}) == ""
    assert rank_setup.unusable_gpus(8, 0, backend=GpuBackend(nvml=eight_b200()), environ={}) == ""


def test_the_worker_fails_with_the_fix_instead_of_training(monkeypatch, tmp_path):
    from tests.support import engine

    paths = engine.make_run(tmp_path / "runs", '[hardware]\ngpus = 1\n[launch]\nmode = "single"\n'
                                               '[train]\ntask = "tiny"\n')
    monkeypatch.setattr(rank_setup, "unusable_gpus", lambda *a, **k: "NVML sees 1 GPU(s) ... install a CUDA torch")
    messages = []
    monkeypatch.setattr(worker_module, "build_trainer", lambda *a: pytest.fail("it went on to train"))
    monkeypatch.setattr(worker_module, "report", SimpleNamespace(
        configure=lambda *a, **k: None, flush=lambda: None, message=lambda m, **k: messages.append(m)))
    assert worker_module.main([str(paths.root)]) == 1
    assert messages and "CudaUnusable: NVML sees 1 GPU(s)" in messages[0]

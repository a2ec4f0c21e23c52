"""Preflight counts the GPUs a run will really see and refuses what they cannot do (issue 15,
items 4, 7 and 8), with the fake NVML."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.fixtures.fake_nvml import eight_b200, four_2080ti
from training.console.preflight import (
    amp_check,
    gpu_check,
    hardware_match,
    run_preflight,
    torch_check,
)
from training.monitor.gpu import GpuBackend
from training.profile import load_profile
from training.supervise.visibility import run_gpus

ROOT = Path(__file__).resolve().parents[2]


def _backend(fake):
    return GpuBackend(nvml=fake)


def test_bf16_on_turing_fails_preflight_and_suggests_fp16():
    profile = load_profile("4x2080ti", ["train.amp=bf16"])
    backend = _backend(four_2080ti())
    check = amp_check(profile, run_gpus(profile, backend, environ={}))
    assert check is not None and not check.ok
    assert "sm_75" in check.detail and 'train.amp = "fp16"' in check.detail


def test_bf16_on_b200_passes_and_fp16_on_turing_is_not_questioned():
    profile = load_profile("2xb200-rcl")
    check = amp_check(profile, run_gpus(profile, _backend(eight_b200()), environ={}))
    assert check.ok and "10.0" in check.detail
    turing = load_profile("4x2080ti")  # fp16
    assert amp_check(turing, run_gpus(turing, _backend(four_2080ti()), environ={})) is None


def test_the_oom_hint_never_suggests_bf16_on_turing(monkeypatch):
    from training.monitor import gpu
    from training.supervise.diagnosis import make_hint

    monkeypatch.setenv("TRAINDECK_FAKE_NVML", "tests.fixtures.fake_nvml:four_2080ti")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    gpu.reset_backend()
    try:
        profile = load_profile("4x2080ti", ["train.amp=off"])
        hint = make_hint("torch.OutOfMemoryError: CUDA out of memory", 0, profile)
        assert "bf16" not in hint.replace("no bf16", "") and "fp16" in hint
        monkeypatch.setenv("TRAINDECK_FAKE_NVML", "tests.fixtures.fake_nvml:eight_b200")
        gpu.reset_backend()
        assert 'train.amp = "bf16"' in make_hint("CUDA out of memory", 0, profile)
    finally:
        gpu.reset_backend()


@pytest.mark.parametrize("cvd, found, ok", [
    (None, 8, True),
    ("0,1,2", 3, False),
    ("", 0, False),
    ("5,7,1,0,2,3,4,6", 8, True),
    ("0,1,banana,2", 2, False),   # CUDA stops at the first entry it cannot parse
])
def test_preflight_counts_the_gpus_cuda_visible_devices_leaves(cvd, found, ok):
    profile = load_profile("8xb200-gnn")
    environ = {} if cvd is None else {"CUDA_VISIBLE_DEVICES": cvd}
    backend = _backend(eight_b200())
    assert run_gpus(profile, backend, environ).count == found
    check = gpu_check(profile, backend, environ)
    assert check.ok is ok
    assert f"{found} found" in check.detail


def test_the_profiles_launch_env_is_honoured_and_uuids_count_too():
    fake = eight_b200()
    backend = _backend(fake)
    profile = load_profile("2xb200-rcl")
    profile.launch.env["CUDA_VISIBLE_DEVICES"] = f"{fake.devices[6].uuid[:12]},{fake.devices[2].uuid}"
    visible = run_gpus(profile, backend, environ={"CUDA_VISIBLE_DEVICES": "0"})  # the profile's wins
    assert [d.index for d in visible.devices] == [6, 2]
    assert gpu_check(profile, backend, environ={}).ok


def test_a_gpu_in_mig_mode_is_not_a_whole_gpu():
    fake = eight_b200()
    fake.devices[3].mig = True
    backend = _backend(fake)
    profile = load_profile("8xb200-gnn")
    visible = run_gpus(profile, backend, environ={})
    assert visible.count == 7 and any("GPU 3 is in MIG mode" in n for n in visible.notes)
    check = gpu_check(profile, backend, environ={})
    assert not check.ok and "MIG" in check.detail
    assert hardware_match(profile, backend).startswith("NO 7/8")
    # MIG instances named by their uuid count one device each.
    two = load_profile("2xb200-rcl")
    on_migs = {"CUDA_VISIBLE_DEVICES": "MIG-aaaa,MIG-bbbb"}
    assert run_gpus(two, backend, environ=on_migs).count == 2
    # ... but one process gets one instance: its dp is refused with the fix (issue 30, item 4), ddp is fine.
    assert "dp cannot span MIG instances" in gpu_check(two, backend, environ=on_migs).detail
    two.launch.mode = "ddp"
    assert gpu_check(two, backend, environ=on_migs).ok


def test_torch_floor_is_2_3_for_the_grad_scaler():
    text = (ROOT / "pyproject.toml").read_text()
    floor = re.search(r'^\s*"torch>=2\.(\d+)",', text, re.MULTILINE)
    assert floor is not None and int(floor.group(1)) >= 3


def test_check_prints_torch_cuda_and_nccl_versions(tmp_path):
    import torch

    report = run_preflight(load_profile("cpu"), tmp_path, backend=_backend(eight_b200()))
    line = next(line for line in report.format().splitlines() if "torch " in line)
    assert f"torch {torch.__version__}" in line and "CUDA" in line and "NCCL" in line


def test_a_cpu_torch_on_a_gpu_box_fails_with_the_install_hint(monkeypatch):
    import torch

    monkeypatch.setattr(torch.version, "cuda", None)
    check = torch_check(load_profile("8xb200-gnn"), gpus_on_box=8)
    assert not check.ok and "download.pytorch.org/whl" in check.detail
    assert torch_check(load_profile("cpu"), gpus_on_box=8).ok

"""Which GPUs a run's processes see (issue 15, items 3 and 7): gpus = 0 means none, CUDA order is
PCI bus order like NVML's, and the user's own settings always win."""

from __future__ import annotations

import pytest
import torch

from tests.support.profiles import builtin_profile
from training.console.rehearse import rehearsal_profile
from training.engine.rank_setup import choose_device
from training.profile import load_profile
from training.supervise.launch import build_launch


def _env(profile, base=None):
    return build_launch(profile, "/tmp/run", port=29500, base_env=base or {}).environ(base or {})


def test_the_cpu_profile_hides_every_gpu_from_its_processes():
    env = _env(load_profile("cpu"))
    assert env["CUDA_VISIBLE_DEVICES"] == ""


def test_a_gpu_profile_keeps_the_gpus_visible():
    env = _env(load_profile("8xb200-gnn"))
    assert "CUDA_VISIBLE_DEVICES" not in env


@pytest.mark.parametrize("where", ["inherited", "profile"])
def test_the_users_cuda_visible_devices_wins(where):
    profile = load_profile("cpu")
    base = {"CUDA_VISIBLE_DEVICES": "3"} if where == "inherited" else {}
    if where == "profile":
        profile.launch.env["CUDA_VISIBLE_DEVICES"] = "3"
    assert _env(profile, base)["CUDA_VISIBLE_DEVICES"] == "3"


def test_cuda_device_order_is_pci_bus_order_unless_the_user_set_it():
    assert _env(load_profile("8xb200-gnn"))["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert _env(builtin_profile("single"))["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert _env(load_profile("8xb200-gnn"), {"CUDA_DEVICE_ORDER": "FASTEST_FIRST"})["CUDA_DEVICE_ORDER"] \
        == "FASTEST_FIRST"
    profile = load_profile("4xb200-chess")
    profile.launch.env["CUDA_DEVICE_ORDER"] = "FASTEST_FIRST"
    assert _env(profile)["CUDA_DEVICE_ORDER"] == "FASTEST_FIRST"


@pytest.mark.parametrize("name", ["8xb200-gnn", "2xb200-rcl", "cpu"])
def test_a_rehearsal_never_sees_the_gpus(name):
    scaled, _ = rehearsal_profile(load_profile(name), cores=2)
    assert _env(scaled)["CUDA_VISIBLE_DEVICES"] == ""


def test_gpus_zero_trains_on_the_cpu_even_where_cuda_is_visible():
    device, backend, notes = choose_device(0, "gloo", ddp=True, local_rank=1, cuda_count=8)
    assert device == torch.device("cpu") and backend == "gloo"
    assert any("CPU although CUDA is visible" in message for _, message in notes)
    device, _, _ = choose_device(0, "auto", ddp=False, local_rank=0, cuda_count=2)
    assert device == torch.device("cpu")


def test_gpu_ranks_get_their_gpu_and_extra_gloo_ranks_share():
    assert choose_device(8, "auto", True, 5, 8)[:2] == (torch.device("cuda", 5), "nccl")
    assert choose_device(1, "gloo", True, 1, 1)[:2] == (torch.device("cuda", 0), "gloo")
    assert choose_device(2, "auto", False, 0, 2)[:2] == (torch.device("cuda", 0), "")
    device, backend, notes = choose_device(2, "nccl", True, 0, 0)
    assert (device.type, backend) == ("cpu", "gloo") and notes

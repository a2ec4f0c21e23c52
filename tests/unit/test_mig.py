"""MIG (issue 30, items 4 and 5), with the fake NVML's mig_a100 (GPU 0 in MIG mode, two instances):
each ddp rank gets its own instance, dp over instances is refused with the fix, and a rank on an
instance is found on the GPU that holds it (by its MIG-<uuid>, else by PCI bus id)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from types import SimpleNamespace

import psutil
import pytest
import torch

from tests.fixtures import fake_nvml
from tests.support.profiles import builtin_profile, custom_profile
from traindeck.events import encode
from traindeck.heartbeat import Heartbeat
from traindeck.rank_device import RANK_DEVICES_ENV, program_argv, rank_device, use_rank_device
from training import PROJECT_ROOT
from training.engine.rank_setup import cuda_device_identities
from training.errors import TraindeckError
from training.monitor import gpu
from training.monitor.gpu import GpuBackend
from training.monitor.telemetry import TelemetrySampler
from training.monitor.watchdog import telemetry_gpu_util
from training.rundir import RunPaths
from training.supervise.launch import build_launch
from training.supervise.visibility import run_gpu_indices, visible_gpus


def _mig_uuids():
    return fake_nvml.mig_a100().devices[0].mig_uuids


def _launch(profile, cuda_visible):
    return build_launch(profile, "/tmp/run", port=29500, base_env={"CUDA_VISIBLE_DEVICES": cuda_visible})


# ------------------------------------------------------------------ NVML lists the instances


def test_nvml_lists_a_mig_gpus_instances():
    infos = GpuBackend(nvml=fake_nvml.mig_a100()).devices()
    assert infos[0].mig and infos[0].mig_uuids == tuple(_mig_uuids())
    assert not infos[1].mig and infos[1].mig_uuids == ()


def test_the_panels_show_the_gpu_that_holds_the_runs_instances(monkeypatch):
    # Before, any MIG entry meant "sample every GPU" (None): the panels showed GPU 1 too.
    devices = GpuBackend(nvml=fake_nvml.mig_a100()).devices()
    a, b = _mig_uuids()
    visible = visible_gpus(devices, f"{a},{b}")
    assert visible.count == 2 and [d.index for d in visible.mig_parents] == [0]
    monkeypatch.setenv(gpu.FAKE_NVML_ENV, "tests.fixtures.fake_nvml:mig_a100")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", f"{a},{b}")  # the user's, inherited by the supervisor
    gpu.reset_backend()
    try:
        spec = build_launch(custom_profile("argv_env.py", nproc=2), "/tmp/run", port=29500)
        assert run_gpu_indices(spec) == [0]
        assert visible_gpus(devices, "MIG-not-one-nvml-lists").mig_parents is None  # unknown: sample all
    finally:
        gpu.reset_backend()


# ------------------------------------------------------------------ item 4: a device per rank


def test_ddp_on_mig_gives_each_rank_its_own_instance():
    a, b = _mig_uuids()
    builtin = _launch(builtin_profile("ddp"), f"{a},{b}")
    # Before: no TRAINDECK_RANK_DEVICES; both ranks saw a,b and CUDA gave both of them `a`.
    assert builtin.env[RANK_DEVICES_ENV] == f"{a},{b}"
    assert builtin.argv[-3:] == ("-m", "training.worker", "/tmp/run")  # the worker narrows it itself
    custom = _launch(custom_profile("argv_env.py", args=["--x", "1"]), f"{a},{b}")
    script = str(PROJECT_ROOT / "tests/data/scripts/argv_env.py")
    assert custom.argv[-5:] == ("-m", "traindeck.rank_device", script, "--x", "1")
    assert custom.env[RANK_DEVICES_ENV] == f"{a},{b}"
    # Whole GPUs keep one CUDA_VISIBLE_DEVICES for all ranks (each picks its GPU by LOCAL_RANK).
    whole = _launch(custom_profile("argv_env.py"), "GPU-1111,GPU-2222")
    assert RANK_DEVICES_ENV not in whole.env and "traindeck.rank_device" not in whole.argv


def test_more_ranks_than_instances_say_they_share():
    a, b = _mig_uuids()
    spec = _launch(custom_profile("argv_env.py", nproc=4), f"{a},{b}")
    assert any("4 ranks on 2 MIG instance(s)" in n and "nproc_per_node = 2" in n for n in spec.notes)


def test_each_rank_narrows_cuda_visible_devices_to_its_entry():
    env = {RANK_DEVICES_ENV: "MIG-a,MIG-b", "LOCAL_RANK": "1", "CUDA_VISIBLE_DEVICES": "MIG-a,MIG-b"}
    assert use_rank_device(env) == "MIG-b" and env["CUDA_VISIBLE_DEVICES"] == "MIG-b"
    assert rank_device("MIG-a,MIG-b", 2) == "MIG-a"  # more ranks than instances share
    untouched = {"LOCAL_RANK": "1", "CUDA_VISIBLE_DEVICES": "0,1"}
    assert use_rank_device(untouched) is None and untouched["CUDA_VISIBLE_DEVICES"] == "0,1"


def test_the_builtin_worker_picks_its_device_before_torch_is_imported():
    tree = ast.parse((PROJECT_ROOT / "training/worker.py").read_text())
    order = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "use_rank_device":
            order.append((node.lineno, "narrow"))
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("training.engine"):
            order.append((node.lineno, "engine"))
    assert [what for _, what in sorted(order)][:1] == ["narrow"]


def test_the_shim_runs_a_script_as_python_script_would(tmp_path):
    """`python -m traindeck.rank_device SCRIPT ARGS`: the same process (torchrun watches its pid),
    the script's directory first on sys.path, the script's argv, the rank's own instance."""
    where = tmp_path / "code"
    where.mkdir()
    script = where / "train.py"
    script.write_text("import json, os, sys\n"
                      "print(json.dumps({'path0': sys.path[0], 'argv': sys.argv, 'pid': os.getpid(),\n"
                      "                  'name': __name__, 'cvd': os.environ['CUDA_VISIBLE_DEVICES']}))\n")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(PROJECT_ROOT), RANK_DEVICES_ENV: "MIG-a,MIG-b",
           "LOCAL_RANK": "1", "CUDA_VISIBLE_DEVICES": "MIG-a,MIG-b"}
    proc = subprocess.Popen([sys.executable, "-u", "-m", "traindeck.rank_device", str(script), "--lr", "0.1"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate(timeout=30)
    seen = json.loads(out)
    assert seen == {"path0": str(where), "argv": [str(script), "--lr", "0.1"], "pid": proc.pid,
                    "name": "__main__", "cvd": "MIG-b"}
    assert program_argv(["-m", "pkg.train", "x"], "python", ["-O"]) == ["python", "-O", "-m", "pkg.train", "x"]
    with pytest.raises(SystemExit, match="usage"):
        program_argv([], "python")


def test_dp_over_mig_instances_is_refused_with_the_fix():
    a, b = _mig_uuids()
    # Before: launched; DataParallel saw one device (CUDA's one instance) and trained on `a` alone.
    with pytest.raises(TraindeckError, match='dp cannot span MIG instances.*launch.mode = "ddp".*nproc_per_node = 2'):
        _launch(builtin_profile("dp", extra="[hardware]\ngpus = 2\n"), f"{a},{b}")
    _launch(builtin_profile("single", extra="[hardware]\ngpus = 1\n"), f"{a},{b}")  # one process, one instance: fine
    _launch(builtin_profile("dp", extra="[hardware]\ngpus = 2\n"), "GPU-1111,GPU-2222")  # whole GPUs: fine


# ------------------------------------------------------------------ item 5: the rank's UUID


def test_a_rank_on_a_mig_instance_names_its_mig_uuid(monkeypatch):
    a, _ = _mig_uuids()
    raw = a.removeprefix("MIG-")  # torch's properties: no prefix, a MIG instance's too
    props = SimpleNamespace(uuid=raw, pci_bus_id=0x18, pci_domain_id=0, pci_device_id=0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: props)
    # Before: always "GPU-" + raw, a UUID no NVML device has.
    assert cuda_device_identities([0], {"CUDA_VISIBLE_DEVICES": a}) == [{"uuid": a, "pci_bus_id": "0000:18:00.0"}]
    assert cuda_device_identities([0], {"CUDA_VISIBLE_DEVICES": "0"})[0]["uuid"] == "GPU-" + raw


def _unused_pid() -> int:
    pid = 4_100_000
    while psutil.pid_exists(pid):
        pid += 1
    return pid


def test_ranks_on_mig_instances_are_on_their_gpu_and_the_watchdog_sees_its_load(tmp_path):
    fake = fake_nvml.mig_a100()
    fake.set_processes(0, [(_unused_pid(), 20_000)])  # a container's host PID: matches no rank
    a, b = fake.devices[0].mig_uuids
    for rank, uuid in ((0, a), (1, b.lower().removeprefix("mig-"))):
        hb = Heartbeat(tmp_path, rank)
        hb.devices = [{"uuid": uuid, "pci_bus_id": None}]
        hb.beat(3, force=True)
    # Rank 2 on GPU 1 known by its PCI bus id alone, in NVML's spelling (domain 00000000, capitals).
    hb = Heartbeat(tmp_path, 2)
    hb.devices = [{"uuid": None, "pci_bus_id": fake.devices[1].pci_bus_id.upper()}]
    hb.beat(3, force=True)
    paths = RunPaths(tmp_path)
    sampler = TelemetrySampler(paths, 1.0, dict, backend=GpuBackend(nvml=fake))
    sampler.source = "fake-nvml"
    line = sampler.sample()
    # Before: [] and [] (matched by the GPU's own UUID only): the panels said "no rank".
    assert [g["ranks"] for g in line["gpus"]] == [[0, 1], [2]]
    paths.telemetry.write_bytes(encode(line))
    util = telemetry_gpu_util(paths)
    assert util(1) == line["gpus"][0]["util"] and util(1) > 0


def test_preflight_fails_dp_over_mig_instances_with_the_fix():
    from training.console.preflight import gpu_check

    a, b = _mig_uuids()
    profile = builtin_profile("dp", extra="[hardware]\ngpus = 2\n")
    check = gpu_check(profile, GpuBackend(nvml=fake_nvml.mig_a100()), {"CUDA_VISIBLE_DEVICES": f"{a},{b}"})
    assert not check.ok and "dp cannot span MIG instances" in check.detail and 'launch.mode = "ddp"' in check.detail


def test_preflight_warns_that_nccl_refuses_ranks_on_instances_of_one_gpu():
    from training.console.preflight import gpu_check

    a, b = _mig_uuids()
    backend = GpuBackend(nvml=fake_nvml.mig_a100())
    on_one_gpu = {"CUDA_VISIBLE_DEVICES": f"{a},{b}"}
    ddp = builtin_profile("ddp", extra="[hardware]\ngpus = 2\n")
    ddp.launch.backend = "nccl"
    check = gpu_check(ddp, backend, on_one_gpu)
    assert check.ok and check.warning and "Duplicate GPU detected" in check.detail and "GPU 0" in check.detail
    ddp.launch.backend = "gloo"  # gloo ranks share a GPU's instances fine
    assert not gpu_check(ddp, backend, on_one_gpu).warning

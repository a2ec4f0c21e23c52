"""[hardware] select on a shared box, with the fake NVML: which GPUs a start takes, and why not."""

from __future__ import annotations

import pytest

from tests.fixtures.fake_nvml import four_2080ti
from training.monitor.gpu import GpuBackend
from training.profile import ProfileError, load_profile
from training.supervise import gpu_select
from training.supervise.gpu_select import Holder, automatic_mode, gpu_states, lock_key, select_gpus

OTHERS = {4312: ("alice", "python", False), 5120: ("bob", "jupyter", False)}


def _describe(pid):
    return OTHERS.get(pid, (None, None, True))


def _shared_box():
    """4 x 2080 Ti; alice's pid 4312 on GPU 0 (9.5 GiB), bob's 5120 on GPU 2."""
    fake = four_2080ti(pids=[])
    fake.set_processes(0, [(4312, 9_728)])
    fake.set_processes(2, [(5120, 2_000)])
    return fake


def _states(fake, held=None):
    return gpu_states(GpuBackend(nvml=fake), held, describe=_describe)


def _uuids(*indices: int) -> str:
    """What the launch's CUDA_VISIBLE_DEVICES says for these GPUs of four_2080ti: their UUIDs."""
    devices = four_2080ti(pids=[]).devices
    return ",".join(devices[i].uuid for i in indices)


def test_two_gpus_wanted_take_the_two_nobody_holds():
    sel = select_gpus(_states(_shared_box()), 2)
    assert sel.ok and sel.mode == "free"
    assert sel.gpus == (1, 3) and sel.cuda_visible == _uuids(1, 3)


def test_four_gpus_wanted_are_refused_with_who_holds_them():
    sel = select_gpus(_states(_shared_box()), 4)
    assert not sel.ok and not sel.never and sel.gpus is None
    text = sel.why_busy()
    assert "GPU 0 held by pid 4312, user alice, python, 9.5 GiB" in text
    assert "GPU 2 held by pid 5120, user bob" in text
    assert "GPU 1" not in text and "GPU 3" not in text


def test_a_pid_this_process_table_lacks_is_outside_this_container():
    fake = four_2080ti(pids=[])
    fake.set_processes(1, [(999_999, 5_000)])
    sel = select_gpus(_states(fake), 4)
    assert sel.why_busy() == "GPU 1 held by pid 999999, outside this container, 4.9 GiB"


def test_memory_used_without_a_listed_process_is_not_free():
    """Another container's process: NVML reports its memory but lists no pid we could name."""
    import dataclasses

    backend = GpuBackend(nvml=four_2080ti(pids=[]))
    real = backend.sample
    backend.sample = lambda: [dataclasses.replace(s, mem_used_mib=8_000) if s.index == 3 else s for s in real()]
    states = gpu_states(backend, describe=_describe)
    assert states[3].holders == (Holder(3, mem_mib=8_000),)
    assert states[3].holders[0].describe() == ("GPU 3: 7.8 GiB used by processes NVML does not list "
                                               "(outside this container?)")
    assert select_gpus(states, 3).gpus == (0, 1, 2)


def test_a_gpu_locked_by_another_traindeck_run_names_the_run_and_user():
    fake = four_2080ti(pids=[])
    states = _states(fake)
    held = {lock_key(1, states[1].uuid): {"run_id": "20260101-120000-cpu", "user": "carol", "pid": 77}}
    sel = select_gpus(_states(fake, held), 4)
    assert sel.why_busy() == "GPU 1 held by traindeck run 20260101-120000-cpu, user carol, pid 77"
    assert select_gpus(_states(fake, held), 3).gpus == (0, 2, 3)


def test_the_default_is_free_on_a_bigger_or_busy_box_and_all_on_an_idle_exact_one():
    idle = _states(four_2080ti(pids=[]))
    assert automatic_mode(4, idle) == "all" and automatic_mode(2, idle) == "free"
    assert automatic_mode(4, _states(_shared_box())) == "free"
    assert select_gpus(idle, 4).cuda_visible == _uuids(0, 1, 2, 3)


def test_an_explicit_list_takes_exactly_those_and_says_when_they_are_busy():
    states = _states(_shared_box())
    assert select_gpus(states, 2, (1, 3)).cuda_visible == _uuids(1, 3)
    busy = select_gpus(states, 2, (0, 1))
    assert not busy.ok and busy.busy == (Holder(0, 4312, "alice", 9_728, command="python"),)


def test_what_the_box_can_never_satisfy_says_so():
    states = _states(_shared_box())
    assert "this box has 4 usable" in select_gpus(states, 8).never
    assert "names GPU 7, but this box has 4 GPU(s)" in select_gpus(states, 2, (1, 7)).never


def test_a_cuda_visible_devices_the_user_set_wins():
    states = _states(_shared_box())
    sel = select_gpus(states, 2, "free", user_cuda_visible="0,1")
    assert sel.mode == "user" and sel.gpus == (0, 1) and sel.cuda_visible is None
    assert not sel.ok and "GPU 0 held by pid 4312" in sel.why_busy()


def test_the_taken_gpus_are_named_by_uuid_whatever_the_users_device_order():
    """Issue 30, item 9: "1,3" means CUDA's GPUs 1 and 3, which are NVML's only under PCI_BUS_ID
    order; under a user's FASTEST_FIRST the run trained on GPUs it had not locked."""
    from training.supervise.launch import build_launch
    from training.supervise.visibility import visible_gpus

    fake = _shared_box()
    sel = select_gpus(_states(fake), 2)
    spec = build_launch(load_profile("4x2080ti"), "/tmp/run", port=29500,
                        base_env={"CUDA_DEVICE_ORDER": "FASTEST_FIRST"}, cuda_visible=sel.cuda_visible)
    env = spec.environ({"CUDA_DEVICE_ORDER": "FASTEST_FIRST"})
    assert env["CUDA_DEVICE_ORDER"] == "FASTEST_FIRST"  # the user's order is kept ...
    assert env["CUDA_VISIBLE_DEVICES"] == f"{fake.devices[1].uuid},{fake.devices[3].uuid}"  # ... and harmless
    assert sel.uuids == (fake.devices[1].uuid, fake.devices[3].uuid)
    # What reads CUDA_VISIBLE_DEVICES back (the panels' GPUs, preflight) finds the same two.
    devices = GpuBackend(nvml=fake).devices()
    assert [d.index for d in visible_gpus(devices, env["CUDA_VISIBLE_DEVICES"]).devices] == [1, 3]


def test_no_gpu_wanted_or_none_on_the_box_selects_nothing():
    assert select_gpus(_states(_shared_box()), 0).mode == "none"
    assert select_gpus([], 4).mode == "none"


@pytest.mark.parametrize("value, ok", [("free", True), ("all", True), ("0,1", True), ("0, 2", True),
                                       ("some", False), ("1,1", False), ("-1", False)])
def test_the_profile_key_is_checked(value, ok):
    if ok:
        load_profile("cpu", [f"hardware.select={value}"])
    else:
        with pytest.raises(ProfileError, match="hardware.select"):
            load_profile("cpu", [f"hardware.select={value}"])


def test_user_cuda_visible_comes_from_the_profile_before_the_environment():
    p = load_profile("cpu", ["launch.env.CUDA_VISIBLE_DEVICES=3"])
    assert gpu_select.user_cuda_visible(p, {"CUDA_VISIBLE_DEVICES": "1"}) == "3"
    assert gpu_select.user_cuda_visible(load_profile("cpu"), {"CUDA_VISIBLE_DEVICES": "1"}) == "1"
    assert gpu_select.user_cuda_visible(load_profile("cpu"), {}) is None


# ------------------------------------------------------------------ through the supervisor


@pytest.mark.slow
def test_the_supervisor_launches_on_the_free_gpus_and_holds_them_for_the_run(runs_dir, monkeypatch):
    from tests.support.live_runs import wait_done
    from tests.support.profiles import custom_profile
    from training.console import runs
    from training.monitor import gpu
    from training.rundir import read_json, read_run_json
    from training.rundir.gpu_locks import GpuLocks, lock_dir_for

    monkeypatch.setenv(gpu.FAKE_NVML_ENV, "tests.fixtures.fake_nvml:shared_2080ti")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    two = custom_profile("argv_env.py", mode="single", extra="[hardware]\ngpus = 2\n")
    paths = runs.start_run(two, runs_dir)
    wait_done(paths, 40)  # the supervisor gone: its locks released, its last event written
    data = read_run_json(paths)
    assert data["env"]["CUDA_VISIBLE_DEVICES"] == _uuids(1, 3)
    assert data["gpus"]["indices"] == [1, 3] and data["gpus"]["select"] == "free"
    assert ",".join(data["gpus"]["uuids"]) == _uuids(1, 3)
    assert read_json(paths.exit_json)["state"] == "finished"
    assert GpuLocks(lock_dir_for()).held() == {}  # released with the run

    four = custom_profile("argv_env.py", mode="single", name="four", extra="[hardware]\ngpus = 4\n")
    paths = runs.start_run(four, runs_dir)  # past the console's check: the supervisor refuses too
    wait_done(paths, 40)  # the supervisor gone: its locks released, its last event written
    exit_data = read_json(paths.exit_json)
    assert exit_data["state"] == "failed" and "GPUs busy" in exit_data["message"]
    assert "GPU 0 held by pid 4190001, outside this container, 9.5 GiB" in exit_data["message"]
    assert "run.py --gpus" in exit_data["hint"]
    assert not (paths.root / "argv_env.json").exists()  # nothing was launched

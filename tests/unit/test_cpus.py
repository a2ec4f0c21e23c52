"""The CPUs threads and workers are sized from: the affinity mask capped by the cgroup's CPU quota,
read from a fake /proc + /sys/fs/cgroup tree (issue 30, item 3: os.cpu_count() counted a 224-core
host's cores inside a 16-CPU pod)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from training import cpus
from training.cpus import cpu_budget
from training.engine.data import make_data
from training.supervise import launch
from training.tasks import load_task_module


def tree(root: Path, cgroup: str, files: dict[str, str]) -> Path:
    (root / "proc/self").mkdir(parents=True)
    (root / "proc/self/cgroup").write_text(cgroup)
    for rel, text in files.items():
        path = root / "sys/fs/cgroup" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


HOST = range(224)


@pytest.mark.parametrize("cgroup, files, usable, quota", [
    # cgroup v2 in a container (its own namespace: path "/"): docker --cpus 16
    ("0::/\n", {"cpu.max": "1600000 100000\n"}, 16, 16.0),
    ("0::/\n", {"cpu.max": "max 100000\n"}, 224, None),
    # 1.5 CPUs still runs two threads, throttled
    ("0::/\n", {"cpu.max": "150000 100000\n"}, 2, 1.5),
    # v2 on a host: the smallest quota on the way up counts (a parent slice of 8, a child of 32)
    ("0::/kubepods.slice/pod1/ctr\n", {"kubepods.slice/pod1/cpu.max": "800000 100000",
                                       "kubepods.slice/pod1/ctr/cpu.max": "3200000 100000"}, 8, 8.0),
    # cgroup v1, the host's path in /proc/self/cgroup but the container's own mount
    ("4:cpu,cpuacct:/docker/abc\n", {"cpu,cpuacct/cpu.cfs_quota_us": "400000\n",
                                      "cpu,cpuacct/cpu.cfs_period_us": "100000\n"}, 4, 4.0),
    ("4:cpu,cpuacct:/\n", {"cpu,cpuacct/cpu.cfs_quota_us": "-1\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"},
     224, None),
    # no cgroup files at all (not Linux, a locked-down /sys)
    ("", {}, 224, None),
])
def test_the_quota_caps_the_affinity_mask(tmp_path, cgroup, files, usable, quota):
    budget = cpu_budget(tree(tmp_path, cgroup, files), affinity=HOST)
    assert (budget.usable, budget.quota) == (usable, quota)


def test_the_affinity_mask_caps_a_larger_quota(tmp_path):
    budget = cpu_budget(tree(tmp_path, "0::/\n", {"cpu.max": "6400000 100000"}), affinity=range(4))
    assert budget.usable == 4 and "cgroup quota 64 CPUs" in budget.describe()


def test_threads_and_workers_are_sized_from_the_usable_cpus_not_the_host(monkeypatch, tmp_path):
    # A 16-CPU pod on a 224-core box: 8 ranks get 2 OpenMP threads each and one loader worker
    # (os.cpu_count() gave 28 threads and 4 workers per rank).
    monkeypatch.setattr("os.cpu_count", lambda: 224)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(224)))
    monkeypatch.setattr(cpus, "FS_ROOT", tree(tmp_path, "0::/\n", {"cpu.max": "1600000 100000"}))
    env = launch._env(_ddp_profile(8), tmp_path / "run", 8, base={})
    assert env["OMP_NUM_THREADS"] == "2"
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    task = load_task_module("tiny").build({"samples": 64, "features": 4, "hidden": 8, "classes": 2,
                                           "noise": 0.1}, seed=0)
    T = SimpleNamespace(seed=0, batch_size=2, grad_accum=1, steps_per_epoch=0, num_workers=-1)
    assert make_data(*task.datasets(), T, "ddp", torch.device("cuda", 0), 0, 8).num_workers == 1


def _ddp_profile(nproc: int):
    from training.profile import parse_profile

    return parse_profile(f'[launch]\nmode = "ddp"\nnproc_per_node = {nproc}\n[train]\ntask = "tiny"\n')

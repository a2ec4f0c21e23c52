"""Which stop method a box gets (training.rundir.cgroups.detect), against a fake cgroup root
directory, and the run cgroup's files; one real check where this box has a writable cgroup v2."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from training.rundir.cgroups import CGROUP_ENV, CgroupSupport, RunCgroup, detect, run_key

V2_ONLY = "36 25 0:30 / {root} rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"
V1_ONLY = "30 25 0:26 / /sys/fs/cgroup/memory rw,relatime shared:9 - cgroup cgroup rw,memory\n"
MINE = "0::/user.slice/user-1000.slice/session-3.scope\n"


def fake_root(tmp_path, own="user.slice/user-1000.slice/session-3.scope", kill=True):
    root = tmp_path / "cgroup"
    me = root / own
    me.mkdir(parents=True)
    (me / "cgroup.procs").write_text(f"{os.getpid()}\n")
    if kill:
        (me / "cgroup.kill").write_text("")
    return root, me


def test_a_writable_delegated_subtree_gets_cgroup_kill(tmp_path):
    root, me = fake_root(tmp_path)
    support = detect(V1_ONLY + V2_ONLY.format(root=root), MINE, environ={}, probe=False)
    assert support == CgroupSupport(True, me, f"cgroup v2 at {root}, writable")
    assert support.method == "cgroup" and "cgroup.kill" in support.describe()


def test_cgroup_v1_only_falls_back_to_the_scan():
    support = detect(V1_ONLY, "4:memory:/x\n", environ={})
    assert not support.usable and support.method == "process table"
    assert "cgroup v1 only" in support.reason
    assert "TRAINDECK_RUN_DIR" in support.describe() and "can only be reported" in support.describe()


def test_a_kernel_without_cgroup_kill_falls_back(tmp_path):
    root, me = fake_root(tmp_path, kill=False)
    support = detect(V2_ONLY.format(root=root), MINE, environ={}, probe=False)
    assert not support.usable and "cgroup.kill" in support.reason and "5.14" in support.reason


def test_the_probe_sees_no_cgroup_kill_in_a_plain_directory(tmp_path):
    # A real child cgroup gets cgroup.kill from the kernel; an mkdir in a plain directory does not.
    root, me = fake_root(tmp_path)
    support = detect(V2_ONLY.format(root=root), MINE, environ={}, probe=True)
    assert not support.usable and "cgroup.kill" in support.reason
    assert [p.name for p in me.iterdir() if p.is_dir()] == []  # the probe cleaned up


@pytest.mark.skipif(os.getuid() == 0, reason="root may write anywhere: permission bits do not stop it")
def test_a_subtree_this_user_may_not_write_falls_back(tmp_path):
    root, me = fake_root(tmp_path)
    me.chmod(0o555)
    try:
        support = detect(V2_ONLY.format(root=root), MINE, environ={}, probe=False)
    finally:
        me.chmod(0o755)
    assert not support.usable and "not writable" in support.reason


def test_not_writable_is_detected_even_as_root(tmp_path, monkeypatch):
    root, me = fake_root(tmp_path)
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    support = detect(V2_ONLY.format(root=root), MINE, environ={}, probe=False)
    assert not support.usable and "not writable by this user" in support.reason


def test_our_cgroup_missing_under_the_mount_and_no_v2_line(tmp_path):
    root, _ = fake_root(tmp_path)
    assert "does not exist" in detect(V2_ONLY.format(root=root), "0::/elsewhere\n", environ={}).reason
    assert "no 0:: line" in detect(V2_ONLY.format(root=root), "4:memory:/x\n", environ={}).reason


def test_turned_off_by_the_environment(tmp_path):
    root, _ = fake_root(tmp_path)
    support = detect(V2_ONLY.format(root=root), MINE, environ={CGROUP_ENV: "off"}, probe=False)
    assert not support.usable and support.reason == f"turned off by {CGROUP_ENV}=off"


def test_run_cgroup_files_in_a_fake_root(tmp_path):
    root, me = fake_root(tmp_path)
    support = detect(V2_ONLY.format(root=root), MINE, environ={}, probe=False)
    key = run_key(tmp_path / "runs" / "20261201-120000-spin")
    group = RunCgroup.create(support, key)
    assert group.path == me / f"traindeck-{key}" and group.path.is_dir()
    assert key.startswith("20261201-120000-spin-")
    (group.path / "cgroup.procs").write_text("12\n13\n")
    (group.path / "inner").mkdir()
    (group.path / "inner" / "cgroup.procs").write_text("14\n")
    assert group.pids() == [12, 13, 14]
    (group.path / "cgroup.events").write_text("populated 1\nfrozen 0\n")
    assert group.populated()
    (group.path / "cgroup.kill").write_text("")
    assert group.kill() and (group.path / "cgroup.kill").read_text() == "1"
    # run.json's cgroup is used only when it is this run's and exists: never another cgroup.
    assert RunCgroup.recorded(str(group.path), key) == group
    assert RunCgroup.recorded(str(me), key) is None
    assert RunCgroup.recorded(str(group.path), run_key(tmp_path / "runs" / "20261201-120000-other")) is None
    assert RunCgroup.recorded(None, key) is None
    assert RunCgroup.create(CgroupSupport(False, None, "no"), "x") is None


def test_runs_with_the_same_id_in_two_runs_directories_get_two_cgroups(tmp_path):
    """Run ids are a timestamp and a profile name: two users (or two test sessions) starting the
    same profile in the same second share one. A shared cgroup would let one stop kill the other."""
    root, me = fake_root(tmp_path)
    support = detect(V2_ONLY.format(root=root), MINE, environ={}, probe=False)
    alice = RunCgroup.create(support, run_key(tmp_path / "alice" / "20261201-120000-cpu"))
    bob = RunCgroup.create(support, run_key(tmp_path / "bob" / "20261201-120000-cpu"))
    assert alice.path != bob.path and alice.path.is_dir() and bob.path.is_dir()
    assert RunCgroup.recorded(str(alice.path), run_key(tmp_path / "bob" / "20261201-120000-cpu")) is None


REAL = detect()


@pytest.mark.skipif(not REAL.usable, reason=f"this box has no writable cgroup v2: {REAL.reason}")
def test_on_this_box_a_process_that_joins_before_exec_and_its_detached_child_die_by_cgroup_kill():
    group = RunCgroup.create(REAL, f"unit-test-{os.getpid()}")
    fd = group.open_procs()
    try:
        code = ("import os, time, subprocess, sys\n"
                "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], start_new_session=True)\n"
                "time.sleep(60)")
        proc = subprocess.Popen([sys.executable, "-c", code], preexec_fn=lambda: RunCgroup.join_in_child(fd))
    finally:
        os.close(fd)
    try:
        from tests.support.waiting import wait_for

        wait_for(lambda: len(group.pids()) == 2, 10, "both processes in the cgroup")
        assert group.kill()
        assert group.wait_empty(5)
        assert proc.wait(5) == -9
    finally:
        if proc.poll() is None:
            proc.kill()
        group.kill()
        group.wait_empty(5)
        assert group.remove() and not group.path.exists()

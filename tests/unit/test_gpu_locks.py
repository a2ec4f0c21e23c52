"""The GPU locks (training.rundir.gpu_locks): whole sets at once, crash-safe, first come first served."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from tests.support.locations import ROOT
from training.rundir.gpu_locks import LOCK_DIR_ENV, GpuLocks, lock_dir_for


def _take(keys):
    return lambda held: (None, f"held: {sorted(held)}") if set(keys) & set(held) else (list(keys), "taken")


def test_a_set_is_taken_whole_or_not_at_all(tmp_path):
    locks = GpuLocks(tmp_path)
    first, _ = locks.acquire(_take(["a", "b"]), {"run_id": "r1"}, wait=False)
    assert first is not None and set(locks.held()) == {"a", "b"}
    assert locks.held()["a"]["run_id"] == "r1" and locks.held()["a"]["pid"] == os.getpid()
    # A start wanting b and c gets neither: c is not left locked by the failed try.
    none, why = locks.acquire(_take(["b", "c"]), {"run_id": "r2"}, wait=False)
    assert none is None and why == "held: ['a', 'b']" and set(locks.held()) == {"a", "b"}
    # The same locks taken underneath the chooser's back: still none of them.
    sneaky, why = locks.acquire(lambda held: (["c", "b"], "x"), {"run_id": "r3"}, wait=False)
    assert sneaky is None and "a moment ago" in why and set(locks.held()) == {"a", "b"}
    first.release()
    assert locks.held() == {}


def test_the_lock_directory_comes_from_the_environment_then_the_profile_then_tmp():
    assert lock_dir_for("/shared/locks", {LOCK_DIR_ENV: "/env/locks"}) == lock_dir_for("", {LOCK_DIR_ENV: "/env/locks"})
    assert str(lock_dir_for("/shared/locks", {})) == "/shared/locks"
    assert str(lock_dir_for("", {})) == "/tmp/traindeck-gpu-locks"


def test_a_waiting_start_waits_its_turn_and_a_non_waiting_one_does_not_jump_the_queue(tmp_path):
    locks = GpuLocks(tmp_path)
    holder, _ = locks.acquire(_take(["a"]), {"run_id": "r1"}, wait=False)
    seen = []

    def on_wait(place, why):
        seen.append((place, why))
        # While r2 waits (it holds a ticket), a start that does not queue is refused, naming r2.
        jumper, jumper_why = locks.acquire(_take(["z"]), {"run_id": "r3"}, wait=False)
        assert jumper is None and "r2" in jumper_why and "already wait" in jumper_why
        if len(seen) == 3:
            holder.release()

    got, payload = locks.acquire(_take(["a"]), {"run_id": "r2"}, wait=True, on_wait=on_wait, sleep=lambda s: None)
    assert got is not None and payload == "taken" and len(seen) == 3
    assert seen[0] == (1, "held: ['a']")
    assert locks.queue() == []  # the ticket is gone once served


def test_a_stop_while_queued_leaves_no_ticket(tmp_path):
    locks = GpuLocks(tmp_path)
    holder, _ = locks.acquire(_take(["a"]), {"run_id": "r1"}, wait=False)
    got, why = locks.acquire(_take(["a"]), {"run_id": "r2"}, wait=True, should_stop=lambda: True,
                             sleep=lambda s: None)
    assert got is None and why == "stopped" and locks.queue() == []
    holder.release()


def _racer(name, rounds, occupant, mode="hold"):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "tests.support.gpu_racer", name, str(rounds), str(occupant), mode],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_traindeck_processes_racing_for_the_same_gpus_50_times_never_overlap(tmp_path):
    occupant = tmp_path / "occupant"
    racers = [_racer(name, 50, occupant) for name in ("alice-run", "bob-run")]
    occupant.with_name("go").touch()
    outputs = [r.communicate(timeout=120) for r in racers]
    waited = 0
    for r, (out, err) in zip(racers, outputs, strict=True):
        assert r.returncode == 0, err
        *rounds, last = out.split()
        assert len(rounds) == 50 and set(rounds) == {"ok"}, out
        waited += int(last.removeprefix("waited="))
    assert waited > 0  # they did race: some looks found the GPUs taken by the other


def test_a_crashed_holder_frees_its_gpus_and_its_lock_files_are_no_obstacle(tmp_path):
    racer = _racer("crashes", 1, tmp_path / "occupant", "crash")
    try:
        assert racer.stdout.readline().strip() == "held"
        locks = GpuLocks(lock_dir_for())
        held = locks.held()
        assert len(held) == 2 and {h["run_id"] for h in held.values()} == {"crashes"}
        os.kill(racer.pid, signal.SIGKILL)
        racer.wait(timeout=10)
        assert locks.held() == {}  # the files stay; nobody holds them
        assert len(list(locks.dir.glob("gpu-*.lock"))) == 2
        got, _ = locks.acquire(_take(sorted(held)), {"run_id": "next"}, wait=False)
        assert got is not None
        got.release()
    finally:
        if racer.poll() is None:
            racer.kill()
            racer.wait()


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anything")
def test_an_unwritable_lock_directory_is_one_clear_paragraph(tmp_path):
    from training.errors import TraindeckError

    locked = tmp_path / "ro"
    locked.mkdir(mode=0o500)
    with pytest.raises(TraindeckError, match=r"cannot use the GPU lock directory .*TRAINDECK_GPU_LOCK_DIR"):
        GpuLocks(locked / "locks").acquire(_take(["a"]), {}, wait=False)

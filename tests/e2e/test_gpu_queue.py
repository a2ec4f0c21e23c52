"""The GPU queue end to end (issue 20): `run.py --queue` on a shared box waits in the supervisor,
not the console, shows its place and what it waits for, starts when the GPUs free up, and is
cancelled by `--stop`.

The box is the fake 4 x 2080 Ti whose processes come from a file (shared_2080ti_from_file), so
the test makes someone else's jobs on GPUs 0 and 2 go away while the run waits. The foreign pids
are not in this process table: they read "outside this container", as another container's would.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.fake_nvml import PROCS_FILE_ENV, four_2080ti, write_procs_file
from tests.support.locations import ROOT
from tests.support.profiles import builtin_profile
from tests.support.waiting import wait_for
from training.monitor import gpu
from training.rundir import RunPaths, list_run_dirs, read_json, read_run_json
from training.rundir.events_file import read_tail
from training.rundir.gpu_locks import GpuLocks, lock_dir_for

FOREIGN = {0: [(4_190_001, 9_728)], 2: [(4_190_002, 2_000)]}  # 9.5 GiB on GPU 0, 2.0 GiB on GPU 2

pytestmark = pytest.mark.slow


@pytest.fixture
def shared_box(tmp_path, monkeypatch):
    """Others' jobs on GPUs 0 and 2 of 4; `shared_box.free()` ends them. Subprocesses (run.py,
    the supervisor) see the same box through the environment."""
    procs = tmp_path / "gpu-procs.json"
    write_procs_file(procs, FOREIGN)
    monkeypatch.setenv(gpu.FAKE_NVML_ENV, "tests.fixtures.fake_nvml:shared_2080ti_from_file")
    monkeypatch.setenv(PROCS_FILE_ENV, str(procs))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    gpu.reset_backend()

    class Box:
        @staticmethod
        def free() -> None:
            write_procs_file(procs, {})

    yield Box
    gpu.reset_backend()


def _profile_file(tmp_path, gpus: int, name: str):
    """The built-in tiny task, a few steps, on `gpus` (fake) GPUs: the worker trains on the CPU."""
    profile = builtin_profile("single", steps=4, samples=256, features=8, hidden=8, log_every=2, name=name,
                              extra=f"[hardware]\ngpus = {gpus}\n")
    path = tmp_path / f"{name}.toml"
    path.write_text(profile.to_toml())
    return path


def _queued_console(tmp_path: Path, runs_dir: Path) -> tuple[subprocess.Popen, Path]:
    """`run.py --profile four --queue --headless` on the shared box, its output in console.out."""
    four = _profile_file(tmp_path, 4, "four")
    out = tmp_path / "console.out"
    with open(out, "w") as sink:
        console = subprocess.Popen([sys.executable, str(ROOT / "run.py"), "--profile", str(four), "--queue",
                                    "--headless", "--runs-dir", str(runs_dir)], cwd=ROOT, stdout=sink,
                                   stderr=subprocess.STDOUT, text=True)
    return console, out


def _statuses(paths: RunPaths) -> list[dict]:
    return [e for e in read_tail(paths.events, 1 << 20) if e.get("kind") == "status"]


def test_a_queued_run_survives_its_console_killed_and_starts_when_the_gpus_free_up(tmp_path, runs_dir, shared_box):
    from training.console.runs import format_runs_table, list_runs

    console, out = _queued_console(tmp_path, runs_dir)
    try:
        paths = wait_for(lambda: next(iter(list_run_dirs(runs_dir)), None), 30, "the run directory")
        wait_for(lambda: read_run_json(paths).get("state") == "queued", 30, "the run to queue", paths=paths)
        waiting = read_run_json(paths)["gpu_queue"]
        assert waiting["place"] == 1
        assert waiting["waiting_for"] == ("GPU 0 held by pid 4190001, outside this container, 9.5 GiB; "
                                          "GPU 2 held by pid 4190002, outside this container, 2.0 GiB")
        # The headless console prints the waiting line, then follows the run.
        wait_for(lambda: "queued: #1, waiting for GPU 0 held by pid 4190001" in out.read_text(), 20,
                 "the console's waiting line")
        ticket = GpuLocks(lock_dir_for()).queue()
        assert [t.record["run_id"] for t in ticket] == [paths.id]
        # The console's SSH connection dies: the supervisor (its own session) keeps the place.
        console.send_signal(signal.SIGKILL)
        console.wait(10)
        assert read_run_json(paths)["state"] == "queued"
        table = format_runs_table(list_runs(runs_dir))
        assert f"{paths.id}  queued" in table
        assert "  queued #1, waiting for GPU 0 held by pid 4190001, outside this container, 9.5 GiB" in table
        # One status event per change of place or holders, not one per look (the looks go on).
        assert [e["state"] for e in _statuses(paths)] == ["queued"]

        shared_box.free()
        wait_for(lambda: paths.exit_json.exists(), 60, "the run to start and finish", paths=paths)
    finally:
        if console.poll() is None:
            console.kill()
            console.wait(10)
    exit_data = read_json(paths.exit_json)
    assert exit_data["state"] == "finished", exit_data
    data = read_run_json(paths)
    uuids = [d.uuid for d in four_2080ti(pids=[]).devices]  # named by UUID, not by index (issue 30, item 9)
    assert data["gpus"]["indices"] == [0, 1, 2, 3] and data["env"]["CUDA_VISIBLE_DEVICES"] == ",".join(uuids)
    assert data["gpu_queue"] is None and data["queued_s"] > 0
    states = [e["state"] for e in _statuses(paths)]
    assert states[:2] == ["queued", "starting"] and states[-1] == "finished"
    assert GpuLocks(lock_dir_for()).queue() == [] and GpuLocks(lock_dir_for()).held() == {}


def test_a_two_gpu_start_takes_1_and_3_and_stop_cancels_a_queued_run_and_frees_its_ticket(
        tmp_path, runs_dir, shared_box, capsys):
    import run
    from training.console.runs import start_run
    from training.profile import load_profile

    # Another traindeck run holds 1 and 3 (the two nobody else uses) while a 4-GPU start queues.
    two = load_profile(str(_profile_file(tmp_path, 2, "two")))
    holder = GpuLocks(lock_dir_for())
    from training.supervise.gpu_select import claim_gpus

    claim = claim_gpus(two, "holder-run", gpu.get_backend(), wait=False)
    assert claim.selection.gpus == (1, 3)
    try:
        four = load_profile(str(_profile_file(tmp_path, 4, "four")))
        paths = start_run(four, runs_dir, queue=True)
        wait_for(lambda: read_run_json(paths).get("state") == "queued", 30, "the run to queue", paths=paths)
        why = read_run_json(paths)["gpu_queue"]["waiting_for"]
        assert "GPU 1 held by traindeck run holder-run" in why and "GPU 0 held by pid 4190001" in why
        assert [t.record["run_id"] for t in holder.queue()] == [paths.id]

        assert run.main(["--stop", paths.id, "--runs-dir", str(runs_dir)]) == 0
        assert capsys.readouterr().out.strip() == f"{paths.id}: stopped"
    finally:
        claim.release()
    exit_data = read_json(paths.exit_json)
    assert exit_data["state"] == "stopped" and "cancelled while queued" in exit_data["message"]
    assert exit_data["nothing_left"] is True
    assert holder.queue() == []  # its ticket is gone: the next in line is not held up
    assert read_run_json(paths).get("launcher") is None  # nothing was ever launched


def test_ctrl_c_on_a_headless_queued_run_cancels_it(tmp_path, runs_dir, shared_box):
    console, out = _queued_console(tmp_path, runs_dir)
    try:
        paths = wait_for(lambda: next(iter(list_run_dirs(runs_dir)), None), 30, "the run directory")
        wait_for(lambda: read_run_json(paths).get("state") == "queued", 30, "the run to queue", paths=paths)
        wait_for(lambda: "status queued" in out.read_text(), 20, "the console's waiting line")
        console.send_signal(signal.SIGINT)
        console.wait(30)
    finally:
        if console.poll() is None:
            console.kill()
            console.wait(10)
    text = out.read_text()
    assert f"stopping run {paths.id} (Ctrl-C)" in text and "Traceback" not in text
    exit_data = read_json(paths.exit_json)
    assert exit_data["state"] == "stopped" and "cancelled while queued" in exit_data["message"]
    assert GpuLocks(lock_dir_for()).queue() == []

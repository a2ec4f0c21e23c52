"""--dump: stacks of every live rank into the run directory (faulthandler or py-spy)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

import run as cli
from training.console.stackdump import dump_stacks
from training.errors import TraindeckError
from training.rundir import create_run_dir, hostname, update_run_json, write_json_atomic
from training.rundir.events_file import read_all

# A stand-in for a worker rank: faulthandler on SIGUSR1 into dumps/rank-N.txt (as training.worker
# does), then it waits inside a function whose name the dump must show.
RANK_SCRIPT = textwrap.dedent("""
    import faulthandler, os, signal, sys, time
    rank = int(sys.argv[2])
    if sys.argv[3] == "handler":
        os.makedirs(os.path.join(sys.argv[1], "dumps"), exist_ok=True)
        f = open(os.path.join(sys.argv[1], "dumps", f"rank-{rank}.txt"), "a")
        faulthandler.register(signal.SIGUSR1, file=f, all_threads=True)
    exec(f"def waiting_in_rank_{rank}():\\n    print('ready', flush=True)\\n    time.sleep(120)\\n")
    globals()[f"waiting_in_rank_{rank}"]()
""")


@pytest.fixture
def fake_run(tmp_path):
    """A live-looking run whose supervisor is this test process and whose ranks are small scripts."""
    procs: list[subprocess.Popen] = []
    paths = create_run_dir(tmp_path / "runs", "dumpme")
    me = psutil.Process()

    def start(kinds: list[str]):
        records = []
        for rank, kind in enumerate(kinds):
            p = subprocess.Popen([sys.executable, "-c", RANK_SCRIPT, str(paths.root), str(rank), kind],
                                 stdout=subprocess.PIPE, text=True)
            procs.append(p)
            assert p.stdout.readline().strip() == "ready"
            records.append({"pid": p.pid, "create_time": psutil.Process(p.pid).create_time(), "role": "worker",
                            "rank": rank})
        write_json_atomic(paths.run_json, {
            "id": paths.id, "host": hostname(), "created": time.time(), "state": "running",
            "supervisor": {"pid": me.pid, "create_time": me.create_time()},
            "launcher": None, "processes": records})
        return procs

    yield paths, start
    for p in procs:
        p.kill()
        p.wait()


def test_faulthandler_dump_of_every_rank_lands_in_the_run_directory(fake_run):
    paths, start = fake_run
    procs = start(["handler", "handler"])
    lines = dump_stacks(paths, timeout_s=5, py_spy=False)
    [dump] = sorted(paths.dumps.glob("stacks-*.txt"))
    text = dump.read_text()
    assert "==== rank 0 (pid %d, faulthandler) ====" % procs[0].pid in text
    assert "==== rank 1 (pid %d, faulthandler) ====" % procs[1].pid in text
    assert "waiting_in_rank_0" in text and "waiting_in_rank_1" in text
    assert text.index("waiting_in_rank_0") < text.index("==== rank 1")
    assert lines[0] == f"stack dump of 2 ranks: {dump}"
    assert any("waiting_in_rank_1" in line for line in lines)
    [event] = [e for e in read_all(paths.events) if e.get("dump")]
    assert event["kind"] == "log" and event["level"] == "info"
    assert event["dump"] == f"dumps/{dump.name}" and event["message"] == f"stack dump of 2 ranks: dumps/{dump.name}"
    assert all(p.poll() is None for p in procs)  # a dump never harms the ranks
    # A second dump only contains the new stacks, in a file of its own.
    dump_stacks(paths, timeout_s=5, py_spy=False)
    second = sorted(paths.dumps.glob("stacks-*.txt"))
    assert len(second) == 2 and second[1].read_text().count("waiting_in_rank_0") == 1


def test_a_rank_without_a_sigusr1_handler_is_not_signalled(fake_run):
    paths, start = fake_run
    procs = start(["handler", "plain"])
    lines = dump_stacks(paths, timeout_s=3, py_spy=False)
    assert procs[1].poll() is None, "SIGUSR1 would have killed a process that does not handle it"
    text = sorted(paths.dumps.glob("stacks-*.txt"))[0].read_text()
    assert "waiting_in_rank_0" in text and "rank 1 (pid %d): no stack" % procs[1].pid in text
    assert any("rank 1" in line and "does not handle SIGUSR1" in line for line in lines)
    [event] = [e for e in read_all(paths.events) if e.get("dump")]
    assert event["level"] == "warning" and event["ranks"] == [0]


def test_py_spy_is_used_when_it_works_and_faulthandler_when_it_is_refused(fake_run, tmp_path):
    paths, start = fake_run
    procs = start(["handler", "handler"])
    fake = tmp_path / "py-spy"
    # Attaching to rank 1 is refused the way ptrace_scope refuses it; rank 0 gets a py-spy stack.
    fake.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        if [ "$3" = "{procs[1].pid}" ]; then echo "Error: Permission denied (os error 13)" >&2; exit 1; fi
        echo "Process $3: python"
        echo 'Thread 1 (idle): "MainThread"'
        echo "    spy_frame (fake.py:1)"
        """))
    fake.chmod(0o755)
    lines = dump_stacks(paths, timeout_s=5, py_spy=str(fake))
    text = sorted(paths.dumps.glob("stacks-*.txt"))[0].read_text()
    assert f"==== rank 0 (pid {procs[0].pid}, py-spy) ====" in text and "spy_frame" in text
    assert f"==== rank 1 (pid {procs[1].pid}, faulthandler) ====" in text and "waiting_in_rank_1" in text
    assert "spy_frame (fake.py:1)" in "\n".join(lines)


def test_a_run_that_is_not_live_is_a_clear_error(fake_run):
    paths, start = fake_run
    start(["handler"])
    update_run_json(paths, state="finished")
    with pytest.raises(TraindeckError, match="is not live"):
        dump_stacks(paths, py_spy=False)


def test_a_live_run_without_workers_yet_is_a_clear_error(fake_run):
    paths, start = fake_run
    start([])
    with pytest.raises(TraindeckError, match="no live worker process"):
        dump_stacks(paths, py_spy=False)


def test_cli_dump(fake_run, capsys, monkeypatch):
    paths, start = fake_run
    start(["handler", "handler"])
    monkeypatch.setenv("PATH", "/nonexistent")  # no py-spy: the faulthandler path
    assert cli.main(["--runs-dir", str(paths.root.parent), "--dump", paths.id]) == 0
    out = capsys.readouterr().out
    assert "stack dump of 2 ranks:" in out and "waiting_in_rank_0" in out
    update_run_json(paths, state="stopped")
    assert cli.main(["--runs-dir", str(paths.root.parent), "--dump", paths.id]) == 2
    assert "is not live" in capsys.readouterr().err


# ------------------------------------------------------------------ a real run


@pytest.mark.slow
def test_dump_of_a_live_ddp_run_has_both_ranks(tmp_path, monkeypatch):
    from tests.support.live_runs import stop_quietly
    from tests.support.profiles import cpu_profile
    from tests.support.waiting import wait_for
    from training.console import runs

    monkeypatch.setenv("PATH", os.path.dirname(sys.executable) + os.pathsep + "/usr/bin:/bin")
    profile = cpu_profile(epochs=50, steps_per_epoch=200, step_delay_s=0.05)
    paths = runs.start_run(profile, tmp_path / "runs")
    try:
        wait_for(lambda: any(e.get("kind") == "metric" for e in read_all(paths.events)), 40, "the first metric", paths=paths)
        lines = dump_stacks(paths, timeout_s=10)
    finally:
        stop_quietly(paths)
    [dump] = sorted(paths.dumps.glob("stacks-*.txt"))
    text = dump.read_text()
    assert "==== rank 0 (pid" in text and "==== rank 1 (pid" in text
    assert text.count("training/engine/") >= 2  # both ranks are inside the training loop
    assert lines[0].startswith("stack dump of 2 ranks:")
    assert any(e.get("dump") == f"dumps/{dump.name}" for e in read_all(paths.events))

"""Two nodes started by hand, seconds apart, with the same profile: they meet and both finish.

Each "node" is a run.py of its own on this machine, with its own runs directory (its own disk),
one gloo rank each, joined through torchrun's c10d rendezvous at 127.0.0.1:PORT exactly as a
user on two boxes would type it (`--set launch.nnodes=2 --set launch.rdzv_endpoint=HOST:PORT`).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.live_runs import events
from tests.support.locations import ROOT
from tests.support.waiting import wait_for
from training.console import runs
from training.rundir import list_run_dirs, read_json, read_run_json
from training.rundir.records import ExitRecord
from training.supervise.launch import free_port

pytestmark = pytest.mark.slow

SMALL = ["train.epochs=2", "train.steps_per_epoch=8", "train.log_every=4", "task.samples=256", "task.hidden=8",
         "task.features=8", "train.batch_size=8", "launch.nproc_per_node=1", "telemetry.interval_s=1.0"]


def start_node(runs_dir: Path, port: int, out: Path) -> subprocess.Popen:
    sets = [*SMALL, "launch.nnodes=2", f"launch.rdzv_endpoint=127.0.0.1:{port}"]
    argv = [sys.executable, str(ROOT / "run.py"), "--profile", "cpu", "--headless", "--runs-dir", str(runs_dir)]
    for item in sets:
        argv += ["--set", item]
    with open(out, "wb") as f:
        return subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)


def only_run(runs_dir: Path):
    found = list_run_dirs(runs_dir)
    return found[0] if len(found) == 1 else None


def test_two_nodes_started_apart_meet_and_finish(tmp_path, runs_dir, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    port = free_port()
    node_b_dir = tmp_path / "node-b-runs"
    node_b_dir.mkdir(mode=0o700)
    out_a, out_b = tmp_path / "node-a.out", tmp_path / "node-b.out"
    a = start_node(runs_dir, port, out_a)
    b = None
    try:
        paths_a = wait_for(lambda: only_run(runs_dir), 30, "node A's run directory")
        # Node A alone: its torchrun joined the rendezvous (read from torchrun's own store) and
        # every viewer says what it waits for.
        waiting = f"waiting for 1 of 2 nodes at 127.0.0.1:{port}"
        wait_for(lambda: (read_run_json(paths_a).get("rendezvous") or {}).get("joined") == 1, 60,
                 "node A's torchrun in the rendezvous", paths=paths_a)
        wait_for(lambda: waiting in out_a.read_text(errors="replace"), 30, "the waiting line in node A's output",
                 paths=paths_a)
        summary = runs.run_summary(paths_a)
        assert summary.live and waiting in summary.note  # what `run.py --runs` shows
        # Node B, seconds later: another run id (another start second), the same rendezvous.
        b = start_node(node_b_dir, port, out_b)
        paths_b = wait_for(lambda: only_run(node_b_dir), 30, "node B's run directory")
        assert paths_b.id != paths_a.id
        assert a.wait(timeout=150) == 0, out_a.read_text(errors="replace")[-3000:]
        assert b.wait(timeout=60) == 0, out_b.read_text(errors="replace")[-3000:]
    finally:
        for proc in (a, b):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    for paths in (paths_a, paths_b):
        record = ExitRecord.from_json(read_json(paths.exit_json))
        assert record is not None and record.state == "finished", paths.supervisor_log.read_text()[-2000:]
        rendezvous = read_run_json(paths)["rendezvous"]
        assert rendezvous["state"] == "met" and rendezvous["joined"] == 2
    ids = {read_run_json(p)["launch_argv"][read_run_json(p)["launch_argv"].index("--rdzv-id") + 1]
           for p in (paths_a, paths_b)}
    assert len(ids) == 1  # one rendezvous, whatever second each node started
    # Exactly one node holds global rank 0, which reports the metrics; the other's rank trained too.
    metric_nodes = [p for p in (paths_a, paths_b) if events(p, "metric")]
    assert len(metric_nodes) == 1
    assert "2 nodes met" in out_a.read_text(errors="replace") or "2 nodes met" in out_b.read_text(errors="replace")

"""--control, --dump and --resume of a `[launch] hosts` run reach the other nodes over SSH, with a
stand-in ssh that runs the remote command on this machine ($TRAINDECK_SSH); no training runs."""

from __future__ import annotations

import json
import sys
import threading
from contextlib import contextmanager
from typing import Iterator

import pytest

from training.errors import TraindeckError
from training.rundir import RunPaths, read_json, read_run_json, write_json_atomic
from training.rundir import processes as pg
from training.rundir.events_file import EventReader, append_events, make_event

ME = pg.pid_create_time()  # this test process: a live "supervisor"
GONE = {"pid": 1, "create_time": 1.0}  # init with another start time: not ours, not alive
PROFILE = '[train]\ntask = "tiny"\n[launch]\nmode = "ddp"\nhosts = ["gpu-a", "gpu-b"]\n'


@pytest.fixture
def local_ssh(tmp_path, monkeypatch):
    fake = tmp_path / "fake-ssh"
    fake.write_text(f"#!{sys.executable}\nimport os, sys\nos.execv('/bin/sh', ['sh', '-c', sys.argv[-1]])\n")
    fake.chmod(0o755)
    monkeypatch.setenv("TRAINDECK_SSH", str(fake))


def two_node_run(tmp_path, supervisor=ME):
    """The head's run directory naming gpu-b, and gpu-b's own run directory elsewhere ("its disk")."""
    head = RunPaths(tmp_path / "runs" / "20261124-183000-cpu")
    node = RunPaths(tmp_path / "b-runs" / head.id / "nodes" / "gpu-b")
    for paths in (head, node):
        paths.heartbeats.mkdir(parents=True)
        paths.profile.write_text(PROFILE)
    write_json_atomic(head.run_json, {"id": head.id, "state": "running", "supervisor": supervisor, "head_host": "gpu-a",
                                      "nodes": [{"host": "gpu-b", "run_dir": str(node.root)}]})
    write_json_atomic(node.run_json, {"id": head.id, "state": "running", "supervisor": supervisor,
                                      "node": {"head": "gpu-a"}})
    return head, node


def beat(paths: RunPaths, rank: int) -> None:
    paths.heartbeats.mkdir(parents=True, exist_ok=True)
    write_json_atomic(paths.heartbeats / f"rank-{rank}.json", {"rank": rank, "pid": 1, "step": 3, "t": 1.0})


@contextmanager
def acknowledging(paths: RunPaths) -> Iterator[None]:
    """Rank 0's side of the control channel while inside: the request acknowledged by a `log` event."""
    stop = threading.Event()

    def run():
        while not stop.is_set():
            request = read_json(paths.control)
            if isinstance(request, dict):
                append_events(paths.events, [make_event("log", level="info", control=request["action"],
                                                        seq=request["seq"], message=f"{request['action']} at step 3")])
                return
            stop.wait(0.05)
    threading.Thread(target=run, daemon=True).start()
    try:
        yield
    finally:
        stop.set()


def test_control_goes_to_rank_0s_node_over_ssh(tmp_path, local_ssh):
    from training.console.node_reach import control_run

    head, node = two_node_run(tmp_path)
    beat(head, 1)
    beat(head.node("gpu-b"), 0)  # c10d put rank 0 on gpu-b: its heartbeat came over in the copy
    with acknowledging(node):
        assert control_run(head, "pause", timeout_s=30) == "pause at step 3 (rank 0 on gpu-b)"
    assert read_json(node.control)["action"] == "pause"
    assert not head.control.exists()


def test_control_stays_on_the_head_when_rank_0_lives_there(tmp_path):
    from training.console.node_reach import control_run

    head, node = two_node_run(tmp_path)
    beat(head, 0)
    beat(head.node("gpu-b"), 1)
    with acknowledging(head):
        assert control_run(head, "save", timeout_s=30) == "save at step 3"
    assert not node.control.exists()


def test_a_node_that_cannot_take_the_request_is_named(tmp_path, local_ssh):
    from training.console.node_reach import control_run

    head, node = two_node_run(tmp_path)
    beat(head.node("gpu-b"), 0)
    write_json_atomic(node.run_json, {**read_run_json(node), "state": "failed", "supervisor": GONE})
    with pytest.raises(TraindeckError) as err:
        control_run(head, "pause", timeout_s=5)
    text = str(err.value)
    assert text.startswith("sending 'pause' to rank 0 on gpu-b over SSH failed:") and "cannot pause" in text
    assert "Traceback" not in text


def test_the_supervisors_health_action_reaches_rank_0_on_another_node(tmp_path, local_ssh):
    from tests.support.locations import ROOT
    from training.monitor.health import Finding
    from training.profile import parse_profile
    from training.supervise.node_ssh import RemoteNode
    from training.supervise.run_supervisor import Supervisor

    head, node = two_node_run(tmp_path)
    beat(head.node("gpu-b"), 0)
    sup = Supervisor(head)
    sup.health.profile = parse_profile(PROFILE)
    sup.nodes.remote = [RemoteNode("gpu-b", str(node.root), str(node.root.parent), str(ROOT), sys.executable)]
    assert sup.health.act("save-stop", Finding("divergence", "loss diverged")) == "save-stop"
    assert read_json(node.control)["action"] == "save-stop"
    assert not head.control.exists()


def test_dump_names_every_node_and_says_why_one_has_no_stacks(tmp_path, local_ssh):
    from training.console.node_reach import dump_run

    head, node = two_node_run(tmp_path)
    with pytest.raises(TraindeckError) as err:
        dump_run(head)  # no rank alive on either node
    text = str(err.value)
    assert text.startswith(f"no stacks from any node of run {head.id}:")
    assert "dumping the ranks' stacks on gpu-b over SSH failed" in text


def test_a_node_of_an_ended_run_starts_again_for_the_heads_resume(tmp_path, monkeypatch):
    from training.console import runs
    from training.profile import parse_profile

    head, node = two_node_run(tmp_path, supervisor=GONE)
    write_json_atomic(node.run_json, {**read_run_json(node), "state": "failed"})
    write_json_atomic(node.exit_json, {"state": "failed"})
    spawned = []
    monkeypatch.setattr(runs, "_spawn_supervisor", lambda paths: spawned.append(paths) or pg.ProcRef(4321, 5.0, "supervisor"))
    resumed = parse_profile(PROFILE.replace('hosts = ["gpu-a", "gpu-b"]\n', 'rdzv_endpoint = "gpu-a:29999"\nnnodes = 2\n'))
    runs.start_node_run(resumed, node.root, head.id, "/tmp", node={"head": "gpu-a"})
    data = read_run_json(node)
    assert spawned == [node] and not node.exit_json.exists()
    assert (data["state"], data["resumes"], data["supervisor"]["pid"]) == ("starting", 1, 4321)
    assert "gpu-a:29999" in node.profile.read_text()  # the head's new rendezvous
    # Another run's directory, or this run still live there, is refused with the reason.
    with pytest.raises(TraindeckError, match="holds another run"):
        runs.start_node_run(resumed, node.root, "20261124-190000-cpu", "/tmp", node={"head": "gpu-a"})
    write_json_atomic(node.run_json, {**data, "supervisor": ME, "state": "running"})
    with pytest.raises(TraindeckError, match="still running on this node"):
        runs.start_node_run(resumed, node.root, head.id, "/tmp", node={"head": "gpu-a"})


def test_resume_of_a_hosts_run_whose_rank_0_saved_on_another_node(tmp_path, monkeypatch):
    from training.console import runs

    head, node = two_node_run(tmp_path, supervisor=GONE)
    write_json_atomic(head.run_json, {**read_run_json(head), "state": "failed"})
    copy = head.node("gpu-b")
    copy.root.mkdir(parents=True, exist_ok=True)
    append_events(copy.events, [make_event("checkpoint", path="checkpoints/last.pt", step=40, epoch=1)])
    write_json_atomic(copy.exit_json, {"state": "failed"})
    monkeypatch.setattr(runs, "_spawn_supervisor", lambda paths: pg.ProcRef(4321, 5.0, "supervisor"))
    assert not (head.checkpoints / "last.pt").exists()
    runs.resume_run(head)
    assert not copy.exit_json.exists()  # the earlier life's end; the new one comes with the follower
    messages = [e.get("message") for e in EventReader(head.events).read()]
    assert "resumed from step 40" in messages
    assert json.loads(head.run_json.read_text())["resumes"] == 1




def test_attach_without_a_run_id_finds_the_heads_run_not_a_nodes_directory(tmp_path):
    """On a shared filesystem the other node's live directory is inside the head's run: --attach
    with no id still picks the run, the head's directory, which shows every node."""
    from training.console import runs

    head, _ = two_node_run(tmp_path)
    shared = head.node("gpu-b")
    shared.root.mkdir(parents=True, exist_ok=True)
    write_json_atomic(shared.run_json, {"id": head.id, "state": "running", "supervisor": ME, "node": {"head": "gpu-a"}})
    found = runs.find_run(head.root.parent, None, live_only=True)
    assert found.root == head.root

"""The stream that carries another node's run directory to the head, and the head's copy of it."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from tests.support.locations import ROOT
from tests.support.waiting import wait_for
from training.profile import Launch
from training.rundir import RunPaths, hostname, read_json, read_run_json, write_json_atomic
from training.rundir import processes as pg
from training.rundir.node_stream import MirrorGap, NodeMirror, NodeStream
from training.rundir.node_views import node_views
from training.supervise.node_follow import NodeFollower, shares_run_dir
from training.supervise.node_ssh import RemoteNode

ME = pg.pid_create_time()
GONE = {"pid": os.getpid(), "create_time": 1.0}  # our pid, another process's start: not alive


def node_dir(root: Path, supervisor: dict = ME, **extra) -> RunPaths:
    paths = RunPaths(root)
    paths.heartbeats.mkdir(parents=True)
    write_json_atomic(paths.run_json, {"id": "20260101-000000-cpu", "host": hostname(), "state": "running",
                                       "supervisor": supervisor, "node": {"head": "gpu-a"}, **extra})
    return paths


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def copy_all(stream: NodeStream, mirror: NodeMirror) -> list[dict]:
    messages = stream.poll()
    for m in messages:
        if m["kind"] in ("append", "put"):
            mirror.apply(json.loads(json.dumps(m)))  # through JSON, as over the wire
    return messages


def test_the_copy_is_a_byte_prefix_of_the_node_and_ends_with_exit_json(tmp_path):
    node = node_dir(tmp_path / "node")
    append(node.events, b'{"v":1,"kind":"log","message":"caf\xc3\xa9"}\n{"v":1,"kind":"log","message":"\xff"}\n{"v":1,"ki')
    append(node.telemetry, b'{"v":1,"kind":"telemetry","workers":[{"rank":1}]}\n')
    write_json_atomic(node.heartbeats / "rank-1.json", {"rank": 1, "step": 3})
    copy = NodeMirror(tmp_path / "head" / "nodes" / "gpu-b")
    stream = NodeStream(node.root)
    kinds = [m["kind"] for m in copy_all(stream, copy)]
    assert "end" not in kinds and {"append", "put", "alive"} <= set(kinds)
    head = RunPaths(copy.paths.root)
    # Only complete lines travel; bytes that are not UTF-8 arrive unchanged.
    assert head.events.read_bytes() == node.events.read_bytes()[:node.events.read_bytes().rindex(b"\n") + 1]
    assert head.telemetry.read_bytes() == node.telemetry.read_bytes()
    assert read_json(head.heartbeats / "rank-1.json") == {"rank": 1, "step": 3}
    assert read_run_json(head)["node"] == {"head": "gpu-a"}
    assert copy_all(stream, copy) == []  # nothing new, and the keep-alive is due only each second

    append(node.events, b'nd":"status","state":"finished"}\n')
    write_json_atomic(node.exit_json, {"state": "finished", "message": "finished", "failed_rank": None})
    write_json_atomic(node.run_json, {**read_run_json(node), "state": "finished", "supervisor": GONE})
    # The last lines first; the end only once a poll finds nothing more to copy.
    messages = copy_all(stream, copy)
    assert [m["kind"] for m in messages if m["kind"] == "end"] == []
    assert head.events.read_bytes() == node.events.read_bytes()
    end = copy_all(stream, copy)
    assert end[-1] == {"kind": "end", "state": "finished", "message": "finished", "failed_rank": None}
    # A supervisor that wrote its end is not one that dropped out.
    assert all(m.get("supervisor") != "dead" for m in messages + end)
    assert read_json(head.exit_json)["state"] == "finished" and stream.ended and stream.poll() == []


def test_a_supervisor_gone_without_exit_json_is_reported_dead(tmp_path):
    node = node_dir(tmp_path / "node", supervisor=GONE)
    messages = NodeStream(node.root).poll()
    assert {"kind": "alive", "supervisor": "dead"}.items() <= messages[-1].items()
    assert not any(m["kind"] == "end" for m in messages)


def test_a_stream_resumed_from_the_copys_sizes_sends_only_the_rest(tmp_path):
    node = node_dir(tmp_path / "node")
    append(node.events, b'{"kind":"log","message":"one"}\n')
    copy = NodeMirror(tmp_path / "copy")
    copy_all(NodeStream(node.root), copy)
    append(node.events, b'{"kind":"log","message":"two"}\n')
    resumed = NodeStream(node.root, copy.offsets())
    appended = [m for m in copy_all(resumed, copy) if m["kind"] == "append"]
    assert [m["text"] for m in appended] == ['{"kind":"log","message":"two"}\n']
    assert (copy.paths.root / "events.jsonl").read_bytes() == node.events.read_bytes()


def test_the_copy_refuses_a_gap_and_names_outside_the_layout(tmp_path):
    copy = NodeMirror(tmp_path / "copy")
    with pytest.raises(MirrorGap, match="from 10, the copy here ends at 0"):
        copy.apply({"kind": "append", "file": "events.jsonl", "offset": 10, "text": "{}\n"})
    for name in ("../escape.json", "heartbeats/../../x.json", "profile.toml", "/etc/x.json"):
        copy.apply({"kind": "put", "file": name, "data": {"x": 1}})
    assert not (tmp_path / "escape.json").exists() and not (tmp_path / "x.json").exists()
    assert not (tmp_path / "copy").exists()


def test_shared_filesystem_is_told_by_the_nodes_own_run_json(tmp_path):
    node = node_dir(tmp_path / "run" / "nodes" / "gpu-b")
    assert shares_run_dir(node, "20260101-000000-cpu", ME["pid"])
    assert not shares_run_dir(node, "20260101-000000-cpu", 4242)  # a copy left by an earlier head
    assert not shares_run_dir(RunPaths(tmp_path / "empty"), "20260101-000000-cpu", ME["pid"])


def test_node_views_name_each_node_with_its_state_and_ranks(tmp_path):
    head = RunPaths(tmp_path / "run")
    head.root.mkdir()
    write_json_atomic(head.run_json, {"state": "running", "head_host": "gpu-a",
                                      "nodes": [{"host": "gpu-b", "run_dir": "/x"}]})
    copy = node_dir(head.node("gpu-b").root)
    write_json_atomic(copy.heartbeats / "rank-1.json", {"rank": 1})
    views = node_views(head)
    assert [v.describe() for v in views] == ["gpu-a head: running", "gpu-b (rank 1): running"]
    write_json_atomic(copy.exit_json, {"state": "failed", "message": "rank 1 failed: boom"})
    assert node_views(head)[1].describe() == "gpu-b (rank 1): failed: rank 1 failed: boom"
    write_json_atomic(head.run_json, {"state": "running"})
    assert node_views(head) == []  # one node: nothing to list


@pytest.fixture
def local_ssh(tmp_path, monkeypatch):
    """$TRAINDECK_SSH: an "ssh" that runs the remote command here, so the follower's connection,
    its end and its reconnect are real processes without an sshd."""
    fake = tmp_path / "fake-ssh"
    fake.write_text(f"#!{sys.executable}\nimport os, sys\nos.execv('/bin/sh', ['sh', '-c', sys.argv[-1]])\n")
    fake.chmod(0o755)
    monkeypatch.setenv("TRAINDECK_SSH", str(fake))


def test_the_follower_copies_reconnects_where_it_left_and_reports_the_end(tmp_path, local_ssh):
    node = node_dir(tmp_path / "node")
    append(node.events, b'{"kind":"log","message":"one"}\n')
    head = RunPaths(tmp_path / "head")
    news = []
    remote = RemoteNode("gpu-b", str(node.root), str(tmp_path), str(ROOT), sys.executable)
    follower = NodeFollower(Launch(), remote, head.node("gpu-b"), False, news.append, log=lambda _: None).start()
    copy = head.node("gpu-b")
    try:
        wait_for(lambda: copy.events.exists() and copy.events.read_bytes() == node.events.read_bytes(), 30,
                 "the first copy")
        follower._proc.kill()  # the connection drops while the node's run is live
        append(node.events, b'{"kind":"log","message":"two"}\n')
        wait_for(lambda: follower.connections >= 2 and copy.events.read_bytes() == node.events.read_bytes(), 30,
                 "the copy after reconnecting")
        write_json_atomic(node.exit_json, {"state": "failed", "message": "rank 1 failed", "failed_rank": 1})
        write_json_atomic(node.run_json, {**read_run_json(node), "state": "failed", "supervisor": GONE})
        assert follower.close(drain_s=30)
    finally:
        follower.close(drain_s=0)
    assert copy.events.read_bytes() == node.events.read_bytes()  # each line once
    assert read_json(copy.exit_json)["state"] == "failed"
    assert [(n.what, n.state, n.failed_rank) for n in news] == [("ended", "failed", 1)]
    assert follower._proc.poll() is not None

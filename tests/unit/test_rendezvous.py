"""Multi-node by hand: the shared default rendezvous id, and what a waiting node tells its viewers."""

from __future__ import annotations

from pathlib import Path

from tests.support.profiles import profile_from
from training.rundir import RunPaths
from training.rundir.rendezvous import RendezvousRecord, rendezvous_of
from training.supervise.launch import build_launch
from training.supervise.rdzv_watch import UNREACHABLE_AFTER_S, RendezvousWatch, probe_endpoint
from tui.headless.lines import progress_line
from tui.run_model import RunModel

NODE_A = RunPaths(Path("/tmp/runs-a/20260101-000000-cpu"))
NODE_B = RunPaths(Path("/tmp/runs-b/20260101-000003-cpu"))


def two_nodes(endpoint: str = "10.0.0.1:29500", extra: str = "", name: str = "cpu"):
    return profile_from(f"""
[launch]
mode = "ddp"
nnodes = 2
rdzv_endpoint = "{endpoint}"
backend = "gloo"
{extra}
[train]
task = "tiny"
""", name=name)


def rdzv_id(spec) -> str:
    argv = list(spec.argv)
    return argv[argv.index("--rdzv-id") + 1]


def test_nodes_started_seconds_apart_share_a_rendezvous_id():
    a, b = build_launch(two_nodes(), NODE_A), build_launch(two_nodes(), NODE_B)
    assert rdzv_id(a) == rdzv_id(b) == a.rdzv_id
    assert rdzv_id(a).startswith("traindeck-") and NODE_A.id not in rdzv_id(a)


def test_another_job_on_the_endpoint_gets_another_id():
    base = rdzv_id(build_launch(two_nodes(), NODE_A))
    assert rdzv_id(build_launch(two_nodes(name="other"), NODE_A)) != base
    assert rdzv_id(build_launch(two_nodes("10.0.0.1:29501"), NODE_A)) != base
    assert rdzv_id(build_launch(two_nodes(extra="nproc_per_node = 2"), NODE_A)) != base


def test_an_explicit_rdzv_id_wins_and_one_node_keeps_its_run_id():
    assert rdzv_id(build_launch(two_nodes(extra='rdzv_id = "job7"'), NODE_A)) == "job7"
    single = profile_from('[launch]\nmode = "ddp"\n[train]\ntask = "tiny"\n')
    assert rdzv_id(build_launch(single, NODE_A, 29517)) == NODE_A.id


def test_the_waiting_sentence_counts_from_the_record():
    record = RendezvousRecord(endpoint="10.0.0.1:29500", nnodes=2, state="waiting", since=1000.0, joined=1)
    assert record.describe(1012.4) == "waiting for 1 of 2 nodes at 10.0.0.1:29500 (12 s)"
    assert rendezvous_of({"rendezvous": record.to_json()}) == record
    three = RendezvousRecord(endpoint="h:1", nnodes=3, state="waiting", since=0.0, joined=None)
    assert three.describe(5.0) == "waiting for 2 of 3 nodes at h:1 (5 s)"  # unknown: this node only
    assert rendezvous_of({"rendezvous": {"state": "bogus"}}) is None and rendezvous_of({}) is None


class Clock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


class FixedReader:
    def __init__(self, joined):
        self.value = joined

    def joined(self):
        return self.value


def test_a_refused_endpoint_is_reported_after_a_moment_not_at_once():
    clock = Clock()
    answers = {"error": "connection refused"}
    watch = RendezvousWatch("192.0.2.1", 29500, "id", 2, clock=clock, reader=FixedReader(None),
                            probe=lambda h, p: answers["error"])
    assert not watch.hosted_here  # TEST-NET-1: nobody's address
    watch.poll_once()
    assert watch.current().state == "waiting"  # the host's torchrun may still be starting
    clock.t += UNREACHABLE_AFTER_S + 4
    watch.poll_once()
    record = watch.current()
    assert record.state == "unreachable" and record.pending
    assert record.describe(clock.t).startswith("cannot reach the rendezvous at 192.0.2.1:29500: connection refused "
                                               f"for {int(UNREACHABLE_AFTER_S + 4)} s")
    answers["error"] = ""
    watch.reader.value = 1
    watch.poll_once()
    assert watch.current().state == "waiting" and watch.current().joined == 1
    met = watch.finish(met=True)
    assert met.state == "met" and met.joined == 2 and not met.pending
    watch.poll_once()  # a poll racing the end does not undo it
    assert watch.current().state == "met"


def test_probe_says_refused_for_a_closed_port():
    from training.supervise.launch import free_port

    assert probe_endpoint("127.0.0.1", free_port()) == "connection refused"


def test_viewers_show_the_wait_instead_of_the_first_step():
    model = RunModel()
    model.apply_event({"v": 1, "t": 1000.0, "kind": "status", "state": "starting", "message": ""})
    model.apply_run_json({"id": "r", "rendezvous": {"endpoint": "127.0.0.1:29500", "nnodes": 2, "state": "waiting",
                                                    "since": 1000.0, "joined": 1}})
    line = progress_line(model, 12.0, None, now=1012.0)
    assert line == "[00:12] waiting for 1 of 2 nodes at 127.0.0.1:29500 (12 s)"
    assert model.header(1012.0).rendezvous == "waiting for 1 of 2 nodes at 127.0.0.1:29500 (12 s)"
    model.apply_run_json({"rendezvous": {"endpoint": "127.0.0.1:29500", "nnodes": 2, "state": "met", "since": 1000.0}})
    assert model.header(1013.0).rendezvous == ""
    assert "waiting for the first step" in progress_line(model, 13.0, None, now=1013.0)


def test_an_endpoint_on_this_machine_is_opening_not_unreachable():
    clock = Clock()
    watch = RendezvousWatch("127.0.0.1", 29500, "id", 2, clock=clock, reader=FixedReader(None),
                            probe=lambda h, p: "connection refused")
    assert watch.hosted_here
    watch.poll_once()
    clock.t += 60
    watch.poll_once()
    assert watch.current().state == "waiting"  # our own torchrun opens it, however slowly


# ---- [launch] hosts: the nodes, the head, the SSH commands ---------------------------------

def hosts_profile(extra: str = ""):
    return profile_from(f"""
[launch]
mode = "ddp"
backend = "gloo"
hosts = ["gpu-a", "me@gpu-b"]
{extra}
[train]
task = "tiny"
""", name="pair")


def test_nnodes_follows_hosts_and_the_head_hosts_the_rendezvous():
    from training.supervise.launch import build_launch

    p = hosts_profile()
    assert p.launch.nnodes == 2 and p.world_size == 2
    spec = build_launch(p, NODE_A, 29600)
    argv = list(spec.argv)
    assert argv[argv.index("--rdzv-endpoint") + 1] == "gpu-a:29600"
    assert rdzv_id(spec) == NODE_A.id  # the head's run id, handed to every other node


def test_a_hostfile_becomes_the_hosts(tmp_path):
    from training.profile import parse_profile

    (tmp_path / "nodes.txt").write_text("# the lab\ngpu-a\n\ngpu-b  # the new one\n")
    p = parse_profile('[launch]\nmode = "ddp"\nhostfile = "nodes.txt"\n[train]\ntask = "tiny"\n',
                      path=str(tmp_path / "p.toml"))
    assert p.launch.hosts == ["gpu-a", "gpu-b"] and p.launch.hostfile == "" and p.launch.nnodes == 2
    # The resolved profile (profile.toml in the run) loads again, wherever it is.
    again = parse_profile(p.to_toml(), path="/elsewhere/profile.toml")
    assert again.launch.hosts == ["gpu-a", "gpu-b"]


def test_every_other_node_runs_the_profile_as_a_node_started_by_hand(monkeypatch):
    from training.supervise.node_ssh import node_profile, node_ssh, remote_nodes

    monkeypatch.delenv("TRAINDECK_SSH", raising=False)
    p = hosts_profile('ssh_options = ["-F", "/cfg/ssh"]\nremote_runs_dir = "/data/runs"\nremote_python = "/opt/py"\n'
                      'remote_root = "/opt/traindeck dir"')
    (node,) = remote_nodes(p, "20260101-000000-pair", Path("/head/runs"))
    assert node.host == "me@gpu-b" and node.run_dir == "/data/runs/20260101-000000-pair/nodes/me@gpu-b"
    theirs = node_profile(p, "gpu-a:29600", "20260101-000000-pair", host="me@gpu-b")
    assert theirs.launch.hosts == [] and theirs.launch.nnodes == 2
    # The head knows every node's rank: a static rendezvous, the second host node 1.
    assert (theirs.launch.rdzv_backend, theirs.launch.node_rank) == ("static", 1)
    assert (theirs.launch.rdzv_endpoint, theirs.launch.rdzv_id) == ("gpu-a:29600", "20260101-000000-pair")
    assert p.launch.hosts == ["gpu-a", "me@gpu-b"]  # the head's own profile is untouched
    argv = node_ssh(p.launch, node, "stop", node.run_dir)
    assert argv[:5] == ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10"]
    assert argv[5:8] == ["-F", "/cfg/ssh", "me@gpu-b"]
    assert argv[8] == ("cd '/opt/traindeck dir' && exec /opt/py -m training.console.remote_node stop "
                       "/data/runs/20260101-000000-pair/nodes/me@gpu-b")


# ---- the store's rendezvous state is data, never code --------------------------------------------

class _RunsCode:
    """What a neighbour writes into the store: a pickle that runs a command when it is loaded."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _rendezvous_state(nodes: int):
    from datetime import datetime

    from torch.distributed.elastic.rendezvous.dynamic_rendezvous import _NodeDesc, _RendezvousState

    state = _RendezvousState()
    for i in range(nodes):
        node = _NodeDesc(f"10.0.0.{i}", 1000 + i, 0)
        state.participants[node] = i
        state.last_heartbeats[node] = datetime(2026, 1, 1)
    state.wait_list.add(_NodeDesc("10.0.0.9", 9, 0))
    return state


def test_the_participants_are_counted_from_the_pickle_without_loading_it(tmp_path):
    import pickle

    from training.supervise import rdzv_state

    for protocol in (2, 3, 4, 5):
        assert rdzv_state.participants(pickle.dumps(_rendezvous_state(3), protocol=protocol)) == 3
    assert rdzv_state.participants(pickle.dumps(_rendezvous_state(0))) == 0
    marker = tmp_path / "ran"
    assert rdzv_state.participants(pickle.dumps(_RunsCode(str(marker)))) is None
    assert rdzv_state.participants(pickle.dumps({"participants": {1: 2}})) is None  # not torch's state
    assert not marker.exists()
    # The control: loading it the usual way does run it.
    pickle.loads(pickle.dumps(_RunsCode(str(marker))))
    assert marker.exists()


def test_any_bytes_in_the_store_give_a_count_or_none():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from training.supervise import rdzv_state

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=300))
    def check(data):
        got = rdzv_state.participants(data)
        assert got is None or (isinstance(got, int) and got >= 0)

    check()
    deep = b"\x80\x04" + b"]" * 100_000 + b"."
    assert rdzv_state.participants(deep) is None


def test_a_swapped_state_in_a_live_store_is_read_as_data(tmp_path):
    """A real TCPStore holding what a neighbour swapped in: the supervisor's reader runs nothing."""
    import pickle
    from datetime import timedelta

    from torch.distributed import TCPStore
    from torch.distributed.elastic.rendezvous.c10d_rendezvous_backend import C10dRendezvousBackend

    from training.supervise.launch import free_port
    from training.supervise.rdzv_watch import StoreReader

    port = free_port()
    server = TCPStore("127.0.0.1", port, is_master=True, timeout=timedelta(seconds=5), wait_for_workers=False)
    writer = C10dRendezvousBackend(server, "job")
    writer.set_state(pickle.dumps(_rendezvous_state(2)))
    reader = StoreReader("127.0.0.1", port, "job")
    assert reader.joined() == 2
    marker = tmp_path / "ran"
    writer.set_state(pickle.dumps(_RunsCode(str(marker))), writer.get_state()[1])
    assert reader.joined() is None
    assert not marker.exists()

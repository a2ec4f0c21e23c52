"""How this node's supervisor coordinates with the other nodes of a multi-node run.

`OtherNodes`, the head of a `[launch] hosts` run: it starts every other host's node over SSH
(training.supervise.node_ssh), follows each one (training.supervise.node_follow: its files copied
into <run>/nodes/<host>/, its liveness and end reported), stops them all when the run ends or one
drops out (torchrun's semantics: one node failing ends the run on every node), and after the drain
names the node where a failure began and the GPU leaks each node found. A node started by hand,
or the head of a one-host run, has no other nodes: every method is then a no-op.

`RendezvousReport`, any multi-node c10d or static launch: while torchrun waits for the other
nodes it says in run.json's "rendezvous" (and an event when its state changes) what it waits for,
and whether the endpoint answers at all (training.supervise.rdzv_watch).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from traindeck.heartbeat import read_heartbeats
from training.errors import TraindeckError
from training.profile import Profile
from training.rundir import RunPaths, RunState, read_json
from training.rundir.events_file import make_event
from training.rundir.node_views import rank0_host
from training.supervise.diagnosis import node_root_cause
from training.supervise.launch import LaunchSpec, parse_endpoint, rdzv_backend_of
from training.supervise.node_follow import NodeFollower, NodeNews, shares_run_dir
from training.supervise.node_ssh import RemoteNode, node_profile, remote_nodes, start_node, stop_node
from training.supervise.outcome import RunResult
from training.supervise.rdzv_watch import RendezvousWatch, StoreReader, UncountedReader
from training.supervise.run_writer import RunWriter
from training.supervise.supervisor_log import log

# At the end of a multi-node run, how long the head waits for each other node's end (its exit.json
# copied into <run>/nodes/<host>/) before writing its own.
NODE_DRAIN_S = 30.0


def _endpoint(spec: LaunchSpec) -> str:
    argv = list(spec.argv)
    return argv[argv.index("--rdzv-endpoint") + 1]


class OtherNodes:
    def __init__(self, paths: RunPaths, writer: RunWriter):
        self.paths = paths
        self.writer = writer
        self.profile: Profile | None = None
        self.remote: list[RemoteNode] = []  # the nodes this head started, in the order of hosts
        self.followers: list[NodeFollower] = []
        # The first node that dropped out or failed (the main loop ends the run on it), and the
        # node named as the run's failure (exit.json's "failed_node").
        self.lost: NodeNews | None = None
        self.dropped_node: str | None = None

    @property
    def head(self) -> str | None:
        """This node's host, where there are other nodes to tell it from."""
        return self.profile.launch.hosts[0] if self.profile is not None and self.remote else None

    def start(self, p: Profile, spec: LaunchSpec) -> None:
        """Every other host's node, each with its own supervisor in its own session there, all
        meeting at this node's rendezvous. Any failure stops the ones already started and raises
        (TraindeckError) before this node launches anything."""
        self.profile = p
        if len(p.launch.hosts) < 2:
            return
        endpoint = _endpoint(spec)
        for node in remote_nodes(p, self.paths.id, self.paths.root.parent):
            for_nodes = node_profile(p, endpoint, spec.rdzv_id or self.paths.id, host=node.host)
            try:
                answer = start_node(for_nodes, node, self.paths.id, head=p.launch.hosts[0], cwd=str(spec.cwd))
            except TraindeckError:
                self.stop(grace_s=1.0)
                raise
            self.remote.append(node)
            message = f"node {node.host} started: supervisor pid {answer.get('pid')}, run directory {node.run_dir}"
            log(message)
            self.writer.append([make_event("log", level="info", message=message, node=node.host)])
            self.writer.run_json(head_host=p.launch.hosts[0],
                                 nodes=[{"host": n.host, "run_dir": n.run_dir} for n in self.remote])
            self._follow(p, node, answer.get("pid"))

    def _follow(self, p: Profile, node: RemoteNode, supervisor_pid: Any) -> None:
        """One SSH connection that copies the node's files into <run>/nodes/<host>/ and reports
        its liveness and end (nothing is copied when that directory is the node's own)."""
        copy = self.paths.node(node.host)
        shared = shares_run_dir(copy, self.paths.id, supervisor_pid)
        log(f"following node {node.host}: " + ("its run directory is this one (shared filesystem), liveness only"
                                               if shared else f"copying its files into {copy.root}"))
        self.followers.append(NodeFollower(p.launch, node, copy, shared, self._news, log).start())

    def _news(self, news: NodeNews) -> None:
        """A follower's report (its thread); the main loop acts on a node that is lost."""
        log(f"node {news.host}: {news.what} {news.state or ''} {news.message}".rstrip())
        if news.what == "unreachable":
            self.writer.append([make_event("log", level="warning", message=news.message, node=news.host)])
        elif self.lost is None and (news.what == "lost" or news.state == RunState.FAILED.value):
            self.lost = news

    def stop(self, grace_s: float) -> None:
        """Stop every node this head started, all at once (each waits out its own grace)."""
        if not self.remote or self.profile is None:
            return
        problems: list[str] = []
        threads = [threading.Thread(target=lambda n=n: problems.append(stop_node(self.profile, n, grace_s)))
                   for n in self.remote]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for problem in filter(None, problems):
            log(problem)
            self.writer.append([make_event("log", level="warning", message=problem)])

    def close_followers(self) -> None:
        """Each node's end copied (or NODE_DRAIN_S gone by), then the connections closed: once the
        head writes exit.json, <run>/nodes/ holds what the other nodes had to say."""
        deadline = time.monotonic() + NODE_DRAIN_S
        for follower in self.followers:
            if not follower.close(max(0.0, deadline - time.monotonic())):
                log(f"node {follower.node.host}: its end did not arrive within {NODE_DRAIN_S:g} s")
        self.followers.clear()

    def rank0_node(self) -> RemoteNode | None:
        """The other node where c10d put rank 0 (found by its heartbeat), if not this one."""
        host = rank0_host(self.paths) if self.remote else None
        return next((n for n in self.remote if n.host == host), None)

    def dropped_result(self, news: NodeNews) -> RunResult:
        """The run's end when another node's supervisor is gone (or its run failed) while this one
        trains, this node's ranks already ended. The message names the node and its ranks (from
        its copied heartbeats)."""
        self.dropped_node = news.host
        ranks = sorted(read_heartbeats(self.paths.node(news.host).root))
        rank = news.failed_rank if news.failed_rank is not None else (ranks[0] if ranks else None)
        on = f"rank {', '.join(map(str, ranks))}" if len(ranks) <= 1 else f"ranks {', '.join(map(str, ranks))}"
        where = f"node {news.host} ({on})" if ranks else f"node {news.host}"
        what = "dropped out" if news.what == "lost" else "failed"
        message = f"{where} {what}: {news.message}"
        hint = (f"logs/supervisor.log of the node's run directory on {news.host} says why; every node was stopped"
                if news.what == "lost" else f"nodes/{news.host}/exit.json has the node's error; every node was stopped")
        # No returncode: this node's launcher ended because we killed it, which is not why the run
        # failed (a headless console exits 1, not 137).
        return RunResult(RunState.FAILED, None, rank, [], hint, message)

    def named_by_the_node_where_it_started(self, result: RunResult) -> RunResult:
        """After the drain, every node's exit.json is here: a failure that began on another node
        but reached the head first as its own rank's lost peer is named by that node and rank
        (training.supervise.diagnosis.node_root_cause)."""
        if result.state is not RunState.FAILED or not self.remote:
            return result
        exits = {n.host: read_json(self.paths.node(n.host).exit_json) for n in self.remote}
        cause = node_root_cause(result.error, exits)
        if cause is None or cause[0] == self.dropped_node:
            return result
        host, data = cause
        error = [str(x) for x in data.get("error") or []]
        rank = data["failed_rank"]
        self.dropped_node = host
        log(f"the failure started on node {host} (rank {rank}); this node's error was collateral: {result.message}")
        return RunResult(RunState.FAILED, result.returncode, rank, error,
                         data.get("hint") or f"nodes/{host}/exit.json has the node's error; every node was stopped",
                         f"rank {rank} on node {host} failed: {error[0]}")

    def name_head(self, leaks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """This node's own GPU leaks name the head in a multi-node run."""
        head = self.head
        return [{**leak, "node": head} for leak in leaks] if head else leaks

    def other_nodes_gpu_leaks(self) -> list[dict[str, Any]]:
        """Every other node checks its own GPUs at its end (its exit.json's gpu_leaks, copied here by
        the drain): the head's exit.json lists them with their host, and so do its events."""
        if not self.remote or self.profile is None:
            return []
        leaks = []
        for node in self.remote:
            data = read_json(self.paths.node(node.host).exit_json)
            found = data.get("gpu_leaks") if isinstance(data, dict) else None
            leaks += [{**leak, "node": node.host} for leak in found or [] if isinstance(leak, dict)]
        return leaks


class RendezvousReport:
    def __init__(self, writer: RunWriter):
        self.writer = writer
        self.watch: RendezvousWatch | None = None  # until the workers are up or the launcher ends
        self.written: Any = None  # the RendezvousRecord last written to run.json

    def start(self, p: Profile, spec: LaunchSpec) -> None:
        """A multi-node c10d launch waits for the other nodes before any worker starts: watch that
        wait so every viewer can say what it waits for."""
        backend = rdzv_backend_of(p.launch)
        if not spec.uses_torchrun or p.launch.nnodes < 2 or backend not in ("c10d", "static") or spec.port is None:
            return
        host, _ = parse_endpoint(_endpoint(spec))
        # A static rendezvous keeps no state to count: the watch says only whether it answers.
        reader = StoreReader(host, spec.port, spec.rdzv_id or "") if backend == "c10d" else UncountedReader()
        self.watch = RendezvousWatch(host, spec.port, spec.rdzv_id or "", p.launch.nnodes, reader=reader).start()
        self.publish()

    def publish(self, workers_up: bool = False, ended: str = "") -> None:
        """run.json's "rendezvous" when a fact changed, and a status event when its state did."""
        watch = self.watch
        if watch is None:
            return
        record = watch.finish(met=True) if workers_up else watch.finish(met=False, error=ended) if ended \
            else watch.current()
        last = self.written
        if record == last:
            return
        self.written = record
        self.writer.run_json(rendezvous=record.to_json())
        if last is None or last.state != record.state:
            text = record.describe(time.time())
            log(f"rendezvous: {text}")
            state = RunState.STARTING.value if record.pending else None
            event = make_event("status", state=state, message=text, source="supervisor",
                               rendezvous=record.state) if state else \
                make_event("log", level="info" if record.state == "met" else "error", message=text,
                           rendezvous=record.state)
            self.writer.append([event])
        if workers_up or ended:
            self.watch = None

    def launcher_ended(self, rc: int) -> None:
        """The launcher exited while the nodes had not all met: the wait ends with why."""
        if self.watch is None:
            return
        record = self.watch.current()
        self.publish(ended=record.error or f"the launcher exited with {rc} before all {record.nnodes} nodes joined")

    def failed(self) -> bool:
        """No worker ever started: the nodes never met."""
        return self.written is not None and self.written.state == "failed"

    def stop(self) -> None:
        if self.watch is not None:
            self.watch.stop()

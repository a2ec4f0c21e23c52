"""A multi-node run's nodes as every viewer shows them, from the head's run directory alone.

    node_views(paths, run_json) -> [NodeView(host, state, ranks, message)]   the head first

The head's run.json names the other nodes ("nodes": [{host, run_dir}], "head_host"); each one's
files are in `<run>/nodes/<host>/` (copied there by the head's follower, or the node's own
directory on a shared filesystem). A node's state is its exit.json's, else its run.json's;
its ranks are the ranks whose heartbeats it has. Nothing here reads another host.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from traindeck.heartbeat import read_heartbeats
from training.rundir.paths import RunPaths, read_json, read_run_json


@dataclass(frozen=True)
class NodeView:
    host: str
    state: str  # queued | starting | running | finished | failed | stopped, or "unknown" (nothing copied yet)
    ranks: tuple[int, ...] = ()
    message: str = ""  # why it ended, once it has
    head: bool = False

    def describe(self) -> str:
        """`127.0.0.2 (rank 1): running`, `127.0.0.2 (rank 1): failed: ...`."""
        ranks = f" ({'rank' if len(self.ranks) == 1 else 'ranks'} {','.join(map(str, self.ranks))})" \
            if self.ranks else ""
        role = " head" if self.head else ""
        tail = f": {self.message}" if self.message and self.state in ("failed", "stopped") else ""
        return f"{self.host}{role}{ranks}: {self.state}{tail}"


@dataclass(frozen=True)
class NodeDir:
    """Where one node's files are on the head: the head's own run directory, or `nodes/<host>/`.
    `host` is None in a run of one node, whose findings name no host."""

    host: str | None
    paths: RunPaths


def node_dirs(paths: RunPaths, hosts: list[str] | tuple[str, ...] = ()) -> list[NodeDir]:
    """Every node's files for the checks that judge the whole run (watchdog, health, leaks): the
    head (hosts[0]) in `paths`, each other host in `paths.node(host)`; one unnamed node without hosts."""
    if len(hosts) < 2:
        return [NodeDir(None, paths)]
    return [NodeDir(hosts[0], paths), *(NodeDir(h, paths.node(h)) for h in hosts[1:])]


def on_host(host: str | None) -> str:
    """` on gpu-b` for a finding's text, nothing in a run of one node."""
    return f" on {host}" if host else ""


def other_hosts(run_json: dict[str, Any]) -> list[str]:
    """run.json's other nodes; a host that could not be a folder name of nodes/ (a path, '..',
    empty) is no node: run.json is anyone's to have edited, and the host names a folder here."""
    nodes = run_json.get("nodes") if isinstance(run_json, dict) else None
    hosts = [n["host"] for n in (nodes if isinstance(nodes, list) else [])
             if isinstance(n, dict) and isinstance(n.get("host"), str)]
    return [h for h in hosts if h and "/" not in h and "\0" not in h and h not in (".", "..")]


def head_host(run_json: dict[str, Any]) -> str:
    value = run_json.get("head_host") if isinstance(run_json, dict) else None
    return value if isinstance(value, str) and value else str((run_json or {}).get("host") or "head")


def rank0_host(paths: RunPaths, run_json: dict[str, Any] | None = None) -> str | None:
    """The other node whose files hold rank 0's heartbeat (rank 0 reads control requests on its
    own node's disk); None for this directory's own node, or when no rank has beaten yet."""
    run_json = read_run_json(paths) if run_json is None else run_json
    if (paths.heartbeats / "rank-0.json").exists():
        return None
    for host in other_hosts(run_json):
        if (paths.node(host).heartbeats / "rank-0.json").exists():
            return host
    return None


def node_view(copy: RunPaths, host: str, head: bool = False, state: str | None = None) -> NodeView:
    exit_data = read_json(copy.exit_json) if copy.exit_json.exists() else None
    run_data = read_run_json(copy) if state is None else {}
    if isinstance(exit_data, dict) and exit_data.get("state"):
        state, message = str(exit_data["state"]), str(exit_data.get("message") or "")
    else:
        state, message = state or str(run_data.get("state") or "unknown"), ""
    return NodeView(host, state, tuple(sorted(read_heartbeats(copy.root))), message, head)


def node_views(paths: RunPaths, run_json: dict[str, Any] | None = None, head_state: str | None = None) -> list[NodeView]:
    """Every node of a `[launch] hosts` run, the head first; [] for a run of one node.
    `head_state`: the head's state as the caller verified it (a dead supervisor: failed)."""
    run_json = read_run_json(paths) if run_json is None else run_json
    hosts = other_hosts(run_json)
    if not hosts:
        return []
    head = node_view(paths, head_host(run_json), head=True, state=head_state or str(run_json.get("state") or "unknown"))
    return [head, *(node_view(paths.node(h), h) for h in hosts)]

"""`--control` and `--dump` of a `[launch] hosts` run, from the head: they reach the other nodes
over SSH (training.supervise.node_ssh: `remote_node control|dump` there).

    control_run(paths, action) -> str      the request goes to rank 0's node, wherever c10d put it
    dump_run(paths) -> [lines]             every node's ranks, each node's lines under its host

Rank 0 reads control.json on its own node's disk and carries the request to every rank in the
all-reduce it already does, so a request needs one node only: rank 0's, found by its heartbeat
(the head's own heartbeats/ or a node's copy in nodes/<host>/heartbeats/). Before any heartbeat
there is nobody to ask but the head.
"""

from __future__ import annotations

import sys
from typing import Any

from training import PROJECT_ROOT
from training.errors import TraindeckError
from training.profile import Profile, ProfileError, parse_profile
from training.rundir.node_views import head_host, rank0_host
from training.rundir.paths import RunPaths, read_run_json
from training.ssh_policy import host_problem
from training.supervise.node_ssh import RemoteNode, control_node, dump_node


def run_nodes(paths: RunPaths, run_json: dict[str, Any] | None = None) -> tuple[Profile | None, list[RemoteNode]]:
    """The run's profile and the other nodes as the head's supervisor started them (run.json's
    "nodes": each host's run directory there; the profile's ssh and remote_* settings)."""
    run_json = read_run_json(paths) if run_json is None else run_json
    nodes = [n for n in run_json.get("nodes") or [] if isinstance(n, dict) and n.get("host") and n.get("run_dir")]
    if not nodes:
        return None, []
    try:
        profile = parse_profile(paths.profile.read_text(encoding="utf-8"), path=paths.profile)
    except (OSError, ProfileError) as exc:
        raise TraindeckError(f"run {paths.id} names other nodes but its profile.toml cannot be read ({exc}); "
                             f"they cannot be reached from here.") from None
    launch = profile.launch
    for n in nodes:
        _check_recorded_node(paths, profile, n)
    root = launch.remote_root or str(PROJECT_ROOT)
    python = launch.remote_python or sys.executable
    runs_dir = launch.remote_runs_dir or str(paths.root.parent.resolve())
    return profile, [RemoteNode(str(n["host"]), str(n["run_dir"]), runs_dir, root, python) for n in nodes]


def _check_recorded_node(paths: RunPaths, profile: Profile, node: dict[str, Any]) -> None:
    """run.json's "nodes" is data from a file: a host ssh is pointed at must be one of the
    profile's own [launch] hosts (which its schema checked), and a run directory a plain path."""
    host, run_dir = node.get("host"), node.get("run_dir")
    why = host_problem(host)
    if why is None and host not in profile.launch.hosts[1:]:
        why = f"{host!r} is not one of the profile's other [launch] hosts ({', '.join(profile.launch.hosts[1:]) or 'none'})"
    if why is None and (not isinstance(run_dir, str) or run_dir.startswith("-")
                        or any(ord(c) < 32 for c in run_dir)):
        why = f"the node's run directory {run_dir!r} is not a plain path"
    if why:
        raise TraindeckError(f"{paths.run_json} names a node traindeck will not reach: {why}. Nothing was run over "
                             f"SSH. A run directory's files are data; if this one came from someone else, ask them, "
                             f"or fix \"nodes\" in run.json to match the run's profile.toml.")


def control_run(paths: RunPaths, action: str, timeout_s: float = 30.0) -> str:
    """`--control RUN ACTION`: to rank 0, on whichever node it lives; the acknowledgement."""
    from training.console.owned_run import check_owned_run
    from training.rundir.control import send_and_wait

    check_owned_run(paths, "--control")
    run_json = read_run_json(paths)
    host = rank0_host(paths, run_json)
    if host is None:
        return send_and_wait(paths, action, timeout_s=timeout_s)
    profile, nodes = run_nodes(paths, run_json)
    node = next((n for n in nodes if n.host == host), None)
    if node is None or profile is None:
        raise TraindeckError(f"rank 0 of run {paths.id} is on {host}, which run.json does not name as one of the "
                             f"run's nodes; nothing was sent. '--dump {paths.id}' shows where the ranks are.")
    return f"{control_node(profile, node, action, wait_s=timeout_s)} (rank 0 on {host})"


def dump_run(paths: RunPaths) -> list[str]:
    """`--dump RUN`: the head's ranks, then each other node's, over SSH; a node that cannot be
    dumped says why under its host and does not hide the others' stacks."""
    from training.console.owned_run import check_owned_run
    from training.console.stackdump import dump_stacks

    check_owned_run(paths, "--dump")
    run_json = read_run_json(paths)
    profile, nodes = run_nodes(paths, run_json)
    if not nodes:
        return dump_stacks(paths)
    lines: list[str] = []
    problems: list[str] = []
    for host, dump in [(head_host(run_json), lambda: dump_stacks(paths)),
                       *((n.host, lambda n=n: dump_node(profile, n)) for n in nodes)]:
        try:
            got = dump()
        except TraindeckError as exc:
            problems.append(str(exc))
            lines.append(f"node {host}: no stacks: {exc}")
            continue
        lines.append(f"node {host}:")
        lines.extend(f"  {line}" for line in got)
    if len(problems) == len(nodes) + 1:
        raise TraindeckError("no stacks from any node of run " + paths.id + ": " + " / ".join(problems))
    return lines

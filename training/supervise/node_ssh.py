"""The other nodes of a `[launch] hosts` run, reached through the user's own OpenSSH client.

    head (hosts[0], where run.py runs)                 every other host
    supervisor --ssh HOST 'cd ROOT && exec PY -m training.console.remote_node start DIR'-->
                  profile.toml on stdin                    creates DIR, spawns its own supervisor
                                                           (new session: the SSH connection may go)
    each node: torchrun --nnodes N --rdzv-backend static --node-rank I --rdzv-endpoint HEAD:PORT
               --rdzv-id RUN_ID  (torchrun's own rendezvous; node I is the I-th host, the head 0)

Every other node runs the profile as a node started by hand would: `hosts` cleared, `nnodes`,
`node_rank`, `rdzv_endpoint` (the head's name and a port free there) and `rdzv_id` (the run id)
filled in.
Its run directory is REMOTE_RUNS_DIR/<run id>/nodes/<host>/ on its own disk (on a filesystem the
head shares, that is already the head's `<run>/nodes/<host>/`).

ssh runs with BatchMode=yes (keys or an agent, never a password prompt that would hang a
supervisor without a terminal), the user's ~/.ssh/config, `[launch] ssh_options`, and
$TRAINDECK_SSH naming another ssh binary. Hosts are validated by the profile loader (never an
option); the remote command is one shell string of quoted words (ssh sends a string).
"""

from __future__ import annotations

import copy
import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training import PROJECT_ROOT
from training.errors import TraindeckError
from training.profile import Launch, Profile
from training.rundir.paths import NODES_DIR  # the first node is the head; the others write below it
from training.ssh_policy import check_ssh_target
from training.supervise.launch import rdzv_backend_of

SSH_ENV = "TRAINDECK_SSH"
REMOTE_MODULE = "training.console.remote_node"
CONNECT_TIMEOUT_S = 10
START_TIMEOUT_S = 60.0
KEEPALIVE_S = 5


@dataclass(frozen=True)
class RemoteNode:
    host: str
    run_dir: str  # on that host
    runs_dir: str
    root: str
    python: str


def other_hosts(profile: Profile) -> list[str]:
    return list(profile.launch.hosts[1:])


def node_run_dir(runs_dir: str, run_id: str, host: str) -> str:
    return f"{runs_dir.rstrip('/')}/{run_id}/{NODES_DIR}/{host}"


def remote_nodes(profile: Profile, run_id: str, head_runs_dir: Path) -> list[RemoteNode]:
    launch = profile.launch
    runs_dir = launch.remote_runs_dir or str(Path(head_runs_dir).resolve())
    root = launch.remote_root or str(PROJECT_ROOT)
    python = launch.remote_python or sys.executable
    return [RemoteNode(h, node_run_dir(runs_dir, run_id, h), runs_dir, root, python) for h in other_hosts(profile)]


def remote_words(node: RemoteNode, action: str, *args: str) -> list[str]:
    """The command run on the node, as words: ssh joins them into the one string it sends."""
    return ["cd", node.root, "&&", "exec", node.python, "-m", REMOTE_MODULE, action, *args]


def remote_shell(node: RemoteNode, action: str, *args: str) -> str:
    words = remote_words(node, action, *args)
    # `&&` must reach the remote shell as an operator, the rest as quoted words.
    return " ".join(w if w == "&&" else shlex.quote(w) for w in words)


def node_ssh(launch: Launch, node: RemoteNode, action: str, *args: str, keepalive: bool = False) -> list[str]:
    """The ssh argv; `keepalive` for a connection that stays open (the follower): ssh itself ends
    a connection whose peer stopped answering, so a dead link is noticed and reconnected."""
    # The host and options may come from a run directory someone handed us: checked again here.
    check_ssh_target(node.host, launch.ssh_options, f"node {node.host}")
    ssh = os.environ.get(SSH_ENV) or "ssh"
    alive = ["-o", f"ServerAliveInterval={KEEPALIVE_S}", "-o", "ServerAliveCountMax=3"] if keepalive else []
    return [ssh, "-o", "BatchMode=yes", "-o", f"ConnectTimeout={CONNECT_TIMEOUT_S}", *alive,
            *[os.path.expanduser(o) for o in launch.ssh_options], node.host, remote_shell(node, action, *args)]


def node_profile(profile: Profile, endpoint: str, rdzv_id: str, host: str | None = None) -> Profile:
    """The profile `host` runs: a node started by hand, with the head's rendezvous. Its rank is its
    place in hosts (the head is 0), so the rendezvous is torchrun's static one, where no pickled
    state passes through the store (launch.rdzv_backend_of); a profile that asked for c10d keeps it."""
    p = copy.deepcopy(profile)
    p.launch.nnodes = len(profile.launch.hosts)
    p.launch.rdzv_backend = rdzv_backend_of(profile.launch)
    if p.launch.rdzv_backend == "static":
        p.launch.node_rank = profile.launch.hosts.index(host) if host in profile.launch.hosts else 0
    p.launch.hosts = []
    p.launch.hostfile = ""
    p.launch.rdzv_endpoint = endpoint
    p.launch.rdzv_id = rdzv_id
    return p


def _failure(host: str, what: str, done: subprocess.CompletedProcess | None, exc: Exception | None = None) -> str:
    if exc is not None:
        why = str(exc)
    else:
        lines = [ln for ln in (done.stderr or "").splitlines() if ln.strip()] if done is not None else []
        why = " / ".join(lines[-3:]) or f"ssh exited {done.returncode if done else '?'}"
    return f"{what} on {host} over SSH failed: {why}"


def run_ssh(argv: list[str], stdin: str = "", timeout_s: float = START_TIMEOUT_S) -> subprocess.CompletedProcess:
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout_s,
                          start_new_session=True)


def start_node(profile: Profile, node: RemoteNode, run_id: str, head: str, cwd: str) -> dict[str, Any]:
    """Create the node's run directory and start its supervisor there; its answer (JSON) back."""
    argv = node_ssh(profile.launch, node, "start", node.run_dir, "--run-id", run_id, "--head", head, "--cwd", cwd)
    try:
        done = run_ssh(argv, stdin=profile.to_toml())
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TraindeckError(_failure(node.host, "starting the node", None, exc)) from None
    if done.returncode != 0:
        raise TraindeckError(_failure(node.host, "starting the node", done))
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise TraindeckError(f"starting the node on {node.host}: no answer from {REMOTE_MODULE} "
                             f"(got {done.stdout[-200:]!r})") from None


def stop_node(profile: Profile, node: RemoteNode, grace_s: float) -> str:
    """`--stop` on the node's run, there; '' when it went well, else why not."""
    argv = node_ssh(profile.launch, node, "stop", node.run_dir, "--grace", f"{grace_s:g}")
    try:
        done = run_ssh(argv, timeout_s=grace_s + 30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return _failure(node.host, "stopping the node", None, exc)
    return "" if done.returncode == 0 else _failure(node.host, "stopping the node", done)


def ask_node(profile: Profile, node: RemoteNode, what: str, action: str, *args: str,
             timeout_s: float = START_TIMEOUT_S) -> dict[str, Any]:
    """One `remote_node ACTION` on the node; its JSON answer, or a TraindeckError naming the host."""
    argv = node_ssh(profile.launch, node, action, *args)
    try:
        done = run_ssh(argv, timeout_s=timeout_s)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TraindeckError(_failure(node.host, what, None, exc)) from None
    if done.returncode != 0:
        raise TraindeckError(_failure(node.host, what, done))
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise TraindeckError(f"{what} on {node.host}: no answer from {REMOTE_MODULE}") from None


def control_node(profile: Profile, node: RemoteNode, action: str, wait_s: float | None = 30.0) -> str:
    """A control request to the node's rank 0 (it polls control.json on its own disk); the
    acknowledgement, or with `wait_s=None` the request's sequence number, as text."""
    args = [node.run_dir, action] + (["--timeout", f"{wait_s:g}"] if wait_s is not None else ["--no-wait"])
    answer = ask_node(profile, node, f"sending '{action}' to rank 0", "control", *args,
                      timeout_s=(wait_s or 0.0) + CONNECT_TIMEOUT_S + 30)
    return str(answer.get("ack") or "")


def dump_node(profile: Profile, node: RemoteNode) -> list[str]:
    """`--dump` of the node's ranks, there (the dump file stays in its run directory's dumps/)."""
    answer = ask_node(profile, node, "dumping the ranks' stacks", "dump", node.run_dir,
                      timeout_s=CONNECT_TIMEOUT_S + 60)
    return [str(line) for line in answer.get("lines") or []]


def check_node(profile: Profile, node: RemoteNode) -> tuple[dict[str, Any] | None, str]:
    """What the node says about itself (version, GPUs, hostname), or why it could not say."""
    argv = node_ssh(profile.launch, node, "check")
    try:
        done = run_ssh(argv, timeout_s=CONNECT_TIMEOUT_S + 30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, _failure(node.host, "checking the node", None, exc)
    if done.returncode != 0:
        return None, _failure(node.host, "checking the node", done)
    try:
        return json.loads(done.stdout.strip().splitlines()[-1]), ""
    except (ValueError, IndexError):
        return None, f"checking the node on {node.host}: no answer from {REMOTE_MODULE}"

"""`python -m training.console.remote_node start|stop|check ...`: what the head runs on every other
node of a `[launch] hosts` run, over SSH (training.supervise.node_ssh builds the command).

    start RUN_DIR --run-id ID --head HOST --cwd DIR   (profile.toml on stdin)
        validate the profile here, create RUN_DIR (RUNS_DIR/<run id>/nodes/<host>), start this
        node's supervisor in its own session, print {"run_dir", "pid", "hostname"} and return:
        the supervisor outlives the SSH connection, as a run started by run.py outlives its console;
        a RUN_DIR that holds this run, ended, is started again (the head's --resume)
    control RUN_DIR ACTION [--timeout S | --no-wait]
        a control request to the ranks here (rank 0 polls control.json); prints {"ack"}
    dump RUN_DIR                the ranks' stacks here, as `run.py --dump`; prints {"lines"}
    stop RUN_DIR [--grace S]    the run there stopped as `run.py --stop` would; prints its state
    check                       {"version", "hostname", "python", "gpus", "gpu_names"} of this node
    follow RUN_DIR [--events-offset N] [--telemetry-offset N] [--no-files]
        the node's run directory as a stream of JSON lines on stdout (training.rundir.node_stream)
        until its exit.json is sent; the head's supervisor keeps one such SSH connection per node

Errors go to stderr as one paragraph and exit 2; the head shows them with the host's name.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from pathlib import Path

from training import traindeck_version
from training.errors import TraindeckError

# How often `follow` looks at the run directory: the delay the head's copy adds to what it shows.
FOLLOW_POLL_S = 0.25


def _run_here(args: argparse.Namespace, why: str = ""):
    """The run in args.run_dir on this node (a TraindeckError if there is none)."""
    from training.rundir import RunPaths

    paths = RunPaths(Path(args.run_dir))
    if not paths.run_json.exists():
        raise TraindeckError(f"no run in {paths.root} on {socket.gethostname()}{why}")
    return paths


def _owned_run(args: argparse.Namespace):
    """The run in args.run_dir on this node, to act on. The head asks as its user: a directory here
    that is not that user's is not acted on (a TraindeckError)."""
    from training.console.owned_run import check_owned_run

    paths = _run_here(args)
    check_owned_run(paths, f"remote_node {args.action}")
    return paths


def _start(args: argparse.Namespace) -> int:
    from training.console.runs import start_node_run
    from training.profile import parse_profile

    root = Path(args.run_dir)
    text = sys.stdin.read()
    profile = parse_profile(text, path=str(root / "profile.toml"))
    paths = start_node_run(profile, root, args.run_id, args.cwd, node={"head": args.head})  # or resumes it
    from training.rundir import read_run_json

    pid = (read_run_json(paths).get("supervisor") or {}).get("pid")
    print(json.dumps({"run_dir": str(paths.root), "pid": pid, "hostname": socket.gethostname()}))
    return 0


def _stop(args: argparse.Namespace) -> int:
    from training.console.stop import stop_run

    paths = _owned_run(args)
    state = stop_run(paths, grace_s=args.grace)
    print(json.dumps({"state": state.value}))
    return 0


def _control(args: argparse.Namespace) -> int:
    from training.rundir.control import send, send_and_wait

    paths = _owned_run(args)
    if args.no_wait:
        ack = f"request {send(paths, args.request)} sent"
    else:
        ack = send_and_wait(paths, args.request, timeout_s=args.timeout)
    print(json.dumps({"ack": ack}))
    return 0


def _dump(args: argparse.Namespace) -> int:
    from training.console.stackdump import dump_stacks

    paths = _owned_run(args)
    print(json.dumps({"lines": dump_stacks(paths)}))
    return 0


def _follow(args: argparse.Namespace) -> int:
    import time

    from training.rundir.node_stream import NodeStream, encode

    paths = _run_here(args, ": nothing to follow")
    stream = NodeStream(paths.root, {"events.jsonl": args.events_offset, "telemetry.jsonl": args.telemetry_offset},
                        files=not args.no_files)
    try:
        while not stream.ended:
            lines = [encode(m) for m in stream.poll()]
            if lines:
                sys.stdout.write("\n".join(lines) + "\n")
                sys.stdout.flush()
            time.sleep(FOLLOW_POLL_S)
    except BrokenPipeError:
        # The head went (its console closed the connection, or it reconnects): nothing to say.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _check(_args: argparse.Namespace) -> int:
    from training.monitor.gpu import get_backend

    backend = get_backend()
    devices = backend.devices() if backend.available else []
    count = len(devices)
    names = [getattr(d, "name", "?") for d in devices]
    print(json.dumps({"version": traindeck_version(), "hostname": socket.gethostname(), "python": sys.executable,
                      "gpus": count, "gpu_names": names, "gpu_error": None if backend.available else backend.error}))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.console.remote_node")
    sub = parser.add_subparsers(dest="action", required=True)
    start = sub.add_parser("start")
    start.add_argument("run_dir")
    start.add_argument("--run-id", required=True)
    start.add_argument("--head", required=True)
    start.add_argument("--cwd", required=True)
    stop = sub.add_parser("stop")
    stop.add_argument("run_dir")
    stop.add_argument("--grace", type=float, default=None)
    sub.add_parser("check")
    control = sub.add_parser("control")
    control.add_argument("run_dir")
    control.add_argument("request", metavar="ACTION")  # not "action": that is the subcommand's dest
    control.add_argument("--timeout", type=float, default=30.0)
    control.add_argument("--no-wait", action="store_true", help="send only (the head's health rules)")
    dump = sub.add_parser("dump")
    dump.add_argument("run_dir")
    follow = sub.add_parser("follow")
    follow.add_argument("run_dir")
    follow.add_argument("--events-offset", type=int, default=0)
    follow.add_argument("--telemetry-offset", type=int, default=0)
    follow.add_argument("--no-files", action="store_true", help="the head shares this directory: liveness only")
    args = parser.parse_args(argv)
    try:
        return {"start": _start, "stop": _stop, "check": _check, "follow": _follow, "control": _control,
                "dump": _dump}[args.action](args)
    except TraindeckError as exc:
        print(f"traindeck on {socket.gethostname()}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

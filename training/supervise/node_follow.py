"""The head follows every other node of a `[launch] hosts` run, one SSH connection per node.

    NodeFollower(launch, node, copy, shared, on_news, log).start()
        ssh HOST '... remote_node follow DIR --events-offset N --telemetry-offset M'   (JSON lines)
        -> NodeMirror(<run>/nodes/<host>).apply(each)      (training.rundir.node_stream)
        -> on_news(NodeNews): the node's supervisor is gone without exit.json ("lost"), the node's
           run ended ("ended"), or the node has not answered for UNREACHABLE_AFTER_S ("unreachable")
        a connection that ends while the node's run is live is made again, resuming from the sizes
        of the head's copy, waiting longer after each failure (up to RECONNECT_MAX_S)
    .close(drain_s)  waits up to drain_s for the node's end (its exit.json copied), then hangs up

Viewers read the copy, never the network. With a shared filesystem (`shares_run_dir`) the node
already writes into the head's `<run>/nodes/<host>/`, and the connection carries only the node's
liveness and end. This is a file copy and a liveness report, not a protocol between the ranks:
torchrun's c10d stays the only one of those.
"""

from __future__ import annotations

import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from traindeck.untrusted import parse_json
from training.profile import Launch
from training.rundir import RunPaths, read_run_json
from training.rundir.node_stream import MirrorGap, NodeMirror
from training.supervise.node_ssh import RemoteNode, node_ssh

RECONNECT_FIRST_S = 1.0
RECONNECT_MAX_S = 15.0
# A node unreachable this long is reported (once per outage); torchrun decides whether the run
# survives it, the follower keeps trying.
UNREACHABLE_AFTER_S = 60.0


@dataclass(frozen=True)
class NodeNews:
    host: str
    what: str  # "lost" | "ended" | "unreachable"
    message: str = ""
    state: str | None = None  # "ended": the node's final state
    failed_rank: int | None = None


def shares_run_dir(copy: RunPaths, run_id: str, supervisor_pid: Any) -> bool:
    """True when the node's run directory is the head's `<run>/nodes/<host>/` itself (a shared
    filesystem): the node's own run.json is already there, which the head never writes before
    its first copy. The supervisor's pid tells it from a copy left by an earlier head."""
    data = read_run_json(copy)
    return (data.get("id") == run_id and isinstance(data.get("node"), dict)
            and isinstance(data.get("supervisor"), dict) and data["supervisor"].get("pid") == supervisor_pid)


class NodeFollower:
    def __init__(self, launch: Launch, node: RemoteNode, copy: RunPaths, shared: bool,
                 on_news: Callable[[NodeNews], None], log: Callable[[str], None],
                 popen: Callable[..., subprocess.Popen] = subprocess.Popen,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.launch = launch
        self.node = node
        self.mirror = NodeMirror(copy.root)
        self.shared = shared
        self.on_news = on_news
        self.log = log
        self.popen = popen
        self.monotonic = monotonic
        self.ended = threading.Event()
        self.connections = 0
        self._closing = threading.Event()
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None
        self._lost_told = False

    def start(self) -> NodeFollower:
        self._thread = threading.Thread(target=self._run, name=f"follow-{self.node.host}", daemon=True)
        self._thread.start()
        return self

    def argv(self) -> list[str]:
        offsets = self.mirror.offsets()
        args = [self.node.run_dir, "--events-offset", str(offsets["events.jsonl"]),
                "--telemetry-offset", str(offsets["telemetry.jsonl"])]
        if self.shared:
            args.append("--no-files")
        return node_ssh(self.launch, self.node, "follow", *args, keepalive=True)

    def _run(self) -> None:
        delay = RECONNECT_FIRST_S
        down_since: float | None = None
        told_unreachable = False
        while not (self._closing.is_set() or self.ended.is_set()):
            heard, why = self._follow_once()
            if self._closing.is_set() or self.ended.is_set():
                return
            if heard:
                delay, down_since, told_unreachable = RECONNECT_FIRST_S, None, False
            elif down_since is None:
                down_since = self.monotonic()
            if down_since is not None and not told_unreachable \
                    and self.monotonic() - down_since >= UNREACHABLE_AFTER_S:
                told_unreachable = True
                self.on_news(NodeNews(self.node.host, "unreachable",
                                      f"node {self.node.host} has not answered over SSH for "
                                      f"{self.monotonic() - down_since:.0f} s ({why}); still trying"))
            self.log(f"following node {self.node.host}: {why}; connecting again in {delay:g} s")
            self._closing.wait(delay)
            delay = min(delay * 2, RECONNECT_MAX_S)

    def _follow_once(self) -> tuple[bool, str]:
        """One connection, read to its end: (whether the node said anything, why it ended)."""
        try:
            proc = self.popen(self.argv(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              start_new_session=True)
        except OSError as exc:
            return False, f"cannot run ssh: {exc}"
        self._proc = proc
        self.connections += 1
        heard = False
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                try:
                    message = parse_json(line)
                except ValueError:  # also junk nested too deep for json (RecursionError)
                    continue  # not ours (a login banner on stdout): the stream's lines are whole
                if not isinstance(message, dict):
                    continue
                heard = True
                self._handle(message)
                if self.ended.is_set():
                    break
        except MirrorGap as exc:
            self.log(f"following node {self.node.host}: {exc}; resuming from the copy")
        except OSError as exc:  # the copy could not be written (a full disk): try again, never die silently
            self.log(f"following node {self.node.host}: writing the copy failed: {exc}")
        finally:
            self._hang_up(proc)
        return heard, f"the connection ended (ssh exit {proc.returncode})"

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message.get("kind")
        if kind == "alive":
            if message.get("supervisor") == "dead" and not self._lost_told:
                self._lost_told = True
                self.on_news(NodeNews(self.node.host, "lost", "its supervisor is gone without writing exit.json"))
        elif kind == "end":
            rank = message.get("failed_rank")
            self.ended.set()
            self.on_news(NodeNews(self.node.host, "ended", str(message.get("message") or ""),
                                  state=message.get("state"),
                                  failed_rank=rank if isinstance(rank, int) and not isinstance(rank, bool) else None))
        else:
            self.mirror.apply(message)

    @staticmethod
    def _hang_up(proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def close(self, drain_s: float) -> bool:
        """Wait up to `drain_s` for the node's end, then hang up; True when the end arrived."""
        ended = self.ended.wait(drain_s)
        self._closing.set()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
        if self._thread is not None:
            self._thread.join(timeout=10)
        return ended

"""The supervisor's view of a multi-node rendezvous: is the endpoint reachable, how many nodes joined.

torchrun's c10d rendezvous says nothing while it waits (it blocks until every node joined, or
its join timeout, 600 s). This watcher answers the user's question, "what is it waiting for?",
without a protocol of its own:

- reachable: a TCP connect to the endpoint (refused, timed out, no such host: said as such);
- joined: torchrun's own rendezvous state, read through torch's C10dRendezvousBackend from the
  same TCP store the nodes use (key "torch.rendezvous.<id>", the participants of the round). That
  state is a pickle anyone who reaches the port may have written: it is read as data by
  training.supervise.rdzv_state, never unpickled. A static rendezvous keeps no such state
  (UncountedReader): the watch then says only whether the endpoint answers.

It runs in a thread (a read may block up to READ_TIMEOUT_S) and only computes; the supervisor's
monitor loop takes `current()` and writes run.json (one writer thread per file). It stops once
the workers are up: torchrun starts them only after the rendezvous completed.
"""

from __future__ import annotations

import errno
import socket
import threading
import time
from dataclasses import replace
from datetime import timedelta
from typing import Any, Callable

from training.rundir.rendezvous import FAILED, MET, UNREACHABLE, WAITING, RendezvousRecord
from training.supervise import rdzv_state

POLL_S = 1.0
CONNECT_TIMEOUT_S = 2.0
READ_TIMEOUT_S = 3.0
# The node that hosts the store opens the port a moment after its torchrun starts (imports
# take seconds, more on a busy box): refusals for this long are a rendezvous still opening, not an
# unreachable one. An endpoint on this machine is never "unreachable": our own torchrun opens it.
UNREACHABLE_AFTER_S = 10.0


def is_this_machine(host: str) -> bool:
    """True when `host` names an address of this machine (torchrun's c10d then hosts the store
    here): the name resolves, and a socket can bind to what it resolves to."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    for family, _, _, _, addr in infos:
        try:
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.bind((addr[0], 0))
            return True
        except OSError:
            continue
    return False


def probe_endpoint(host: str, port: int, timeout_s: float = CONNECT_TIMEOUT_S) -> str:
    """'' when something listens at host:port, else what went wrong in a few words."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return ""
    except socket.gaierror as exc:
        return f"no such host '{host}' ({exc.strerror or exc})"
    except socket.timeout:
        return f"no answer within {timeout_s:g} s"
    except ConnectionRefusedError:
        return "connection refused"
    except OSError as exc:
        if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
            return "no route to host"
        return exc.strerror or str(exc)


class StoreReader:
    """How many nodes torchrun's c10d rendezvous `rdzv_id` holds, read from its TCP store.

    One client connection, kept while it works. Returns None when the state cannot be read (no
    store yet, a torch without these internals): the viewers then say what they know without it."""

    def __init__(self, host: str, port: int, rdzv_id: str):
        self.host, self.port, self.rdzv_id = host, port, rdzv_id
        self._backend: Any = None

    def joined(self) -> int | None:
        try:
            if self._backend is None:
                # Lazy: torch only for a c10d rendezvous being watched (the console imports this module too).
                from torch.distributed import TCPStore
                from torch.distributed.elastic.rendezvous.c10d_rendezvous_backend import C10dRendezvousBackend

                store = TCPStore(self.host, self.port, is_master=False, timeout=timedelta(seconds=READ_TIMEOUT_S),
                                 wait_for_workers=False)
                self._backend = C10dRendezvousBackend(store, self.rdzv_id)
            got = self._backend.get_state()
            if got is None:
                return 0
            # torch's _RendezvousState, read as data: whoever reaches the store may have written it.
            return rdzv_state.participants(bytes(got[0]))
        except Exception:  # noqa: BLE001 - any failure only costs the count; reconnect next time
            self._backend = None
            return None


class UncountedReader:
    """A static rendezvous has no participants list: how many nodes joined is not known."""

    def joined(self) -> int | None:
        return None


class RendezvousWatch:
    """Keeps a RendezvousRecord current until the workers are up (or `stop()`)."""

    def __init__(self, host: str, port: int, rdzv_id: str, nnodes: int,
                 clock: Callable[[], float] = time.time, reader: StoreReader | None = None,
                 probe: Callable[[str, int], str] = probe_endpoint, poll_s: float = POLL_S):
        self.host, self.port = host, port
        self.clock = clock
        self.reader = reader or StoreReader(host, port, rdzv_id)
        self.probe = probe
        self.poll_s = poll_s
        self._record = RendezvousRecord(endpoint=f"{host}:{port}", nnodes=nnodes, state=WAITING,
                                        since=round(clock(), 3), id=rdzv_id)
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rendezvous-watch", daemon=True)
        self._refused_since: float | None = None
        self.hosted_here = is_this_machine(host)

    def start(self) -> RendezvousWatch:
        self._thread.start()
        return self

    def current(self) -> RendezvousRecord:
        with self._lock:
            return self._record

    def _set(self, **changes: Any) -> None:
        with self._lock:
            if self._done.is_set():
                return  # finish() had the last word
            self._record = replace(self._record, **changes)

    def finish(self, met: bool, error: str = "") -> RendezvousRecord:
        """The workers are up (met) or the launcher ended first (failed): stop watching."""
        self._done.set()
        with self._lock:
            if self._record.state in (WAITING, UNREACHABLE):
                self._record = replace(self._record, state=MET if met else FAILED,
                                       joined=self._record.nnodes if met else self._record.joined,
                                       error=error or self._record.error)
            return self._record

    def stop(self) -> None:
        self._done.set()

    def poll_once(self) -> None:
        error = self.probe(self.host, self.port)
        now = self.clock()
        if error:
            self._refused_since = self._refused_since or now
            if not self.hosted_here and now - self._refused_since >= UNREACHABLE_AFTER_S:
                self._set(state=UNREACHABLE, error=error, error_since=round(self._refused_since, 3))
            return
        self._refused_since = None
        joined = self.reader.joined()
        record = self.current()
        self._set(state=WAITING, error="", error_since=None,
                  joined=joined if joined is not None else record.joined)

    def _run(self) -> None:
        while not self._done.is_set():
            self.poll_once()
            self._done.wait(self.poll_s)

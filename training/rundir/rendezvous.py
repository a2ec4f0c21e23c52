"""A multi-node run's rendezvous as run.json records it, and the one sentence every viewer shows.

While torchrun's c10d rendezvous waits for the other nodes, the supervisor
(training.supervise.rdzv_watch) keeps run.json's "rendezvous" current:

    "rendezvous": {"endpoint": "10.0.0.1:29500", "id": "traindeck-3f1c...", "nnodes": 2,
                   "state": "waiting|unreachable|met|failed", "since": <unix s>,
                   "joined": 1 | null, "error": "connection refused" | null, "error_since": <unix s> | null}

`joined` is how many nodes the rendezvous holds, read from torchrun's own rendezvous state in its
store (null until it could be read). The record changes only when one of those facts changes: the
seconds in "waiting for 1 of 2 nodes at HOST:PORT (12 s)" are counted by the viewer from `since`,
with the viewer's clock passed in (`describe(now)`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from traindeck.numbers import finite_number  # Infinity or 10**400 in an edited run.json: no count or time

WAITING = "waiting"
UNREACHABLE = "unreachable"
MET = "met"
FAILED = "failed"
STATES = (WAITING, UNREACHABLE, MET, FAILED)


@dataclass(frozen=True)
class RendezvousRecord:
    endpoint: str
    nnodes: int
    state: str
    since: float | None = None
    id: str = ""
    joined: int | None = None
    error: str = ""
    error_since: float | None = None

    @classmethod
    def from_json(cls, data: Any) -> RendezvousRecord | None:
        if not isinstance(data, dict) or data.get("state") not in STATES:
            return None
        nnodes = finite_number(data.get("nnodes"))
        joined = finite_number(data.get("joined"))
        return cls(endpoint=str(data.get("endpoint") or "?"), nnodes=int(nnodes or 0), state=data["state"],
                   since=finite_number(data.get("since")), id=str(data.get("id") or ""),
                   joined=None if joined is None else int(joined), error=str(data.get("error") or ""),
                   error_since=finite_number(data.get("error_since")))

    def to_json(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "id": self.id, "nnodes": self.nnodes, "state": self.state,
                "since": self.since, "joined": self.joined, "error": self.error or None,
                "error_since": self.error_since}

    @property
    def pending(self) -> bool:
        """The nodes have not met yet (what a viewer shows instead of "waiting for the first step")."""
        return self.state in (WAITING, UNREACHABLE)

    def describe(self, now: float) -> str:
        """'waiting for 1 of 2 nodes at 10.0.0.1:29500 (12 s)', or why this node cannot get there."""
        if self.state == UNREACHABLE:
            waited = _seconds(now, self.error_since or self.since)
            return (f"cannot reach the rendezvous at {self.endpoint}: {self.error or 'no answer'} for {waited} "
                    f"(the node at {self.endpoint} must be up, and the address reachable from here)")
        if self.state == WAITING:
            # Unknown: this node at most (its torchrun may not have joined yet).
            missing = self.nnodes - (self.joined if self.joined is not None else 1)
            return f"waiting for {max(missing, 0)} of {self.nnodes} nodes at {self.endpoint} ({_seconds(now, self.since)})"
        if self.state == MET:
            return f"all {self.nnodes} nodes met at {self.endpoint}"
        return f"the rendezvous at {self.endpoint} failed" + (f": {self.error}" if self.error else "")


def _seconds(now: float, since: float | None) -> str:
    if since is None:
        return "?"
    return f"{max(0, int(now - since))} s"


def rendezvous_of(run_json: Any) -> RendezvousRecord | None:
    return RendezvousRecord.from_json(run_json.get("rendezvous") if isinstance(run_json, dict) else None)

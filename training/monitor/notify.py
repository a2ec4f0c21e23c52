"""The [notify] command: any argv the supervisor runs for every health firing and at the end of a
run, whether or not a console is attached.

    [notify]
    command = ["notify-send", "traindeck {run_id}", "{rule}: {message}"]
    timeout_s = 10.0
    min_interval_s = 300.0   # a rule that keeps firing notifies at most once per this
                             # (an update of an open incident never notifies: health.incident_clear_s)
    on_end = true            # also when the run finishes or fails

Each item of `command` is filled with the event's fields in the profile's one placeholder syntax
(training.placeholders; the names are NOTIFY_PLACEHOLDERS, a field an event lacks is ""), and
the event goes to the command's stdin as one line of JSON. The command runs without a shell, with
a timeout, in a thread of its own (a slow command never holds up the health rules); a command that
fails or times out is told in the supervisor's log and as a warning event, never raised.

    notifier = Notifier(profile.notify, run_id=..., run_dir=...)
    notifier.health(event)        # rate-limited per rule
    notifier.end("finished", message)
    notifier.close()              # waits for the queued commands (at most their timeouts)
    notify_test(profile, ...)     # run.py --notify-test: one synthetic event, run at once
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

from training.placeholders import NOTIFY_PLACEHOLDERS, fill

END_STATES = ("finished", "failed")
# The newest command outcomes kept (for tests and a look in a debugger; failures are logged as they
# come): a run notified for days keeps this many, not one per notification.
NOTIFY_OUTCOMES_KEPT = 64


@dataclass(frozen=True)
class Outcome:
    """One command's result: returncode (None when it did not run to an end) and why not."""

    argv: tuple[str, ...]
    returncode: int | None
    error: str = ""
    output: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.error


class _Fields(dict):
    def __missing__(self, key: str) -> str:
        return ""


def notification(event: dict[str, Any], run_id: str, run_dir: str) -> dict[str, Any]:
    """The JSON the command reads on stdin: the event's fields plus the run's."""
    out = {k: v for k, v in event.items()}
    out.setdefault("kind", "health")
    out["run_id"], out["run_dir"] = run_id, run_dir
    return out


def argv_for(command: list[str], note: dict[str, Any]) -> list[str]:
    fields = _Fields({k: "" if v is None else str(v) for k, v in note.items() if k in NOTIFY_PLACEHOLDERS})
    return [fill(item, fields) for item in command]


def run_command(command: list[str], note: dict[str, Any], timeout_s: float) -> Outcome:
    """Run the command once for this notification: no shell, the JSON on stdin, a timeout."""
    argv = argv_for(command, note)
    try:
        done = subprocess.run(argv, input=json.dumps(note) + "\n", capture_output=True, text=True,
                              timeout=timeout_s, start_new_session=True)
    except subprocess.TimeoutExpired:
        return Outcome(tuple(argv), None, f"did not finish within {timeout_s:g} s (notify.timeout_s); killed")
    except OSError as exc:
        return Outcome(tuple(argv), None, f"could not start: {exc.strerror or exc}")
    output = "\n".join(part.strip() for part in (done.stdout, done.stderr) if part and part.strip())
    error = "" if done.returncode == 0 else f"exited {done.returncode}" + (f": {output[-300:]}" if output else "")
    return Outcome(tuple(argv), done.returncode, error, output)


class Notifier:
    """Queues notifications and runs the command for each in one thread, oldest first."""

    def __init__(self, settings: Any, run_id: str, run_dir: str,
                 on_failure: Callable[[Outcome], None] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.command = list(getattr(settings, "command", []) or [])
        self.timeout_s = float(getattr(settings, "timeout_s", 10.0))
        self.min_interval_s = float(getattr(settings, "min_interval_s", 300.0))
        self.on_end = bool(getattr(settings, "on_end", True))
        self.run_id, self.run_dir = run_id, run_dir
        self.on_failure = on_failure or (lambda outcome: None)
        self.clock = clock
        self.last_sent: dict[str, float] = {}  # rule -> when it last notified
        self.outcomes: deque[Outcome] = deque(maxlen=NOTIFY_OUTCOMES_KEPT)
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.command)

    def health(self, event: dict[str, Any]) -> bool:
        """A health firing (a `health` event, or a watchdog `log` event with its rule): queued
        unless it updates an incident already told (`"update": true`, training.monitor.health) or
        the same rule notified less than min_interval_s ago. Returns whether it was queued."""
        rule = str(event.get("rule") or "")
        if not self.enabled or not rule or event.get("update") is True:
            return False
        now = self.clock()
        last = self.last_sent.get(rule)
        if last is not None and now - last < self.min_interval_s:
            return False
        self.last_sent[rule] = now
        self._put(dict(event, kind="health"))
        return True

    def end(self, state: str, message: str, **fields: Any) -> bool:
        """The run ended: notify when it finished or failed (on_end)."""
        if not self.enabled or not self.on_end or state not in END_STATES:
            return False
        self._put({"kind": "end", "rule": state, "state": state, "message": message, "t": time.time(), **fields})
        return True

    def _put(self, event: dict[str, Any]) -> None:
        self._queue.put(notification(event, self.run_id, self.run_dir))
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="traindeck-notify", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            note = self._queue.get()
            if note is None:
                return
            outcome = run_command(self.command, note, self.timeout_s)
            self.outcomes.append(outcome)
            if not outcome.ok:
                try:
                    self.on_failure(outcome)
                except Exception as exc:  # noqa: BLE001 - telling a failure must not end the thread
                    print(f"notify: {exc!r}", file=sys.stderr, flush=True)

    def close(self, timeout_s: float | None = None) -> None:
        """Run what is queued (each at most its timeout), then end the thread."""
        if self._thread is None:
            return
        pending = self._queue.qsize() + 1
        self._queue.put(None)
        self._thread.join(timeout_s if timeout_s is not None else pending * (self.timeout_s + 1))
        self._thread = None

    # The supervisor's aux helpers are stopped with stop().
    stop = close


def test_event(run_id: str) -> dict[str, Any]:
    return {"kind": "test", "rule": "test", "action": "warn", "value": None, "step": None,
            "message": f"a test notification from traindeck (run.py --notify-test) for {run_id}", "t": time.time()}


def notify_test(settings: Any, run_id: str, run_dir: str) -> Outcome:
    """run.py --notify-test: the command once, at once, with a synthetic event."""
    note = notification(test_event(run_id), run_id, run_dir)
    return run_command(list(settings.command), note, float(settings.timeout_s))

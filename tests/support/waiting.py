"""Wait on a condition with a real deadline, never a fixed sleep.

`wait_for` polls from a thread or the test itself; `await_for` polls inside a Textual pilot, so the
app keeps processing messages between polls. Both measure the deadline on the monotonic clock (not
by adding up poll intervals, which under load can stretch a 10 s wait into minutes).
"""

from __future__ import annotations

import time
from typing import Any, Callable, TypeVar

T = TypeVar("T")


def _diagnostics(paths: Any) -> str:
    """The tail of a run's supervisor log, if `paths` names a run: why it did not get there."""
    if paths is None:
        return ""
    try:
        return "\n--- supervisor.log (tail) ---\n" + paths.supervisor_log.read_text(errors="replace")[-3000:]
    except OSError:
        return ""


def _poll_once(condition: Callable[[], T], deadline: float, failure: Callable[[], str]) -> T | None:
    """condition()'s value if it is truthy; None while there is time left; past `deadline`, an
    AssertionError saying failure()."""
    value = condition()
    if value:
        return value
    if time.monotonic() >= deadline:
        raise AssertionError(failure())
    return None


def wait_for(predicate: Callable[[], T], timeout: float = 30.0, what: str = "", poll: float = 0.05,
             paths: Any = None) -> T:
    """Poll `predicate()` until it is truthy and return its value; fail after `timeout` seconds.

    `paths` (a RunPaths) adds the run's supervisor log to the failure message."""
    deadline = time.monotonic() + timeout

    def failure() -> str:
        return f"timed out after {timeout} s waiting for {what or predicate}{_diagnostics(paths)}"

    while (value := _poll_once(predicate, deadline, failure)) is None:
        time.sleep(poll)
    return value


async def await_for(pilot: Any, condition: Callable[[], Any], timeout: float = 10.0, step: float = 0.05,
                    what: str = "") -> Any:
    """`wait_for` for a Textual pilot: pause the test (the app runs on) until `condition()` holds."""
    deadline = time.monotonic() + timeout

    def failure() -> str:
        return f"condition not met within {timeout} s: {what or condition}"

    while (value := _poll_once(condition, deadline, failure)) is None:
        await pilot.pause(step)
    return value

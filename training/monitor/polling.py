"""The supervisor's advisory watchers run in one kind of thread: a daemon that calls `tick(now)`
every `interval_s` until stopped. A tick that raises is reported once on stderr (the supervisor
log) and never ends the thread nor takes the supervisor down: watching is advice, not training."""

from __future__ import annotations

import sys
import threading


class PollingThread:
    thread_name = "traindeck-poll"
    interval_s: float

    def tick(self, now: float) -> None:
        raise NotImplementedError

    def clock(self) -> float:  # replaced by an instance attribute where a clock is injected
        raise NotImplementedError

    def start(self):
        if getattr(self, "_thread", None) is None:
            self._stop = threading.Event()
            self._error_reported = False
            self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        thread = getattr(self, "_thread", None)
        if thread is not None:
            self._stop.set()
            thread.join(timeout_s)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.tick(self.clock())
            except Exception as exc:  # noqa: BLE001 - see the module docstring
                if not self._error_reported:
                    self._error_reported = True
                    name = self.thread_name.removeprefix("traindeck-")
                    print(f"{name}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)

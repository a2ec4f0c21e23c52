"""Where a rank's time goes: the step anatomy's clock, a lap timer over named phases.

    clock = make_step_clock(device)
    clock.lap("other")       # the loop marks each boundary; the time since the last one is the phase's
    batch = next(batches); clock.lap("data")
    loss.backward();       clock.lap_split("compute", "comm")   # up to the comm hook's last mark, then the wait
    optimizer.step();      clock.lap("optimizer")
    phases = clock.drain()   # at the logging boundary: {phase: seconds} since the last drain

Phases (training.rundir.step_anatomy.PHASES): data (waiting for the input batch and moving it to the
device), compute (forward + backward), comm (DDP's gradient all-reduce where it can be told apart:
the wait between the last bucket's comm hook and the end of backward), optimizer (unscale, clip, step,
zero_grad, schedule), eval and checkpoint (outside steps), other (logging, heartbeats, the rest).
Every moment between two drains is charged to exactly one phase, so the phases add up to the wall
time; `skip()` leaves a pause out.

On the CPU the laps read time.perf_counter (4 reads a step: the benchmark's cost). On CUDA each lap
records a CUDA event on the current stream instead, and `drain()` reads the elapsed times between
them at the logging boundary, after the interval's one host sync: never a synchronize per step, and
the phases are the GPU's timeline (data = the GPU waiting for its input). The event type is a
parameter, so the CUDA path runs in tests with a fake.
"""

from __future__ import annotations

import time
from typing import Any, Callable


class StepClock:
    """The host clock: each lap adds the seconds since the previous one to its phase."""

    kind = "host"

    def __init__(self, now: Callable[[], float] = time.perf_counter) -> None:
        self._now = now
        self.phases: dict[str, float] = {}
        self._origin = now()
        self._mark: float | None = None

    def lap(self, phase: str) -> None:
        t = self._now()
        phases = self.phases
        phases[phase] = phases.get(phase, 0.0) + (t - self._origin)
        self._origin = t

    def mark(self) -> None:
        """The DDP comm hook: a bucket of gradients is ready (the last mark of a backward ends compute)."""
        self._mark = self._now()

    def lap_split(self, before: str, after: str) -> None:
        """A lap that ends with a wait: up to the last mark is `before`, the rest `after`; no mark since
        the last lap (no_sync micro-batches, no DDP) is all `before`."""
        mark, self._mark = self._mark, None
        if mark is None or mark < self._origin:
            self.lap(before)
            return
        t = self._now()
        phases = self.phases
        phases[before] = phases.get(before, 0.0) + (mark - self._origin)
        phases[after] = phases.get(after, 0.0) + (t - mark)
        self._origin = t

    def skip(self) -> None:
        """Charge nothing for the time since the last lap (a pause)."""
        self._origin = self._now()
        self._mark = None

    def drain(self) -> dict[str, float]:
        """The seconds per phase since the last drain; the clock goes on from its last lap."""
        out, self.phases = self.phases, {}
        return out


class CudaStepClock:
    """The CUDA clock: each lap records an event on the current stream; `drain()` waits for the last
    one (already done after the interval's host sync) and sums the elapsed times between them."""

    kind = "cuda"

    def __init__(self, event_factory: Callable[[], Any] | None = None) -> None:
        if event_factory is None:
            import torch

            def event_factory():
                return torch.cuda.Event(enable_timing=True)
        self._new = event_factory
        self._free: list[Any] = []
        self._origin = self._record()
        self._laps: list[tuple[str, Any]] = []  # (phase, the event that ends it), in order
        self._mark: Any = None
        self._skipped: set[int] = set()  # indices into _laps whose time is not charged

    def _record(self) -> Any:
        event = self._free.pop() if self._free else self._new()
        event.record()
        return event

    def lap(self, phase: str) -> None:
        self._laps.append((phase, self._record()))

    def mark(self) -> None:
        if self._mark is not None:
            self._free.append(self._mark)
        self._mark = self._record()

    def lap_split(self, before: str, after: str) -> None:
        mark, self._mark = self._mark, None
        if mark is None:
            self.lap(before)
            return
        self._laps.append((before, mark))
        self.lap(after)

    def skip(self) -> None:
        self._skipped.add(len(self._laps))
        self.lap("")

    def drain(self) -> dict[str, float]:
        if not self._laps:
            return {}
        self._laps[-1][1].synchronize()
        phases: dict[str, float] = {}
        start = self._origin
        for i, (phase, end) in enumerate(self._laps):
            if i not in self._skipped:
                phases[phase] = phases.get(phase, 0.0) + start.elapsed_time(end) / 1000.0  # ms
            self._free.append(start)
            start = end
        self._origin = start
        self._laps = []
        self._skipped = set()
        return phases


def make_step_clock(device: Any) -> StepClock | CudaStepClock:
    """CUDA events on a GPU, the host clock elsewhere."""
    return CudaStepClock() if getattr(device, "type", "cpu") == "cuda" else StepClock()


def time_comm_hook(model: Any, clock: StepClock | CudaStepClock) -> bool:
    """Give DDP's gradient all-reduce a hook that marks the clock when each bucket is ready, then
    all-reduces as DDP does by default; the wait after the last mark is the exposed communication.
    False (nothing registered) for a model that is not DDP or has a hook already."""
    try:
        from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
        from torch.nn.parallel import DistributedDataParallel
    except ImportError:
        return False
    if not isinstance(model, DistributedDataParallel):
        return False

    def timed_allreduce(state, bucket):
        clock.mark()
        return allreduce_hook(state, bucket)

    try:
        model.register_comm_hook(None, timed_allreduce)
    except RuntimeError:  # a hook is registered already: comm stays in compute
        return False
    return True

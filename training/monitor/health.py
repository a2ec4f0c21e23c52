"""Training health: rules over a run's events and heartbeats, told as `health` events and acted on
(a thread of the supervisor, so it watches custom scripts as well as built-in tasks).

Each rule is a key of the profile's [health] section whose value is its action, with its
thresholds in keys beside it (training.profile.Health):

nan         a non-finite value ("nan", "inf", "-inf": how events.jsonl stores them) of any metric
            named loss* or *loss, or of grad_norm, in a train or val metric event
divergence  the train-loss EMA above divergence_factor x the best EMA so far, and large in absolute
            terms too: above divergence_floor, or without one above divergence_early_fraction x the
            run's early loss (the EMA when the warm-up ended): a multiple of a best near zero is noise
overfit     the val loss rising for overfit_evals evaluations in a row while the train loss falls
throughput  train samples/s below throughput_fraction of its running median for throughput_for_s
input_bound the median rank waiting for its input batch (the step anatomy's data phase, from the
            ranks' `timing` events) above input_bound_share of its wall time for input_bound_for_s;
            the warning names the fix (num_workers, pin_memory, persistent_workers, the box's cores)
stall       no step for stall_after_s: the watchdog's hang check (training.monitor.watchdog)
straggler   a rank slower than the others: the watchdog's straggler check
memory_creep  a GPU's memory (its peak per epoch, from telemetry.jsonl) rose at each of the last
            memory_creep_epochs epoch ends, by memory_creep_fraction or more in all (the first epoch
            of a worker's life, when the caching allocator fills, is not judged)
throttle    a GPU throttled by temperature or a hardware power/thermal slowdown (NVML's clocks-event
            reasons in telemetry.jsonl; the software power cap only with throttle_power_cap) in
            throttle_share of its samples over throttle_for_s

The first four read events.jsonl, the last two telemetry.jsonl (the supervisor's own sampler
writes it, so they watch custom scripts' GPUs too); each telemetry rule judges every GPU apart.

A rule fires once, not once per poll, while what it watches stays sick; it re-arms only when that
is healthy again (a finite loss, an EMA back under the bar, a val loss back down to where its rise
began, throughput back above the fraction, a rank moving again, an epoch whose memory peak did not
rise, a GPU throttled in at most half the share).

Firings make incidents: one rule on one subject (the run, or one GPU) that fires again before it
has been healthy for health.incident_clear_s is the same incident, and that firing is an update of
it, not a new alarm: it takes no action, and every viewer, the bell and the [notify] command treat
it as news about an alarm already raised. An incident that ended (healthy for the whole stretch)
and comes back is a new one. Each non-finite value (the nan rule) is its own incident: each needs
its own action (a rewind).

A firing is recorded as one event:

    {"kind": "health", "rule": "nan", "value": "nan", "metric": "loss", "step": 40, "rank": null,
     "action": "stop", "asked": "stop", "message": "loss is nan at step 40 ...",
     "incident": "nan-1000040.000"}

and a firing that updates an open incident carries the same `incident` with `"update": true` and
`"firings"` (how many times it fired in this incident, this one included); its `action` is "warn"
(nothing done).

`asked` is the profile's action, `action` what was done: `rewind` (the nan rule of a built-in
task, opt-in) asks the worker through the control channel to reload checkpoints/last.pt and go
on, at most health.rewind_max times (the supervisor counts), then it is save-stop; `save-stop`
and `pause` travel through the control channel (training.rundir.control), which only the built-in worker reads, so for a
custom script save-stop becomes stop and pause becomes warn. `stop` asks the supervisor to stop
the run, except for the nan rule of a built-in task: there it is save-stop, which keeps the last
good checkpoint (the worker never writes non-finite weights). Once a stopping action was taken,
later firings are only told (action "warn").

A multi-node run (`[launch] hosts`): the head's monitor reads every node's events.jsonl and
telemetry.jsonl (its own, and each other node's in nodes/<host>/), so the event rules judge rank 0's
metrics wherever c10d put it and the telemetry rules judge every node's GPUs (keyed by host and
index, named "GPU 0 (rank 2) on gpu-b"); a finding on a named host carries `"node"`. The other
nodes' supervisors run no monitor of their own: one judge per run.

The watchdog's hang and straggler warnings keep their `log` event form (recorded runs and every
viewer read them so) and gain `rule` and `action` fields.

    monitor = HealthMonitor(paths, profile, emit=..., act=supervisor.health_action)
    monitor.start() ... monitor.stop()
    monitor.observe(events) / monitor.observe_telemetry(samples) / monitor.check(now)
                                                   # the logic, no thread: what the unit tests drive
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

from traindeck.numbers import finite_number, is_nonfinite
from training.cpus import usable_cpus
from training.monitor.polling import PollingThread
from training.rundir import RunPaths
from training.rundir.events_file import EventReader, make_event
from training.rundir.node_views import NodeDir, on_host
from training.rundir.records import TimingEvent, parse_event
from training.rundir.step_anatomy import TimingFold

CHECK_INTERVAL_S = 1.0
# Throughput: the running median is over this many recent healthy points, and judges only
# once it has this many.
THROUGHPUT_HISTORY = 50
THROUGHPUT_MIN_POINTS = 5
# Memory creep: telemetry samples not yet known to be before or after the next epoch end are
# held back (the events and telemetry files are read one after the other); older ones are folded
# into the epoch's running peak.
MEMORY_PENDING = 64
# NVML clocks-event reasons (training.monitor.gpu.THROTTLE_REASONS) that are throttling: the GPU
# is too hot, or hardware cut its clocks (power brake, HW slowdown). sw_power_cap, a GPU at its
# power limit, is the normal state of many GPUs under full load: counted only with
# health.throttle_power_cap. Idle, application clocks, sync boost, display clocks never count.
THROTTLE_THERMAL = ("sw_thermal_slowdown", "hw_thermal_slowdown")
THROTTLE_HARDWARE = ("hw_slowdown", "hw_power_brake_slowdown")
THROTTLE_POWER_CAP = ("sw_power_cap",)
STOPPING = ("stop", "save-stop")
# A resumed run's supervisor finds the run's early train loss (the divergence rule's absolute
# reference) in the head of events.jsonl: this much of it is read, once.
EARLY_HEAD_BYTES = 256 << 10
# Rules whose every firing is an incident of its own (each non-finite value needs its action).
OWN_INCIDENT_EACH_FIRING = frozenset({"nan"})


def is_loss_name(name: str) -> bool:
    head = name.split("/", 1)[0].lower()
    return head.startswith("loss") or head.endswith("loss")


@dataclass(frozen=True)
class Finding:
    """A rule that fired: what it saw, where."""

    rule: str
    message: str
    value: Any = None
    step: int | None = None
    rank: int | None = None
    metric: str = ""
    threshold: float | None = None
    gpu: int | None = None  # the GPU's index, for the telemetry rules
    host: str | None = None  # the node it happened on, in a multi-node run


def _step(event: dict[str, Any]) -> int | None:
    step = event.get("step")
    return step if isinstance(step, int) and not isinstance(step, bool) else None


def _rank(event: dict[str, Any]) -> int | None:
    rank = event.get("rank")
    return rank if isinstance(rank, int) and not isinstance(rank, bool) else None


def _fmt(value: float) -> str:
    return f"{value:.4g}"


# ---- the rules over events ------------------------------------------------------------------

class NonFiniteRule:
    name = "nan"
    kinds = ("metric",)

    def __init__(self) -> None:
        self.firing = False

    def reset(self) -> None:
        self.firing = False

    def observe(self, event: dict[str, Any]) -> list[Finding]:
        values = event.get("values")
        if not isinstance(values, dict):
            return []
        watched = {k: v for k, v in values.items() if is_loss_name(str(k)) or k == "grad_norm"}
        if not watched:
            return []
        bad = [(k, v) for k, v in watched.items() if is_nonfinite(v)]
        if not bad:
            self.firing = False  # healthy again: the next non-finite value is a new incident
            return []
        if self.firing:
            return []
        self.firing = True
        split = str(event.get("split") or "train")
        step = _step(event)
        name, value = bad[0]
        label = name if split == "train" else f"{split} {name}"
        others = ", ".join(f"{k} {v}" for k, v in bad[1:])
        message = f"{label} is {value} at step {step if step is not None else '?'}" + (f" ({others})" if others else "")
        return [Finding(self.name, message, value=str(value), step=step, rank=_rank(event), metric=name)]


class DivergenceRule:
    """The train-loss EMA above `factor` x its best so far, and large in absolute terms as well:
    above `floor` when one is given, else above `early_fraction` x the run's early loss (the EMA
    when the warm-up ended). Late in a converging run the loss is near zero and its noise is a
    large multiple of its best; that is no divergence, and `divergence = "stop"` must not stop it."""

    name = "divergence"
    kinds = ("metric",)

    def __init__(self, factor: float, smoothing: float, warmup: int, early_fraction: float = 0.5,
                 floor: float = 0.0) -> None:
        self.factor, self.smoothing, self.warmup = factor, smoothing, warmup
        self.early_fraction, self.floor = early_fraction, floor
        # The run's early loss outlives reset(): a new life of the worker resumes a run that has
        # already converged, and its own first losses are no measure of "large".
        self.early: float | None = None
        self.reset()

    def reset(self) -> None:
        self.ema: float | None = None
        self.points = 0
        self.best: float | None = None
        self.firing = False

    def learn_early(self, events: list[dict[str, Any]]) -> None:
        """The run's early loss from its first events (a resumed run's supervisor reads them from
        the head of events.jsonl): the EMA of its first `warmup` train losses."""
        if self.early is not None:
            return
        ema, points = None, 0
        for event in events:
            loss = self._train_loss(event)
            if loss is None:
                continue
            ema = loss if ema is None else self.smoothing * ema + (1 - self.smoothing) * loss
            points += 1
            if points >= self.warmup:
                self.early = ema
                return

    @staticmethod
    def _train_loss(event: dict[str, Any]) -> float | None:
        if event.get("kind", "metric") != "metric" or event.get("split", "train") != "train" \
                or not isinstance(event.get("values"), dict):
            return None
        return finite_number(event["values"].get("loss"))

    def absolute_bar(self) -> float:
        """How large the EMA must be to be called diverging, whatever its ratio to its best."""
        if self.floor > 0:
            return self.floor
        return self.early_fraction * max(self.early or 0.0, 0.0)

    def observe(self, event: dict[str, Any]) -> list[Finding]:
        loss = self._train_loss(event)
        if loss is None:
            return []  # not a train loss, or a non-finite one (the nan rule's)
        self.ema = loss if self.ema is None else self.smoothing * self.ema + (1 - self.smoothing) * loss
        self.points += 1
        if self.points < self.warmup:
            return []
        if self.early is None:
            self.early = self.ema
        if self.best is None or self.ema < self.best:
            self.best = self.ema
        if self.best <= 0:
            return []  # a ratio to a best of zero or below says nothing
        bar = self.factor * self.best
        absolute = self.absolute_bar()
        if self.ema <= bar or self.ema <= absolute:
            # Re-arm only well under the ratio's bar (an EMA hovering at it does not fire twice), or
            # under the absolute one.
            if self.ema <= self.best * (1 + (self.factor - 1) / 2) or self.ema <= absolute:
                self.firing = False
            return []
        if self.firing:
            return []
        self.firing = True
        step = _step(event)
        if self.floor > 0:
            large = f"above divergence_floor {_fmt(self.floor)}"
        else:
            large = f"above {self.early_fraction:g}x the run's early loss {_fmt(self.early or 0.0)}"
        message = (f"the train loss is diverging: its EMA {_fmt(self.ema)} is {self.ema / self.best:.1f}x its best "
                   f"{_fmt(self.best)} (limit {self.factor:g}x) and {large} at step "
                   f"{step if step is not None else '?'}")
        return [Finding(self.name, message, value=round(self.ema, 6), step=step, rank=_rank(event), metric="loss",
                        threshold=round(max(bar, absolute), 6))]


class OverfitRule:
    name = "overfit"
    kinds = ("metric",)

    def __init__(self, evals: int) -> None:
        self.evals = evals
        self.reset()

    def reset(self) -> None:
        self.train_loss: float | None = None  # the newest finite train loss
        self.points: deque[tuple[float, float]] = deque(maxlen=self.evals + 1)  # (val loss, train loss)
        self.firing = False
        self.onset: float | None = None  # the val loss where the rise of the open incident began

    def observe(self, event: dict[str, Any]) -> list[Finding]:
        values = event.get("values")
        if not isinstance(values, dict):
            return []
        split = event.get("split", "train")
        if split == "train":
            self.train_loss = finite_number(values.get("loss")) or self.train_loss
            return []
        val = finite_number(values.get("loss"))
        if split != "val" or val is None or self.train_loss is None:
            return []
        if self.firing:
            # One evaluation that dips is no recovery (a slow overfit wobbles): healthy again only
            # back down to where the rise began.
            if self.onset is not None and val <= self.onset:
                self.firing = False
                self.points.clear()
            else:
                self.points.append((val, self.train_loss))
                return []
        self.points.append((val, self.train_loss))
        if len(self.points) <= self.evals:
            return []
        pts = list(self.points)
        rising = all(b[0] > a[0] for a, b in zip(pts, pts[1:], strict=False))
        falling = all(b[1] < a[1] for a, b in zip(pts, pts[1:], strict=False))
        if not (rising and falling):
            return []
        self.firing = True
        self.onset = pts[0][0]
        step = _step(event)
        message = (f"overfitting: the val loss rose for {self.evals} evaluations in a row "
                   f"({' -> '.join(_fmt(p[0]) for p in pts)}) while the train loss fell "
                   f"({_fmt(pts[0][1])} -> {_fmt(pts[-1][1])})")
        return [Finding(self.name, message, value=round(val, 6), step=step, metric="val loss")]


class ThroughputRule:
    name = "throughput"
    kinds = ("metric",)

    def __init__(self, fraction: float, for_s: float) -> None:
        self.fraction, self.for_s = fraction, for_s
        self.reset()

    def reset(self) -> None:
        self.history: deque[float] = deque(maxlen=THROUGHPUT_HISTORY)
        self.low_since: float | None = None
        self.firing = False

    def pause(self) -> None:
        """A pause is no slowdown: the low stretch, if any, starts over."""
        self.low_since = None

    def observe(self, event: dict[str, Any]) -> list[Finding]:
        if event.get("split", "train") != "train" or not isinstance(event.get("values"), dict):
            return []
        rate = finite_number(event["values"].get("samples_per_s"))
        t = finite_number(event.get("t"))
        if rate is None or t is None:
            return []
        if len(self.history) < THROUGHPUT_MIN_POINTS:
            self.history.append(rate)
            return []
        median = statistics.median(self.history)
        bar = self.fraction * median
        if rate >= bar:
            self.history.append(rate)  # only healthy points shape the median
            self.low_since = None
            self.firing = False
            return []
        if self.low_since is None:
            self.low_since = t
        if self.firing or t - self.low_since < self.for_s:
            return []
        self.firing = True
        step = _step(event)
        message = (f"throughput dropped to {rate:,.0f} samples/s, {rate / median:.0%} of its running median "
                   f"{median:,.0f}, for {t - self.low_since:.0f} s (limit {self.fraction:.0%} for "
                   f"{self.for_s:g} s) at step {step if step is not None else '?'}")
        return [Finding(self.name, message, value=round(rate, 3), step=step, metric="samples_per_s",
                        threshold=round(bar, 3))]


class InputBoundRule:
    """The ranks wait for their input: the median rank's data phase (training.rundir.step_anatomy)
    above `share` of its wall time in every interval for `for_s`. The ranks' timing events are folded
    here as every viewer folds them; the warning says what to change."""

    name = "input_bound"
    kinds = ("timing",)

    def __init__(self, share: float, for_s: float, cpus: int | None = None) -> None:
        self.share, self.for_s, self.cpus = share, for_s, cpus
        self.num_workers: int | None = None  # from the worker's running status, when it says
        self.reset()

    def reset(self) -> None:
        self.fold = TimingFold()
        self.high_since: float | None = None
        self.firing = False

    def learn_status(self, event: dict[str, Any]) -> None:
        workers = event.get("num_workers")
        self.num_workers = workers if isinstance(workers, int) and not isinstance(workers, bool) else None

    def observe(self, event: dict[str, Any]) -> list[Finding]:
        timing = parse_event(event)
        if not isinstance(timing, TimingEvent) or timing.steps == 0:
            return []  # an interval without steps (the last validation and save) says nothing of input
        self.fold.add(timing)
        anatomy = self.fold.recent()
        t = timing.t
        if anatomy is None or t is None:
            return []
        data = anatomy.share("data")
        if data <= self.share:
            if data <= self.share / 2:
                self.firing = False
            self.high_since = None
            return []
        if self.high_since is None:
            self.high_since = t
        if self.firing or t - self.high_since < self.for_s:
            return []
        self.firing = True
        ranks = len(anatomy.ranks)
        who = f"the median of {ranks} ranks" if ranks > 1 else "the rank"
        return [Finding(self.name, (
            f"input-bound: {who} waits for its next batch {data:.0%} of the time (limit {self.share:.0%} for "
            f"{self.for_s:g} s) at step {timing.step if timing.step is not None else '?'}; {self.fix()}"),
            value=round(data, 3), step=timing.step, metric="data", threshold=self.share)]

    def fix(self) -> str:
        workers = f" (now {self.num_workers})" if self.num_workers is not None else ""
        cores = f"; this box gives training {self.cpus} cores" if self.cpus else ""
        return (f"raise [train] num_workers{workers} so batches are made while the model computes, keep "
                f"pin_memory and persistent_workers on for GPU runs, and move decoding or augmentation off "
                f"the training process{cores}")


# ---- the rules over telemetry ----------------------------------------------------------------

def _gpus(sample: dict[str, Any]) -> list[dict[str, Any]]:
    """The GPU entries of a telemetry sample that measured something (no error, an index), each
    with the sample's "node" (the host it came from, in a multi-node run)."""
    gpus = sample.get("gpus")
    if not isinstance(gpus, list):
        return []
    host = sample.get("node") if isinstance(sample.get("node"), str) else None
    return [dict(g, node=host) if host else g for g in gpus if isinstance(g, dict) and not g.get("error")
            and isinstance(g.get("index"), int) and not isinstance(g.get("index"), bool)]


GpuKey = tuple[str, int]  # (host or "", index): GPU 0 of two nodes are two GPUs


def _gpu_key(gpu: dict[str, Any]) -> GpuKey:
    return (gpu.get("node") or "", gpu["index"])


def _gpu_rank(gpu: dict[str, Any]) -> int | None:
    ranks = gpu.get("ranks")
    if isinstance(ranks, list) and ranks and isinstance(ranks[0], int) and not isinstance(ranks[0], bool):
        return ranks[0]
    return None


def _gpu_label(gpu: dict[str, Any]) -> str:
    rank = _gpu_rank(gpu)
    return f"GPU {gpu['index']}" + (f" (rank {rank})" if rank is not None else "") + on_host(gpu.get("node"))


class MemoryCreepRule:
    """Each GPU's peak memory per epoch (telemetry samples up to an `epoch` event's time): it fires
    when the peak rose at each of the last `epochs` epoch ends and by `fraction` of the first in all.
    A healthy run's memory (PyTorch's caching allocator) levels off within its first epoch, which
    is therefore not judged; a leak (tensors kept across steps, a growing cache) keeps rising."""

    name = "memory_creep"
    kinds = ("epoch",)

    def __init__(self, fraction: float, epochs: int) -> None:
        self.fraction, self.epochs = fraction, epochs
        self.reset()

    def reset(self) -> None:
        self.pending: deque[tuple[float, dict[GpuKey, tuple[float, dict[str, Any]]]]] = deque()
        self.bucket: dict[GpuKey, tuple[float, dict[str, Any]]] = {}  # GPU -> (peak MiB, its entry) this epoch
        self.epochs_seen = 0
        self.history: dict[GpuKey, deque[tuple[int | None, float]]] = {}  # GPU -> (epoch, peak MiB)
        self.firing: set[GpuKey] = set()

    def _fold(self, mems: dict[GpuKey, tuple[float, dict[str, Any]]]) -> None:
        for index, (mib, gpu) in mems.items():
            if index not in self.bucket or mib > self.bucket[index][0]:
                self.bucket[index] = (mib, gpu)

    def observe_sample(self, sample: dict[str, Any]) -> list[Finding]:
        t = finite_number(sample.get("t"))
        mems = {_gpu_key(g): (float(m), g) for g in _gpus(sample)
                if (m := finite_number(g.get("mem_used_mib"))) is not None}
        if t is None or not mems:
            return []
        self.pending.append((t, mems))
        while len(self.pending) > MEMORY_PENDING:
            self._fold(self.pending.popleft()[1])
        return []

    def observe(self, event: dict[str, Any]) -> list[Finding]:
        t = finite_number(event.get("t"))
        if event.get("kind") != "epoch" or t is None:
            return []
        while self.pending and self.pending[0][0] <= t:
            self._fold(self.pending.popleft()[1])
        peaks, self.bucket = self.bucket, {}
        if not peaks:
            return []  # an epoch without a sample (shorter than the interval): nothing to compare
        self.epochs_seen += 1
        if self.epochs_seen == 1:
            return []  # the allocator's warm-up
        epoch = event.get("epoch") if isinstance(event.get("epoch"), int) else None
        out = []
        for index, (mib, gpu) in sorted(peaks.items()):
            history = self.history.setdefault(index, deque(maxlen=self.epochs + 1))
            if history and mib <= history[-1][1]:
                self.firing.discard(index)  # it did not rise: a new climb is a new incident
            history.append((epoch, mib))
            if len(history) <= self.epochs or index in self.firing:
                continue
            points = [p[1] for p in history]
            rising = all(b > a for a, b in zip(points, points[1:], strict=False))
            if not rising or points[0] <= 0 or (points[-1] - points[0]) / points[0] < self.fraction:
                continue
            self.firing.add(index)
            growth = (points[-1] - points[0]) / points[0]
            message = (f"{_gpu_label(gpu)} memory crept up {growth:.0%} over {self.epochs} epochs "
                       f"({' -> '.join(f'{p:,.0f}' for p in points)} MiB, each epoch's peak; limit "
                       f"{self.fraction:.0%}) by the end of epoch {epoch if epoch is not None else '?'}")
            out.append(Finding(self.name, message, value=round(mib, 1), step=_step(event), rank=_gpu_rank(gpu),
                               metric="mem_used_mib", threshold=round(points[0] * (1 + self.fraction), 1),
                               gpu=gpu["index"], host=gpu.get("node")))
        return out


class ThrottleRule:
    """Each GPU's clocks-event reasons: it fires when a throttling reason was set in at least `share`
    of the GPU's samples over the last `for_s` seconds (throttling comes and goes with the load,
    so one clean sample does not end an incident); it re-arms below half the share."""

    name = "throttle"
    kinds: tuple[str, ...] = ()

    def __init__(self, for_s: float, share: float, power_cap: bool) -> None:
        self.for_s, self.share = for_s, share
        self.reasons = frozenset(THROTTLE_THERMAL + THROTTLE_HARDWARE + (THROTTLE_POWER_CAP if power_cap else ()))
        self.reset()

    def reset(self) -> None:
        self.windows: dict[GpuKey, deque[tuple[float, tuple[str, ...]]]] = {}  # GPU -> (t, reasons that count)
        self.firing: set[GpuKey] = set()

    def observe(self, event: dict[str, Any]) -> list[Finding]:
        return []

    def observe_sample(self, sample: dict[str, Any]) -> list[Finding]:
        t = finite_number(sample.get("t"))
        if t is None:
            return []
        out = []
        for gpu in _gpus(sample):
            reasons = gpu.get("throttle")
            if not isinstance(reasons, list):
                continue  # N/A: neither throttled nor clean
            index = _gpu_key(gpu)
            window = self.windows.setdefault(index, deque())
            window.append((t, tuple(r for r in reasons if r in self.reasons)))
            while len(window) >= 2 and window[1][0] <= t - self.for_s:
                window.popleft()
            span = t - window[0][0]
            throttled = [r for _, r in window if r]
            share = len(throttled) / len(window)
            if share <= self.share / 2:
                self.firing.discard(index)
            if span < self.for_s or share < self.share or index in self.firing:
                continue
            self.firing.add(index)
            counts: dict[str, int] = {}
            for names in throttled:
                for name in names:
                    counts[name] = counts.get(name, 0) + 1
            why = ", ".join(sorted(counts, key=lambda n: -counts[n]))
            clock, top = gpu.get("sm_clock_mhz"), gpu.get("sm_clock_max_mhz")
            clocks = f", SM clock {clock}/{top} MHz" if isinstance(clock, int) and isinstance(top, int) else ""
            temp = f", {gpu['temp_c']} C" if isinstance(gpu.get("temp_c"), int) else ""
            message = (f"{_gpu_label(gpu)} is throttled ({why}) in {share:.0%} of its samples over {span:.0f} s "
                       f"(limit {self.share:.0%} over {self.for_s:g} s{clocks}{temp})")
            out.append(Finding(self.name, message, value=round(share, 3), rank=_gpu_rank(gpu), metric=why,
                               threshold=self.share, gpu=gpu["index"], host=gpu.get("node")))
        return out


# ---- the engine -----------------------------------------------------------------------------

SubjectKey = tuple[str, str, int | None]  # (rule, host or "", GPU index or None): what an incident is about


@dataclass
class Incident:
    """One rule's open incident on one subject: its id, how often it fired, and since when the rule
    has been healthy again (None while it is not)."""

    id: str
    step: int | None
    firings: int = 1
    healthy_since: float | None = None


def _subject(finding: Finding) -> SubjectKey:
    return (finding.rule, finding.host or "", finding.gpu)


def _rule_firing(rule: Any, key: SubjectKey) -> bool:
    """Whether the rule still holds the subject sick (its hysteresis has not re-armed)."""
    firing = getattr(rule, "firing", False)
    if isinstance(firing, (set, frozenset)):
        return (key[1], key[2]) in firing
    return bool(firing)



def _setting(profile: Any, name: str, default: Any) -> Any:
    return getattr(getattr(profile, "health", None), name, default)


class HealthMonitor(PollingThread):
    """Feeds new events to the rules, runs the watchdog's checks, acts and records every firing."""

    def __init__(self, paths: RunPaths, profile: Any, emit: Callable[[list[dict[str, Any]]], None],
                 act: Callable[[str, Finding], str] | None = None, watchdog: Any = None,
                 clock: Callable[[], float] = time.time, interval_s: float = CHECK_INTERVAL_S,
                 from_start: bool = False, nodes: list[NodeDir] | None = None):
        super().__init__(interval_s, name="traindeck-health")
        self.paths = paths
        self.emit = emit
        self.act = act or (lambda action, finding: "warn" if action == "off" else action)
        self.clock = clock
        self.actions = {name: str(_setting(profile, name, "warn")) for name in
                        ("nan", "divergence", "overfit", "throughput", "memory_creep", "throttle", "stall",
                         "straggler", "input_bound")}
        self.actions["nan"] = str(_setting(profile, "nan", "stop"))
        self.rules = [
            NonFiniteRule(),
            DivergenceRule(float(_setting(profile, "divergence_factor", 3.0)),
                           float(_setting(profile, "divergence_smoothing", 0.9)),
                           int(_setting(profile, "divergence_warmup", 10)),
                           float(_setting(profile, "divergence_early_fraction", 0.5)),
                           float(_setting(profile, "divergence_floor", 0.0))),
            OverfitRule(int(_setting(profile, "overfit_evals", 3))),
            ThroughputRule(float(_setting(profile, "throughput_fraction", 0.5)),
                           float(_setting(profile, "throughput_for_s", 120.0))),
            MemoryCreepRule(float(_setting(profile, "memory_creep_fraction", 0.1)),
                            int(_setting(profile, "memory_creep_epochs", 3))),
            ThrottleRule(float(_setting(profile, "throttle_for_s", 300.0)),
                         float(_setting(profile, "throttle_share", 0.8)),
                         bool(_setting(profile, "throttle_power_cap", False))),
            InputBoundRule(float(_setting(profile, "input_bound_share", 0.3)),
                           float(_setting(profile, "input_bound_for_s", 60.0)), usable_cpus()),
        ]
        self.incident_clear_s = float(_setting(profile, "incident_clear_s", 600.0))
        self.incidents: dict[SubjectKey, Incident] = {}  # the open ones: at most one per rule and subject
        self._incident_seq = 0
        self.last_step: int | None = None  # the newest step of the events: where a telemetry finding is
        self.watchdog = watchdog
        self.stopping = False  # a stopping action was taken: later firings are only told
        # (host, reader) per node: this run directory alone, or every node of a multi-node run.
        nodes = nodes or [NodeDir(None, paths)]
        self.readers = [(n.host, EventReader(n.paths.events)) for n in nodes]
        self.telemetry_readers = [(n.host, EventReader(n.paths.telemetry)) for n in nodes]
        if not from_start:
            self._learn_early_loss()
            # Events and samples from before this supervisor (a resumed run) are an earlier life's.
            for _, reader in self.readers + self.telemetry_readers:
                try:
                    reader.offset = reader.path.stat().st_size
                except OSError:
                    pass

    def _learn_early_loss(self) -> None:
        """A resumed run's early loss, which the divergence rule measures "large" against, from the
        head of its events.jsonl (each node's, for wherever rank 0 logged)."""
        divergence = next(r for r in self.rules if isinstance(r, DivergenceRule))
        for _, reader in self.readers:
            if divergence.early is not None:
                return
            try:
                divergence.learn_early(EventReader(reader.path).read(max_bytes=EARLY_HEAD_BYTES))
            except Exception:  # noqa: BLE001 - without it the rule learns the early loss as it goes
                pass

    # ---- thread (PollingThread's): one poll per interval; a failure is told once, health is advisory
    def poll_step(self) -> bool:
        self.poll(self.clock())
        # A backlog (a resumed run's history, a burst behind a fast writer) is read one chunk per
        # look and looked at again at once: the readers' chunk bounds the memory, not the pace.
        return not all(reader.at_end for _, reader in self.readers + self.telemetry_readers)

    def poll(self, now: float) -> list[dict[str, Any]]:
        """Read the new events, check, emit what is due; returns what was emitted. Telemetry is read
        after the events and fed first, so an epoch's end finds every sample taken before it."""
        events = [e for _, reader in self.readers for e in reader.read()]
        samples = [dict(s, node=host) if host else s for host, reader in self.telemetry_readers
                   for s in reader.read() if s.get("kind") == "telemetry"]
        out = self.observe_telemetry(samples, now) + self.observe(events, now) + self.check(now)
        if out:
            self.emit(out)
        return out

    # ---- the logic
    def observe(self, events: list[dict[str, Any]], now: float | None = None) -> list[dict[str, Any]]:
        """The health events these events cause (the actions are taken)."""
        out: list[dict[str, Any]] = []
        for event in events:
            kind = event.get("kind")
            if kind == "status" and event.get("state") == "running" and event.get("source") != "supervisor":
                for rule in self.rules:
                    rule.reset()  # a new life of the worker (resume, restart): its own baseline
                    if hasattr(rule, "learn_status"):
                        rule.learn_status(event)
                    self._note_healthy(rule, _event_time(event, now, self.clock))
                continue
            if kind == "log" and event.get("control") in ("pause", "resume", "rewind"):
                for rule in self.rules:
                    if isinstance(rule, ThroughputRule):
                        rule.pause()
                continue
            if kind in ("metric", "epoch") and _step(event) is not None:
                self.last_step = _step(event)
            when = _event_time(event, now, self.clock)
            for rule in self.rules:
                if kind not in rule.kinds or self.actions.get(rule.name) == "off":
                    continue
                for finding in rule.observe(event):
                    out.append(self._fire(finding, now if now is not None else self.clock(), when))
                self._note_healthy(rule, when)
        return out

    def observe_telemetry(self, samples: list[dict[str, Any]], now: float | None = None) -> list[dict[str, Any]]:
        """The health events these telemetry samples cause (the memory and throttle rules), at `now`
        or, without it, at the time of the sample that tripped the rule."""
        out: list[dict[str, Any]] = []
        for sample in samples:
            for rule in self.rules:
                observe = getattr(rule, "observe_sample", None)
                if observe is None or self.actions.get(rule.name) == "off":
                    continue
                when = float(sample["t"])
                for finding in observe(sample):
                    if finding.step is None and self.last_step is not None:
                        finding = dataclasses.replace(finding, step=self.last_step)
                    out.append(self._fire(finding, now if now is not None else when, when))
                self._note_healthy(rule, when)
        return out

    def check(self, now: float) -> list[dict[str, Any]]:
        """The watchdog's hang (the stall rule) and straggler checks, with their actions."""
        if self.watchdog is None:
            return []
        out = []
        for event in self.watchdog.check(now):
            kind = event.get("watchdog")
            rule = {"hang": "stall", "straggler": "straggler"}.get(kind)
            if rule is None:  # "recovered": told unless its rule is off
                if self.actions["stall"] != "off":
                    out.append(event)
                continue
            asked = self.actions[rule]
            if asked == "off":
                continue
            finding = Finding(rule, str(event.get("message") or ""), value=event.get("stalled_s", event.get("ratio")),
                              step=_step(event), rank=_rank(event), host=event.get("node"))
            event = dict(event, rule=rule, asked=asked, action=self._take(asked, finding))
            out.append(event)
        return out

    def _take(self, asked: str, finding: Finding) -> str:
        if self.stopping or asked in ("off", "warn"):
            return "warn"
        try:
            taken = self.act(asked, finding)
        except Exception as exc:  # noqa: BLE001 - a failed action is told, not raised
            print(f"health: {finding.rule} -> {asked} failed: {exc!r}", file=sys.stderr, flush=True)
            return "warn"
        if taken in STOPPING:
            self.stopping = True
        return taken

    def _note_healthy(self, rule: Any, when: float) -> None:
        """After a rule saw something: when it holds an open incident's subject healthy again, the
        healthy stretch starts (or goes on); when it holds it sick, the stretch is over."""
        for key, incident in self.incidents.items():
            if key[0] != rule.name:
                continue
            if _rule_firing(rule, key):
                incident.healthy_since = None
            elif incident.healthy_since is None:
                incident.healthy_since = when

    def _incident_of(self, finding: Finding, when: float) -> tuple[Incident, bool]:
        """The incident this firing belongs to and whether it is an update of one already open (the
        subject fired again before it was healthy for incident_clear_s)."""
        key = _subject(finding)
        incident = self.incidents.get(key)
        clear_s = 0.0 if finding.rule in OWN_INCIDENT_EACH_FIRING else self.incident_clear_s
        if incident is not None and not (incident.healthy_since is not None
                                         and when - incident.healthy_since >= clear_s):
            incident.firings += 1
            incident.healthy_since = None
            return incident, True
        self._incident_seq += 1
        parts = [finding.rule] + ([finding.host] if finding.host else []) + \
            ([f"gpu{finding.gpu}"] if finding.gpu is not None else [])
        # The opening time keeps ids apart across the lives of a resumed run; the sequence within one.
        incident = Incident(f"{'-'.join(parts)}-{when:.3f}-{self._incident_seq}", finding.step)
        self.incidents[key] = incident
        return incident, False

    def _fire(self, finding: Finding, now: float, when: float | None = None) -> dict[str, Any]:
        asked = self.actions[finding.rule]
        incident, update = self._incident_of(finding, now if when is None else when)
        # An update is news about an alarm already raised: its action was taken (or not) then.
        action = "warn" if update else self._take(asked, finding)
        message = finding.message
        if action != "warn":
            message += f"; {ACTION_WORDS.get(action, action)}"
        if update:
            since = f" since step {incident.step}" if incident.step is not None else ""
            message += f" (again: firing {incident.firings} of the incident{since})"
        fields: dict[str, Any] = {"rule": finding.rule, "value": finding.value, "step": finding.step,
                                  "rank": finding.rank, "action": action, "asked": asked, "message": message,
                                  "incident": incident.id}
        if update:
            fields["update"] = True
            fields["firings"] = incident.firings
        if finding.metric:
            fields["metric"] = finding.metric
        if finding.threshold is not None:
            fields["threshold"] = finding.threshold
        if finding.gpu is not None:
            fields["gpu"] = finding.gpu
        if finding.host:
            fields["node"] = finding.host
        return make_event("health", t=now, **fields)


def _event_time(event: dict[str, Any], now: float | None, clock: Callable[[], float]) -> float:
    """When a rule saw this event: its own time, else the poll's."""
    t = finite_number(event.get("t"))
    if t is not None:
        return t
    return now if now is not None else clock()


ACTION_WORDS = {"rewind": "rewinding to the last good checkpoint", "pause": "pausing the run", "save-stop": "saving the last good checkpoint and stopping",
                "stop": "stopping the run"}


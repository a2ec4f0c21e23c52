"""The step anatomy folded across ranks: the one fold of `timing` events every reader takes (the
supervisor's input-bound rule, the run screen's Time view and header, the headless summary, --runs).

    fold = TimingFold()
    fold.add(timing_event)                  # training.rundir.records.TimingEvent, any rank, any order
    fold.recent()    -> Anatomy | None      # each rank's newest interval
    fold.whole_run() -> Anatomy | None      # each rank's totals since it started
    throughput(samples_per_s, flops_per_sample, gpus, gpu_model, dtype) -> Throughput
                                            # per GPU, TFLOP/s, MFU (traindeck.gpu_peaks) or why not

Per phase, the seconds per step of the median rank and of the worst (with which rank); the step time;
the slowest rank and its skew: how much longer than the median its *busy* time per step is (the step
less its communication wait: in DDP every rank's step lasts as long as the slowest one's, and the
fast ranks spend the difference waiting in the all-reduce, so only the busy time names who is slow).
Samples/s is the sum over ranks of each rank's samples over its wall time.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Iterable

from traindeck.gpu_peaks import PEAKS, GpuPeaks, mfu, peak_for
from training.rundir.records import TimingEvent

# In the order a step runs them; readers show them in this order, any other name after them.
PHASES = ("data", "compute", "comm", "optimizer", "eval", "checkpoint", "other")
PHASE_WORDS = {"data": "input wait", "compute": "forward+backward", "comm": "all-reduce wait",
               "optimizer": "optimizer", "eval": "evaluation", "checkpoint": "checkpoint", "other": "other"}


@dataclass(frozen=True)
class RankTime:
    rank: int
    steps: int
    seconds: float
    samples: int | None
    phases: dict[str, float]

    @property
    def step_s(self) -> float:
        return self.seconds / self.steps if self.steps else 0.0

    @property
    def busy_s(self) -> float:
        """Seconds per step not spent waiting for the other ranks' gradients."""
        return (self.seconds - self.phases.get("comm", 0.0)) / self.steps if self.steps else 0.0

    def share(self, phase: str) -> float:
        return self.phases.get(phase, 0.0) / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class PhaseSpread:
    median_s: float  # seconds per step, the median rank
    worst_s: float
    worst_rank: int


@dataclass(frozen=True)
class Anatomy:
    ranks: tuple[RankTime, ...]  # by rank
    phases: dict[str, PhaseSpread]  # in PHASES order
    step_s: float  # median seconds per step
    slowest_rank: int
    skew_pct: float  # the slowest rank's busy time over the median's, in % above it
    samples_per_s: float | None  # all ranks together

    def share(self, phase: str) -> float:
        """The median rank's share of its wall time spent in `phase` (0..1)."""
        return statistics.median(r.share(phase) for r in self.ranks) if self.ranks else 0.0

    def summary(self) -> str:
        """One line: 'step 12.3 ms: input wait 41% · forward+backward 48% · ... · slowest rank 1 +18%'."""
        parts = [f"{PHASE_WORDS.get(p, p)} {self.share(p):.0%}" for p in self.phases if self.share(p) >= 0.005]
        text = f"step {format_seconds(self.step_s)}: " + " · ".join(parts)
        if len(self.ranks) > 1:
            text += f" · slowest rank {self.slowest_rank} +{self.skew_pct:.0f}%"
        return text


def format_seconds(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.0f} us"


def _ordered(names: Iterable[str]) -> list[str]:
    names = set(names)
    return [p for p in PHASES if p in names] + sorted(names - set(PHASES))


def fold_ranks(ranks: Iterable[RankTime]) -> Anatomy | None:
    """Median and worst per phase, the slowest rank and its skew; None without a rank that stepped."""
    ranks = tuple(sorted((r for r in ranks if r.steps > 0 and r.seconds > 0), key=lambda r: r.rank))
    if not ranks:
        return None
    phases = {}
    for name in _ordered(n for r in ranks for n in r.phases):
        per_step = [(r.phases.get(name, 0.0) / r.steps, r.rank) for r in ranks]
        worst = max(per_step, key=lambda sr: (sr[0], -sr[1]))  # a tie: the lowest rank
        phases[name] = PhaseSpread(statistics.median(s for s, _ in per_step), worst[0], worst[1])
    busy = statistics.median(r.busy_s for r in ranks)
    slowest = max(ranks, key=lambda r: (r.busy_s, -r.rank))
    skew = (slowest.busy_s - busy) / busy * 100 if busy > 0 else 0.0
    rates = [r.samples / r.seconds for r in ranks if r.samples is not None]
    return Anatomy(ranks, phases, statistics.median(r.step_s for r in ranks), slowest.rank, max(0.0, skew),
                   sum(rates) if rates else None)


class TimingFold:
    """The newest timing event of each rank; a new life of the run (a resume: totals that went down)
    simply replaces the old one's."""

    def __init__(self) -> None:
        self.latest: dict[int, TimingEvent] = {}  # the newest: its totals are the rank's whole run
        self.stepped: dict[int, TimingEvent] = {}  # the newest interval with steps (not the run's last save)

    def add(self, e: TimingEvent) -> None:
        self.latest[e.rank] = e
        if e.steps:
            self.stepped[e.rank] = e

    def clear(self) -> None:
        self.latest.clear()
        self.stepped.clear()

    def __bool__(self) -> bool:
        return bool(self.latest)

    def recent(self) -> Anatomy | None:
        return fold_ranks(RankTime(e.rank, e.steps, e.seconds, e.samples, e.phases) for e in self.stepped.values())

    def whole_run(self) -> Anatomy | None:
        return fold_ranks(RankTime(e.rank, e.total_steps, e.total_seconds, e.total_samples, e.total_phases)
                          for e in self.latest.values())


@dataclass(frozen=True)
class Throughput:
    samples_per_s: float | None  # all ranks together
    per_gpu: float | None  # samples/s per GPU (per rank on a CPU box)
    tflops_per_gpu: float | None  # achieved: FLOPs per sample x samples/s per GPU
    mfu: float | None  # 0..1, never above
    why_no_mfu: str = ""
    per: str = "GPU"  # what per_gpu is per: "rank" on a CPU box
    tokens_per_s: float | None = None  # all ranks together, where the task declares tokens per sample


def throughput(samples_per_s: float | None, flops_per_sample: float | None, gpus: int, gpu_model: str,
               dtype: str, ranks: int = 1, table: tuple[GpuPeaks, ...] = PEAKS,
               tokens_per_sample: float | None = None) -> Throughput:
    """Samples/s per GPU, TFLOP/s per GPU and MFU from the run's numbers. `gpus` 0 is a CPU run:
    per rank then, and no MFU."""
    if samples_per_s is None:
        return Throughput(None, None, None, None, "no samples/s yet")
    tokens = samples_per_s * tokens_per_sample if tokens_per_sample else None
    per_gpu = samples_per_s / max(1, gpus or ranks)
    tflops = per_gpu * flops_per_sample / 1e12 if flops_per_sample else None
    if not gpus:
        return Throughput(samples_per_s, per_gpu, tflops, None, "no GPU: MFU is a GPU measure", per="rank",
                          tokens_per_s=tokens)
    if tflops is None:
        return Throughput(samples_per_s, per_gpu, None, None, "no FLOP count for this model", tokens_per_s=tokens)
    share, why = mfu(tflops, peak_for(gpu_model, dtype, table))
    return Throughput(samples_per_s, per_gpu, tflops, share, why, tokens_per_s=tokens)

"""`run.py --scaling PROFILE`: the profile on 1, 2, 4 ... N GPUs (ranks on a CPU box), a fixed number
of steps each, the same per-GPU batch, and what the step anatomy says of each size.

    result = measure_scaling(profile, runs_dir, progress=print)   # one ordinary run per size, in turn
    print(format_scaling(result))                                 # the table and a small plot
    runs/scaling-<stamp>-<profile>.json                           # saved beside the runs (their ids in it)

Each size is a ddp run (the guides' promises are DDP's) of train.steps_per_epoch steps in one epoch,
started like any other run (its own directory, the box's GPU checks). Its speed is its steps' own:
from every rank's timing totals (training.rundir.step_anatomy), less evaluation and checkpoint time,
so start-up, the validation pass and the last save do not count. Speed-up is samples/s over the
1-rank run's; efficiency is speed-up over the number of ranks (100% = linear).
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from training.console import runs
from training.cpus import usable_cpus
from training.errors import TraindeckError
from training.profile import Profile, parse_profile
from training.rundir import RunPaths, read_run_json
from training.rundir.events_file import read_all
from training.rundir.paths import write_json_atomic
from training.rundir.records import ExitRecord, TimingEvent, parse_events
from training.rundir.step_anatomy import PHASE_WORDS, TimingFold

DEFAULT_STEPS = 60
RUN_TIMEOUT_S = 1800.0
NOT_STEPS = ("eval", "checkpoint")  # outside steps: not the speed of training


def sizes(most: int) -> list[int]:
    """1, 2, 4 ... and `most` itself."""
    out, n = [], 1
    while n < most:
        out.append(n)
        n *= 2
    return out + [most]


@dataclass
class SizeResult:
    ranks: int
    run_id: str
    state: str
    samples_per_s: float | None = None
    step_s: float | None = None
    speedup: float | None = None
    efficiency: float | None = None
    shares: dict[str, float] = field(default_factory=dict)  # phase -> share of step time (median rank)
    slowest_rank: int | None = None
    skew_pct: float | None = None


@dataclass
class ScalingResult:
    profile: str
    steps: int
    batch_per_gpu: int
    device: str  # "GPU" or "rank"
    sizes: list[SizeResult]
    created: float
    path: str = ""


def size_speed(events: list[dict], ranks: int) -> SizeResult | None:
    """A finished run's step speed from its ranks' timing totals (eval and checkpoint left out)."""
    fold = TimingFold()
    for e in parse_events(events):
        if isinstance(e, TimingEvent):
            fold.add(e)
    whole = fold.whole_run()
    if whole is None:
        return None
    step_s, samples = [], []
    for r in whole.ranks:
        busy = r.seconds - sum(r.phases.get(p, 0.0) for p in NOT_STEPS)
        step_s.append(busy / r.steps)
        samples.append((r.samples or 0) / busy if busy > 0 else 0.0)
    seconds = statistics.median(step_s)
    shares = {p: statistics.median(r.phases.get(p, 0.0) / r.steps / seconds for r in whole.ranks)
              for p in whole.phases if p not in NOT_STEPS} if seconds > 0 else {}
    return SizeResult(ranks, "", "", samples_per_s=sum(samples), step_s=seconds, shares=shares,
                      slowest_rank=whole.slowest_rank if ranks > 1 else None,
                      skew_pct=whole.skew_pct if ranks > 1 else None)


def scaled_profile(profile: Profile, ranks: int, steps: int, threads: int | None = None) -> Profile:
    """The profile as a ddp run on `ranks` GPUs (or CPU ranks) of `steps` steps in one epoch; on a CPU
    box every size's ranks get `threads` threads each (the largest size's share of the cores), or the
    one rank would compute on all the cores and the speed-up would measure threads, not ranks."""
    overrides = ["launch.mode=ddp", f"launch.nproc_per_node={ranks}", "train.epochs=1",
                 f"train.steps_per_epoch={steps}"]
    if profile.hardware.gpus:
        overrides.append(f"hardware.gpus={ranks}")
    scaled = parse_profile(profile.to_toml(), path=f"{profile.name}.toml", overrides=overrides)
    if threads and "OMP_NUM_THREADS" not in scaled.launch.env:
        scaled.launch.env = {**scaled.launch.env, "OMP_NUM_THREADS": str(threads)}
    return scaled


def _wait_finished(paths: RunPaths, timeout_s: float, sleep: Callable[[float], None],
                   clock: Callable[[], float]) -> str:
    deadline = clock() + timeout_s
    while clock() < deadline:
        exit_record = ExitRecord.from_json(_read_json(paths.exit_json))
        state = str(read_run_json(paths).get("state") or "")
        if exit_record is not None and state in ("finished", "failed", "stopped"):
            return exit_record.final_state
        sleep(0.5)
    raise TraindeckError(f"{paths.root}: the scaling run of this size did not end within {timeout_s:.0f} s; "
                         f"stop it with: run.py --stop {paths.id}")


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def measure_scaling(profile: Profile, runs_dir: Path, most: int | None = None, steps: int = DEFAULT_STEPS,
                    progress: Callable[[str], None] = lambda line: None, argv: list[str] | None = None,
                    sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
                    timeout_s: float = RUN_TIMEOUT_S,
                    on_start: Callable[[RunPaths], None] = lambda paths: None) -> ScalingResult:
    """Run each size in turn and measure it (`on_start`: each size's run as it starts, for a viewer);
    the result is saved in the runs directory."""
    gpus = profile.hardware.gpus
    most = most or (gpus if gpus else profile.launch.nproc_per_node)
    result = ScalingResult(profile.name, steps, profile.train.batch_size, "GPU" if gpus else "rank", [],
                           round(time.time(), 3))
    threads = None if gpus else max(1, usable_cpus() // max(1, most))
    for n in sizes(max(1, most)):
        progress(f"scaling {profile.name}: {n} {result.device}{'s' if n > 1 else ''}, {steps} steps ...")
        paths = runs.start_run(scaled_profile(profile, n, steps, threads), Path(runs_dir), argv=argv)
        on_start(paths)
        state = _wait_finished(paths, timeout_s, sleep, clock)
        measured = size_speed(read_all(paths.events), n) if state == "finished" else None
        size = measured or SizeResult(n, "", state)
        size.run_id, size.state = paths.id, state
        result.sizes.append(size)
        progress(f"  {paths.id}: {state}" + (f", {size.samples_per_s:,.0f} samples/s" if size.samples_per_s else ""))
    base = next((s for s in result.sizes if s.ranks == 1 and s.samples_per_s), None)
    for s in result.sizes:
        if base is not None and s.samples_per_s:
            s.speedup = s.samples_per_s / base.samples_per_s
            s.efficiency = s.speedup / s.ranks
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(result.created))
    path = Path(runs_dir) / f"scaling-{stamp}-{profile.name}.json"
    result.path = str(path)
    write_json_atomic(path, asdict(result))
    return result


def format_scaling(result: ScalingResult, width: int = 30) -> str:
    """The table (speed-up and efficiency against linear, the anatomy at each size) and a small plot."""
    phases = [p for p in PHASE_WORDS if p not in NOT_STEPS and any(p in s.shares for s in result.sizes)]
    head = f"{result.device + 's':>6} {'samples/s':>11} {'speed-up':>9} {'efficiency':>11} {'step':>9}  " + \
        "  ".join(f"{PHASE_WORDS[p]:>{max(6, len(PHASE_WORDS[p]))}}" for p in phases) + "  slowest"
    lines = [f"scaling of {result.profile}: {result.steps} steps at each size, batch {result.batch_per_gpu} per "
             f"{result.device}, the steps' own time (start-up, evaluation and checkpoints left out)", "", head]
    for s in result.sizes:
        if s.samples_per_s is None:
            lines.append(f"{s.ranks:>6} {'-':>11} {'-':>9} {'-':>11} {'-':>9}  {s.run_id} {s.state}")
            continue
        cells = "  ".join(f"{s.shares.get(p, 0.0):>{max(6, len(PHASE_WORDS[p]))}.0%}" for p in phases)
        speedup = f"{s.speedup:.2f}x" if s.speedup is not None else "-"
        efficiency = f"{s.efficiency:.0%}" if s.efficiency is not None else "-"
        slowest = f"rank {s.slowest_rank} +{s.skew_pct:.0f}%" if s.slowest_rank is not None else "-"
        lines.append(f"{s.ranks:>6} {s.samples_per_s:>11,.0f} {speedup:>9} {efficiency:>11} "
                     f"{(s.step_s or 0) * 1e3:>7.1f}ms  {cells}  {slowest}")
    lines += ["", "speed-up against linear (█ measured, ░ what linear would add):"]
    most = max((s.ranks for s in result.sizes), default=1)
    for s in result.sizes:
        linear = round(width * s.ranks / most)
        got = min(linear, round(width * (s.speedup or 0.0) / most))
        lines.append(f"{s.ranks:>6} │{'█' * got}{'░' * (linear - got)}{' ' * (width - linear)}│ "
                     + (f"{s.speedup:.2f}x of {s.ranks}x" if s.speedup is not None else s.state))
    if result.path:
        lines += ["", f"saved: {result.path} (each size is an ordinary run: run.py --runs)"]
    return "\n".join(lines)


def scaling_verdict(result: ScalingResult) -> str:
    """One line per size, for a notification: '2 GPUs 1.78x (89%)'."""
    parts = [f"{s.ranks} {result.device}{'s' if s.ranks > 1 else ''} "
             + (f"{s.speedup:.2f}x ({s.efficiency:.0%})" if s.speedup is not None and s.efficiency is not None
                else s.state) for s in result.sizes]
    return f"scaling of {result.profile}: " + ", ".join(parts) + f"; table in {result.path}"

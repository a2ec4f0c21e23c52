"""`run.py --export RUN --format tensorboard|csv DIR`: a run's series out to the tools a team has.

Every metric point of events.jsonl (every split, metric and loss component, at full resolution:
the truth, not the bounded series the plots hold) goes out as

    tensorboard   DIR/events.out.tfevents.*  one scalar per point, tag "<split>/<name>" (train/loss,
                                             train/loss/aux, val/acc), its step and wall time; written
                                             by the `tensorboard` package's own writer (pip install
                                             'traindeck[tensorboard]'): open with tensorboard --logdir DIR
    csv           DIR/<run id>.csv           step, epoch, t, split, name, value: one row per point

Non-finite values (a loss gone NaN) are exported as they were written: TensorBoard shows them as
NaN, the CSV says nan. A point without a step follows the last one, as the plots place it.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from training.errors import TraindeckError
from training.rundir import RunPaths
from training.rundir.events_file import EventReader
from training.rundir.records import MetricEvent, parse_events

FORMATS = ("tensorboard", "csv")


@dataclass(frozen=True)
class Point:
    split: str
    name: str
    step: int
    epoch: int | None
    t: float | None
    value: float


def metric_points(paths: RunPaths) -> Iterator[Point]:
    """Every metric value of the run's events.jsonl, in file order."""
    reader = EventReader(paths.events)
    last_step = 0
    while True:
        for e in parse_events(reader.read()):
            if type(e) is not MetricEvent or e.numbers is None:
                continue
            step = e.step if e.step is not None else last_step + 1
            last_step = step
            for name, value in e.numbers.items():
                yield Point(e.split, name, int(step), e.epoch, e.t, float(value))
        if reader.at_end:
            return


def export_run(paths: RunPaths, fmt: str, out_dir: Path) -> str:
    """Write the export; returns the line that says what was written where."""
    if fmt not in FORMATS:
        raise TraindeckError(f"--format {fmt!r}: use one of {', '.join(FORMATS)} (e.g. --format tensorboard).")
    if not paths.events.exists():
        raise TraindeckError(f"run {paths.id} has no events.jsonl ({paths.events}); there is nothing to export.")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise TraindeckError(f"--export: {out_dir} is a file; give a directory to write the export into.")
    out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    count = _tensorboard(paths, out_dir) if fmt == "tensorboard" else _csv(paths, out_dir)
    where = f"tensorboard --logdir {out_dir}" if fmt == "tensorboard" else str(out_dir / f"{paths.id}.csv")
    return f"exported {count} points of run {paths.id} as {fmt}: {where}"


def _tensorboard(paths: RunPaths, out_dir: Path) -> int:
    try:
        from tensorboard.summary import Writer
    except ImportError:
        raise TraindeckError("--format tensorboard needs the tensorboard package, an optional extra: "
                             "pip install 'traindeck[tensorboard]' (or pip install tensorboard), or export "
                             "--format csv.") from None
    writer = Writer(str(out_dir))
    count = 0
    try:
        for p in metric_points(paths):
            writer.add_scalar(f"{p.split}/{p.name}", p.value, p.step, wall_time=p.t)
            count += 1
    finally:
        writer.close()
    return count


def _csv(paths: RunPaths, out_dir: Path) -> int:
    target = out_dir / f"{paths.id}.csv"
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    count = 0
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["step", "epoch", "t", "split", "name", "value"])
        for p in metric_points(paths):
            value = "nan" if math.isnan(p.value) else repr(p.value)
            out.writerow([p.step, "" if p.epoch is None else p.epoch, "" if p.t is None else p.t, p.split,
                          p.name, value])
            count += 1
    os.replace(tmp, target)
    return count

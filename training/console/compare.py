"""Runs side by side: the table, the config diff and the ranking that `run.py --compare` prints
and the console's compare screen shows.

    comparison = load_comparison([paths, ...])        # one series snapshot read per run
    comparison.refresh(clock())                        # live runs: fold what is new since
    comparison.ranked()                                # best monitored value first
    format_comparison(comparison) / comparison_json(comparison)

Opening N runs costs N snapshot reads (training.rundir.snapshot.load_or_rebuild), whatever their
length; a run without a snapshot gets one built once, as attach does. The best value, its epoch,
the throughput and the health incidents come from the snapshot's story (checkpoints, epochs,
validation, health: a few events per epoch), the final train loss from its series.

A run's config is its profile.toml flattened to `section.key` (the profile and every --set); the
diff keeps only the keys whose values differ, and the legend names each run by them.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from traindeck.numbers import finite_number
from traindeck.untrusted import shown_text
from training.console.runs import find_run
from training.console.sweeps import find_sweep
from training.errors import TraindeckError
from training.profile import dump_toml
from training.rundir import RunPaths, read_json, read_run_json
from training.rundir.liveness import verified_state
from training.rundir.paths import read_profile_data
from training.rundir.records import (
    CheckpointEvent,
    EpochEvent,
    ExitRecord,
    HealthEvent,
    MetricEvent,
    RunRecord,
    parse_event,
)
from training.rundir.snapshot import Folded, fold_file, load_or_rebuild
from training.rundir.sweep_dir import sweep_runs
from training.tasks import TASKS

TRAIN_LOSS = ("train", "loss")
IGNORED_KEYS = ("description",)  # words about a profile, not its config


@dataclass
class CompareRow:
    paths: RunPaths
    state: str = "?"
    live: bool = False
    created: float | None = None
    best: float | None = None
    best_epoch: int | None = None
    final_loss: float | None = None
    samples_per_s: float | None = None
    duration_s: float | None = None
    incidents: int = 0
    config: dict[str, str] = field(default_factory=dict)
    folded: Folded = field(default_factory=Folded)
    ended_t: float | None = None

    @property
    def id(self) -> str:
        return self.paths.id


@dataclass
class Comparison:
    rows: list[CompareRow]
    monitor: str = "val_loss"
    mode: str = "min"

    def differing_keys(self) -> list[str]:
        """The config keys whose values are not the same in every run (missing counts as a value)."""
        keys = sorted({k for r in self.rows for k in r.config})
        return [k for k in keys if len({r.config.get(k, "-") for r in self.rows}) > 1]

    def label(self, row: CompareRow) -> str:
        """The legend's name for a run: what differs in its config ("lr=0.001 batch_size=64"), by
        the key's last part unless two differing keys share it; the run id when nothing differs."""
        keys = self.differing_keys()
        if not keys:
            return row.id
        tails = [k.rsplit(".", 1)[-1] for k in keys]
        names = [t if tails.count(t) == 1 else k for k, t in zip(keys, tails, strict=True)]
        return " ".join(f"{n}={row.config.get(k, '-')}" for n, k in zip(names, keys, strict=True))

    def ranked(self) -> list[CompareRow]:
        """Best monitored value first (its mode: min or max); runs without one last, newest first."""
        sign = -1.0 if self.mode == "max" else 1.0
        valued = sorted((r for r in self.rows if r.best is not None), key=lambda r: (sign * r.best, r.id))
        rest = sorted((r for r in self.rows if r.best is None), key=lambda r: r.id, reverse=True)
        return valued + rest

    def refresh(self, now: float | None = None) -> bool:
        """Fold what the live runs wrote since; True when anything changed."""
        changed = False
        for row in self.rows:
            if row.live or row.state in ("queued", "starting", "running"):
                before = row.folded.offset
                fold_file(row.paths.events, row.folded) if row.paths.events.exists() else None
                _fill(row, now)
                changed = changed or row.folded.offset != before or not row.live
        return changed


def flat_config(data: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in data.items():
        name = shown_text(f"{prefix}{key}")  # a handed run's profile.toml: no escapes on the terminal
        if isinstance(value, dict):
            out.update(flat_config(value, f"{name}."))
        elif name not in IGNORED_KEYS:
            out[name] = shown_text(_value_text(value))
    return out


def _value_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    # As a profile writes it (3e-4 stays a number, a list stays a TOML list).
    return dump_toml({"v": value}).partition("=")[2].strip()


def _monitor(config: dict[str, str]) -> tuple[str, str]:
    spec = TASKS.get(config.get("train.task", ""))
    name = config.get("checkpoint.monitor") or (spec.monitor if spec else "val_loss")
    mode = config.get("checkpoint.monitor_mode") or (spec.monitor_mode if spec else "min")
    return name, mode if mode in ("min", "max") else "min"


def load_row(paths: RunPaths, now: float | None = None) -> CompareRow:
    row = CompareRow(paths)
    row.config = flat_config(read_profile_data(paths))
    if paths.events.exists():
        row.folded, _ = load_or_rebuild(paths.events)
    _fill(row, now)
    return row


def _fill(row: CompareRow, now: float | None) -> None:
    """Everything but the series, from run.json, exit.json and the snapshot's story."""
    paths = row.paths
    data = read_run_json(paths)
    state, live, _ = verified_state(paths, data)
    row.state, row.live = state.value, live
    row.created = RunRecord.from_json(data).created
    monitor, mode = _monitor(row.config)
    val_name = monitor[4:] if monitor.startswith("val_") else monitor
    best = best_epoch = None
    ckpt_best = ckpt_epoch = None
    incidents: set[str] = set()
    samples = None
    last_t = None
    for raw in row.folded.replay():
        e = parse_event(raw)
        if e is None:
            continue
        last_t = e.t if getattr(e, "t", None) is not None else last_t
        if isinstance(e, CheckpointEvent) and e.best and e.value is not None and math.isfinite(e.value):
            ckpt_best, ckpt_epoch = e.value, e.epoch
        elif isinstance(e, MetricEvent) and e.split == "val":
            value = finite_number((e.numbers or {}).get(val_name))
            if value is not None and (best is None or (value > best if mode == "max" else value < best)):
                best, best_epoch = value, e.epoch
        elif isinstance(e, EpochEvent) and e.samples_per_s is not None:
            samples = e.samples_per_s
        elif isinstance(e, HealthEvent):
            incidents.add(e.incident or f"{e.rule}@{e.step}")
    if ckpt_best is not None:  # the checkpointer's own judgement, where it made one
        best, best_epoch = ckpt_best, ckpt_epoch
    row.best, row.best_epoch = best, best_epoch
    row.incidents = len(incidents)
    last = row.folded.store.last(TRAIN_LOSS)
    row.final_loss = last[2] if last else None
    if samples is None:
        metric = row.folded.last_metric.get("train")
        samples = finite_number(metric[1].get("values", {}).get("samples_per_s")) if metric and isinstance(
            metric[1].get("values"), dict) else None
    row.samples_per_s = samples
    exit_record = ExitRecord.from_json(read_json(paths.exit_json, None))
    if not live and exit_record is not None and exit_record.seconds is not None:
        row.duration_s = exit_record.seconds
    elif row.created is not None:
        end = (time.time() if now is None else now) if live else (exit_record.t if exit_record and exit_record.t
                                                                     else last_t)
        row.duration_s = max(0.0, end - row.created) if end is not None else None
    row.ended_t = None if live else (exit_record.t if exit_record else last_t)


def load_comparison(runs: list[RunPaths], now: float | None = None) -> Comparison:
    rows = [load_row(p, now) for p in runs]
    monitors = {_monitor(r.config) for r in rows}
    monitor, mode = monitors.pop() if len(monitors) == 1 else ("val_loss", "min")
    return Comparison(rows, monitor, mode)


def resolve_runs(runs_dir: Path, specs: list[str]) -> list[RunPaths]:
    """Run ids (or unique prefixes, or paths) and sweep ids, each sweep as its runs; no run twice."""
    out: list[RunPaths] = []
    for spec in specs:
        sweep = find_sweep(runs_dir, spec) if spec.startswith("sweep-") or Path(spec, "sweep.json").exists() else None
        found = sweep_runs(sweep.root.parent, sweep.id) if sweep is not None else [find_run(runs_dir, spec)]
        if sweep is not None and not found:
            raise TraindeckError(f"sweep {sweep.id} has no runs yet; see it with: run.py --runs")
        out.extend(p for p in found if p.root not in {q.root for q in out})
    if len(out) < 1:
        raise TraindeckError("--compare needs runs: give run ids or a sweep id, e.g. run.py --compare sweep-2026...")
    return out


# ---- what --compare prints ------------------------------------------------------------------

def _num(value: float | None, fmt: str = "{:.4g}") -> str:
    return "-" if value is None else fmt.format(value)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def table_rows(comparison: Comparison) -> tuple[list[str], list[list[str]]]:
    keys = comparison.differing_keys()
    header = ["", "RANK", "RUN", "STATE", comparison.monitor.upper(), "EPOCH", "TRAIN LOSS", "SAMPLES/S",
              "DURATION", "HEALTH", *keys]
    rows = []
    for rank, r in enumerate(comparison.ranked(), 1):
        marked = "*" if rank == 1 and r.best is not None else ""
        rows.append([marked, str(rank), r.id, r.state, _num(r.best), _num(r.best_epoch, "{}"),
                     _num(r.final_loss), _num(r.samples_per_s, "{:.0f}"), _duration(r.duration_s),
                     str(r.incidents), *(r.config.get(k, "-") for k in keys)])
    return header, rows


def format_comparison(comparison: Comparison) -> str:
    header, rows = table_rows(comparison)
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    right = {1, 4, 5, 6, 7, 8, 9}
    lines = ["  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths,
                                                                                             strict=True))).rstrip()
             for row in [header, *rows]]
    keys = comparison.differing_keys()
    best = "* best by " + f"{comparison.monitor} ({comparison.mode})"
    differs = f"config that differs: {', '.join(keys)}" if keys else "config: the same in every run"
    return "\n".join([*lines, "", best, differs])


def comparison_json(comparison: Comparison) -> str:
    keys = comparison.differing_keys()
    runs = []
    for rank, r in enumerate(comparison.ranked(), 1):
        runs.append({"rank": rank, "best": rank == 1 and r.best is not None, "id": r.id, "path": str(r.paths.root),
                     "state": r.state, "live": r.live, "monitor_value": r.best, "monitor_epoch": r.best_epoch,
                     "final_train_loss": r.final_loss, "samples_per_s": r.samples_per_s,
                     "duration_s": r.duration_s, "health_incidents": r.incidents, "label": comparison.label(r),
                     "config": {k: r.config.get(k) for k in keys}})
    return json.dumps({"monitor": comparison.monitor, "mode": comparison.mode, "differs": keys, "runs": runs},
                      indent=2)

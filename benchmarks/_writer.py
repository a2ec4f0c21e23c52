"""A synthetic run's writer: `python -m benchmarks._writer RUN_DIR --rate 10 [--telemetry]`.

Plays a live run for the benchmarks: metric events appended to events.jsonl at `--rate` per
second (one write() per due batch on O_APPEND, as training.report does), each carrying the
write time in "wt" (float seconds, full precision), and with --telemetry the real
TelemetrySampler at 1 Hz over the backend $TRAINDECK_FAKE_NVML names (8 x B200 by default).
--via-report logs through training.report instead (its "t" is the call time). --epoch-every N
adds a run's story every N metric events (a val metric, an epoch, a checkpoint, as the cpu
profile writes about every 49 events); --max-events stops writing after that many events. Prints
"ready".
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--rate", type=float, default=10.0)
    ap.add_argument("--duration", type=float, default=3600.0)
    ap.add_argument("--telemetry", action="store_true")
    ap.add_argument("--start-step", type=int, default=1)
    ap.add_argument("--jump-every", type=float, default=0.0,
                    help="every this many seconds, multiply the step by --jump-factor (the plot's x bounds "
                         "must move: bench_paint times when the new bounds are on the screen)")
    ap.add_argument("--jump-factor", type=int, default=3)
    ap.add_argument("--epoch-every", type=int, default=0,
                    help="every this many metric events, also a val metric, an epoch and a checkpoint event")
    ap.add_argument("--max-events", type=int, default=0, help="stop writing after this many events (0: never)")
    ap.add_argument("--via-report", action="store_true",
                    help="log through training.report (buffered, flushed by its thread) instead of raw writes")
    args = ap.parse_args()

    from training.rundir import RunPaths
    from training.rundir.events_file import open_append

    paths = RunPaths(args.run_dir)
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    sampler = None
    if args.telemetry:
        from training.monitor.telemetry import TelemetrySampler

        sampler = TelemetrySampler(paths, 1.0, lambda: {})
        sampler.start()
    fd = open_append(paths.events)
    reporter = None
    if args.via_report:
        from training.report import Reporter

        reporter = Reporter(paths.root, 0, heartbeat=False)
    print("ready", flush=True)
    step = args.start_step
    t_start = time.monotonic()
    written = 0
    period = 1.0 / args.rate if args.rate > 0 else 1.0
    next_jump = args.jump_every if args.jump_every > 0 else float("inf")
    events = 0
    while not stop and time.monotonic() - t_start < args.duration:
        if args.max_events and events >= args.max_events:
            time.sleep(0.2)  # done: the run stays live (its supervisor waits for this process)
            continue
        if time.monotonic() - t_start >= next_jump:
            step *= args.jump_factor
            next_jump += args.jump_every
        if args.rate > 0:
            due = int((time.monotonic() - t_start) * args.rate) + 1
            if due > written and reporter is not None:
                for _ in range(due - written):
                    reporter.log(step, epoch=1 + step // 10000, loss=2.0 / (1.0 + step * 1e-4), lr=1e-3)
                    step += 1
                written = due
            elif due > written:
                now = time.time()
                lines = []
                for _ in range(due - written):
                    lines.append(json.dumps(
                        {"v": 1, "t": round(now, 3), "kind": "metric", "step": step, "epoch": 1 + step // 10000,
                         "split": "train", "wt": now,
                         "values": {"loss": 2.0 / (1.0 + step * 1e-4), "loss/aux": 0.5 / (1.0 + step * 1e-4),
                                    "lr": 1e-3, "samples_per_s": 5000.0}}, separators=(",", ":")) + "\n")
                    if args.epoch_every and step % args.epoch_every == 0:
                        lines += story_lines(now, step, step // args.epoch_every)
                    step += 1
                if args.max_events:
                    lines = lines[: args.max_events - events]
                events += len(lines)
                os.write(fd, "".join(lines).encode())
                written = due
            time.sleep(min(period, 0.001 if args.rate >= 500 else period / 2))
        else:
            time.sleep(0.2)
    os.close(fd)
    if reporter is not None:
        reporter.close()
    if sampler is not None:
        sampler.stop()
    return 0


def story_lines(now: float, step: int, epoch: int) -> list[str]:
    """What a run writes at the end of an epoch besides its train metrics: the event log's lines."""
    records = [
        {"v": 1, "t": round(now, 3), "kind": "metric", "step": step, "epoch": epoch, "split": "val",
         "values": {"loss": 1.0 / (1.0 + epoch * 1e-3), "acc": 0.9}},
        {"v": 1, "t": round(now, 3), "kind": "epoch", "epoch": epoch, "step": step, "seconds": 2.0,
         "samples_per_s": 5000.0},
        {"v": 1, "t": round(now, 3), "kind": "checkpoint", "path": "checkpoints/last.pt", "epoch": epoch,
         "step": step, "monitor": "val_loss", "value": 1.0 / (1.0 + epoch * 1e-3), "best": True, "bytes": 123456,
         "seconds": 0.1},
    ]
    return [json.dumps(r, separators=(",", ":")) + "\n" for r in records]


if __name__ == "__main__":
    sys.exit(main())

"""Latency at paint (issue 17): how long after a worker's `report.log(step, loss=...)` the user's
terminal shows that step in the header, and the plot shows the newest points.

`run.py --attach RUN` runs in a pseudo-terminal (the same harness as bench_ssh) while
benchmarks._writer plays a live 8-GPU run through training.report (buffered and flushed by its
thread, the worker's real path; 1 Hz telemetry beside it). Every read of the terminal's output is
kept with its arrival time and fed, in order, to a terminal emulator (pyte): the screen as the
user's terminal would draw it, at the moment the bytes arrived. Nothing is timed inside the app.

- Header: for every step logged in the window, the first moment the header's "step N" shows N or
  more, minus the time report.log() was called for it (the event's "t").
- Plot: the writer multiplies its step by 3 every few seconds, which moves the plot's x-axis
  bounds (they stay put while points arrive inside them). For every jump, the first moment the
  x-axis tick labels on the screen differ from what they were when report.log() was called with
  the jumped step, minus that call's time: the plot has drawn a point that new.

p50 / p95 / max over the window, at 80x24 and 160x48. Targets: header p95 <= 1 s (htop's own
refresh), plot p95 <= 2 s.

    python -m benchmarks.bench_paint [--seconds 40] [--sizes 80x24,160x48]
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from pathlib import Path

from benchmarks._common import Result, console_on_live_run, load_note, percentile

HEADER_TARGET_S = 1.0
PLOT_TARGET_S = 2.0
SETTLE_S = 4.0
JUMP_EVERY_S = 4.0
STEP_IN_HEADER = re.compile(r"\bstep ([\d,]+)")
HEADER_ROWS = 3  # one line at 160 columns, up to three at 80


def _screen_class():
    try:
        import pyte
    except ImportError as exc:  # a benchmark extra, not a runtime dependency
        raise RuntimeError("bench_paint needs pyte (pip install pyte): it draws the terminal's screen") from exc
    return pyte


def header_step(display: list[str]) -> int | None:
    for row in display[:HEADER_ROWS]:
        m = STEP_IN_HEADER.search(row)
        if m:
            return int(m.group(1).replace(",", ""))
    return None


def x_tick_row(display: list[str]) -> str | None:
    """The plot's x-axis tick labels: the row under the axis line (└┬───┬──...)."""
    for y, row in enumerate(display[:-1]):
        if "└┬" in row or "└─" in row:
            return display[y + 1]
    return None


def replay(chunks: list[tuple[float, bytes]], cols: int, rows: int) -> list[tuple[float, int | None, str | None]]:
    """(arrival time, header step, x tick row) after each read, as the user's terminal drew it."""
    pyte = _screen_class()
    screen = pyte.Screen(cols, rows)
    stream = pyte.ByteStream(screen)
    frames = []
    for t, data in chunks:
        stream.feed(data)
        display = screen.display
        frames.append((t, header_step(display), x_tick_row(display)))
    return frames


def logged_steps(events_path: Path) -> list[tuple[int, float]]:
    """(step, time report.log() was called) of every metric event, in order."""
    out = []
    for line in events_path.read_text().splitlines():
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if e.get("kind") == "metric" and isinstance(e.get("step"), int):
            out.append((e["step"], float(e.get("wt", e["t"]))))
    return out


def header_latencies(frames, logged, t0: float, t1: float) -> list[float]:
    out = []
    i = 0
    for step, wt in logged:
        if not t0 <= wt <= t1:
            continue
        # steps and their times only grow, so the first frame that shows a step is never before
        # the first frame that shows an earlier one
        while i < len(frames) and (frames[i][0] < wt or (frames[i][1] or 0) < step):
            i += 1
        if i == len(frames):
            break  # not shown before the end of the window: left out, and counted below
        out.append(frames[i][0] - wt)
    return out


def plot_latencies(frames, logged, t0: float, t1: float) -> list[float]:
    jumps = [(step, wt) for (prev, _), (step, wt) in zip(logged, logged[1:], strict=False) if step > prev + 1 and t0 <= wt <= t1]
    out = []
    for _, wt in jumps:
        before = None
        for t, _, row in frames:
            if t < wt:
                before = row
            elif row is not None and row != before:
                out.append(t - wt)
                break
    return out


def measure(cols: int, rows: int, seconds: float, settle_s: float = SETTLE_S) -> dict:
    with tempfile.TemporaryDirectory(prefix="td-bench-paint-") as d:
        with console_on_live_run(Path(d), cols=cols, rows=rows, timed=True,
                                 writer_extra=["--via-report", "--jump-every", str(JUMP_EVERY_S)]) as (root, pty):
            time.sleep(settle_s)
            t0 = time.time()
            time.sleep(seconds)
            t1 = time.time()
            time.sleep(PLOT_TARGET_S * 2)  # what was logged at the window's end gets its chance to show
            chunks = list(pty.timed)
            cpu = pty.cpu_seconds()
        frames = replay(chunks, cols, rows)
        logged = logged_steps(root / "events.jsonl")
    head = header_latencies(frames, logged, t0, t1)
    plot = plot_latencies(frames, logged, t0, t1)
    n_logged = sum(1 for _, wt in logged if t0 <= wt <= t1)
    return {"size": f"{cols}x{rows}", "header": head, "plot": plot, "logged": n_logged, "cpu_s": cpu,
            "load": load_note()}


def run(quick: bool = False, seconds: float = 40.0,
        sizes: tuple[tuple[int, int], ...] = ((80, 24), (160, 48))) -> list[Result]:
    settle_s = SETTLE_S
    if quick:
        seconds, settle_s, sizes = 6.0, 2.0, sizes[:1]
    results: list[Result] = []
    for cols, rows in sizes:
        got = measure(cols, rows, seconds, settle_s)
        print(_line(got), flush=True)
        head, plot = got["header"], got["plot"]
        missing = got["logged"] - len(head)
        results.append(Result(f"report.log -> header shows the step, p95, {got['size']}",
                              percentile(head, 95) if head else float("nan"), "s", f"<= {HEADER_TARGET_S:g} s",
                              bool(head) and percentile(head, 95) <= HEADER_TARGET_S and missing == 0,
                              note=f"p50 {percentile(head, 50):.2f}, max {max(head, default=float('nan')):.2f}, "
                                   f"{len(head)} steps" + (f", {missing} never shown" if missing else "")))
        results.append(Result(f"report.log -> plot shows the point, p95, {got['size']}",
                              percentile(plot, 95) if plot else float("nan"), "s", f"<= {PLOT_TARGET_S:g} s",
                              bool(plot) and percentile(plot, 95) <= PLOT_TARGET_S,
                              note=f"p50 {percentile(plot, 50):.2f}, max {max(plot, default=float('nan')):.2f}, "
                                   f"{len(plot)} x-bound jumps"))
    return results


def _line(g: dict) -> str:
    def stats(xs: list[float]) -> str:
        if not xs:
            return "none"
        return f"p50 {percentile(xs, 50):.2f}  p95 {percentile(xs, 95):.2f}  max {max(xs):.2f}  (n={len(xs)})"
    return f"{g['size']:>7}: header {stats(g['header'])} | plot {stats(g['plot'])} | {g['load']}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=40.0)
    ap.add_argument("--sizes", default="80x24,160x48")
    args = ap.parse_args()
    sizes = tuple(tuple(int(n) for n in s.split("x")) for s in args.sizes.split(","))
    print(load_note(), flush=True)
    for r in run(seconds=args.seconds, sizes=sizes):
        print(r.line(), flush=True)
    print(load_note(), flush=True)


if __name__ == "__main__":
    main()

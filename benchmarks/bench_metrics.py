"""Metrics pipeline costs: report.log per call, reader throughput, plot redraw at 10^3 vs 10^6 points.

    python -m benchmarks.bench_metrics

`run()` returns [(name, value, unit/note)] for an aggregate `python -m benchmarks`. The number
that matters is the last ratio: a redraw at a million points must cost about what it costs at
a thousand (the series store is bounded and the view is downsampled to the plot's width).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from training import report
from training.monitor.log_metrics import LogMetricParser
from training.rundir.events_file import EventReader, append_events, make_event
from training.rundir.series import SeriesStore

KEY = ("train", "loss")


def _best_of(fn, repeat: int = 3) -> float:
    return min(_timed(fn) for _ in range(repeat))


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench_report_log(tmp: Path, calls: int = 50_000) -> list[tuple[str, float, str]]:
    out = []
    for label, heartbeat in (("report.log per call", True), ("report.log per call, no heartbeat", False)):
        r = report.Reporter(tmp / label.replace(" ", "_").replace(",", ""), 0, heartbeat=heartbeat)
        r.run_dir.mkdir()

        def loop(r=r):
            for i in range(calls):
                r.log(i, epoch=1, loss=0.5, acc=0.9, lr=1e-3)

        seconds = _timed(loop)
        r.close()
        out.append((label, seconds / calls * 1e6, f"us ({r.written} written, flush on a daemon thread)"))
    # The same call when the caller also encodes and writes every batch itself (no flusher thread).
    r = report.Reporter(tmp / "inline", 0, heartbeat=False)
    r.run_dir.mkdir()
    r._start_flusher = lambda: None  # type: ignore[method-assign]
    seconds = _timed(lambda: [r.log(i, epoch=1, loss=0.5, acc=0.9, lr=1e-3) for i in range(calls)])
    r.close()
    out.append(("report.log per call, inline flush", seconds / calls * 1e6, "us (for comparison)"))
    off = report.Reporter(None)
    seconds = _timed(lambda: [off.log(i, loss=0.5) for i in range(calls)])
    out.append(("report.log outside traindeck", seconds / calls * 1e6, "us (no-op)"))
    return out


def bench_reader(tmp: Path, n: int = 200_000) -> list[tuple[str, float, str]]:
    path = tmp / "events.jsonl"
    batch = [make_event("metric", step=i, epoch=1, split="train", values={"loss": 0.5, "loss/a": 0.1, "lr": 1e-3})
             for i in range(n)]
    append_events(path, batch)

    def read():
        reader = EventReader(path)
        got = 0
        while not reader.at_end:
            got += len(reader.read())
        assert got == n

    return [("EventReader throughput", n / _best_of(read, 2), "events/s")]


def bench_parser(n: int = 50_000) -> list[tuple[str, float, str]]:
    parser = LogMetricParser({
        "train": [r"Epoch (?P<epoch>\d+)/(?P<epochs>\d+) - Train Loss: (?P<loss>[\d.]+), Acc: (?P<acc>[\d.]+)%"],
        "val": [r"Val Loss: (?P<loss>[\d.]+)"]})
    lines = [f"Epoch {i}/100 - Train Loss: 0.4521, Acc: 78.23% | Val Loss: 0.5234" if i % 2 else "noise line"
             for i in range(n)]
    seconds = _timed(lambda: [parser.feed(line) for line in lines])
    return [("LogMetricParser throughput", n / seconds, "lines/s (half of them matching twice)")]


def _render(store: SeriesStore, width: int = 100, height: int = 25) -> str:
    import plotext as plt

    plt.clf()
    plt.plotsize(width, height)
    xs, ys = store.view(KEY, width, smoothing=0.6)
    plt.plot(xs, ys)
    xs, ys = store.view(KEY, width)
    plt.plot(xs, ys)
    return plt.build()


def bench_plot(sizes: tuple[int, ...] = (1_000, 100_000, 1_000_000)) -> list[tuple[str, float, str]]:
    out = []
    costs = {}
    # 10^5 added by the benchmarks owner (issue 8): the middle of the scaling curve.
    for n in sizes:
        store = SeriesStore()
        store.add("train", "loss", 0, 1.0, epoch=0)
        series = store.get(KEY)
        t0 = time.perf_counter()
        for i in range(1, n):
            series.add(float(i), float(i // 1000), 1.0 / (1.0 + i * 1e-4), 0.0)
        add_s = time.perf_counter() - t0
        _render(store)  # warm up plotext and numpy
        costs[n] = _best_of(lambda store=store: _render(store), 5)
        out.append((f"downsample + plotext 100x25 at {n:.0e} points", costs[n] * 1e3,
                    f"ms ({store.stored_points} points stored, add {add_s / max(n - 1, 1) * 1e6:.2f} us/point)"))
    big, small = max(sizes), min(sizes)
    out.append((f"redraw ratio {big:.0e} / {small:.0e} points", costs[big] / costs[small], "x (about 1 is the goal)"))
    return out


def run(quick: bool = False) -> list[tuple[str, float, str]]:
    """`quick` is the smoke test's size (shape of the figures only): 1/100 of the calls, points up to 10^4."""
    scale = 100 if quick else 1
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        results = bench_report_log(tmp, calls=50_000 // scale)
        results += bench_reader(tmp, n=200_000 // scale)
    results += bench_parser(n=50_000 // scale)
    results += bench_plot((1_000, 10_000) if quick else (1_000, 100_000, 1_000_000))
    return results


def main() -> None:
    for name, value, unit in run():
        print(f"{name:<48} {value:>14,.2f} {unit}")


if __name__ == "__main__":
    main()

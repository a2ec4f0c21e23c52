"""Run every benchmark: `python -m benchmarks` (or `make bench`), one line per figure with its
target and PASS/MISS. Every figure is a ratio or a cost measured side by side in this one run
on this machine; the machine's load is printed at the start and the end.

    python -m benchmarks                       # all (under 10 minutes on a 2-core box)
    python -m benchmarks --only overhead,plot  # some
    python -m benchmarks --quick               # tiny sizes: checks that everything runs
    python -m benchmarks --json out.json       # also write the figures as JSON
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
import traceback

from benchmarks._common import Result, load_note

# name -> module; cheap ones first, the long DDP runs last.
BENCHES = {
    "plot": "benchmarks.bench_plot",          # 5: plot redraw scaling through LossPlot
    "report": "benchmarks.bench_report",      # 2: report.log cost, tight-loop slowdown
    "metrics": "benchmarks.bench_metrics",    # reader/parser throughput, plotext redraw (its own figures)
    "latency": "benchmarks.bench_latency",    # 3: write -> UI latency, burst recovery
    "ui": "benchmarks.bench_ui_cost",         # 4 + 8: TUI CPU live/idle, terminal bytes
    "ssh": "benchmarks.bench_ssh",            # issue 17: terminal bytes beside htop, by widget (no --before here)
    "paint": "benchmarks.bench_paint",        # issue 17: report.log -> header / plot, timed at paint (pyte)
    "memory": "benchmarks.bench_memory",      # 6: RSS after 10^6 vs 10^4 events
    "compare": "benchmarks.bench_compare",    # issue 34: open 50 runs of 10^6 events, to the first frame
    "attach": "benchmarks.bench_attach",      # issue 17: attach to 10^6 events, before/after the snapshot
    "follow": "benchmarks.bench_follow",      # issue 35: RSS of console/headless/supervisor over a live 10^6-event run
    "input": "benchmarks.bench_input",        # issue 15: data share of step time, num_workers 0 vs 2
    "anatomy": "benchmarks.bench_anatomy",    # issue 33: steps/s with the step anatomy on vs off, 1 ms step
    "overhead": "benchmarks.bench_overhead",  # 1 + 7: DDP steps/s bare/headless/TUI, start-up
}


def _results(name: str, quick: bool) -> list[Result]:
    mod = importlib.import_module(BENCHES[name])
    got = mod.run(quick=quick)
    out = []
    for r in got:
        if isinstance(r, Result):
            out.append(r)
        else:  # bench_metrics returns (name, value, unit)
            out.append(Result(r[0], r[1], r[2].split(" ")[0], note=" ".join(r[2].split(" ")[1:])))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks")
    ap.add_argument("--only", default="", help=f"comma-separated: {', '.join(BENCHES)}")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run; figures are meaningless)")
    ap.add_argument("--json", default="", help="also write the figures to this file")
    args = ap.parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = "1"
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        ap.error(f"unknown benchmark(s): {', '.join(unknown)}")
    t_start = time.monotonic()
    print(f"traindeck benchmarks on {platform.node()}: {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"{load_note()}", flush=True)
    results: list[Result] = []
    failed = []
    for name in names:
        t0 = time.monotonic()
        print(f"== {name} ({BENCHES[name]})", flush=True)
        try:
            got = _results(name, args.quick)
        except Exception:
            traceback.print_exc()
            failed.append(name)
            continue
        for r in got:
            print(r.line(), flush=True)
        results += got
        print(f"   ({time.monotonic() - t0:.0f} s; {load_note()})", flush=True)
    misses = [r for r in results if r.ok is False]
    print(f"== {len(results)} figures, {sum(r.ok is True for r in results)} PASS, {len(misses)} MISS"
          + (f", failed: {', '.join(failed)}" if failed else "")
          + f"; {time.monotonic() - t_start:.0f} s; {load_note()}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"load_end": load_note(), "results": [r.__dict__ for r in results], "failed": failed}, f,
                      indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

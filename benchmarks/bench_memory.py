"""Memory of the TUI after following a long run: RSS of `run.py --attach RUN` (in a
pseudo-terminal, 120x36) once it has read an events.jsonl of 10^6 metric events, against the
same with 10^4. "Caught up" = the header shows the last step ("step 1,000,000") and the process has
then gone idle (under 15% of a core for 2 s). Also reports how long catching up took.

Target: RSS(10^6) <= 1.1 x RSS(10^4): the series store is bounded, the event log keeps a
bounded tail, nothing holds every event.

    python -m benchmarks.bench_memory
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from benchmarks._common import PtyProcess, Result, attach_argv, make_run_dir, write_metric_lines

TARGET_RATIO = 1.1


def rss_after(n_events: int, timeout: float = 240.0) -> tuple[int, float, float]:
    """(rss bytes once caught up, seconds to catch up, file MB)."""
    with tempfile.TemporaryDirectory(prefix="td-bench-mem-") as d:
        root = make_run_dir(Path(d), f"20260101-000000-mem{n_events}", gpus=8, finished=True)
        write_metric_lines(root / "events.jsonl", n_events)
        size_mb = (root / "events.jsonl").stat().st_size / 1e6
        t0 = time.monotonic()
        pty = PtyProcess(attach_argv(root), cols=120, rows=36)
        try:
            if not pty.wait_started(60):
                raise RuntimeError(f"the TUI did not start: {pty.tail()[-800:]!r}")
            if not pty.wait_text(f"step {n_events:,}", timeout):
                raise RuntimeError(f"the TUI did not catch up with {n_events} events in {timeout:.0f} s")
            caught_up = time.monotonic() - t0
            pty.wait_idle(30)
            time.sleep(1.0)
            return pty.rss(), caught_up, size_mb
        finally:
            pty.stop()


def run(quick: bool = False) -> list[Result]:
    small, large = (1_000, 20_000) if quick else (10_000, 1_000_000)
    rss_s, t_s, mb_s = rss_after(small)
    rss_l, t_l, mb_l = rss_after(large)
    ratio = rss_l / rss_s
    return [
        Result(f"TUI RSS after {small:.0e} events", rss_s / 2**20, "MiB", note=f"caught up in {t_s:.1f} s ({mb_s:.1f} MB file)"),
        Result(f"TUI RSS after {large:.0e} events", rss_l / 2**20, "MiB", note=f"caught up in {t_l:.1f} s ({mb_l:.0f} MB file)"),
        Result(f"TUI RSS ratio {large:.0e} / {small:.0e} events", ratio, "x", f"<= {TARGET_RATIO:g}x",
               ratio <= TARGET_RATIO),
        Result(f"TUI catch-up rate on a {large:.0e}-event file", large / t_l, "events/s", "info",
               note="attach to a finished run until the screen is idle (incl. start-up)"),
    ]


def main() -> None:
    for r in run():
        print(r.line(), flush=True)


if __name__ == "__main__":
    main()

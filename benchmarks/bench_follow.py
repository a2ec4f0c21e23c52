"""Memory of every process that follows a long live run (issue 35): RSS against the events written
so far, from 10^4 to 10^6, while a synthetic run writes them at a high rate.

The run is real where it matters: `run.py --profile PROFILE --headless` starts a real supervisor
(its telemetry sampler, health monitor with the watchdog, series-snapshot writer and checkpoint
watch all follow the run) whose "training" is `python -m benchmarks._writer` (a custom module):
metric events at RATE per second, and every 50 of them a val metric, an epoch and a checkpoint,
as the cpu profile writes (the event log's lines). `run.py --attach RUN` follows it in a
pseudo-terminal at 160x48. Sampled every second:

    console      run.py --attach, the run screen (the feed, run model, series store, event logs)
    headless     run.py --headless, the follower that printed progress lines while it started the run
    supervisor   python -m training.supervisor RUN_DIR (from run.json)

Events are counted from events.jsonl's newlines at each sample; each process is sampled at the
first sample at or past each mark. Target: flat after warm-up, RSS at the last mark <= 1.1 x RSS at
the warm-up mark (10^5 events: the event logs' EVENT_LOG_MAX_LINES lines and the series store's
buckets are full by then; from 10^4 the table shows the curve).

    python -m benchmarks.bench_follow [--events 1000000] [--rate 8000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

import psutil

from benchmarks._common import PROJECT_ROOT, PYTHON, PtyProcess, Result, attach_argv, base_env

TARGET_RATIO = 1.1
EPOCH_EVERY = 50  # metric events per epoch's story (the cpu profile: about 49 events an epoch)

PROFILE = """name = "follow-bench"
description = "a synthetic live run for benchmarks/bench_follow.py"

[hardware]
gpus = 0

[launch]
mode = "single"

[train]
module = "benchmarks._writer"
cwd = "{project}"
args = ["{{run_dir}}", "--rate", "{rate}", "--epoch-every", "{epoch_every}", "--max-events", "{events}"]

[checkpoint]
# The writer names its checkpoints but writes none: watch nowhere rather than walk the project.
watch = "{{run_dir}}/no-checkpoints/*.pt"

[telemetry]
interval_s = 1.0
"""


class NewlineCounter:
    """Events written so far: events.jsonl's newlines, read incrementally."""

    def __init__(self, path: Path):
        self.path, self.offset, self.count = path, 0, 0

    def poll(self) -> int:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                while chunk := f.read(8 << 20):
                    self.count += chunk.count(b"\n")
                    self.offset += len(chunk)
        except OSError:
            pass
        return self.count


def _rss(proc: psutil.Process | None) -> float | None:
    try:
        return proc.memory_info().rss / 2**20 if proc is not None else None
    except psutil.Error:
        return None


def _wait_run_dir(runs: Path, timeout: float) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [p for p in runs.iterdir() if (p / "run.json").exists()] if runs.exists() else []
        if found:
            return found[0]
        time.sleep(0.1)
    raise RuntimeError("the headless start made no run directory")


def _supervisor(root: Path, timeout: float) -> psutil.Process:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pid = (json.loads((root / "run.json").read_text()).get("supervisor") or {}).get("pid")
            if pid:
                return psutil.Process(pid)
        except (OSError, ValueError, psutil.Error):
            pass
        time.sleep(0.1)
    raise RuntimeError("run.json names no supervisor")


def follow(n_events: int, rate: float, marks: list[int], timeout: float = 900.0) -> dict[str, dict[int, float]]:
    """{process: {mark: RSS MiB}} while a live run grows to n_events."""
    with tempfile.TemporaryDirectory(prefix="td-bench-follow-") as d:
        runs = Path(d) / "runs"
        runs.mkdir()
        profile = Path(d) / "follow.toml"
        profile.write_text(PROFILE.format(project=PROJECT_ROOT, rate=rate, epoch_every=EPOCH_EVERY,
                                          events=n_events))
        out = open(Path(d) / "headless.out", "w")
        headless = subprocess.Popen([PYTHON, str(PROJECT_ROOT / "run.py"), "--runs-dir", str(runs), "--profile",
                                     str(profile), "--headless"], cwd=PROJECT_ROOT, env=base_env(),
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        pty = None
        root = None
        try:
            root = _wait_run_dir(runs, 60)
            supervisor = _supervisor(root, 60)
            pty = PtyProcess(attach_argv(root), cols=160, rows=48)
            if not pty.wait_started(60):
                raise RuntimeError(f"the console did not start: {pty.tail()[-800:]!r}")
            procs = {"console": pty.ps, "headless": psutil.Process(headless.pid), "supervisor": supervisor}
            counter = NewlineCounter(root / "events.jsonl")
            got: dict[str, dict[int, float]] = {name: {} for name in procs}
            pending = sorted(marks)
            deadline = time.monotonic() + timeout
            while pending and time.monotonic() < deadline:
                n = counter.poll()
                while pending and n >= pending[0]:
                    mark = pending.pop(0)
                    for name, proc in procs.items():
                        rss = _rss(proc)
                        if rss is not None:
                            got[name][mark] = rss
                if pending and headless.poll() is not None:
                    raise RuntimeError(f"the headless run ended at {n} events: "
                                       f"{(Path(d) / 'headless.out').read_text()[-1500:]}")
                time.sleep(0.5)
            if pending:
                raise TimeoutError(f"{n_events} events were not written in {timeout:.0f} s")
            # Once every process has read the last event: the final figure of each.
            time.sleep(5.0)
            pty.wait_idle(60)
            final = max(marks)
            for name, proc in procs.items():
                rss = _rss(proc)
                if rss is not None:
                    got[name][final] = rss
            return got
        finally:
            if pty is not None:
                pty.stop()
            if root is not None:
                subprocess.run([PYTHON, str(PROJECT_ROOT / "run.py"), "--runs-dir", str(runs), "--stop",
                                str(root), "--now"], cwd=PROJECT_ROOT, env=base_env(), capture_output=True,
                               timeout=60)
            try:
                headless.wait(30)
            except subprocess.TimeoutExpired:
                headless.kill()
                headless.wait(5)
            out.close()


def run(quick: bool = False, n_events: int = 1_000_000, rate: float = 8000.0) -> list[Result]:
    if quick:
        n_events, rate = 20_000, 4000.0
    warm = min(100_000, n_events // 2)
    marks = sorted({m for m in (10_000, 30_000, 100_000, 300_000, 600_000) if m < n_events} | {warm, n_events})
    got = follow(n_events, rate, marks)
    out: list[Result] = []
    for name, curve in got.items():
        row = ", ".join(f"{m:.0e}: {curve[m]:.1f}" for m in marks if m in curve)
        ratio = curve[n_events] / curve[warm]
        out.append(Result(f"{name} RSS at {n_events:.0e} / {warm:.0e} events (live run)", ratio, "x",
                          f"<= {TARGET_RATIO:g}x", ratio <= TARGET_RATIO, note=f"MiB at events {row}"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--rate", type=float, default=8000.0, help="metric events per second")
    args = ap.parse_args()
    for r in run(n_events=args.events, rate=args.rate):
        print(r.line(), flush=True)


if __name__ == "__main__":
    main()

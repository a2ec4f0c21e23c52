"""Console overhead and start-up: the same DDP job (cpu profile, 2 gloo processes, a fixed
number of steps) launched three ways, alternating A/B/C for several rounds:

    bare      torchrun ... -m training.worker RUN_DIR   (the exact argv training.supervise.launch builds; no
              supervisor, telemetry, watchdog or console; TRAINDECK_RUN_DIR set)
    headless  run.py --profile cpu --headless           (supervisor + telemetry 1 s + watchdog + printer)
    tui       run.py --profile cpu in a pseudo-terminal (the same plus the Textual run screen)

Steps/s comes from the worker's own events: (last train step - first) / (t_last - t_first) of
the metric events, so start-up is not in it. The worker's heartbeats (every rank, <= 1/s) and
control-file polls (rank 0, at logging boundaries) run in all three, since they are part of the
worker; their cost per call is measured separately below. Start-up is wall time from the
launch to the first metric event's timestamp.

    python -m benchmarks.bench_overhead [--rounds 3] [--steps 1000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from benchmarks._common import (
    PROJECT_ROOT,
    PYTHON,
    PtyProcess,
    Result,
    base_env,
    load_note,
    median,
    timed_loop,
)

VARIANTS = ("bare", "headless", "tui")


def overrides(steps: int, ranks: int = 2) -> list[str]:
    # Enough samples for `steps` steps of batch 64 on each rank (7/8 of them are training data).
    samples = int(steps * 64 * ranks * 8 / 7) + 1024
    return [f"train.steps_per_epoch={steps}", "train.epochs=1", f"task.samples={samples}",
            "train.log_every=5", "telemetry.interval_s=1.0", f"launch.nproc_per_node={ranks}"]


def _metrics(run_dir: Path) -> list[dict]:
    out = []
    try:
        text = (run_dir / "events.jsonl").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if e.get("kind") == "metric" and e.get("split", "train") == "train":
            out.append(e)
    return out


def steps_per_s(run_dir: Path) -> float:
    m = _metrics(run_dir)
    if len(m) < 2:
        raise RuntimeError(f"{run_dir}: fewer than 2 train metric events")
    return (m[-1]["step"] - m[0]["step"]) / max(1e-9, m[-1]["t"] - m[0]["t"])


def first_metric_t(run_dir: Path) -> float:
    m = _metrics(run_dir)
    if not m:
        raise RuntimeError(f"{run_dir}: no metric event")
    return float(m[0]["t"])


def _only_run(runs_dir: Path) -> Path:
    dirs = [d for d in runs_dir.iterdir() if d.is_dir()]
    if len(dirs) != 1:
        raise RuntimeError(f"{runs_dir}: expected one run, found {len(dirs)}")
    return dirs[0]


def run_bare(tmp: Path, steps: int, timeout: float, ranks: int = 2) -> tuple[Path, float, float]:
    from training.profile import load_profile
    from training.rundir import RunPaths
    from training.supervise.launch import build_launch

    profile = load_profile("cpu", overrides(steps, ranks))
    root = Path(tempfile.mkdtemp(prefix="bare-", dir=tmp))
    (root / "logs").mkdir()
    (root / "profile.toml").write_text(profile.to_toml())
    spec = build_launch(profile, RunPaths(root))
    env = spec.environ(base_env())
    t0 = time.time()
    with open(root / "logs" / "launcher.log", "wb") as log:
        rc = subprocess.run(list(spec.argv), cwd=spec.cwd, env=env, stdin=subprocess.DEVNULL, stdout=log,
                            stderr=subprocess.STDOUT, timeout=timeout).returncode
    if rc != 0:
        raise RuntimeError(f"bare torchrun exited {rc}; see {root}/logs")
    return root, t0, 0.0


def run_headless(tmp: Path, steps: int, timeout: float, ranks: int = 2) -> tuple[Path, float, float]:
    runs = Path(tempfile.mkdtemp(prefix="headless-", dir=tmp))
    argv = [PYTHON, str(PROJECT_ROOT / "run.py"), "--runs-dir", str(runs), "--profile", "cpu", "--headless"]
    for o in overrides(steps, ranks):
        argv += ["--set", o]
    t0 = time.time()
    proc = subprocess.Popen(argv, cwd=PROJECT_ROOT, env=base_env(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cpu = ConsoleCpu(proc.pid, runs)
    try:
        rc = proc.wait(timeout)
    finally:
        cpu.stop()
    if rc != 0:
        raise RuntimeError(f"headless run exited {rc}; see {runs}")
    run_dir = _only_run(runs)
    return run_dir, t0, cpu.rate(*train_window(run_dir))


def run_tui(tmp: Path, steps: int, timeout: float, ranks: int = 2) -> tuple[Path, float, float]:
    runs = Path(tempfile.mkdtemp(prefix="tui-", dir=tmp))
    argv = [PYTHON, str(PROJECT_ROOT / "run.py"), "--runs-dir", str(runs), "--profile", "cpu"]
    for o in overrides(steps, ranks):
        argv += ["--set", o]
    t0 = time.time()
    pty = PtyProcess(argv, cols=120, rows=36)
    cpu = ConsoleCpu(pty.proc.pid, runs)
    try:
        deadline = time.monotonic() + timeout
        run_dir = None
        while time.monotonic() < deadline:
            if run_dir is None and runs.exists():
                dirs = [d for d in runs.iterdir() if d.is_dir()]
                run_dir = dirs[0] if dirs else None
            if run_dir is not None and (run_dir / "exit.json").exists():
                break
            if pty.proc.poll() is not None:
                raise RuntimeError(f"the TUI exited early ({pty.proc.returncode}): {pty.tail()[-800:]!r}")
            time.sleep(0.2)
        else:
            raise RuntimeError("the TUI run did not finish in time")
        time.sleep(1.0)  # let the run screen show the end, as a user would see it
    finally:
        cpu.stop()
        pty.stop()
    return run_dir, t0, cpu.rate(*train_window(run_dir))


class ConsoleCpu:
    """Samples the CPU time (user+sys) of the console's processes: the printer or TUI (run.py)
    and the supervisor (its pid from run.json once recorded), every 0.25 s, with timestamps,
    so the rate over the training window (first to last metric event) can be taken."""

    def __init__(self, console_pid: int, runs_dir: Path):
        import psutil

        self.runs_dir = runs_dir
        self.procs: dict[int, psutil.Process] = {}
        self.last: dict[int, float] = {}
        self.samples: list[tuple[float, float]] = []
        self._add(console_pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _add(self, pid: int) -> None:
        import psutil

        try:
            self.procs[pid] = psutil.Process(pid)
        except psutil.Error:
            pass

    def _supervisor_pid(self) -> int | None:
        for run_json in self.runs_dir.glob("*/run.json"):
            try:
                pid = (json.loads(run_json.read_text()).get("supervisor") or {}).get("pid")
            except (OSError, ValueError):
                continue
            if isinstance(pid, int):
                return pid
        return None

    def _loop(self) -> None:
        import psutil

        have_sup = False
        while not self._stop.wait(0.25):
            if not have_sup:
                pid = self._supervisor_pid()
                if pid is not None:
                    self._add(pid)
                    have_sup = True
            for pid, proc in list(self.procs.items()):
                try:
                    t = proc.cpu_times()
                    self.last[pid] = t.user + t.system
                except psutil.Error:
                    pass  # gone: its last reading stays
            self.samples.append((time.time(), sum(self.last.values())))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)

    def rate(self, t_lo: float, t_hi: float) -> float:
        """CPU seconds per second between two wall times (nearest samples)."""
        if len(self.samples) < 2:
            return float("nan")
        a = min(self.samples, key=lambda s: abs(s[0] - t_lo))
        b = min(self.samples, key=lambda s: abs(s[0] - t_hi))
        return (b[1] - a[1]) / max(1e-9, b[0] - a[0])


def train_window(run_dir: Path) -> tuple[float, float]:
    m = _metrics(run_dir)
    return float(m[0]["t"]), float(m[-1]["t"])


RUNNERS = {"bare": run_bare, "headless": run_headless, "tui": run_tui}


def bench_heartbeat_control(seconds: float = 1.0) -> list[Result]:
    """Per-call cost of what the worker does every step (Heartbeat.beat) and at each logging
    boundary (ControlChannel.poll), as called in the loop (rate-limited, so mostly a clock read)."""
    from traindeck.heartbeat import Heartbeat
    from training.rundir.control import ControlChannel

    out = []
    with tempfile.TemporaryDirectory() as d:
        hb = Heartbeat(d, 0)
        step = [0]

        def beat():
            step[0] += 1
            hb.beat(step[0], epoch=1)

        n = timed_loop(beat, seconds)
        out.append(Result("worker: Heartbeat.beat per call (every step)", seconds / n * 1e6, "us",
                          note="rate-limited: writes <= 1/s"))
        hb_forced = Heartbeat(d, 1)
        n = timed_loop(lambda: hb_forced.beat(1, epoch=1, force=True), seconds / 2)
        out.append(Result("worker: Heartbeat.beat forced write (<= 1/s)", seconds / 2 / n * 1e6, "us"))
        ch = ControlChannel(d)
        n = timed_loop(ch.poll, seconds)
        out.append(Result("worker: ControlChannel.poll per call", seconds / n * 1e6, "us",
                          note="a stat at most every 0.2 s"))
        ch2 = ControlChannel(d, min_interval_s=0.0)
        n = timed_loop(ch2.poll, seconds / 2)
        out.append(Result("worker: ControlChannel.poll unthrottled (stat)", seconds / 2 / n * 1e6, "us"))
    return out


def run(quick: bool = False, rounds: int = 3, steps: int = 1000) -> list[Result]:
    ranks = 2
    if quick:  # the smoke test's size: every runner once, one rank (a torch start less per launch)
        rounds, steps, ranks = 1, 40, 1
    timeout = 300.0
    sps: dict[str, list[float]] = {v: [] for v in VARIANTS}
    startup: dict[str, list[float]] = {v: [] for v in VARIANTS}
    console: dict[str, list[float]] = {v: [] for v in VARIANTS}
    note = load_note()
    with tempfile.TemporaryDirectory(prefix="td-bench-overhead-") as d:
        tmp = Path(d)
        for r in range(rounds):
            order = VARIANTS[r % 3:] + VARIANTS[:r % 3]  # rotate who goes first
            for v in order:
                run_dir, t0, cpu = RUNNERS[v](tmp, steps, timeout, ranks)
                sps[v].append(steps_per_s(run_dir))
                console[v].append(cpu)
                startup[v].append(first_metric_t(run_dir) - t0)
    note_end = load_note()
    bare = median(sps["bare"])
    out = [Result("DDP steps/s, bare torchrun (median)", bare, "steps/s",
                  note=f"{rounds} rounds x {steps} steps: {', '.join(f'{x:.1f}' for x in sps['bare'])}")]
    for v, label in (("headless", "headless"), ("tui", "TUI attached")):
        ratio = median(sps[v]) / bare
        out.append(Result(f"DDP steps/s {label} / bare torchrun", ratio, "x", ">= 0.99", ratio >= 0.99,
                          note=f"median {median(sps[v]):.1f} steps/s; runs {', '.join(f'{x:.1f}' for x in sps[v])}"))
    # Paired per round as well: the load changes between rounds, a pair is close in time.
    for v in ("headless", "tui"):
        pairs = [a / b for a, b in zip(sps[v], sps["bare"], strict=True)]
        out.append(Result(f"  paired ratio {v}/bare per round (median)", median(pairs), "x",
                          note=", ".join(f"{p:.3f}" for p in pairs)))
    # The load-independent side of the same question: what the console itself burns while the
    # workers train. On this box the 2 ranks want both cores, so this CPU comes out of training;
    # on a GPU box the training is GPU-bound and spare cores absorb it.
    cores = 2
    for v, label in (("headless", "headless (supervisor + printer)"), ("tui", "TUI (supervisor + run screen)")):
        rate = median(console[v])
        out.append(Result(f"console CPU while training, {label}", rate * 100, "% of a core",
                          f"< {cores * 1:g}% (1% of {cores} cores)", rate * 100 < cores * 1.0,
                          note=f"= {rate * 100 / cores:.2f}% of the {cores} cores the ranks use; "
                               f"runs {', '.join(f'{x * 100:.1f}' for x in console[v])}"))
    b0 = median(startup["bare"])
    out.append(Result("start-up to first metric event, bare torchrun", b0, "s"))
    for v in ("headless", "tui"):
        out.append(Result(f"start-up to first metric event, {v}", median(startup[v]), "s",
                          note=f"ratio {median(startup[v]) / b0:.2f}x bare"))
    out.append(Result("start-up ratio headless / bare", median(startup["headless"]) / b0, "x", "info"))
    out += bench_heartbeat_control(0.3 if quick else 1.0)
    out.append(Result("machine load during the overhead runs", 0, "", note=f"start {note}; end {note_end}"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    for r in run(quick=args.quick, rounds=args.rounds, steps=args.steps):
        print(r.line(), flush=True)


if __name__ == "__main__":
    main()

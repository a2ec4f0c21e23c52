"""The headless printer: plain progress lines from a run directory, and the run's exit code.

    follow(paths)                          # attach: Ctrl-C detaches, the run keeps going
    follow(paths, stop_on_interrupt=True)  # run.py --headless: Ctrl-C stops the run

What it prints (plain text, no ANSI, flushed line by line so `| tee` and CI logs keep up):

    [00:42] epoch 2/4 step 180 loss 0.8123 (conflict 0.41 entropy 0.12) val_loss 0.79 | 5012 samples/s | cpu w0 98% 410M w1 97% 405M
    [00:42] epoch 2/4 step 180 loss 0.8123 | 5012 samples/s | gpu 0-7 util 97/96/97/95/97/96/97/96 mem 81/183G 61C
    checkpoint best.pt epoch 3 step 900 val_loss 1.87 (best) 1.2 MB 0.40 s
    epoch 2/4 done in 35.2 s, 5012 samples/s, loss 0.8123, val_loss 0.79
    warning: <message>            error: [rank 1] <message>           status running: <message>
    run 20261124-183000-cpu finished: 4/4 epochs, 256 steps, best val_loss 0.79 (epoch 3), 2m05s
      run dir: runs/20261124-183000-cpu

A progress line is printed once per interval when something moved (a metric, or rank 0's
output: a custom script that reports no step still gets its line every interval, showing the
last thing it printed), and every STALL_REPEAT_S otherwise (saying for how long nothing moved). A finished run prints its
checkpoints, epochs and warnings compactly, then the summary. Everything comes from files
(events.jsonl, telemetry.jsonl, run.json, exit.json): the printer never computes training state.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable, TextIO

from training.rundir import RunPaths, RunState, read_json
from training.rundir.events import EventReader
from training.rundir.logs import rank_logs

STALL_REPEAT_S = 30.0
# A supervisor that has not recorded itself in run.json after this long never started.
START_TIMEOUT_S = 60.0
# After a stop, how long to wait for the supervisor's exit.json before summarising without it.
EXIT_JSON_WAIT_S = 10.0
MAX_VALUES = 4
_CONTROL = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]|[\x00-\x08\x0b-\x1f\x7f]")


def clean_text(text: Any) -> str:
    """One printable line: no ANSI escapes or control characters from a user's stderr."""
    return _CONTROL.sub("", str(text)).replace("\t", " ").strip()


def fmt_duration(seconds: float) -> str:
    s = max(0, int(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def fmt_span(seconds: float) -> str:
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def fmt_value(v: Any) -> str:
    if isinstance(v, str):
        return v  # "nan" / "inf" as events.py writes them
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return str(v)
    if not math.isfinite(v):
        return str(v)
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e5 or a < 1e-3:
        return f"{v:.2e}"
    return f"{v:.4g}"


def fmt_bytes(n: Any) -> str:
    try:
        n = float(n)
    except (TypeError, ValueError):
        return ""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return ""


def _ranges(indices: list[int]) -> str:
    """[0,1,2,3,5] -> "0-3,5"."""
    out, start, prev = [], None, None
    for i in sorted(indices):
        if start is None:
            start = prev = i
        elif i == prev + 1:
            prev = i
        else:
            out.append(f"{start}-{prev}" if prev != start else f"{start}")
            start = prev = i
    if start is not None:
        out.append(f"{start}-{prev}" if prev != start else f"{start}")
    return ",".join(out)


def fmt_telemetry(sample: dict[str, Any] | None) -> str:
    """`gpu 0-7 util 97/96/... mem 81/183G 61C` or `cpu w0 98% 410M w1 97% 405M`; N/A shows as '-'."""
    if not isinstance(sample, dict):
        return ""
    gpus = [g for g in sample.get("gpus") or [] if isinstance(g, dict)]
    if gpus:
        util = "/".join("-" if g.get("util") is None else f"{g['util']:.0f}" for g in gpus)
        # Stand-in telemetry never passes for real GPUs.
        simulated = "simulated " if sample.get("source") == "fake-nvml" else ""
        parts = [f"{simulated}gpu {_ranges([int(g.get('index', i)) for i, g in enumerate(gpus)])} util {util}"]
        used = [g["mem_used_mib"] for g in gpus if isinstance(g.get("mem_used_mib"), (int, float))]
        total = [g["mem_total_mib"] for g in gpus if isinstance(g.get("mem_total_mib"), (int, float))]
        if used and total:
            # The fullest GPU is the one that runs out first.
            parts.append(f"mem {max(used) / 1024:.0f}/{max(total) / 1024:.0f}G")
        temps = [g["temp_c"] for g in gpus if isinstance(g.get("temp_c"), (int, float))]
        if temps:
            parts.append(f"{max(temps):.0f}C")
        throttled = sorted({t for g in gpus for t in (g.get("throttle") or []) if t != "none"})
        if throttled:
            parts.append("throttle " + ",".join(throttled))
        return " ".join(parts)
    workers = [w for w in sample.get("workers") or [] if isinstance(w, dict)]
    if workers:
        items = []
        for w in sorted(workers, key=lambda w: (w.get("rank") is None, w.get("rank") or 0)):
            name = f"w{w['rank']}" if w.get("rank") is not None else f"pid{w.get('pid')}"
            cpu = "-" if w.get("cpu_percent") is None else f"{w['cpu_percent']:.0f}%"
            rss = "-" if w.get("rss_mib") is None else f"{w['rss_mib']:.0f}M"
            items.append(f"{name} {cpu} {rss}")
        return "cpu " + " ".join(items)
    host = sample.get("host") or {}
    if isinstance(host, dict) and host.get("cpu_percent") is not None:
        return f"host cpu {host['cpu_percent']:.0f}%"
    return ""


def read_last_json_line(path: Path, max_bytes: int = 256 * 1024) -> dict[str, Any] | None:
    """The last complete JSON object of a JSONL file, reading only its tail (telemetry grows forever)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except OSError:
        return None
    for line in reversed(data.split(b"\n")):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError):
            continue  # a half-written last line: take the one before
        if isinstance(obj, dict):
            return obj
    return None


def supervisor_alive(run: dict[str, Any]) -> bool | None:
    """True/False from run.json's supervisor pid + create_time; None when run.json does not say."""
    sup = run.get("supervisor") if isinstance(run, dict) else None
    if not isinstance(sup, dict) or not isinstance(sup.get("pid"), int):
        return None
    from training.rundir import hostname

    if run.get("host") and run.get("host") != hostname():
        return True  # another node's process table is not ours to read: assume it lives
    import psutil

    try:
        proc = psutil.Process(sup["pid"])
        created = proc.create_time()
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    want = sup.get("create_time")
    # pids are reused: the same pid with another start time is someone else.
    return not isinstance(want, (int, float)) or abs(created - want) < 1.0


class RunView:
    """Everything the printer knows about one run, folded from its events."""

    def __init__(self) -> None:
        self.epoch: int | None = None
        self.epochs: int | None = None
        self.step: int | None = None
        self.steps_per_epoch: int | None = None
        self.train: dict[str, Any] = {}
        self.val: dict[str, Any] = {}
        self.samples_per_s: float | None = None
        self.state: str | None = None
        self.best: dict[str, Any] | None = None
        self.checkpoints = 0
        self.warnings = 0
        self.errors = 0
        self.first_t: float | None = None
        self.last_t: float | None = None
        self.version = 0  # bumps when the progress line would change

    def apply(self, e: dict[str, Any]) -> str | None:
        """Fold one event in; returns the line to print for it, if any."""
        kind = e.get("kind")
        t = e.get("t")
        if isinstance(t, (int, float)):
            if self.first_t is None:
                self.first_t = t
            self.last_t = t
        if isinstance(e.get("epochs"), int):
            self.epochs = e["epochs"]
        if kind == "metric":
            values = e.get("values") if isinstance(e.get("values"), dict) else {}
            if isinstance(e.get("step"), int):
                self.step = e["step"]
            if isinstance(e.get("epoch"), int):
                self.epoch = e["epoch"]
            if e.get("split", "train") == "train":
                self.train.update(values)
                if isinstance(values.get("samples_per_s"), (int, float)):
                    self.samples_per_s = values["samples_per_s"]
            elif e.get("split") == "val":
                self.val.update(values)
            self.version += 1
            return None
        if kind == "epoch":
            if isinstance(e.get("epoch"), int):
                self.epoch = e["epoch"]
            if isinstance(e.get("step"), int):
                self.step = e["step"]
            if isinstance(e.get("samples_per_s"), (int, float)):
                self.samples_per_s = e["samples_per_s"]
            self.version += 1
            return self.epoch_line(e)
        if kind == "checkpoint":
            self.checkpoints += 1
            if e.get("best") and e.get("value") is not None:
                self.best = e
            return checkpoint_line(e)
        if kind == "status":
            state = e.get("state")
            for key in ("epochs", "steps_per_epoch"):
                if isinstance(e.get(key), int):
                    setattr(self, key, e[key])
            if isinstance(e.get("start_step"), int) and self.step is None:
                self.step = e["start_step"]
            changed = state != self.state
            self.state = state if isinstance(state, str) else self.state
            message = clean_text(e.get("message") or "")
            if changed or message:
                return f"status {state}" + (f": {message}" if message else "")
            return None
        if kind == "log":
            level = str(e.get("level") or "info")
            if level == "warning":
                self.warnings += 1
            elif level == "error":
                self.errors += 1
            rank = f"[rank {e['rank']}] " if e.get("rank") is not None else ""
            return f"{level}: {rank}{clean_text(e.get('message', ''))}"
        return None

    def epoch_text(self) -> str:
        if self.epoch is None:
            return ""
        return f"epoch {self.epoch}/{self.epochs}" if self.epochs else f"epoch {self.epoch}"

    def values_text(self) -> str:
        parts = []
        if "loss" in self.train:
            parts.append(f"loss {fmt_value(self.train['loss'])}")
            comps = [(k[5:], v) for k, v in self.train.items() if k.startswith("loss/")]
            if comps:
                parts.append("(" + " ".join(f"{k} {fmt_value(v)}" for k, v in comps[:MAX_VALUES]) + ")")
        others = [k for k in self.train if k not in ("loss", "samples_per_s") and not k.startswith("loss/")]
        for k in others[:2]:
            parts.append(f"{k} {fmt_value(self.train[k])}")
        for k in list(self.val)[:MAX_VALUES]:
            parts.append(f"val_{k} {fmt_value(self.val[k])}")
        return " ".join(parts)

    def progress_line(self, elapsed_s: float, telemetry: dict[str, Any] | None, stalled_s: float = 0.0,
                      last_output: str = "") -> str:
        head = " ".join(p for p in (self.epoch_text(), f"step {self.step}" if self.step is not None else "",
                                    self.values_text()) if p)
        if not head and last_output:
            head = f"{self.state or 'starting'}, no metric yet; rank 0: {last_output}"
        elif not head:
            head = f"waiting for the first step ({self.state or 'starting'})"
        parts = [f"[{fmt_duration(elapsed_s)}] {head}"]
        if self.samples_per_s is not None:
            parts.append(f"{self.samples_per_s:.0f} samples/s")
        tele = fmt_telemetry(telemetry)
        if tele:
            parts.append(tele)
        if stalled_s >= STALL_REPEAT_S:
            parts.append(f"no new step for {fmt_span(stalled_s)}")
        return " | ".join(parts)

    def epoch_line(self, e: dict[str, Any]) -> str:
        parts = [f"{self.epoch_text() or 'epoch'} done"]
        if isinstance(e.get("seconds"), (int, float)):
            parts[0] += f" in {e['seconds']:.1f} s"
        if isinstance(e.get("samples_per_s"), (int, float)):
            parts.append(f"{e['samples_per_s']:.0f} samples/s")
        values = self.values_text()
        if values:
            parts.append(values)
        return ", ".join(parts)


def checkpoint_line(e: dict[str, Any]) -> str:
    parts = [f"checkpoint {Path(str(e.get('path', '?'))).name}"]
    for key in ("epoch", "step"):
        if e.get(key) is not None:
            parts.append(f"{key} {e[key]}")
    if e.get("value") is not None:
        parts.append(f"{e.get('monitor') or 'value'} {fmt_value(e['value'])}")
    if e.get("best"):
        parts.append("(best)")
    if e.get("bytes") is not None:
        parts.append(fmt_bytes(e["bytes"]))
    if isinstance(e.get("seconds"), (int, float)):
        parts.append(f"{e['seconds']:.2f} s")
    return " ".join(p for p in parts if p)


def exit_code(exit_info: dict[str, Any] | None, stopped_by_us: bool) -> int:
    if stopped_by_us:
        return 130
    if not isinstance(exit_info, dict):
        return 1
    rc = exit_info.get("returncode")
    state = exit_info.get("state")
    if state == RunState.FINISHED.value:
        return 0 if not isinstance(rc, int) else rc
    if isinstance(rc, int) and not isinstance(rc, bool):
        # A negative returncode is a signal (Popen convention); a shell would say 128 + n.
        return 128 - rc if rc < 0 else rc
    return 130 if state == RunState.STOPPED.value else 1


class Follower:
    def __init__(self, paths: RunPaths, out: TextIO, interval_s: float,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep):
        self.paths = paths
        self.out = out
        self.interval_s = interval_s
        self.clock = clock
        self.sleep = sleep
        self.events = EventReader(paths.events)
        self.view = RunView()
        self.started = clock()
        self.printed_version = -1
        self.last_progress_t = 0.0
        self.last_move_t = clock()
        self.last_step: int | None = None
        self.output_size = 0
        # What a dead supervisor's run gets (follow() sets it): the orphan reaper.
        self.reap_fn: Callable[[RunPaths], Any] = _default_reap

    def say(self, line: str) -> None:
        self.out.write(_CONTROL.sub("", line.replace("\t", " ")).rstrip() + "\n")
        self.out.flush()

    def run_json(self) -> dict[str, Any]:
        return read_json(self.paths.run_json, {}) or {}

    def exit_info(self) -> dict[str, Any] | None:
        data = read_json(self.paths.exit_json)
        return data if isinstance(data, dict) else None

    def drain(self, quiet_progress: bool = True) -> None:
        while True:
            batch = self.events.read()
            for e in batch:
                line = self.view.apply(e)
                if line:
                    self.say(line)
            if not batch and self.events.at_end:
                return

    def catch_up(self) -> None:
        """Apply the events already on disk to the view, silently (the summary still counts them)."""
        while True:
            batch = self.events.read()
            for e in batch:
                self.view.apply(e)
            if not batch and self.events.at_end:
                return

    def elapsed(self, at: float | None = None) -> float:
        created = self.run_json().get("created")
        start = created if isinstance(created, (int, float)) else (self.view.first_t or self.started)
        return (self.clock() if at is None else at) - start

    def rank0_output(self) -> tuple[int, Path | None]:
        """(bytes rank 0 has printed, its newest stdout file): a script that prints is moving."""
        files = rank_logs(self.paths).get(0, [])
        size = 0
        for f in files:
            try:
                size += f.stat().st_size
            except OSError:
                pass
        stdout = [f for f in files if f.name in ("stdout.log", "rank-0.log")]
        return size, (stdout[-1] if stdout else None)

    def last_output_line(self, path: Path | None, max_chars: int = 100) -> str:
        if path is None:
            return ""
        try:
            with open(path, "rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
                tail = f.read().decode("utf-8", "replace")
        except OSError:
            return ""
        lines = [clean_text(x) for x in re.split(r"[\r\n]", tail)]
        last = next((x for x in reversed(lines) if x), "")
        return last if len(last) <= max_chars else last[:max_chars - 3] + "..."

    def tick(self) -> None:
        """Read what is new, print its lines, and the progress line if due."""
        self.drain()
        now = self.clock()
        if self.view.step != self.last_step:
            self.last_step, self.last_move_t = self.view.step, now
        size, stdout = self.rank0_output()
        printed, self.output_size = size != self.output_size, size
        if printed:
            self.last_move_t = now
        changed = self.view.version != self.printed_version or printed
        stalled = now - self.last_move_t
        if changed or now - self.last_progress_t >= STALL_REPEAT_S:
            self.progress(stalled if not changed else 0.0, stdout=stdout)

    def progress(self, stalled_s: float = 0.0, at: float | None = None, stdout: Path | None = None) -> None:
        telemetry = read_last_json_line(self.paths.telemetry)
        last = self.last_output_line(stdout) if self.view.step is None else ""
        self.say(self.view.progress_line(self.elapsed(at), telemetry, stalled_s, last_output=last))
        self.printed_version = self.view.version
        self.last_progress_t = self.clock()

    def summary(self, exit_info: dict[str, Any] | None, code: int, state: str | None = None) -> None:
        v = self.view
        state = state or (exit_info or {}).get("state") or v.state or "unknown"
        parts = []
        if v.epoch is not None:
            parts.append(f"{v.epoch}/{v.epochs} epochs" if v.epochs else f"{v.epoch} epochs")
        if v.step is not None:
            parts.append(f"{v.step} steps")
        if v.best is not None:
            best = f"best {v.best.get('monitor') or 'value'} {fmt_value(v.best.get('value'))}"
            if v.best.get("epoch") is not None:
                best += f" (epoch {v.best['epoch']})"
            parts.append(best)
        elif "loss" in v.val or "loss" in v.train:
            parts.append(f"last {'val_loss' if 'loss' in v.val else 'loss'} "
                         f"{fmt_value(v.val.get('loss', v.train.get('loss')))}")
        seconds = (exit_info or {}).get("seconds")
        parts.append(fmt_span(seconds if isinstance(seconds, (int, float)) else self.elapsed()))
        if v.warnings or v.errors:
            parts.append(f"{v.warnings} warnings, {v.errors} errors")
        head = f"run {self.paths.id} {state}"
        if state != RunState.FINISHED.value:
            head += f" (exit {code})"
        self.say(f"{head}: {', '.join(parts)}")
        info = exit_info or {}
        if info.get("failed_rank") is not None:
            self.say(f"  failed rank: {info['failed_rank']}")
        if state == RunState.FAILED.value or info.get("failed_rank") is not None:
            for line in (info.get("error") or [])[:20]:
                self.say(f"  | {line}")
        if info.get("message") and state != RunState.FINISHED.value:
            self.say(f"  {info['message']}")
        if info.get("hint"):
            self.say(f"  hint: {info['hint']}")
        if self.events.skipped:
            self.say(f"  ({self.events.skipped} unreadable lines in events.jsonl skipped)")
        self.say(f"  run dir: {self.paths.root}")

    def finish(self, exit_info: dict[str, Any] | None, stopped_by_us: bool = False,
               state: str | None = None) -> int:
        self.drain()
        if self.view.version != self.printed_version:
            # The run is over: time its last line by its last event, not by the clock now.
            self.progress(at=self.view.last_t)
        code = exit_code(exit_info, stopped_by_us)
        self.summary(exit_info, code, state)
        return code

    def reap_orphan(self, paths: RunPaths) -> dict[str, Any] | None:
        """The orphan reaper (training.console.runs.reap_orphan) on this run; exit.json after it.
        `follow(..., reap_fn=...)` replaces it."""
        try:
            self.reap_fn(paths)
        except Exception as exc:  # noqa: BLE001 - a failed reap still ends with a word about the run
            self.say(f"error: could not stop what is left of run {paths.id}: {exc}")
        info = self.exit_info()
        for s in (info or {}).get("survivors") or []:
            self.say(f"  left behind: pid {s.get('pid')}, user {s.get('user')}: {s.get('command')} ({s.get('why')})")
        return info

    def wait_for_exit_json(self, timeout_s: float) -> dict[str, Any] | None:
        deadline = self.clock() + timeout_s
        while True:
            info = self.exit_info()
            if info is not None or self.clock() >= deadline:
                return info
            self.sleep(0.1)

    def orphaned(self) -> bool:
        """True when the run can never write exit.json: its supervisor is gone (or never came)."""
        alive = supervisor_alive(self.run_json())
        if alive is None:
            return self.clock() - self.started > START_TIMEOUT_S
        return not alive

    def loop(self) -> int:
        exit_info = self.exit_info()
        if exit_info is not None:
            return self.finish(exit_info)  # a finished run: history, then the summary
        self.drain()
        self.last_step, self.last_move_t = self.view.step, self.clock()
        self.progress()
        while True:
            self.sleep(self.interval_s)
            exit_info = self.exit_info()
            if exit_info is not None:
                return self.finish(exit_info)
            self.tick()
            if self.orphaned():
                # The supervisor may have written exit.json just before exiting.
                exit_info = self.exit_info()
                if exit_info is not None:
                    return self.finish(exit_info)
                sup = self.run_json().get("supervisor") or {}
                self.say(f"error: the supervisor of run {self.paths.id} (pid {sup.get('pid', '?')}) is gone "
                         f"without writing exit.json; the run is orphaned. Stopping whatever is left of it, "
                         f"as python run.py --stop {self.paths.id} would ...")
                exit_info = self.reap_orphan(self.paths)
                if exit_info is not None:
                    return self.finish(exit_info)
                return self.finish({"state": RunState.FAILED.value, "returncode": None,
                                    "message": "supervisor died without exit.json"})


def _default_stop(paths: RunPaths, grace_s: float | None = None, wait: bool = True) -> Any:
    from training.console.runs import stop_run

    # A second Ctrl-C asks for grace 0: what --stop --now does (SIGKILL to the run at once).
    return stop_run(paths, grace_s=grace_s, wait=wait, now=grace_s == 0.0)


def _default_reap(paths: RunPaths) -> Any:
    from training.console.runs import reap_orphan

    return reap_orphan(paths)


def follow(paths: RunPaths, out: TextIO | None = None, stop_on_interrupt: bool = False, interval_s: float = 2.0,
           *, history: bool = True, stop_fn: Callable[..., Any] | None = None, clock: Callable[[], float] = time.time,
           sleep: Callable[[float], None] = time.sleep, reap_fn: Callable[[RunPaths], Any] | None = None) -> int:
    """Print a run's progress until it ends; return its exit code (130 when Ctrl-C stopped it).

    Ctrl-C with `stop_on_interrupt` stops the run (a second Ctrl-C kills it without the grace
    period); without it, Ctrl-C detaches and the run keeps going. `history=False` takes in what
    the run already wrote without printing it (a resumed run whose earlier lines were shown).
    """
    out = out if out is not None else sys.stdout
    stop_fn = stop_fn or _default_stop
    f = Follower(paths, out, interval_s, clock=clock, sleep=sleep)
    f.reap_fn = reap_fn or _default_reap
    if not history:
        f.catch_up()
    try:
        return f.loop()
    except KeyboardInterrupt:
        pass
    if not stop_on_interrupt:
        f.say(f"detached from run {paths.id}; it keeps running. Re-attach with: python run.py --attach {paths.id}")
        return 130
    f.say(f"stopping run {paths.id} (Ctrl-C) ...")
    state: Any = None
    try:
        try:
            state = stop_fn(paths)
        except KeyboardInterrupt:
            f.say(f"second Ctrl-C: killing run {paths.id} now ...")
            try:
                state = stop_fn(paths, grace_s=0.0, wait=True)
            except KeyboardInterrupt:
                f.say(f"run {paths.id} may still be stopping; check with: python run.py --runs")
                return 130
        exit_info = f.wait_for_exit_json(EXIT_JSON_WAIT_S)
    except KeyboardInterrupt:
        f.say(f"run {paths.id} may still be stopping; check with: python run.py --runs")
        return 130
    except Exception as exc:  # a stop that failed must still end with a word about the run
        f.say(f"error: could not stop run {paths.id}: {exc}. Try: python run.py --stop {paths.id}")
        return 130
    state_value = getattr(state, "value", state)
    return f.finish(exit_info, stopped_by_us=True,
                    state=(exit_info or {}).get("state") or (state_value if isinstance(state_value, str) else None))

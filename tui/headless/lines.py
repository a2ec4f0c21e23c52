"""The headless printer's lines, from the run model: progress, events, telemetry, the summary.

Plain text, no ANSI. Event lines come from the one describer (tui.describe) that the run
screen's event log uses; the progress line and the summary are this face's own.
"""

from __future__ import annotations

from typing import Any

from traindeck.units import gib_figure
from training.rundir import RunState
from training.rundir.records import EpochEvent, Event, MetricEvent, StatusEvent
from tui.describe import describe, plain_text
from tui.formats import clean_text, format_clock, format_span, format_value, integer, number
from tui.run_model import RunModel

STALL_REPEAT_S = 30.0
MAX_VALUES = 4


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


def _gpu_text(sample: dict[str, Any], gpus: list[dict[str, Any]]) -> str:
    util = "/".join("-" if g.get("util") is None else f"{g['util']:.0f}" for g in gpus)
    # Stand-in telemetry never passes for real GPUs.
    simulated = "simulated " if sample.get("source") == "fake-nvml" else ""
    parts = [f"{simulated}gpu {_ranges([int(g.get('index', i)) for i, g in enumerate(gpus)])} util {util}"]
    used = [g["mem_used_mib"] for g in gpus if number(g.get("mem_used_mib")) is not None]
    total = [g["mem_total_mib"] for g in gpus if number(g.get("mem_total_mib")) is not None]
    if used and total:
        # The fullest GPU is the one that runs out first.
        parts.append(f"mem {gib_figure(max(used))}/{gib_figure(max(total))} GiB")
    temps = [g["temp_c"] for g in gpus if number(g.get("temp_c")) is not None]
    if temps:
        parts.append(f"{max(temps):.0f}C")
    throttled = sorted({t for g in gpus for t in (g.get("throttle") or []) if t != "none"})
    if throttled:
        parts.append("throttle " + ",".join(throttled))
    return " ".join(parts)


def fmt_telemetry(sample: dict[str, Any] | None) -> str:
    """`gpu 0-7 util 97/96/... mem 81/183G 61C` or `cpu w0 98% 410M w1 97% 405M`; N/A shows as '-'."""
    if not isinstance(sample, dict):
        return ""
    gpus = [g for g in sample.get("gpus") or [] if isinstance(g, dict)]
    if gpus:
        return _gpu_text(sample, gpus)
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


def epoch_text(model: RunModel) -> str:
    if model.epoch is None:
        return ""
    return f"epoch {model.epoch}/{model.epochs}" if model.epochs else f"epoch {model.epoch}"


def values_text(model: RunModel) -> str:
    parts = []
    train, val = model.train, model.val
    if "loss" in train:
        parts.append(f"loss {format_value(train['loss'])}")
        comps = [(k[5:], v) for k, v in train.items() if k.startswith("loss/")]
        if comps:
            parts.append("(" + " ".join(f"{k} {format_value(v)}" for k, v in comps[:MAX_VALUES]) + ")")
    others = [k for k in train if k not in ("loss", "samples_per_s") and not k.startswith("loss/")]
    for k in others[:2]:
        parts.append(f"{k} {format_value(train[k])}")
    for k in list(val)[:MAX_VALUES]:
        parts.append(f"val_{k} {format_value(val[k])}")
    return " ".join(parts)


def progress_line(model: RunModel, elapsed_s: float, telemetry: dict[str, Any] | None, stalled_s: float = 0.0,
                  last_output: str = "", now: float | None = None) -> str:
    state = model.event_state or "starting"
    head = " ".join(p for p in (epoch_text(model), f"step {model.step}" if model.step is not None else "",
                                values_text(model)) if p)
    waiting = model.waiting_text()
    rendezvous = model.rendezvous_text(now) if now is not None and not head else ""
    if waiting:
        # Nothing is launched while queued: no step to wait for, no stall to report.
        head, stalled_s = f"queued {waiting}", 0.0
    elif rendezvous:
        head = rendezvous
    elif not head and last_output:
        head = f"{state}, no metric yet; rank 0: {last_output}"
    elif not head:
        head = f"waiting for the first step ({state})"
    parts = [f"[{format_clock(elapsed_s)}] {head}"]
    if model.samples_per_s is not None:
        parts.append(f"{model.samples_per_s:.0f} samples/s")
    tele = fmt_telemetry(telemetry)
    if tele:
        parts.append(tele)
    if stalled_s >= STALL_REPEAT_S:
        parts.append(f"no new step for {format_span(stalled_s)}")
    return " | ".join(parts)


def event_line(event: Event, model: RunModel, previous_state: str | None) -> str | None:
    """The line to print for one event (typed by the feed) already folded into `model` (None: it
    prints none). A status prints when the state changed or it says something; metrics go to the
    progress line."""
    if type(event) is MetricEvent:
        return None
    if type(event) is StatusEvent and event.state == previous_state and not clean_text(event.message):
        return None
    line = describe(event.raw, model.epochs)
    if line is None:
        return None
    text = plain_text(line)
    if type(event) is EpochEvent:
        values = values_text(model)
        text += f", {values}" if values else ""
    return text


# A run a [health] rule stopped: not a success, whatever its return code (CI must notice).
HEALTH_EXIT = 3


def exit_code(exit_info: dict[str, Any] | None, stopped_by_us: bool) -> int:
    if stopped_by_us:
        return 130
    if not isinstance(exit_info, dict):
        return 1
    if isinstance(exit_info.get("health"), dict) and exit_info.get("state") != RunState.FINISHED.value:
        return HEALTH_EXIT
    rc = exit_info.get("returncode")
    state = exit_info.get("state")
    if state == RunState.FINISHED.value:
        return 0 if not isinstance(rc, int) else rc
    if integer(rc) is not None:
        # A negative returncode is a signal (Popen convention); a shell would say 128 + n.
        return 128 - rc if rc < 0 else rc
    return 130 if state == RunState.STOPPED.value else 1


def summary_lines(model: RunModel, run_id: str, exit_info: dict[str, Any] | None, code: int,
                  state: str, elapsed_s: float) -> list[str]:
    """The run's last word: what it did, how it ended, and for a failure the rank's first errors."""
    parts = []
    if model.epoch is not None:
        parts.append(f"{model.epoch}/{model.epochs} epochs" if model.epochs else f"{model.epoch} epochs")
    if model.step is not None:
        parts.append(f"{model.step} steps")
    if model.best is not None:
        best = f"best {model.best.get('monitor') or 'value'} {format_value(model.best.get('value'))}"
        if model.best.get("epoch") is not None:
            best += f" (epoch {model.best['epoch']})"
        parts.append(best)
    elif "loss" in model.val or "loss" in model.train:
        parts.append(f"last {'val_loss' if 'loss' in model.val else 'loss'} "
                     f"{format_value(model.val.get('loss', model.train.get('loss')))}")
    info = exit_info or {}
    seconds = number(info.get("seconds"))
    parts.append(format_span(seconds if seconds is not None else elapsed_s))
    if model.warnings or model.errors:
        parts.append(f"{model.warnings} warnings, {model.errors} errors")
    head = f"run {run_id} {state}"
    if state != RunState.FINISHED.value:
        head += f" (exit {code})"
    lines = [f"{head}: {', '.join(parts)}"] + anatomy_lines(model)
    if info.get("failed_rank") is not None:
        on = f" on node {info['failed_node']}" if info.get("failed_node") else ""
        lines.append(f"  failed rank: {info['failed_rank']}{on}")
    if state == RunState.FAILED.value or info.get("failed_rank") is not None:
        lines += [f"  | {line}" for line in (info.get("error") or [])[:20]]
    if info.get("message") and state != RunState.FINISHED.value:
        lines.append(f"  {info['message']}")
    if info.get("hint"):
        lines.append(f"  hint: {info['hint']}")
    return lines


def anatomy_lines(model: RunModel) -> list[str]:
    """Where the run's time went (each rank's totals, folded) and its throughput: ["  time: step
    12.3 ms: input wait 41% · forward+backward 48% · ...", "  throughput: 5,012 samples/s ..."]."""
    whole = model.timing.whole_run()
    if whole is None:
        return []
    lines = [f"  time: {whole.summary()}"]
    speed = model.throughput()
    if speed.samples_per_s is not None:
        parts = [f"{speed.samples_per_s:,.0f} samples/s"]
        if speed.tokens_per_s is not None:
            parts.append(f"{speed.tokens_per_s:,.0f} tokens/s")
        if speed.per_gpu is not None and (model.gpus or model.world_size > 1):
            parts.append(f"{speed.per_gpu:,.0f} per {speed.per}")
        if speed.tflops_per_gpu is not None and model.gpus:
            parts.append(f"{speed.tflops_per_gpu:,.1f} TFLOP/s per GPU")
        parts.append(f"MFU {speed.mfu:.0%}" if speed.mfu is not None else f"no MFU: {speed.why_no_mfu}")
        lines.append(f"  throughput: {', '.join(parts)}")
    return lines

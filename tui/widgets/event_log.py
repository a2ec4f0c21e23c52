"""The run's story: checkpoints (best marked, size, write time), epochs, validation, warnings,
state changes, and a failure with the failing rank's first error lines (from exit.json).
The watchdog's hang and straggler warnings (and its all-clear) carry a badge naming the rank,
its step and how long, styled by the event-log--hang/straggler/recovered component classes.

Times are shown relative to the run's start (+m:ss), so the log reads the same from any
time zone and in snapshots.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import RichLog

from tui.run_model import ExitInfo, format_bytes, format_duration, format_stall

STATE_STYLES = {"running": "bold green", "finished": "bold green", "failed": "bold red",
                "stopped": "bold yellow", "starting": "dim"}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


WATCHDOG_BADGES = {"hang": "HANG", "straggler": "SLOW", "recovered": "MOVING"}


class EventLog(RichLog):
    COMPONENT_CLASSES = {
        "event-log--hang", "event-log--hang-text",
        "event-log--straggler", "event-log--straggler-text",
        "event-log--recovered", "event-log--recovered-text",
    }

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("wrap", True)
        kwargs.setdefault("max_lines", 5000)
        super().__init__(**kwargs)
        self.start_t: float | None = None
        self.shown_exit = False

    def _stamp(self, event: dict[str, Any]) -> Text:
        t = event.get("t")
        if self.start_t is None or not isinstance(t, (int, float)):
            return Text("      ", style="dim")
        return Text(f"+{format_duration(t - self.start_t):>6} ", style="dim")

    def add_events(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            line = self.describe(event)
            if line is not None:
                self.write(self._stamp(event) + line)

    def describe(self, event: dict[str, Any]) -> Text | None:
        kind = event.get("kind")
        if kind == "checkpoint":
            path = str(event.get("path") or "?").rsplit("/", 1)[-1]
            t = Text()
            t.append("★ " if event.get("best") else "● ", "bold yellow" if event.get("best") else "cyan")
            t.append(f"checkpoint {path}", "bold")
            t.append(f"  epoch {event.get('epoch', '?')} step {event.get('step', '?')}")
            if event.get("monitor") and event.get("value") is not None:
                t.append(f"  {event['monitor']} {_fmt(event['value'])}")
            if event.get("best"):
                t.append("  best", "bold yellow")
            size = format_bytes(event["bytes"]) if isinstance(event.get("bytes"), (int, float)) else None
            secs = event.get("seconds")
            if size or isinstance(secs, (int, float)):
                t.append(f"  {size or '?'}" + (f" in {secs:.2f} s" if isinstance(secs, (int, float)) else ""), "dim")
            return t
        if kind == "epoch":
            t = Text()
            epochs = event.get("epochs")
            t.append(f"epoch {event.get('epoch', '?')}" + (f"/{epochs}" if epochs else "") + " done", "green")
            if isinstance(event.get("seconds"), (int, float)):
                t.append(f" in {event['seconds']:.1f} s")
            if isinstance(event.get("samples_per_s"), (int, float)):
                t.append(f", {event['samples_per_s']:,.0f} samples/s", "dim")
            return t
        if kind == "metric" and event.get("split") == "val":
            values = event.get("values") or {}
            body = "  ".join(f"{k} {_fmt(v)}" for k, v in values.items())
            return Text.assemble(("val ", "magenta"), f"epoch {event.get('epoch', '?')}: ", body)
        if kind == "status":
            state = str(event.get("state", "?"))
            t = Text(f"{state}", STATE_STYLES.get(state, "bold"))
            extra = []
            if state == "running":
                for key in ("world_size", "device", "backend", "batch_size"):
                    if event.get(key) is not None:
                        extra.append(f"{key.replace('_', ' ')} {event[key]}")
            if event.get("message"):
                extra.insert(0, str(event["message"]))
            if extra:
                t.append("  " + ", ".join(extra))
            return t
        if kind == "log" and event.get("watchdog") in WATCHDOG_BADGES:
            return self._watchdog(event)
        if kind == "log":
            level = str(event.get("level", "info"))
            style = {"warning": "bold yellow", "error": "bold red"}.get(level, "")
            prefix = {"warning": "⚠ ", "error": "✖ "}.get(level, "· ")
            rank = f"[rank {event['rank']}] " if isinstance(event.get("rank"), int) else ""
            return Text.assemble((prefix, style), (rank, "dim"), (str(event.get("message", "")), style))
        return None

    def _watchdog(self, event: dict[str, Any]) -> Text:
        kind = str(event["watchdog"])
        rank = event.get("rank")
        ranks = event.get("ranks") or []
        who = f"rank {rank}" if isinstance(rank, int) else (
            "ranks " + ",".join(map(str, ranks)) if ranks else "ranks ?")
        parts = [WATCHDOG_BADGES[kind], who]
        if isinstance(event.get("step"), int):
            parts.append(f"step {event['step']}")
        if isinstance(event.get("stalled_s"), (int, float)):
            parts.append(format_stall(event["stalled_s"]))
        t = Text()
        t.append(f" {' · '.join(parts)} ", self.get_component_rich_style(f"event-log--{kind}", partial=True))
        t.append(" " + str(event.get("message", "")), self.get_component_rich_style(f"event-log--{kind}-text",
                                                                                  partial=True))
        return t

    def add_exit(self, info: ExitInfo) -> None:
        """The end of the run, once; a failure names the rank and its first error lines."""
        if self.shown_exit:
            return
        self.shown_exit = True
        style = "bold green" if info.state == "finished" else ("bold red" if info.state == "failed" else "bold yellow")
        head = Text(f"exit: {info.state or '?'}", style)
        if info.returncode is not None:
            head.append(f"  return code {info.returncode}")
        if info.failed_rank is not None:
            head.append(f"  failing rank {info.failed_rank}", "bold red")
        if info.message:
            head.append(f"  {info.message}", "dim")
        self.write(head)
        for line in info.lines[:12]:
            self.write(Text("    " + line, "red"))
        if info.hint:
            self.write(Text("    hint: " + info.hint, "yellow"))

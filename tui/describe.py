"""The one describer of events: what a checkpoint, an epoch, a state change or a warning says.

`describe(event)` returns the line as pieces of (text, style); the run screen's event log
renders the styles, the headless printer joins `plain_text(pieces)`. A piece may carry a
different plain text (the log's "⚠ " marker reads "warning: " in a CI log). Plain Python, no
Textual. Styles starting with "@" name a component class of the event log (the watchdog and health
badges).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from traindeck.units import size as format_size
from tui.formats import clean_text, format_stall, format_value, integer, number

STATE_STYLES = {"running": "bold green", "finished": "bold green", "failed": "bold red",
                "stopped": "bold yellow", "starting": "dim", "queued": "dim"}
WATCHDOG_BADGES = {"hang": "HANG", "straggler": "SLOW", "recovered": "MOVING"}
LEVEL_MARKS = {"warning": ("⚠ ", "bold yellow"), "error": ("✖ ", "bold red")}


@dataclass(frozen=True)
class Piece:
    text: str
    style: str = ""
    plain: str | None = None  # the text without styles, when it is not `text`


Line = tuple[Piece, ...]


def plain_text(line: Line) -> str:
    """The line for a terminal without styles: one space between words, no markers."""
    return " ".join("".join(p.text if p.plain is None else p.plain for p in line).split())


def describe(event: dict[str, Any], epochs: int = 0) -> Line | None:
    """The line for one event, or None for events that make no line (train metrics, unknown kinds).
    `epochs`: the run's epoch count, for an epoch event that does not carry it."""
    kind = event.get("kind")
    if kind == "checkpoint":
        return _checkpoint(event)
    if kind == "epoch":
        return _epoch(event, epochs)
    if kind == "metric" and event.get("split") == "val":
        values = event.get("values") or {}
        body = "  ".join(f"{k} {format_value(v)}" for k, v in values.items())
        return (Piece("val ", "magenta"), Piece(f"epoch {event.get('epoch', '?')}: "), Piece(body))
    if kind == "status":
        return _status(event)
    if kind == "health":
        return _health(event)
    if kind == "log" and event.get("watchdog") in WATCHDOG_BADGES:
        return _watchdog(event)
    if kind == "log":
        level = str(event.get("level", "info"))
        mark, style = LEVEL_MARKS.get(level, ("· ", ""))
        rank = f"[rank {event['rank']}] " if integer(event.get("rank")) is not None else ""
        return (Piece(mark, style, plain=f"{level}: "), Piece(rank, "dim"),
                Piece(clean_text(event.get("message", "")), style))
    return None


def _checkpoint(event: dict[str, Any]) -> Line:
    path = str(event.get("path") or "?").rsplit("/", 1)[-1]
    best = bool(event.get("best"))
    pieces = [Piece("★ " if best else "● ", "bold yellow" if best else "cyan", plain=""),
              Piece(f"checkpoint {path}", "bold"),
              Piece(f"  epoch {event.get('epoch', '?')} step {event.get('step', '?')}")]
    if event.get("monitor") and event.get("value") is not None:
        pieces.append(Piece(f"  {event['monitor']} {format_value(event['value'])}"))
    if best:
        pieces.append(Piece("  best", "bold yellow"))
    size = format_size(event["bytes"]) if number(event.get("bytes")) is not None else None
    secs = number(event.get("seconds"))
    if size or secs is not None:
        pieces.append(Piece(f"  {size or '?'}" + (f" in {secs:.2f} s" if secs is not None else ""), "dim"))
    return tuple(pieces)


def _epoch(event: dict[str, Any], epochs: int) -> Line:
    total = integer(event.get("epochs")) or epochs
    pieces = [Piece(f"epoch {event.get('epoch', '?')}" + (f"/{total}" if total else "") + " done", "green")]
    seconds = number(event.get("seconds"))
    if seconds is not None:
        pieces.append(Piece(f" in {seconds:.1f} s"))
    sps = number(event.get("samples_per_s"))
    if sps is not None:
        pieces.append(Piece(f", {sps:,.0f} samples/s", "dim"))
    return tuple(pieces)


def _status(event: dict[str, Any]) -> Line:
    state = str(event.get("state", "?"))
    style = STATE_STYLES.get(state, "bold")
    pieces = [Piece(state, style, plain=f"status {state}")]
    extra = []
    if state == "running":
        for key in ("world_size", "device", "backend", "batch_size"):
            if event.get(key) is not None:
                extra.append(f"{key.replace('_', ' ')} {event[key]}")
    if event.get("message"):
        extra.insert(0, clean_text(event["message"]))
    if extra:
        pieces.append(Piece("  " + ", ".join(extra), style, plain=": " + ", ".join(extra)))
    return tuple(pieces)


def _watchdog(event: dict[str, Any]) -> Line:
    kind = str(event["watchdog"])
    rank = integer(event.get("rank"))
    ranks = event.get("ranks") or []
    who = f"rank {rank}" if rank is not None else ("ranks " + ",".join(map(str, ranks)) if ranks else "ranks ?")
    parts = [WATCHDOG_BADGES[kind], who]
    if integer(event.get("step")) is not None:
        parts.append(f"step {event['step']}")
    stalled = number(event.get("stalled_s"))
    if stalled is not None:
        parts.append(format_stall(stalled))
    plain = f"{event.get('level', 'warning')}: " + (f"[rank {rank}] " if rank is not None else "")
    return (Piece(f" {' · '.join(parts)} ", f"@event-log--{kind}", plain=plain),
            Piece(" " + clean_text(event.get("message", "")), f"@event-log--{kind}-text"))


def is_health_update(event: dict[str, Any]) -> bool:
    """A health event that updates an incident already raised (training.monitor.health): news for
    the log, no new alarm (no bell, no toast, not one more warning)."""
    return event.get("kind") == "health" and event.get("update") is True


def _health(event: dict[str, Any]) -> Line:
    """A [health] rule that fired: a badge with the rule, its step and the action taken; an update
    of an open incident says so."""
    rule = clean_text(str(event.get("rule") or "?"))
    action = clean_text(str(event.get("action") or "warn"))
    update = is_health_update(event)
    parts = [f"HEALTH {rule}"]
    if integer(event.get("step")) is not None:
        parts.append(f"step {event['step']}")
    if update:
        parts.append("update")
    if action != "warn":
        parts.append(action.upper())
    rank = integer(event.get("rank"))
    plain = f"health {rule}{' update' if update else ''}: " + (f"[rank {rank}] " if rank is not None else "")
    return (Piece(f" {' · '.join(parts)} ", "@event-log--health", plain=plain),
            Piece(" " + clean_text(event.get("message", "")), "@event-log--health-text"))

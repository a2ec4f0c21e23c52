"""One GPU (or one CPU worker process) of a run: bars, numbers and a utilization sparkline.

The panel only renders a `DeviceView`. Its layout follows its size, which the stylesheet
decides: one line (the compact table row used on 80-column terminals) or a bordered card.
State shows as CSS classes: -hot (>= 85 C), -throttle, -idle (util < 5 % while training, on a GPU
that hosts a rank of the run: a box's other GPUs are not this run's to call idle), and
the watchdog's marks for a rank the panel hosts: -stalled (a hang) and -straggler, with a short
label ("HUNG 1:32", "slow") in the row or the card's border.

A new sample repaints only the lines it changed (issue 17: the 8 cards of a B200 box, redrawn
whole every second, were the run screen's largest paint). The panel keeps its content as lines
(rich Text, and the Strips drawn from them); a new sample is laid out, compared line by line, and
only the lines that differ are drawn again and refreshed. A restyle (a class such as -hot, a
theme) or a new size draws everything again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from rich.style import Style
from rich.text import Text
from textual.reactive import reactive
from textual.strip import Strip
from textual.visual import Visual, visualize
from textual.widget import Widget

from traindeck.units import gib_figure
from training.monitor.health import THROTTLE_HARDWARE, THROTTLE_THERMAL
from tui.widgets._painted_lines import PaintsChangedLines
from tui.widgets._render import SPARK_STEP, bar, num, sparkline

HOT_C = 85
# A throttle mark shows at the first throttled sample and stays until this many clean ones in a
# row: a GPU at its power cap flips in and out of it every sample, and each flip restyles the
# whole card (on the terminal: every cell of it, each second).
THROTTLE_HOLD = 5
IDLE_UTIL = 5
# The clocks-event reasons that are a slowdown (too hot, a hardware brake): the health rule's. The
# rest are not: sw_power_cap is a busy GPU at its power limit, the normal state of many under
# full load (a B200 all day), idle, application clocks, sync boost, display clocks.
THROTTLING = frozenset(THROTTLE_THERMAL + THROTTLE_HARDWARE)


def _f(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _host_key(host: str, device: str) -> str:
    """A device's key, which is also its panel's widget id: letters, digits, - and _ only."""
    return f"{re.sub(r'[^A-Za-z0-9_-]', '_', host)}-{device}" if host else device


@dataclass(frozen=True)
class DeviceView:
    """What one panel shows; N/A fields are None."""

    key: str
    kind: str  # "gpu" or "cpu"
    index: int
    name: str = ""
    util: float | None = None
    mem_used_mib: float | None = None
    mem_total_mib: float | None = None
    temp_c: float | None = None
    power_w: float | None = None
    power_limit_w: float | None = None
    clock_mhz: float | None = None
    clock_max_mhz: float | None = None
    threads: int | None = None
    ranks: tuple[int, ...] = ()
    throttle: tuple[str, ...] = ()
    error: str | None = None
    history: tuple[float | None, ...] = field(default=(), compare=False)
    history_start: int = field(default=0, compare=False)  # the absolute sample index of history[0]
    # The node it is on, in a `[launch] hosts` run ("" for one node): in the title, and in the key
    # (two nodes both have a GPU 0).
    host: str = ""

    @classmethod
    def from_gpu(cls, gpu: dict[str, Any], history: tuple[float | None, ...] = (), history_start: int = 0,
                 host: str = "") -> DeviceView:
        index = int(gpu.get("index", 0))
        # "ranks" (matched by device UUID) when the sample has it; older samples: by process PID.
        by_uuid = gpu.get("ranks")
        if isinstance(by_uuid, list):
            ranks = tuple(sorted({r for r in by_uuid if isinstance(r, int) and not isinstance(r, bool)}))
        else:
            ranks = tuple(sorted({p["rank"] for p in gpu.get("processes") or []
                                  if isinstance(p, dict) and isinstance(p.get("rank"), int)}))
        return cls(key=_host_key(host, f"gpu{index}"), kind="gpu", index=index, name=str(gpu.get("name") or ""),
                   util=_f(gpu.get("util")), mem_used_mib=_f(gpu.get("mem_used_mib")),
                   mem_total_mib=_f(gpu.get("mem_total_mib")), temp_c=_f(gpu.get("temp_c")),
                   power_w=_f(gpu.get("power_w")), power_limit_w=_f(gpu.get("power_limit_w")),
                   clock_mhz=_f(gpu.get("sm_clock_mhz")), clock_max_mhz=_f(gpu.get("sm_clock_max_mhz")),
                   ranks=ranks, throttle=tuple(str(r) for r in gpu.get("throttle") or []),
                   error=gpu.get("error") or None, history=history, history_start=history_start, host=host)

    @classmethod
    def from_worker(cls, worker: dict[str, Any], index: int, history: tuple[float | None, ...] = (),
                    history_start: int = 0, host: str = "") -> DeviceView:
        rank = worker.get("rank")
        return cls(key=_host_key(host, f"cpu{rank if isinstance(rank, int) else index}"), kind="cpu", index=index,
                   name="CPU worker", util=_f(worker.get("cpu_percent")), mem_used_mib=_f(worker.get("rss_mib")),
                   threads=worker.get("threads") if isinstance(worker.get("threads"), int) else None,
                   ranks=(rank,) if isinstance(rank, int) else (), history=history, history_start=history_start,
                   host=host)

    @property
    def short_name(self) -> str:
        return self.name.replace("NVIDIA ", "").replace("GeForce ", "")

    @property
    def title(self) -> str:
        on = f"{self.host} · " if self.host else ""
        if self.kind == "cpu":
            rank = f" (rank {self.ranks[0]})" if self.ranks else ""
            return f"{on}CPU worker {self.index}{rank}"
        return f"{on}GPU {self.index} · {self.short_name}" if self.name else f"{on}GPU {self.index}"

    @property
    def ranks_text(self) -> str:
        if not self.ranks:
            return "no rank"
        return ("rank " if len(self.ranks) == 1 else "ranks ") + ",".join(map(str, self.ranks))

    @property
    def hot(self) -> bool:
        return self.temp_c is not None and self.temp_c >= HOT_C

    @property
    def throttling(self) -> bool:
        return any(r in THROTTLING for r in self.throttle)

    @property
    def util_top(self) -> float:
        # A CPU worker's percent counts every core it uses; scale its sparkline to 100 % per core.
        return max(100.0, max((h for h in self.history if h is not None), default=100.0)) \
            if self.kind == "cpu" else 100.0


@dataclass(frozen=True)
class PanelAlert:
    kind: str  # "hang" | "straggler"
    label: str  # "HUNG 1:32", "slow"


class GpuPanel(PaintsChangedLines, Widget):
    COMPONENT_CLASSES = {
        "gpu-panel--label",
        "gpu-panel--util",
        "gpu-panel--mem",
        "gpu-panel--empty",
        "gpu-panel--dim",
        "gpu-panel--warn",
        "gpu-panel--bad",
        "gpu-panel--spark",
        "gpu-panel--alert",
    }

    # repaint=False: the watchers repaint the lines that changed (show_changes), not the panel.
    device: reactive[DeviceView | None] = reactive(None, layout=False, repaint=False)
    training: reactive[bool] = reactive(False, repaint=False)
    """True while the run trains (not paused, not finished): only then is a quiet GPU 'idle'."""
    alert: reactive[PanelAlert | None] = reactive(None, repaint=False)
    """The watchdog's mark on a rank of this device, or None."""
    sparklines: reactive[bool] = reactive(True, repaint=False)
    """False in run.py --low-bandwidth: no utilization history (it changes every sample)."""

    def __init__(self, device: DeviceView, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.set_reactive(GpuPanel.device, device)
        self._throttle_left = THROTTLE_HOLD if device.throttling else 0  # samples the mark still holds
        self._reasons = device.throttle  # the last throttled sample's reasons (shown while held)
        # The lines last drawn, as Text and as the Strip drawn from it at `_drawn_width`.
        self._texts: list[Text] = []
        self._strips: list[Strip] = []
        self._drawn_width = 0
        self._styles: dict[str, Style] = {}  # component styles, until the next restyle

    @property
    def throttle_shown(self) -> bool:
        return self._throttle_left > 0

    def on_mount(self) -> None:
        self._update_state()

    def watch_device(self, device: DeviceView | None) -> None:
        if device is not None:
            self._throttle_left = THROTTLE_HOLD if device.throttling else max(0, self._throttle_left - 1)
            if device.throttling:
                self._reasons = device.throttle
        self._update_state()
        self.show_changes()

    def watch_training(self) -> None:
        self._update_state()

    def watch_alert(self) -> None:
        self._update_state()
        self.show_changes()

    def watch_sparklines(self) -> None:
        self.show_changes()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        # A class (-hot, -throttle, ...) or the theme changed: every colour may have.
        self._styles.clear()
        self._texts, self._strips = [], []  # drawn in the old colours
        self.forget_painted()

    # ---- painting only what changed (PaintsChangedLines) -----------------------------------------
    def draw_lines(self) -> list[Strip]:
        """The panel a line at a time; a line whose Text is unchanged keeps its Strip (drawing one
        through Textual's Content is most of a panel's cost)."""
        size = self.content_size
        lines = self.render().split("\n", allow_blank=True)
        texts = list(lines)[:max(1, size.height)]
        same_width = self._drawn_width == size.width
        strips = []
        for y, text in enumerate(texts):
            text.no_wrap = True
            unchanged = same_width and y < len(self._texts) and self._texts[y] == text
            strips.append(self._strips[y] if unchanged else self._draw(text, size.width))
        self._texts, self._strips, self._drawn_width = texts, strips, size.width
        return strips

    def _draw(self, text: Text, width: int) -> Strip:
        """One line as the default render path draws it (the widget's colours under the text's)."""
        strips = Visual.to_strips(self, visualize(self, text), width, 1, self.visual_style)
        return strips[0] if strips else Strip.blank(width, self.rich_style)

    def _update_state(self) -> None:
        d = self.device
        if d is None:
            return
        alert = self.alert
        subtitle = d.ranks_text + (f" · {alert.label}" if alert else "")
        # Setting a border title always repaints: only when it changed.
        if self.border_title != d.title:
            self.border_title = d.title
        if self.border_subtitle != subtitle:
            self.border_subtitle = subtitle
        # One batch: restyles only if a class actually changed (7 set_class calls cost ~1 ms).
        self.update_classes({
            "-stalled": alert is not None and alert.kind == "hang",
            "-straggler": alert is not None and alert.kind == "straggler",
            "-hot": d.hot,
            "-throttle": self.throttle_shown,
            "-idle": self.training and d.kind == "gpu" and bool(d.ranks) and d.util is not None
                     and d.util < IDLE_UTIL,
            "-error": d.error is not None,
            "-cpu": d.kind == "cpu",
        })

    def _style(self, name: str) -> Style:
        style = self._styles.get(name)
        if style is None:
            style = self._styles[name] = self.get_component_rich_style(f"gpu-panel--{name}", partial=True)
        return style

    def _temp_style(self, d: DeviceView):
        if d.temp_c is None:
            return self._style("dim")
        return self._style("bad") if d.hot else (self._style("warn") if d.temp_c >= 75 else None)

    def _bar(self, text: Text, fraction: float | None, width: int, style: str) -> None:
        filled, empty = bar(fraction, width)
        text.append("▕", self._style("dim"))
        text.append(filled, self._style(style))
        text.append(empty, self._style("empty"))
        text.append("▏", self._style("dim"))

    def render(self) -> Text:
        """The whole panel as one Text (render_line draws it a line at a time)."""
        d = self.device
        if d is None:
            return Text("")
        if self.content_size.height <= 1:
            return self._render_row(d, self.content_size.width)
        return self._render_card(d, self.content_size.width)

    # ---- one line: the compact table row ----------------------------------------------------
    def _render_row(self, d: DeviceView, width: int) -> Text:
        t = Text(no_wrap=True, overflow="ellipsis")
        if d.kind == "cpu":
            label = f"cpu{d.index} r{d.ranks[0]}" if d.ranks else f"cpu{d.index}"
            t.append(f"{label:<7}", self._style("label"))
            mark = self._append_alert(t)
            tail = f" rss {num(d.mem_used_mib)} MiB  {d.threads or '?'} thr "
            spark_w = max(0, min(16, width - 7 - mark - 16 - len(tail) - 6)) if self.sparklines else 0
            self._bar(t, None if d.util is None else d.util / d.util_top,
                      max(6, width - 7 - mark - 6 - len(tail) - spark_w - 3), "util")
            t.append(f"{num(d.util):>4}%")
            t.append(tail)
            t.append(self._spark(d, spark_w, d.util_top), self._style("spark"))
            return t
        t.append(f"{d.index:<2}", self._style("label"))
        mark = self._append_alert(t)
        mem = f"{gib_figure(d.mem_used_mib)}/{gib_figure(d.mem_total_mib)}GiB"
        power = f"{num(d.power_w)}/{num(d.power_limit_w)}W"
        temp = f"{num(d.temp_c)}°C"
        ranks = "r" + ",".join(map(str, d.ranks)) if d.ranks else "-"
        fixed = 2 + mark + 5 + 4 + 1 + len(mem) + 1 + 5 + 1 + len(power) + 1 + len(ranks) + 1
        spare = max(0, width - fixed)
        spark_w = min(16, spare // 4) if self.sparklines else 0
        bars = spare - spark_w - 1
        util_w = max(4, (bars - 4) * 3 // 5)
        mem_w = max(3, bars - 4 - util_w)
        self._bar(t, None if d.util is None else d.util / 100, util_w, "util")
        t.append(f"{num(d.util):>4}%", self._style("bad") if d.util is None else None)
        t.append(" mem", self._style("label"))
        frac = d.mem_used_mib / d.mem_total_mib if d.mem_used_mib is not None and d.mem_total_mib else None
        self._bar(t, frac, mem_w, "mem")
        t.append(f"{mem:>10} ")
        t.append(f"{temp:>5}", self._temp_style(d))
        t.append(" ")
        t.append(f"{power:>9}", self._style("warn") if self.throttle_shown else None)
        t.append(f" {ranks} ", self._style("label"))
        t.append(self._spark(d, spark_w), self._style("spark"))
        return t

    @staticmethod
    def _spark(d: DeviceView, width: int, top: float = 100.0) -> str:
        return sparkline(d.history, width, top, step=SPARK_STEP, start=d.history_start)

    def _append_alert(self, t: Text) -> int:
        """The watchdog label as a badge at the start of a row; returns the cells it took."""
        if self.alert is None:
            return 0
        badge = f" {self.alert.label} "
        t.append(badge, self._style("alert"))
        t.append(" ")
        return len(badge) + 1

    # ---- several lines: the card -------------------------------------------------------------
    def _render_card(self, d: DeviceView, width: int) -> Text:
        t = Text(no_wrap=True, overflow="ellipsis")
        if d.error and d.util is None:
            t.append(f"N/A: {d.error}\n", self._style("bad"))
        if d.kind == "cpu":
            self._line(t, "cpu ", None if d.util is None else d.util / d.util_top, f"{num(d.util):>4}%", width, "util")
            t.append("rss ", self._style("label"))
            t.append(f"{num(d.mem_used_mib)} MiB   ")
            t.append("threads ", self._style("label"))
            t.append(f"{d.threads if d.threads is not None else 'N/A'}\n")
            t.append("\n")
            if self.sparklines:
                t.append(self._spark(d, width, d.util_top), self._style("spark"))
            return t
        self._line(t, "util", None if d.util is None else d.util / 100, f"{num(d.util):>4}%", width, "util")
        frac = d.mem_used_mib / d.mem_total_mib if d.mem_used_mib is not None and d.mem_total_mib else None
        self._line(t, "mem ", frac, f"{gib_figure(d.mem_used_mib):>3}/{gib_figure(d.mem_total_mib)} GiB", width, "mem")
        wide = width >= 34
        gap = "  " if wide else " "
        t.append(f"{num(d.temp_c)}°C", self._temp_style(d))
        t.append(f"{gap}{num(d.power_w)}/{num(d.power_limit_w)}{' W' if wide else 'W'}",
                 self._style("warn") if self.throttle_shown else None)
        clock = f"{num(d.clock_mhz)}/{num(d.clock_max_mhz)} MHz" if wide else f"{num(d.clock_mhz)}MHz"
        t.append(f"{gap}{clock}\n", self._style("warn") if self.throttle_shown else self._style("dim"))
        if self.sparklines:
            t.append(self._spark(d, width), self._style("spark"))
        if self._reasons and self.throttle_shown:
            t.append("\n")
            reasons = (r.replace("_slowdown", "").replace("_", " ") for r in self._reasons if r in THROTTLING)
            t.append("throttle: " + ", ".join(reasons), self._style("warn"))
        return t

    def _line(self, t: Text, label: str, fraction: float | None, value: str, width: int, style: str) -> None:
        t.append(label, self._style("label"))
        value = f"{value:>11}"
        self._bar(t, fraction, max(4, width - len(label) - len(value) - 2), style)
        t.append(f"{value}\n")

"""The run screen's Time view: where each rank's step goes (training.rundir.step_anatomy).

One stacked bar per rank, its phases in the order a step runs them and its length its seconds per
step (the longest rank fills the width), the slowest rank (by busy time: the step less its wait in
the all-reduce) marked; below, the median and the worst rank per phase; then throughput, TFLOP/s
and MFU where known, or why there is none. Each bar is the rank's newest logging interval.
"""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from training.rundir.step_anatomy import PHASE_WORDS, Anatomy, Throughput, format_seconds

# A phase's bar character, so the bars read without colour too (an SSH terminal without it).
PHASE_CHARS = {"data": "█", "compute": "▓", "comm": "▒", "optimizer": "░", "eval": "▞", "checkpoint": "▚",
               "other": "·"}
LABEL_W = 9  # "rank 12  "
VALUE_W = 22  # " 12.3 ms  ◀ slowest +18%"


class TimeView(Widget, can_focus=False):
    COMPONENT_CLASSES = {"time-view--label", "time-view--slowest", "time-view--dim",
                         *(f"time-view--{p}" for p in PHASE_CHARS)}

    anatomy: reactive[Anatomy | None] = reactive(None)
    throughput: reactive[Throughput | None] = reactive(None)

    def render(self) -> Text:
        a = self.anatomy
        label = self.get_component_rich_style("time-view--label", partial=True)
        dim = self.get_component_rich_style("time-view--dim", partial=True)
        if a is None:
            return Text("No step anatomy yet: the built-in worker writes one per logging interval on every rank; "
                        "a script of your own marks its phases with `with report.phase(\"data\"):`.", style=dim)
        out = Text(no_wrap=True, overflow="ellipsis")
        out.append("step ", label)
        out.append(format_seconds(a.step_s))
        out.append(" (median rank)", dim)
        if len(a.ranks) > 1:
            out.append("  slowest rank ", label)
            out.append(f"{a.slowest_rank} +{a.skew_pct:.0f}%", self.get_component_rich_style("time-view--slowest"))
            out.append(" busy time over the median", dim)
        out.append("\n\n")
        width = max(10, self.size.width - LABEL_W - VALUE_W)
        longest = max(r.step_s for r in a.ranks) or 1.0
        for r in a.ranks:
            out.append(f"rank {r.rank:<3} ", label)
            cells = 0
            total = round(width * r.step_s / longest)
            for phase in a.phases:
                n = round(total * r.phases.get(phase, 0.0) / r.seconds) if r.seconds else 0
                n = min(n, total - cells)
                if n > 0:
                    out.append(PHASE_CHARS.get(phase, "#") * n, self._phase_style(phase))
                    cells += n
            out.append(" " * (width - cells + 1))
            out.append(f"{format_seconds(r.step_s):>9}")
            if len(a.ranks) > 1 and r.rank == a.slowest_rank:
                out.append("  ◀ slowest", self.get_component_rich_style("time-view--slowest"))
            out.append("\n")
        out.append("\n")
        for phase in a.phases:
            out.append(PHASE_CHARS.get(phase, "#"), self._phase_style(phase))
            out.append(f" {PHASE_WORDS.get(phase, phase)}  ", dim)
        out.append("\n\n")
        out.append(f"{'phase':<18}{'share':>7}{'median':>12}{'worst':>12}  rank\n", label)
        for phase, spread in a.phases.items():
            out.append(f"{PHASE_WORDS.get(phase, phase):<18}{a.share(phase):>7.0%}{format_seconds(spread.median_s):>12}"
                       f"{format_seconds(spread.worst_s):>12}  {spread.worst_rank}\n")
        t = self.throughput
        if t is not None and t.samples_per_s is not None:
            out.append("\n")
            out.append("throughput ", label)
            out.append(f"{t.samples_per_s:,.0f} samples/s")
            if t.tokens_per_s is not None:
                out.append(f" · {t.tokens_per_s:,.0f} tokens/s")
            if t.per_gpu is not None:
                out.append(f" · {t.per_gpu:,.0f} per {t.per}")
            if t.tflops_per_gpu is not None:
                out.append(f" · {t.tflops_per_gpu:,.3g} TFLOP/s per {t.per}")
            if t.mfu is not None:
                out.append("  MFU ", label)
                out.append(f"{t.mfu:.0%}")
            else:
                out.append(f"  no MFU: {t.why_no_mfu}", dim)
        return out

    def _phase_style(self, phase: str):
        name = f"time-view--{phase}"
        return self.get_component_rich_style(name, partial=True) if name in self.COMPONENT_CLASSES else ""

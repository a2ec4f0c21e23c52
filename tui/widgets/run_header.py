"""The run screen's header line: run id, profile, mode, state, the newest health firing, progress, speed,
times."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from tui.formats import format_duration
from tui.run_model import HeaderInfo

STATES = ("starting", "running", "finished", "failed", "stopped")


class RunHeader(Widget):
    COMPONENT_CLASSES = {"run-header--id", "run-header--label", "run-header--state", "run-header--dim",
                         "run-header--health"}

    # Not layout=True: the header changes several times a second while a run is live, and a
    # relayout of the whole screen for a one-line text change was most of the run screen's
    # compositor time. watch_info asks for a relayout only when the height (1 or 2 lines) changes.
    info: reactive[HeaderInfo] = reactive(HeaderInfo)

    def watch_info(self, old: HeaderInfo, info: HeaderInfo) -> None:
        for state in STATES:
            self.set_class(info.state == state, f"-{state}")
        self.set_class(info.paused, "-paused")
        width = self.content_size.width  # what get_content_height is given
        if width and (self._one_line_width(old) <= width) != (self._one_line_width(info) <= width):
            self.refresh(layout=True)

    def render(self) -> Text:
        """One line when it fits, else identity on the first line and progress on the second."""
        i = self.info
        label = self.get_component_rich_style("run-header--label", partial=True)
        dim = self.get_component_rich_style("run-header--dim", partial=True)
        who = Text(no_wrap=True, overflow="ellipsis")
        who.append(f" {'paused' if i.paused else i.state} ", self.get_component_rich_style("run-header--state"))
        who.append(" ")
        who.append(i.run_id or "…", self.get_component_rich_style("run-header--id", partial=True))
        mode = i.mode + (f"×{i.world_size}" if i.world_size > 1 else "")
        who.append(f"  {i.profile} · {mode}" + (f" · {i.device}" if i.device else ""), dim)
        if i.rehearsal:
            who.append(" · rehearsal", dim)
        if i.health:
            who.append("  ")
            who.append(f" ⚠ {i.health} ", self.get_component_rich_style("run-header--health"))
        progress = Text(no_wrap=True, overflow="ellipsis")
        progress.append("epoch ", label)
        progress.append(f"{i.epoch}/{i.epochs or '?'}")
        progress.append("  step ", label)
        progress.append(f"{i.step:,}" + (f"/{i.total_steps:,}" if i.total_steps else ""))
        progress.append("  ")
        progress.append("--" if i.samples_per_s is None else f"{i.samples_per_s:,.0f}")
        progress.append(" samples/s", label)
        progress.append("  elapsed ", label)
        progress.append(format_duration(i.elapsed_s))
        if i.eta_s is not None:
            progress.append("  ETA ", label)
            progress.append(format_duration(i.eta_s))
        if who.cell_len + 2 + progress.cell_len <= self.size.width:
            return Text.assemble(who, "  ", progress, no_wrap=True)
        return Text.assemble(who, "\n ", progress, no_wrap=True)

    def get_content_height(self, container, viewport, width: int) -> int:
        return 1 if self._one_line_width() <= width else 2

    def _one_line_width(self, info: HeaderInfo | None = None) -> int:
        i = self.info if info is None else info
        # The same text as render(), measured without styles.
        mode = i.mode + (f"×{i.world_size}" if i.world_size > 1 else "")
        parts = [f" {i.state}   {i.run_id}  {i.profile} · {mode}" + (f" · {i.device}" if i.device else ""),
                 " · rehearsal" if i.rehearsal else "",
                 f"   ⚠ {i.health} " if i.health else "",
                 f"  epoch {i.epoch}/{i.epochs or '?'}  step {i.step:,}" + (f"/{i.total_steps:,}" if i.total_steps else ""),
                 f"  {'--' if i.samples_per_s is None else f'{i.samples_per_s:,.0f}'} samples/s",
                 f"  elapsed {format_duration(i.elapsed_s)}",
                 f"  ETA {format_duration(i.eta_s)}" if i.eta_s is not None else ""]
        return sum(len(p) for p in parts) + 2

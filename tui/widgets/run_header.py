"""The run screen's header: run id, profile, mode, state, the newest health firing, progress, speed,
times (a queued run: its place in line and what it waits for), and the last checkpoint (name, epoch, monitored value, best mark, age), in one line at 160
columns, three at 80."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from tui.formats import format_duration, format_value
from tui.run_model import HeaderInfo

STATES = ("queued", "starting", "running", "finished", "failed", "stopped")


class RunHeader(Widget):
    COMPONENT_CLASSES = {"run-header--id", "run-header--label", "run-header--state", "run-header--dim",
                         "run-header--best", "run-header--health"}

    # Not layout=True: the header changes several times a second while a run is live, and a
    # relayout of the whole screen for a one-line text change was most of the run screen's
    # compositor time. watch_info asks for a relayout only when the height (1 or 2 lines) changes.
    info: reactive[HeaderInfo] = reactive(HeaderInfo)

    def watch_info(self, old: HeaderInfo, info: HeaderInfo) -> None:
        for state in STATES:
            self.set_class(info.state == state, f"-{state}")
        self.set_class(info.paused, "-paused")
        width = self.content_size.width  # what get_content_height is given
        if width and len(self._lines(old, width)) != len(self._lines(info, width)):
            self.refresh(layout=True)

    def render(self) -> Text:
        """Identity, progress and the last checkpoint, packed into as few lines as the width allows
        (one at 160 columns, three at 80)."""
        return Text("\n", no_wrap=True).join(self._lines(self.info, self.size.width))

    def _parts(self, i: HeaderInfo) -> list[Text]:
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
        if i.nodes:
            who.append("  nodes ", label)
            who.append(i.nodes, dim)
        progress = Text(no_wrap=True, overflow="ellipsis")
        progress.append("epoch ", label)
        progress.append(f"{i.epoch}/{i.epochs or '?'}")
        progress.append("  step ", label)
        progress.append(f"{i.step:,}" + (f"/{i.total_steps:,}" if i.total_steps else ""))
        progress.append("  ")
        progress.append("--" if i.samples_per_s is None else f"{i.samples_per_s:,.0f}")
        progress.append(" samples/s", label)
        if i.per_gpu is not None:
            progress.append(f" {i.per_gpu:,.0f}")
            progress.append("/GPU", label)
        if i.mfu is not None:
            progress.append("  MFU ", label)
            progress.append(f"{i.mfu:.0%}")
        progress.append("  elapsed ", label)
        progress.append(format_duration(i.elapsed_s))
        if i.eta_s is not None:
            progress.append("  ETA ", label)
            progress.append(format_duration(i.eta_s))
        if i.waiting:
            # Nothing runs yet: the place in line and what it waits for say more than a zero step.
            progress = Text(no_wrap=True, overflow="ellipsis")
            progress.append("queued: ", label)
            progress.append(i.waiting)
            progress.append("  elapsed ", label)
            progress.append(format_duration(i.elapsed_s))
        parts = [who, progress]
        if i.rendezvous:
            waiting = Text(no_wrap=True, overflow="ellipsis")
            waiting.append(i.rendezvous, self.get_component_rich_style("run-header--health"))
            parts.insert(1, waiting)
        c = i.checkpoint
        if c is not None:
            ckpt = Text(no_wrap=True, overflow="ellipsis")
            ckpt.append("ckpt ", label)
            ckpt.append(c.name, self.get_component_rich_style("run-header--id", partial=True))
            if c.epoch is not None:
                ckpt.append(" ep ", label)
                ckpt.append(str(c.epoch))
            if c.monitor and c.value is not None:
                ckpt.append(f" {c.monitor} ", label)
                ckpt.append(format_value(c.value))
            if c.best:
                ckpt.append(" ★ best", self.get_component_rich_style("run-header--best", partial=True))
            elif c.best_value is not None:
                ckpt.append(" best ", label)
                ckpt.append(format_value(c.best_value) + (f" (ep {c.best_epoch})" if c.best_epoch is not None else ""))
            if c.age:
                ckpt.append(f"  {c.age}" + ("" if c.age == "now" else " ago"), dim)
            parts.append(ckpt)
        return parts

    def _lines(self, info: HeaderInfo, width: int) -> list[Text]:
        lines: list[Text] = []
        for part in self._parts(info):
            if lines and lines[-1].cell_len + 2 + part.cell_len <= width:
                lines[-1] = Text.assemble(lines[-1], "  ", part, no_wrap=True)
            else:
                lines.append(part if not lines else Text.assemble(" ", part, no_wrap=True))
        return lines

    def get_content_height(self, container, viewport, width: int) -> int:
        return len(self._lines(self.info, width))

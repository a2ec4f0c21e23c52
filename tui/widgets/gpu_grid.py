"""The run's devices: one GpuPanel per GPU or CPU worker, laid out by the stylesheet.

The screen sets `devices` and `training`; the grid adds, updates or removes panels to match.
On narrow terminals the stylesheet makes each panel one table row; on wide ones a grid of cards.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.reactive import reactive
from textual.widgets import Static

from tui.widgets.gpu_panel import DeviceView, GpuPanel


class GpuGrid(VerticalScroll, can_focus=False):
    devices: reactive[tuple[DeviceView, ...]] = reactive((), always_update=True)
    training: reactive[bool] = reactive(False)
    placeholder: reactive[str] = reactive("waiting for the first telemetry sample…")

    def compose(self) -> ComposeResult:
        yield Static(self.placeholder, classes="gpu-grid--placeholder")

    def watch_placeholder(self, text: str) -> None:
        for widget in self.query(".gpu-grid--placeholder").results(Static):
            widget.update(text)

    def watch_training(self, training: bool) -> None:
        for panel in self.query(GpuPanel):
            panel.training = training

    async def watch_devices(self, devices: tuple[DeviceView, ...]) -> None:
        panels = {panel.id: panel for panel in self.query(GpuPanel)}
        wanted = [f"dev-{d.key}" for d in devices]
        stale = [p for pid, p in panels.items() if pid not in wanted]
        if stale:
            await self.remove_children(stale)
        new = []
        for device in devices:
            panel = panels.get(f"dev-{device.key}")
            if panel is None:
                panel = GpuPanel(device, id=f"dev-{device.key}", classes=f"-{device.kind}")
                panel.training = self.training
                new.append(panel)
            else:
                panel.device = device
        if new:
            await self.mount_all(new)
        self.query(".gpu-grid--placeholder").set(display=not devices)
        self.set_class(bool(devices) and devices[0].kind == "cpu", "-cpu")

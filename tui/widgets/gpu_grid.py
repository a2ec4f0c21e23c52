"""The run's devices: one GpuPanel per GPU or CPU worker, laid out by the stylesheet.

The screen sets `devices`, `training` and `alerts` (rank -> the watchdog's mark); the grid adds,
updates or removes panels to match and hands each panel the mark of a rank it hosts.
On narrow terminals the stylesheet makes each panel one table row; on wide ones a grid of cards.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.reactive import reactive
from textual.widgets import Static

from tui.widgets.gpu_panel import DeviceView, GpuPanel, PanelAlert


class GpuGrid(VerticalScroll, can_focus=False):
    # repaint=False: these are handed down to the panels, which repaint what changed; a repaint of
    # the grid itself was a frame of every panel, each second, before the panels' own.
    devices: reactive[tuple[DeviceView, ...]] = reactive((), always_update=True, repaint=False)
    training: reactive[bool] = reactive(False, repaint=False)
    alerts: reactive[dict[int, PanelAlert]] = reactive(dict, repaint=False)
    placeholder: reactive[str] = reactive("waiting for the first telemetry sample…")
    simulated: reactive[bool] = reactive(False)
    sparklines: reactive[bool] = reactive(True)
    """False in run.py --low-bandwidth: the panels leave the utilization history out."""
    """The telemetry came from a stand-in NVML ("source": "fake-nvml"): say so above the panels."""

    SIMULATED_TITLE = "simulated GPUs (fake NVML): not real hardware"

    def compose(self) -> ComposeResult:
        yield Static(self.placeholder, classes="gpu-grid--placeholder")

    def watch_placeholder(self, text: str) -> None:
        for widget in self.query(".gpu-grid--placeholder").results(Static):
            widget.update(text)

    def watch_simulated(self, simulated: bool) -> None:
        self.set_class(simulated, "-simulated")
        self.border_title = self.SIMULATED_TITLE if simulated else None

    def watch_training(self, training: bool) -> None:
        for panel in self.query(GpuPanel):
            panel.training = training

    def watch_sparklines(self, sparklines: bool) -> None:
        for panel in self.query(GpuPanel):
            panel.sparklines = sparklines

    def watch_alerts(self) -> None:
        for panel in self.query(GpuPanel):
            panel.alert = self._alert_for(panel.device)

    def _alert_for(self, device: DeviceView | None) -> PanelAlert | None:
        if device is None:
            return None
        found = [self.alerts[r] for r in device.ranks if r in self.alerts]
        # A hang outranks a straggler on a device that hosts several ranks.
        return min(found, key=lambda a: a.kind != "hang", default=None)

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
                panel.sparklines = self.sparklines
                panel.alert = self._alert_for(device)
                new.append(panel)
            else:
                # A panel repaints only when what it shows changed: its numbers (DeviceView's
                # equality) or its sparkline (the history, which equality leaves out).
                current = panel.device
                if current is not None and current == device:
                    if current.history != device.history and self.sparklines:
                        # Only the sparkline moved: the reactive would see no change.
                        panel.set_reactive(GpuPanel.device, device)
                        panel.show_changes()
                else:
                    panel.device = device
                panel.alert = self._alert_for(device)
        if new:
            await self.mount_all(new)
        for placeholder in self.query(".gpu-grid--placeholder"):
            if placeholder.display != (not devices):
                placeholder.display = not devices
        self.set_class(bool(devices) and devices[0].kind == "cpu", "-cpu")

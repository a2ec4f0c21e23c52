"""The run screen's and picker's widgets, one per module."""

from tui.widgets.event_log import EventLog
from tui.widgets.gpu_grid import GpuGrid
from tui.widgets.gpu_panel import DeviceView, GpuPanel, PanelAlert
from tui.widgets.loss_plot import LossPlot
from tui.widgets.rank_log import RankLog
from tui.widgets.run_header import RunHeader

__all__ = ["DeviceView", "EventLog", "GpuGrid", "GpuPanel", "LossPlot", "PanelAlert", "RankLog", "RunHeader"]

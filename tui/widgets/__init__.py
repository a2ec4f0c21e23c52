"""The run screen's and picker's widgets, one per module.

    run_header      run id, profile, mode, state, the newest health firing, progress, speed, times
    gpu_grid        the run's devices: one GpuPanel each, laid out by the stylesheet
    gpu_panel       one GPU (or CPU worker): bars, numbers, a utilisation sparkline, watchdog marks
    loss_plot       train/val loss and every component (plotext), downsampled to the plot's width
    compare_plot    the compare screen's plot: one series of every compared run, a colour per run
    event_log       the run's story: checkpoints, epochs, validation, warnings, health, the failure
    rank_log        per-rank logs, the supervisor's, stack dumps; follows the one picked
    time_view       the step anatomy: a stacked bar of phases per rank, median vs worst, MFU
    _painted_lines  repaint only the lines that changed (shared by the panels and the plot)
    _render         text helpers for render methods: bars, sparklines, short numbers
"""

from tui.widgets.event_log import EventLog
from tui.widgets.gpu_grid import GpuGrid
from tui.widgets.gpu_panel import DeviceView, GpuPanel, PanelAlert
from tui.widgets.loss_plot import LossPlot
from tui.widgets.rank_log import RankLog
from tui.widgets.run_header import RunHeader
from tui.widgets.time_view import TimeView

__all__ = ["DeviceView", "EventLog", "GpuGrid", "GpuPanel", "LossPlot", "PanelAlert", "RankLog", "RunHeader", "TimeView"]

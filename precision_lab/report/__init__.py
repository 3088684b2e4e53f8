"""Views of saved results: the HTML report and matplotlib plots. They read only a SweepResult."""

from precision_lab.report.html import REPORT_NAME, render_report, write_report
from precision_lab.report.plots import (
    plot_output_channels,
    plot_pareto,
    plot_positions,
    plot_sensitivity,
    plot_tradeoff,
)

__all__ = [
    "REPORT_NAME",
    "render_report",
    "write_report",
    "plot_sensitivity",
    "plot_tradeoff",
    "plot_output_channels",
    "plot_positions",
    "plot_pareto",
]

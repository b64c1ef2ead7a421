"""Report stage: one self-contained HTML file with the decision, plots and evidence.

``render_report`` / ``write_report`` take a ``ReportInputs``; ``load_report_inputs`` reads
one from a run directory (the files named in ``REPORT_FILES``).
"""

from simscope.report.html import ReportInputs, render_report, write_report
from simscope.report.load import REPORT_FILES, load_report_inputs

__all__ = ["REPORT_FILES", "ReportInputs", "load_report_inputs", "render_report", "write_report"]

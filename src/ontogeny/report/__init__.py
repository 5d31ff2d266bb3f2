"""The run report: one self-contained HTML file per run (page.py), and a local server to browse runs (serve.py)."""

from .page import ReportContext, render_report, report_section, write_report
from .sections import Section, figure_html, table_html

__all__ = ["ReportContext", "Section", "figure_html", "render_report", "report_section", "table_html", "write_report"]

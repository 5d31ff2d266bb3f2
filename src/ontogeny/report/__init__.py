"""The run report: one self-contained HTML file per run (page.py), and a local server to browse runs (serve.py)."""

from .page import render_report, write_report

__all__ = ["render_report", "write_report"]

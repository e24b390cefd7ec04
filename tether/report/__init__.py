"""Reports summarising a pipeline run: Markdown (``report.md``) and HTML with plots (``report.html``)."""

from tether.report.html import write_html_report
from tether.report.markdown import write_instruct_report

__all__ = ["write_html_report", "write_instruct_report"]

"""A study's report as one self-contained HTML file: `python -m study.report studies/<name>`."""
from study.report.check import check_report
from study.report.inputs import ReportError
from study.report.report import REPORT_FILE, SECTIONS, build_report, main, render_report, write_report

__all__ = ["REPORT_FILE", "SECTIONS", "ReportError", "build_report", "check_report", "main", "render_report",
           "write_report"]

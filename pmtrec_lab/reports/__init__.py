"""Notebook reports: record headline values in a notebook, run notebooks into an HTML report.

Public API: :func:`record` / :func:`load_recorded` (inside notebooks) and :func:`run_report` /
:class:`ReportResult` (the runner). Details in :mod:`pmtrec_lab.reports.record` and
:mod:`pmtrec_lab.reports.runner`.
"""

from pmtrec_lab.reports.record import RECORD_PATH_ENV, load_recorded, record
from pmtrec_lab.reports.runner import ReportEntry, ReportResult, export_html, run_report

__all__ = [
    "RECORD_PATH_ENV",
    "ReportEntry",
    "ReportResult",
    "export_html",
    "load_recorded",
    "record",
    "run_report",
]

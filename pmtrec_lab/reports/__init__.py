"""Notebook reports: record headline values in a notebook, run notebooks into an HTML report.

Public API: :func:`record` / :func:`load_recorded` (inside notebooks) and :func:`run_report` /
:class:`ReportResult` (the runner). Details in :mod:`pmtrec_lab.reports.record` and
:mod:`pmtrec_lab.reports.runner`.
"""

from __future__ import annotations

from pmtrec_lab.lazy import lazy_exports

_EXPORTS = {
    "RECORD_PATH_ENV": "record",
    "load_recorded": "record",
    "record": "record",
    "ReportEntry": "runner",
    "ReportResult": "runner",
    "export_html": "runner",
    "run_report": "runner",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "RECORD_PATH_ENV",
    "ReportEntry",
    "ReportResult",
    "export_html",
    "load_recorded",
    "record",
    "run_report",
]

"""Notebook reports: record headline values in a notebook, run notebooks into an HTML report.

Public API: :func:`record` / :func:`load_recorded` (inside notebooks) and :func:`run_report` /
:class:`ReportResult` (the runner). Details in :mod:`pmtrec_lab.reports.record` and
:mod:`pmtrec_lab.reports.runner`.
"""

from __future__ import annotations

from pmtrec_lab.lazy import lazy_exports

# ``record`` is both a function and its submodule's name: importing the submodule would set the
# package attribute to the module, so the (light) function is bound here, after that import.
from pmtrec_lab.reports.record import RECORD_PATH_ENV, load_recorded, record

_EXPORTS = {
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

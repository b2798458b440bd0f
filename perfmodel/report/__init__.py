"""Reports for design reviews: a review file in, a self-contained HTML page and a Markdown twin out.

    >>> from perfmodel.report import build_report
    >>> result = build_report("reports/default.yaml", "reports/examples/default")
    >>> result.index_html, result.seconds

A review file (:mod:`perfmodel.report.review`) names the devices, the compared configurations and the sweeps.
Each section module (roofline, breakdown, methods, quantisation, sparse, capacity, validation, assumptions) turns
predictions into a :class:`~perfmodel.report.document.Section` of sentences, figures and tables; the
:mod:`~perfmodel.report.html` and :mod:`~perfmodel.report.markdown` writers lay them out.
"""
from __future__ import annotations

from perfmodel.report.build import BuildResult, build_report
from perfmodel.report.review import SECTIONS, Review, load_review

__all__ = ["BuildResult", "build_report", "Review", "load_review", "SECTIONS"]

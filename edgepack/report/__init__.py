"""Comparison reports: the original study's table for any set of runs and bundles.

One column per run result (or per bundle that has no run yet), rows in the shape of the study that
started this project, deltas against the first column, an optional check against a baseline run,
and three renderings (markdown, self-contained HTML, JSON) with PNG plots. By what it does:

- :mod:`~edgepack.report.entries`: runs and bundles loaded into the report's columns
- :mod:`~edgepack.report.cells`: figures with their spread, rows, deltas and the table's noise mark
- :mod:`~edgepack.report.rows`, :mod:`~edgepack.report.roofline`, :mod:`~edgepack.report.quality`:
  the rows of each section
- :mod:`~edgepack.report.regression`: the ``--baseline`` check
- :mod:`~edgepack.report.compose`: the report itself, assembled from the above
- :mod:`~edgepack.report.format`, :mod:`~edgepack.report.markdown`, :mod:`~edgepack.report.html`,
  :mod:`~edgepack.report.json_doc`, :mod:`~edgepack.report.plots`: the renderings
"""

from edgepack.report.compose import Report, build_report
from edgepack.report.entries import Entry, load_entries
from edgepack.report.format import check_lines
from edgepack.report.html import render_html
from edgepack.report.json_doc import render_json
from edgepack.report.markdown import render_markdown
from edgepack.report.plots import render_plots
from edgepack.report.regression import enforce

__all__ = [
    "Entry",
    "Report",
    "build_report",
    "check_lines",
    "enforce",
    "load_entries",
    "render_html",
    "render_json",
    "render_markdown",
    "render_plots",
]

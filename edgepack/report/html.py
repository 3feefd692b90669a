"""The report as one self-contained HTML page, rendered from ``templates/report/report.html.j2``.

The template is rendered with autoescaping on: labels, model names, notes and check lines are
text from run results and manifests, never markup.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING

from edgepack.report.cells import NO_GATE_MARK
from edgepack.report.compose import Report
from edgepack.report.format import Shown, check_lines_marked, header, sections, shown_cells
from edgepack.report.plots import PLOT_TITLES
from edgepack.resources import data_dir

if TYPE_CHECKING:
    import jinja2

TEMPLATE = "report/report.html.j2"


def html_environment() -> jinja2.Environment:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(data_dir("templates"))),
        undefined=jinja2.StrictUndefined,
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_html(report: Report, images: dict[str, bytes] | None = None) -> str:
    """One self-contained page: inline CSS, plots embedded as data URIs, no external resources."""
    titles = header(report)
    page = (
        html_environment()
        .get_template(TEMPLATE)
        .render(
            header=[Shown(text, "nogate" if NO_GATE_MARK in text else "") for text in titles],
            width=len(titles),
            sections=[
                (title, [[Shown(row.label), *shown_cells(row)] for row in rows])
                for title, rows in sections(report)
            ],
            checks=[Shown(line, "bad" if bad else "") for line, bad in check_lines_marked(report)],
            figures=[
                (PLOT_TITLES[name], base64.b64encode(png).decode("ascii"))
                for name, png in (images or {}).items()
            ],
            notes=report.notes,
        )
    )
    return page if page.endswith("\n") else page + "\n"

"""The report as markdown: the table, the baseline check, the notes and links to the plots."""

from __future__ import annotations

from collections.abc import Sequence

from edgepack.report.compose import Report
from edgepack.report.format import check_lines, header, sections, shown_cells
from edgepack.report.plots import PLOT_TITLES


def _md(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(_md(cell) for cell in cells) + " |"


def render_markdown(report: Report, plot_files: dict[str, str] | None = None) -> str:
    titles = header(report)
    lines = ["# edgepack report", "", _md_row(titles), "|" + "---|" * len(titles)]
    for title, rows in sections(report):
        lines.append(_md_row([f"**{title}**", *[""] * (len(titles) - 1)]))
        lines += [_md_row([row.label, *[s.text for s in shown_cells(row)]]) for row in rows]
    if report.checks:
        lines += ["", "## Baseline check", "", *[f"- {_md(line)}" for line in check_lines(report)]]
    lines += ["", "## Notes", "", *[f"- {_md(note)}" for note in report.notes]]
    if plot_files:
        lines += ["", "## Plots", ""]
        lines += [f"![{PLOT_TITLES[name]}]({path})" for name, path in plot_files.items()]
    return "\n".join(lines) + "\n"

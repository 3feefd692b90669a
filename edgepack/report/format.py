"""How a report's cells, deltas and checks read as text, shared by the markdown and HTML pages."""

from __future__ import annotations

import math
from dataclasses import dataclass

from edgepack.report.cells import NO_GATE_MARK, NOT_APPLICABLE, Cell, Delta, Row
from edgepack.report.compose import Report

SECTION_TITLES = {
    "setup": "Set-up",
    "build": "Build pipeline",
    "artifacts": "Artifacts",
    "runtime": "Runtime",
    "roofline": "Decode roofline",
    "cross-engine": "Cross-engine",
    "quality": "Quality",
}
BYTE_SCALES = ((1e9, " GB"), (1e6, " MB"), (1e3, " kB"))


def _scale(unit: str, value: float) -> tuple[float, str]:
    """Divisor and suffix for showing a value of ``unit`` near ``value``."""
    if unit == "bytes":
        for divisor, suffix in BYTE_SCALES:
            if abs(value) >= divisor:
                return divisor, suffix
        return 1.0, " B"
    return 1.0, {"%": " %", "x": "×"}.get(unit, "")


def _decimals(value: float) -> int:
    """Three significant digits below 10, one decimal up to 1000, none above."""
    magnitude = abs(value)
    if magnitude >= 1000:
        return 0
    if magnitude >= 10:
        return 1
    if magnitude >= 1 or magnitude == 0:
        return 2
    return 2 - math.floor(math.log10(magnitude))


def _number(value: float, like: float | None = None) -> str:
    """``value`` with the decimals that suit ``like`` (itself by default)."""
    return f"{value:,.{_decimals(value if like is None else like)}f}"


def format_cell(cell: Cell, unit: str) -> str:
    if cell is None:
        return NOT_APPLICABLE
    if isinstance(cell, str):
        return cell
    divisor, suffix = _scale(unit, cell.value)
    text = _number(cell.value / divisor) + suffix
    if cell.range is not None and cell.low is not None and cell.high is not None:
        low, high = cell.low / divisor, cell.high / divisor
        text += f" ({_number(low, cell.value / divisor)}–{_number(high, cell.value / divisor)})"
    return text


def format_delta(change: Delta | None, unit: str) -> str:
    if change is None:
        return ""
    divisor, suffix = _scale(unit, change.absolute)
    sign = "+" if change.absolute >= 0 else "-"
    text = f"{sign}{_number(abs(change.absolute) / divisor)}{' pp' if unit == '%' else suffix}"
    if change.percent is not None:
        text += f" ({change.percent:+.1f} %)"
    return f"≈ {text}" if change.beyond_noise is False else text


def _delta_class(change: Delta | None, row: Row) -> str:
    """ "better"/"worse" only for real differences; "noise" within noise; "" when unknown."""
    if change is None or row.better is None or change.absolute == 0:
        return ""
    if change.beyond_noise is False:
        return "noise"
    if change.beyond_noise is None and not row.exact:
        return ""  # a figure measured once: no telling a difference from noise
    improved = (change.absolute > 0) == (row.better == "higher")
    return "better" if improved else "worse"


@dataclass(frozen=True)
class Shown:
    """A rendered table cell: its text and its kind (for HTML styling)."""

    text: str
    kind: str = ""


def header(report: Report) -> list[str]:
    """The metric column, then each run's column followed (after the first) by its delta."""
    first, *others = [column.label for column in report.columns]
    return ["metric", first, *[text for label in others for text in (label, f"Δ {label}")]]


def _text_kind(text: str) -> str:
    """Text cells wrap; a failed verdict or a --no-gate run stands out."""
    return "text bad" if text.startswith("FAIL") or NO_GATE_MARK in text else "text"


def shown_cells(row: Row) -> list[Shown]:
    shown = []
    for index, (cell, change) in enumerate(zip(row.cells, row.deltas(), strict=True)):
        text = format_cell(cell, row.unit)
        shown.append(Shown(text, _text_kind(text) if row.unit == "text" else ""))
        if index:
            shown.append(Shown(format_delta(change, row.unit), _delta_class(change, row)))
    return shown


def sections(report: Report) -> list[tuple[str, list[Row]]]:
    grouped: dict[str, list[Row]] = {}
    for row in report.rows:
        grouped.setdefault(row.section, []).append(row)
    return [(SECTION_TITLES.get(name, name), rows) for name, rows in grouped.items()]


def check_lines_marked(report: Report) -> list[tuple[str, bool]]:
    """The rule, then each check's lines, each with whether it tells of a regression."""
    if not report.checks:
        return []
    return [(f"rule: {report.checks[0].rule}", False)] + [
        line for check in report.checks for line in check.lines()
    ]


def check_lines(report: Report) -> list[str]:
    return [line for line, _ in check_lines_marked(report)]

"""The quality rows: each run's gate verdict and the metrics it was judged by."""

from __future__ import annotations

from collections.abc import Sequence

from edgepack.bench.result import RunResult
from edgepack.report.cells import NO_GATE_MARK, Better, Cell, Measure, Row, row, text_row
from edgepack.report.entries import Entry

QUALITY_PLOT_KEYS = ("chrf", "prefix_fraction", "token_agreement", "exact_match")
"""Preferred quality metrics for the quality-vs-speed plot, by substring of the metric name."""


def _verdict_text(entry: Entry) -> str:
    if entry.run is None:
        return entry.not_measured
    text = _verdict_words(entry.run)
    return text if entry.run.gate_enforced else f"{text} {NO_GATE_MARK}"


def _verdict_words(run: RunResult) -> str:
    quality = run.quality
    if quality is None:
        return "no verdict"
    if quality.passed:
        return f"pass ({quality.quality_class})"
    failed = "; ".join(
        f"{check.name} {check.value:.3g} (limit {check.limit:.3g})"
        for check in quality.failed_checks
    )
    return f"FAIL ({quality.quality_class}): {failed}"


def quality_metrics(entry: Entry) -> dict[str, float]:
    if entry.run is None or entry.run.quality is None:
        return {}
    return entry.run.quality.metrics


def _reference_text(entry: Entry) -> str:
    """What the answers were judged against: the reference's provenance (part of the result)."""
    if entry.run is None:
        return entry.not_measured
    if entry.run.quality is None:
        return "no verdict"
    return entry.run.quality.reference.get("provenance") or "provenance not recorded"


def quality_rows(entries: Sequence[Entry]) -> list[Row]:
    rows = [
        text_row("quality", "quality verdict", [_verdict_text(e) for e in entries]),
        text_row("quality", "reference", [_reference_text(e) for e in entries]),
    ]
    names = sorted({name for e in entries for name in quality_metrics(e)})
    directions = _check_directions(entries)
    for name in names:
        cells = [_metric_cell(e, name) for e in entries]
        # greedy outputs make the metrics deterministic: any difference is real
        rows.append(row("quality", name, "", cells, directions.get(name), exact=True))
    return rows


def _check_directions(entries: Sequence[Entry]) -> dict[str, Better]:
    """Which way is better for each metric the gate checks (a "min" limit: higher)."""
    checks = [c for e in entries if e.run and e.run.quality for c in e.run.quality.checks]
    return {c.name: "higher" if c.direction == "min" else "lower" for c in checks}


def _metric_cell(entry: Entry, name: str) -> Cell:
    if entry.run is None:
        return entry.not_measured
    value = quality_metrics(entry).get(name)
    return Measure(value) if value is not None else None


def quality_plot_metric(entries: Sequence[Entry]) -> str | None:
    names = sorted({name for e in entries for name in quality_metrics(e)})
    for key in QUALITY_PLOT_KEYS:
        for name in names:
            if key in name.lower():
                return name
    return None

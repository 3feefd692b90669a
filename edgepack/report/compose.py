"""The report: one column per run result (or per bundle that has no run yet) and rows in the shape
of the study that started this project: set-up, build pipeline, artifacts, runtime, decode
roofline, cross-engine comparison (when backends differ) and quality. Every column after the
first has a delta against the first, the baseline.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edgepack.report.cells import Measure, Row
from edgepack.report.entries import Entry, column_labels, mark_unmeasured, run_passed
from edgepack.report.quality import quality_metrics, quality_plot_metric, quality_rows
from edgepack.report.regression import RegressionCheck, regression_checks
from edgepack.report.roofline import roofline_of, roofline_rows
from edgepack.report.rows import (
    artifact_rows,
    batch_label,
    build_rows,
    cross_engine_rows,
    engine_bytes,
    runtime_rows,
    setup_rows,
    speed,
)
from edgepack.report.significance import DEFAULT_TOLERANCE

if TYPE_CHECKING:
    from edgepack.report.entries import Gpu

REPORT_SCHEMA_VERSION = 2
"""2: a baseline check carries its speed test (n, effect, interval, p) instead of drop/noise."""
SPREAD_NOTE = (
    "Figures are medians; (a–b) is the min–max over the runs (build times: over the --repeat "
    "rebuilds; without --repeat a build time is one sample). Δ is against the first column; "
    "'≈' marks a difference within noise (no larger than the two figures' ranges added)."
)


def _notes(entries: Sequence[Entry], labels: Sequence[str]) -> list[str]:
    notes = [SPREAD_NOTE]
    for label, entry in zip(labels, entries, strict=True):
        notes += _entry_notes(label, entry)
    return notes + _precision_notes(entries, labels)


def _entry_notes(label: str, entry: Entry) -> list[str]:
    notes = []
    if entry.problem:
        notes.append(f"{label}: no build, artifact or roofline figures: {entry.problem}.")
    if entry.unmeasured_note:
        notes.append(f"{label}: {entry.not_measured}: {entry.unmeasured_note}.")
    roofline = roofline_of(entry)
    if roofline is not None:
        notes.append(f"{label}: decode roofline = {roofline.describe()}.")
    if entry.no_gate:
        notes.append(
            f"{label} was measured with --no-gate: a failing quality gate did not stop it."
        )
    if entry.run is not None and entry.run.load.first_page_cache != "dropped":
        notes.append(
            f"{label}: the first load may have read the engine from the page cache "
            f"({entry.run.load.first_page_cache})."
        )
    return notes


def _precision_notes(entries: Sequence[Entry], labels: Sequence[str]) -> list[str]:
    backends = {e.fact("backend") for e in entries}
    precisions = {e.fact("precision") for e in entries}
    if len(backends) < 2 or len(precisions) < 2:
        return []
    described = ", ".join(
        f"{label}: {e.fact('precision')}" for label, e in zip(labels, entries, strict=True)
    )
    return [
        f"The engines compared use different precisions ({described}); their speed and size "
        "differences mix the engine with the quantization."
    ]


@dataclass(frozen=True)
class Column:
    label: str
    source: str
    run_id: str | None
    bundle_id: str | None
    no_gate: bool
    not_measured: str | None = None
    """Why the column has no runtime figures (it has no run), or None when it was measured."""


@dataclass(frozen=True)
class PlotPoint:
    label: str
    engine_bytes: float | None
    decode: Measure | None
    batched: Measure | None
    quality: float | None
    passed: bool | None


@dataclass(frozen=True)
class Report:
    columns: list[Column]
    rows: list[Row]
    notes: list[str]
    checks: list[RegressionCheck]
    points: list[PlotPoint]
    quality_metric: str | None
    batch: str
    """How the batched figures are labelled: "batch N" when every run used N."""

    def row(self, label: str) -> Row:
        for row in self.rows:
            if row.label == label:
                return row
        raise KeyError(label)


ROW_BUILDERS: tuple[Callable[[Sequence[Entry]], list[Row]], ...] = (
    setup_rows,
    build_rows,
    artifact_rows,
    runtime_rows,
    roofline_rows,
    cross_engine_rows,
    quality_rows,
)


def build_report(
    entries: Sequence[Entry],
    check_baseline: bool = False,
    gpus: Sequence[Gpu] | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
) -> Report:
    """``gpus``: this machine's NVIDIA GPUs (see :func:`mark_unmeasured`); ``tolerance``: the
    slowdown in % the baseline check tolerates."""
    entries = mark_unmeasured(entries, gpus)
    labels = column_labels(entries)
    metric = quality_plot_metric(entries)
    return Report(
        columns=[_column(label, entry) for label, entry in zip(labels, entries, strict=True)],
        rows=[row for builder in ROW_BUILDERS for row in builder(entries)],
        notes=_notes(entries, labels),
        checks=regression_checks(entries, labels, tolerance) if check_baseline else [],
        points=[_point(label, e, metric) for label, e in zip(labels, entries, strict=True)],
        quality_metric=metric,
        batch=batch_label(entries),
    )


def _column(label: str, entry: Entry) -> Column:
    bundle_id = entry.manifest.bundle_id if entry.manifest else entry.summary.get("bundle_id")
    run_id = entry.run.run_id if entry.run else None
    unmeasured = entry.not_measured if entry.run is None else None
    return Column(label, entry.source, run_id, bundle_id, entry.no_gate, unmeasured)


def _point(label: str, entry: Entry, metric: str | None) -> PlotPoint:
    size = engine_bytes(entry)
    decode, batched = speed(entry, batched=False), speed(entry, batched=True)
    quality = quality_metrics(entry).get(metric) if metric else None
    return PlotPoint(
        label,
        size.value if isinstance(size, Measure) else None,
        decode if isinstance(decode, Measure) else None,
        batched if isinstance(batched, Measure) else None,
        quality,
        run_passed(entry.run) if entry.run else None,
    )

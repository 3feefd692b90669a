"""The report as JSON: every cell with its numbers and its text, the deltas and the checks."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from edgepack.report.cells import Cell, Delta, Row
from edgepack.report.compose import REPORT_SCHEMA_VERSION, Report
from edgepack.report.entries import verdict_name
from edgepack.report.format import format_cell
from edgepack.report.regression import RegressionCheck
from edgepack.report.significance import SlowdownTest


def _cell_json(cell: Cell, unit: str) -> dict[str, Any] | None:
    if cell is None:
        return None
    if isinstance(cell, str):
        return {"text": cell}
    return {**asdict(cell), "text": format_cell(cell, unit)}


def _delta_json(change: Delta | None) -> dict[str, Any] | None:
    if change is None:
        return None
    return {**asdict(change), "beyond_noise": change.beyond_noise}


def _row_json(row: Row) -> dict[str, Any]:
    return {
        "section": row.section,
        "label": row.label,
        "unit": row.unit,
        "better": row.better,
        "cells": [_cell_json(cell, row.unit) for cell in row.cells],
        "deltas": [_delta_json(change) for change in row.deltas()],
    }


def _check_json(check: RegressionCheck) -> dict[str, Any]:
    return {
        "baseline": check.baseline,
        "run": check.candidate,
        "baseline_decode_tok_s": asdict(check.baseline_speed),
        "run_decode_tok_s": asdict(check.candidate_speed),
        "speed_test": _speed_json(check.speed),
        "speed_regressed": check.speed_regressed,
        "baseline_verdict": verdict_name(check.baseline_passed),
        "run_verdict": verdict_name(check.candidate_passed),
        "quality_regressed": check.quality_regressed,
        "regressed": check.regressed,
    }


def _speed_json(test: SlowdownTest) -> dict[str, Any]:
    return {
        "baseline_n": test.baseline_n,
        "run_n": test.run_n,
        "median_difference": test.difference,
        "median_change_percent": test.percent,
        "confidence": test.confidence,
        "interval_percent": list(test.interval) if test.interval else None,
        "p_value": test.p_value,
        "tolerance_percent": test.tolerance,
        "tested": test.tested,
        "beyond_tolerance": test.beyond_tolerance,
        "significant": test.significant,
        "verdict": test.verdict(),
    }


def report_json(report: Report, plot_files: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "schema_version": REPORT_SCHEMA_VERSION,
        "columns": [asdict(column) for column in report.columns],
        "rows": [_row_json(row) for row in report.rows],
        "notes": report.notes,
        "baseline_check": {
            "rule": report.checks[0].rule,
            "checks": [_check_json(check) for check in report.checks],
        }
        if report.checks
        else None,
        "plots": plot_files or {},
    }


def render_json(report: Report, plot_files: dict[str, str] | None = None) -> str:
    return json.dumps(report_json(report, plot_files), indent=2) + "\n"

"""The decode roofline (REFERENCE.md §3): each column's ceiling from its bundle's plan, and the
measured speed as a share of it."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from edgepack.bench.result import RunResult
from edgepack.report.cells import NO_BUNDLE, NOT_MEASURED, Cell, Measure, Row, row, text_row
from edgepack.report.entries import Entry
from edgepack.report.rows import batch_label, common_batch, plan_value, speed


@dataclass(frozen=True)
class Roofline:
    """The decode ceiling of REFERENCE.md §3 for one bundle on its target."""

    target: str
    bandwidth_gbps: float
    weight_bytes_per_step: float
    kv_bytes_per_token: float
    context_tokens: float
    """Mean context during decode: prompt plus half the generated tokens (0 without a run)."""

    def tokens_per_s(self, batch: int) -> float:
        step_bytes = (
            self.weight_bytes_per_step + batch * self.context_tokens * self.kv_bytes_per_token
        )
        return batch * self.bandwidth_gbps * 1e9 / step_bytes

    def describe(self) -> str:
        return (
            f"{self.bandwidth_gbps:g} GB/s (target profile {self.target}, from the bundle's plan) "
            f"÷ ({self.weight_bytes_per_step / 1e6:.1f} MB of weights + {self.context_tokens:.0f} "
            f"tokens × {self.kv_bytes_per_token / 1e3:.1f} kB of KV cache per sequence) per step"
        )


def roofline_of(entry: Entry) -> Roofline | None:
    bandwidth = plan_value(entry, "roofline", "bandwidth_gbps")
    weights = plan_value(entry, "roofline", "weight_bytes_read_per_step")
    if bandwidth is None or weights is None:
        return None
    kv = plan_value(entry, "memory", "kv_bytes_per_token") or 0.0
    return Roofline(entry.fact("target"), bandwidth, weights, kv, _mean_context(entry.run))


def _mean_context(run: RunResult | None) -> float:
    if run is None or not run.outputs:
        return 0.0
    return statistics.fmean(o.prompt_tokens + o.new_tokens / 2 for o in run.outputs)


def _percent_of(speed: Cell, ceiling: Cell) -> Cell:
    """The speed as a share of the ceiling; without a speed, why there is none."""
    if not isinstance(speed, Measure):
        return speed
    return speed.scaled(100 / ceiling.value) if isinstance(ceiling, Measure) else ceiling


def roofline_rows(entries: Sequence[Entry]) -> list[Row]:
    rooflines = [roofline_of(e) for e in entries]
    common = common_batch(entries)
    batches = [e.run.settings.batch_size if e.run else common for e in entries]
    return [
        text_row("roofline", "bandwidth", [_bandwidth_text(r) for r in rooflines]),
        *_ceiling_rows(entries, rooflines, [1] * len(entries), batched=False),
        *_ceiling_rows(entries, rooflines, batches, batched=True),
    ]


def _ceiling_rows(
    entries: Sequence[Entry],
    rooflines: Sequence[Roofline | None],
    batches: Sequence[int | None],
    batched: bool,
) -> list[Row]:
    """The decode ceiling at each column's batch, and the measured speed as a share of it."""
    name = batch_label(entries) if batched else "batch 1"
    ceilings = [_ceiling(r, b) for r, b in zip(rooflines, batches, strict=True)]
    percents = [
        _percent_of(speed(entry, batched), ceiling)
        for entry, ceiling in zip(entries, ceilings, strict=True)
    ]
    return [
        row("roofline", f"decode ceiling, {name} (tok/s)", "tok/s", ceilings, "higher", exact=True),
        row("roofline", f"% of decode roofline, {name}", "%", percents, "higher"),
    ]


def _ceiling(roofline: Roofline | None, batch: int | None) -> Cell:
    if roofline is None:
        return NO_BUNDLE
    return Measure(roofline.tokens_per_s(batch)) if batch else NOT_MEASURED


def _bandwidth_text(roofline: Roofline | None) -> str:
    return f"{roofline.bandwidth_gbps:g} GB/s ({roofline.target})" if roofline else NO_BUNDLE

"""The figures of a report: a median with its spread, the cells and rows that hold them, deltas.

Noise rule of the table. The spread of a figure is the range (max − min) of its samples. A
difference between two figures is *within noise* when it is no larger than the sum of their two
ranges; the table marks it "≈". The ``--baseline`` check is :mod:`edgepack.report.regression`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from edgepack.bench.stats import Spread

NOT_MEASURED = "not measured"
NO_SUPPORTED_GPU = f"{NOT_MEASURED}: no supported GPU"
"""A build-only column whose engine runs only on a GPU this machine does not have."""
NO_BUNDLE = "bundle unavailable"
NOT_APPLICABLE = "–"
NO_GATE_MARK = "(--no-gate)"

Better = Literal["higher", "lower"]


@dataclass(frozen=True)
class Measure:
    """One figure of one column: its median and, where it was repeated, its spread."""

    value: float
    low: float | None = None
    high: float | None = None
    cv: float | None = None
    n: int = 1

    @classmethod
    def of(cls, spread: Spread) -> Measure:
        return cls(spread.median, spread.min, spread.max, spread.cv, spread.n)

    @property
    def range(self) -> float | None:
        """max − min, or None for a figure measured once."""
        if self.n < 2 or self.low is None or self.high is None:
            return None
        return self.high - self.low

    def scaled(self, factor: float) -> Measure:
        low = None if self.low is None else self.low * factor
        high = None if self.high is None else self.high * factor
        return Measure(self.value * factor, low, high, self.cv, self.n)


Cell = Measure | str | None
"""A number with its spread, a text (a verdict, "not measured"), or None when not applicable."""


def combined_noise(first: Measure, second: Measure) -> float | None:
    """The noise rule: the two ranges added; None when either figure was measured once."""
    if first.range is None or second.range is None:
        return None
    return first.range + second.range


def sum_measures(measures: Sequence[Measure]) -> Measure:
    """Medians added; the spread is the sum of the bounds, and only when every part has one."""
    value = sum(m.value for m in measures)
    if any(m.range is None for m in measures):
        return Measure(value)
    low = sum(m.low for m in measures if m.low is not None)
    high = sum(m.high for m in measures if m.high is not None)
    return Measure(value, low, high, None, min(m.n for m in measures))


@dataclass(frozen=True)
class Delta:
    absolute: float
    percent: float | None
    noise: float | None

    @property
    def beyond_noise(self) -> bool | None:
        return None if self.noise is None else abs(self.absolute) > self.noise


def delta(base: Cell, other: Cell) -> Delta | None:
    if not isinstance(base, Measure) or not isinstance(other, Measure):
        return None
    difference = other.value - base.value
    percent = difference / base.value * 100 if base.value else None
    return Delta(difference, percent, combined_noise(base, other))


@dataclass(frozen=True)
class Row:
    section: str
    label: str
    unit: str
    """"s", "tok/s", "bytes", "%", "x", "" (a count) or "text"."""
    cells: tuple[Cell, ...]
    better: Better | None = None
    compare: bool = True
    """Whether a delta against the first column means something."""
    exact: bool = False
    """Figures without noise (sizes, plan values): any difference is real."""

    def deltas(self) -> list[Delta | None]:
        base = self.cells[0]
        return [None] + [delta(base, cell) if self.compare else None for cell in self.cells[1:]]


def row(
    section: str,
    label: str,
    unit: str,
    cells: Sequence[Cell],
    better: Better | None = None,
    compare: bool = True,
    exact: bool = False,
) -> Row:
    return Row(section, label, unit, tuple(cells), better, compare, exact)


def text_row(section: str, label: str, cells: Sequence[str]) -> Row:
    return row(section, label, "text", cells, compare=False)

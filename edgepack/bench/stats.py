"""Summaries of repeated measurements: median, min, max and coefficient of variation."""

from __future__ import annotations

import statistics

from pydantic import BaseModel


class Spread(BaseModel):
    n: int
    median: float
    min: float
    max: float
    cv: float
    """Coefficient of variation (stdev / mean); 0 for a single sample."""
    samples: list[float]

    @classmethod
    def of(cls, samples: list[float]) -> Spread:
        if not samples:
            raise ValueError("no samples to summarize")
        mean = statistics.fmean(samples)
        stdev = statistics.stdev(samples) if len(samples) > 1 else 0.0
        return cls(
            n=len(samples),
            median=statistics.median(samples),
            min=min(samples),
            max=max(samples),
            cv=stdev / mean if mean else 0.0,
            samples=samples,
        )

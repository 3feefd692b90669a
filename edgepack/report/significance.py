"""Is a run slower than its baseline? A test whose power grows with the number of runs.

Two answers on the raw per-run samples, both required for a regression:

- **effect beyond the tolerance**: the change of the median (run against baseline, in %) and its
  bootstrap confidence interval (each side resampled with replacement, a fixed number of times
  from a fixed seed, so a report is reproducible); the slowdown counts when the whole interval
  lies below −tolerance;
- **significance**: a one-sided Mann–Whitney U test (the run's samples tend to be lower) with
  p ≤ 1 − confidence.

With fewer than :data:`MIN_RUNS` runs a side the test cannot reach p ≤ 0.05 at all (3 against 3
can at best give 1/20), so the check says "too few runs" instead of passing.

scipy and numpy come with ``edgepack[report]`` and are imported only when a check runs.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from edgepack.errors import ToolMissingError

DEFAULT_TOLERANCE = 2.0
"""Percent of slowdown tolerated before a significant one counts as a regression."""
CONFIDENCE = 0.95
RESAMPLES = 10_000
SEED = 0
MIN_RUNS = 3
ADVISED_RUNS = 5


@dataclass(frozen=True)
class SlowdownTest:
    """The run's samples against the baseline's, by the rule in :func:`rule_words`."""

    baseline_n: int
    run_n: int
    baseline_median: float
    run_median: float
    tolerance: float
    """Percent."""
    interval: tuple[float, float] | None = None
    """The confidence interval of the change of the median, in percent (None when untested)."""
    p_value: float | None = None
    """One-sided Mann–Whitney U: the run is slower (None when untested)."""
    confidence: float = CONFIDENCE

    @property
    def difference(self) -> float:
        """Run median − baseline median (negative: slower)."""
        return self.run_median - self.baseline_median

    @property
    def percent(self) -> float | None:
        return self.difference / self.baseline_median * 100 if self.baseline_median else None

    @property
    def alpha(self) -> float:
        return round(1 - self.confidence, 10)  # 0.05, not 0.050000000000000044

    @property
    def tested(self) -> bool:
        return self.interval is not None and self.p_value is not None

    @property
    def beyond_tolerance(self) -> bool:
        return self.interval is not None and self.interval[1] < -self.tolerance

    @property
    def significant(self) -> bool:
        return self.p_value is not None and self.p_value <= self.alpha

    @property
    def regressed(self) -> bool:
        return self.beyond_tolerance and self.significant

    def untested_reason(self) -> str:
        if self.baseline_median <= 0:
            return "cannot test: the baseline's median decode speed is 0"
        return (
            f"too few runs to test: n={self.baseline_n} (baseline), n={self.run_n} (run); "
            f"the test needs {MIN_RUNS} runs a side, rerun with --runs {ADVISED_RUNS}"
        )

    def verdict(self) -> str:
        """Why the check says what it says, in words."""
        if not self.tested:
            return self.untested_reason()
        reasons = []
        if not self.beyond_tolerance:
            reasons.append(f"the interval reaches −{self.tolerance:g} % or above")
        if not self.significant:
            reasons.append(f"not significant (p > {self.alpha:g})")
        if reasons:
            return "ok, no regression shown: " + " and ".join(reasons)
        return (
            f"REGRESSED: slower by more than {self.tolerance:g} % "
            f"and significant (p ≤ {self.alpha:g})"
        )

    def effect_text(self) -> str:
        """n, the change of the median, its interval and the p-value."""
        percent = "" if self.percent is None else f" ({self.percent:+.1f} %)"
        text = (
            f"n={self.baseline_n} vs n={self.run_n}; median {self.difference:+.2f} tok/s{percent}"
        )
        if self.interval is not None and self.p_value is not None:
            low, high = self.interval
            text += (
                f", {self.confidence * 100:g} % interval {low:+.1f} % to {high:+.1f} %, "
                f"Mann–Whitney p = {self.p_value:.2g}"
            )
        return text


def rule_words(tolerance: float) -> str:
    return (
        f"decode tok/s (batch 1) regresses when the run is slower than the baseline by more than "
        f"{tolerance:g} % and significantly so: the {CONFIDENCE * 100:g} % bootstrap interval of "
        f"the change of the median ({RESAMPLES:,} resamples of each side's per-run samples, seed "
        f"{SEED}) lies wholly below −{tolerance:g} %, and a one-sided Mann–Whitney U test of the "
        f"per-run samples gives p ≤ {1 - CONFIDENCE:.2g}; it needs {MIN_RUNS} runs a side"
    )


def slowdown_test(
    baseline: Sequence[float], run: Sequence[float], tolerance: float = DEFAULT_TOLERANCE
) -> SlowdownTest:
    """Test whether ``run`` (per-run decode tok/s) is slower than ``baseline``."""
    untested = SlowdownTest(
        len(baseline), len(run), statistics.median(baseline), statistics.median(run), tolerance
    )
    if min(len(baseline), len(run)) < MIN_RUNS or untested.baseline_median <= 0:
        return untested
    return SlowdownTest(
        untested.baseline_n,
        untested.run_n,
        untested.baseline_median,
        untested.run_median,
        tolerance,
        p_value=slower_p_value(baseline, run),  # first: it says when scipy is missing
        interval=median_change_interval(baseline, run),
    )


def slower_p_value(baseline: Sequence[float], run: Sequence[float]) -> float:
    """One-sided Mann–Whitney U: p of samples this far apart if the run were not slower."""
    try:
        from scipy.stats import mannwhitneyu
    except ImportError as exc:
        raise ToolMissingError(
            "the --baseline check needs scipy, which is not installed",
            hint="pip install 'edgepack[report]'",
        ) from exc
    return float(mannwhitneyu(list(run), list(baseline), alternative="less").pvalue)


def median_change_interval(
    baseline: Sequence[float], run: Sequence[float], confidence: float = CONFIDENCE
) -> tuple[float, float]:
    """Percentile bootstrap interval of 100 × (median(run) / median(baseline) − 1)."""
    import numpy

    generator = numpy.random.default_rng(SEED)
    base, other = numpy.asarray(baseline, dtype=float), numpy.asarray(run, dtype=float)
    base_medians = numpy.median(generator.choice(base, (RESAMPLES, base.size)), axis=1)
    run_medians = numpy.median(generator.choice(other, (RESAMPLES, other.size)), axis=1)
    positive = base_medians > 0  # a resample of a baseline holding a 0 tok/s run has no ratio
    change = 100 * (run_medians[positive] / base_medians[positive] - 1)
    tail = (1 - confidence) / 2 * 100
    low, high = numpy.percentile(change, [tail, 100 - tail])
    return float(low), float(high)

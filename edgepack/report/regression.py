"""The ``--baseline`` check: does a run regress against the baseline run?

A run regresses when its decode tok/s at batch 1 is slower than the baseline's beyond a tolerance
and significantly so (:mod:`edgepack.report.significance`, on the per-run samples both results
keep), or when its quality verdict ranks lower (no verdict < fail < pass). Too few runs to test
is said, and fails the command: a check that cannot tell is never a pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from edgepack.errors import BadInputError, RegressionError
from edgepack.quality.verdict import VERDICT_RANK
from edgepack.report.cells import Measure
from edgepack.report.entries import Entry, machine_text, run_passed, verdict_name
from edgepack.report.significance import (
    ADVISED_RUNS,
    DEFAULT_TOLERANCE,
    SlowdownTest,
    rule_words,
    slowdown_test,
)

QUALITY_RULE = "the quality verdict regresses when it ranks lower (no verdict < fail < pass)"


def regression_rule(tolerance: float = DEFAULT_TOLERANCE) -> str:
    return f"{rule_words(tolerance)}; {QUALITY_RULE}"


REGRESSION_RULE = regression_rule()
"""The rule at the default tolerance."""


@dataclass(frozen=True)
class RegressionCheck:
    """One run against the baseline, by the rule of :func:`regression_rule`."""

    baseline: str
    candidate: str
    baseline_speed: Measure
    candidate_speed: Measure
    speed: SlowdownTest
    baseline_passed: bool | None
    candidate_passed: bool | None
    machines: tuple[str, str] = ("", "")
    """Where the baseline and the run were measured."""

    @property
    def rule(self) -> str:
        return regression_rule(self.speed.tolerance)

    @property
    def undetermined(self) -> bool:
        return not self.speed.tested

    @property
    def speed_regressed(self) -> bool:
        return self.speed.regressed

    @property
    def quality_regressed(self) -> bool:
        return VERDICT_RANK[self.candidate_passed] < VERDICT_RANK[self.baseline_passed]

    @property
    def regressed(self) -> bool:
        return self.speed_regressed or self.quality_regressed

    def speed_line(self) -> str:
        return (
            f"{self.candidate}: decode tok/s (batch 1) {_measure_text(self.baseline_speed)} → "
            f"{_measure_text(self.candidate_speed)}; {self.speed.effect_text()}: "
            f"{self.speed.verdict()}"
        )

    def quality_line(self) -> str:
        state = "WORSE" if self.quality_regressed else "ok"
        return (
            f"{self.candidate}: quality verdict {verdict_name(self.baseline_passed)} → "
            f"{verdict_name(self.candidate_passed)}: {state}"
        )

    def lines(self) -> list[tuple[str, bool]]:
        """Each line of the check with whether it is a regression."""
        lines = [
            (self.speed_line(), self.speed_regressed),
            (self.quality_line(), self.quality_regressed),
        ]
        if self.machines[0] != self.machines[1]:
            lines.append(
                (
                    f"{self.candidate}: note: measured on {self.machines[1]}, the "
                    f"baseline on {self.machines[0]}",
                    False,
                )
            )
        return lines


def _measure_text(measure: Measure) -> str:
    if measure.range is None:
        return f"{measure.value:.2f} (n={measure.n})"
    return f"{measure.value:.2f} ({measure.low:.2f}–{measure.high:.2f}, n={measure.n})"


def regression_checks(
    entries: Sequence[Entry], labels: Sequence[str], tolerance: float = DEFAULT_TOLERANCE
) -> list[RegressionCheck]:
    base, base_machine = entries[0].run, machine_text(entries[0])
    if base is None:
        raise BadInputError("--baseline must be a run result")
    candidates = [
        (label, e.run, machine_text(e))
        for label, e in zip(labels[1:], entries[1:], strict=True)
        if e.run
    ]
    if not candidates:
        raise BadInputError("--baseline needs at least one other run result to compare with it")
    base_speed = base.metrics.decode_tok_s
    return [
        RegressionCheck(
            labels[0],
            label,
            Measure.of(base_speed),
            Measure.of(run.metrics.decode_tok_s),
            slowdown_test(base_speed.samples, run.metrics.decode_tok_s.samples, tolerance),
            run_passed(base),
            run_passed(run),
            (base_machine, machine),
        )
        for label, run, machine in candidates
    ]


def enforce(checks: Sequence[RegressionCheck]) -> None:
    """Raise RegressionError for a regression, BadInputError when a speed could not be tested."""
    failed = [line for check in checks for line, bad in check.lines() if bad]
    if failed:
        raise RegressionError(
            "regression against the baseline: " + "; ".join(failed), checks[0].rule
        )
    untested = [check for check in checks if check.undetermined]
    if untested:
        raise BadInputError(
            "; ".join(f"{check.candidate}: {check.speed.untested_reason()}" for check in untested),
            hint=f"bench the baseline and the run with --runs {ADVISED_RUNS} or more",
        )

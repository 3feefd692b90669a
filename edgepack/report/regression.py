"""The ``--baseline`` check: does a run regress against the baseline run?

A run regresses when its decode tok/s at batch 1 lies below the baseline's by more than the two
runs' ranges (max − min over their samples) added, or when its quality verdict ranks lower (no
verdict < fail < pass). A figure measured once has no range: the check then cannot tell a
regression from noise and says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from edgepack.bench.verdict import VERDICT_RANK
from edgepack.errors import BadInputError, RegressionError
from edgepack.report.cells import Measure, combined_noise
from edgepack.report.entries import Entry, machine_text, run_passed, verdict_name

REGRESSION_RULE = (
    "decode tok/s (batch 1) regresses when baseline median − run median > noise, where noise = "
    "(baseline max − min) + (run max − min) over their runs' samples; the quality verdict "
    "regresses when it ranks lower (no verdict < fail < pass)"
)


@dataclass(frozen=True)
class RegressionCheck:
    """One run against the baseline, by the rule in REGRESSION_RULE."""

    baseline: str
    candidate: str
    baseline_speed: Measure
    candidate_speed: Measure
    baseline_passed: bool | None
    candidate_passed: bool | None
    machines: tuple[str, str] = ("", "")
    """Where the baseline and the run were measured."""

    @property
    def noise(self) -> float | None:
        return combined_noise(self.baseline_speed, self.candidate_speed)

    @property
    def drop(self) -> float:
        return self.baseline_speed.value - self.candidate_speed.value

    @property
    def undetermined(self) -> bool:
        return self.noise is None

    @property
    def speed_regressed(self) -> bool:
        return self.noise is not None and self.drop > self.noise

    @property
    def quality_regressed(self) -> bool:
        return VERDICT_RANK[self.candidate_passed] < VERDICT_RANK[self.baseline_passed]

    @property
    def regressed(self) -> bool:
        return self.speed_regressed or self.quality_regressed

    def speed_line(self) -> str:
        if self.noise is None:
            state = "cannot tell from noise (a run measured once has no spread)"
        else:
            state = "REGRESSED" if self.speed_regressed else "ok"
            state = f"drop {self.drop:.2f} vs noise {self.noise:.2f}: {state}"
        return (
            f"{self.candidate}: decode tok/s (batch 1) {_measure_text(self.baseline_speed)} → "
            f"{_measure_text(self.candidate_speed)}; {state}"
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


def regression_checks(entries: Sequence[Entry], labels: Sequence[str]) -> list[RegressionCheck]:
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
    return [
        RegressionCheck(
            labels[0],
            label,
            Measure.of(base.metrics.decode_tok_s),
            Measure.of(run.metrics.decode_tok_s),
            run_passed(base),
            run_passed(run),
            (base_machine, machine),
        )
        for label, run, machine in candidates
    ]


def enforce(checks: Sequence[RegressionCheck]) -> None:
    """Raise RegressionError for a regression, BadInputError when noise cannot be judged."""
    failed = [line for check in checks for line, bad in check.lines() if bad]
    if failed:
        raise RegressionError(
            "regression against the baseline: " + "; ".join(failed), REGRESSION_RULE
        )
    unknown = [check.candidate for check in checks if check.undetermined]
    if unknown:
        raise BadInputError(
            "cannot tell a regression from noise for "
            + ", ".join(unknown)
            + ": a run measured once has no spread",
            hint="bench the baseline and the run with --runs 2 or more",
        )

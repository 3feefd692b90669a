"""The quality verdict attached to every run result: which checks ran, their values and limits."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class Check(BaseModel):
    name: str
    value: float
    limit: float
    direction: Literal["min", "max"]
    """"min": value must be at least the limit; "max": at most."""
    passed: bool
    detail: str = ""

    @property
    def margin(self) -> float:
        """How far past the limit a failing value is (positive = failed by that much)."""
        return self.limit - self.value if self.direction == "min" else self.value - self.limit

    def describe(self) -> str:
        relation = ">=" if self.direction == "min" else "<="
        state = "ok" if self.passed else f"FAILED by {abs(self.margin):.3g}"
        text = f"{self.name} = {self.value:.3g} (needs {relation} {self.limit:.3g}): {state}"
        return f"{text}; {self.detail}" if self.detail else text


class QualityVerdict(BaseModel):
    passed: bool
    quality_class: str
    """Threshold set used: full, half, 8bit, 4bit, or strict (quantized KV cache)."""
    checks: list[Check]
    metrics: dict[str, float]
    reference: dict[str, str]
    """What the outputs were compared with: model hash, prompt-set hash, how it was computed, and
    the provenance of the source model's weights."""
    reference_usable: bool = True
    """False when the source model's own answers fail the absolute checks: nothing was compared."""

    @property
    def failed_checks(self) -> list[Check]:
        return [check for check in self.checks if not check.passed]

    def summary(self) -> str:
        if self.passed:
            return f"pass ({self.quality_class} thresholds, {len(self.checks)} checks)"
        failed = "; ".join(check.describe() for check in self.failed_checks)
        if not self.reference_usable:
            return f"{REFERENCE_UNUSABLE}: {failed}"
        return f"fail: {failed}"


REFERENCE_UNUSABLE = "reference unusable: the source model itself produces degenerate text"


VERDICT_RANK = {None: 0, False: 1, True: 2}
"""Order for regression checks: no verdict < failed < passed."""

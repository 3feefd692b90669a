"""Attach a quality verdict to a run: the reference for the bundle's model, then the gate."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgepack.bench.result import RunResult
from edgepack.bundle import Manifest
from edgepack.errors import QualityGateError
from edgepack.quality.gate import gate_run
from edgepack.quality.reference import load_or_compute_reference
from edgepack.quality.thresholds import GateConfig, quality_class


@dataclass(frozen=True)
class GateSubject:
    """What a run's answers are judged as: a source model and a quality class."""

    model_dir: Path
    model_hash: str
    quality_class: str

    @classmethod
    def of_bundle(cls, manifest: Manifest) -> GateSubject:
        recipe = manifest.recipe
        return cls(
            Path(manifest.model["directory"]),
            str(manifest.model["hash"]),
            quality_class(str(recipe["precision"]), str(recipe["kv_cache_dtype"])),
        )


def apply_gate(
    result: RunResult,
    subject: GateSubject | Manifest,
    prompts_file: Path,
    cache_root: Path,
    config: GateConfig,
    progress: Callable[[str, int, int], None] = lambda *a: None,
) -> RunResult:
    """Compute (or reuse) the reference outputs and judge the run against them."""
    if isinstance(subject, Manifest):
        subject = GateSubject.of_bundle(subject)
    reference = load_or_compute_reference(
        subject.model_dir,
        subject.model_hash,
        prompts_file,
        result.settings.max_new_tokens,
        cache_root,
        progress,
    )
    verdict = gate_run(result.outputs, result.heldout, subject.quality_class, reference, config)
    return result.model_copy(update={"quality": verdict, "gate_enforced": True})


def enforce(result: RunResult) -> None:
    """Raise QualityGateError when an enforced gate failed (after the result is saved)."""
    if result.gate_enforced and result.quality is not None and not result.quality.passed:
        raise QualityGateError(
            f"quality gate failed: {result.quality.summary()}",
            hint="the engine's answers drifted from the reference; see the result JSON "
            "(--no-gate records a run without the gate)",
        )

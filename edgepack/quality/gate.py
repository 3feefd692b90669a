"""The quality gate: absolute checks first, then the comparison with the reference.

1. The reference's own answers and held-out perplexity pass the absolute checks
   (:mod:`edgepack.quality.absolute`), or the verdict is "reference unusable" and nothing is
   compared: a degenerate source model would make a degenerate engine look perfect.
2. The engine's answers pass the same absolute checks, whatever the reference says.
3. The engine's answers are compared with the reference's: token agreement (exact-match rate,
   matched-prefix length), chrF (sacrebleu), degeneration (repeated n-grams, distinct-2, longest
   repeated span, non-word share) as the increase over the reference's own, empty outputs, the
   share of letters in the reference's script, and held-out perplexity relative to the reference.
   Thresholds depend on the precision class; a quantized KV cache gets the strict set.

A run passes only if every check passes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

from edgepack.quality.absolute import REFERENCE_DEGENERATE_SHARE_MAX, Answer, absolute_checks
from edgepack.quality.metrics import EngineOutputs, compute_metrics
from edgepack.quality.reference import HeldoutScore, Reference
from edgepack.quality.thresholds import GateConfig, Thresholds
from edgepack.quality.verdict import Check, QualityVerdict


def _checks(metrics: dict[str, float], limits: Thresholds) -> list[Check]:
    def check(
        name: str, value: float, limit: float, direction: Literal["min", "max"], detail: str = ""
    ) -> Check:
        passed = value >= limit if direction == "min" else value <= limit
        return Check(
            name=name, value=value, limit=limit, direction=direction, passed=passed, detail=detail
        )

    checks = [
        check(
            "prefix_fraction",
            metrics["prefix_fraction"],
            limits.prefix_fraction_min,
            "min",
            "share of each reference answer reproduced exactly from its start",
        ),
        check("chrf", metrics["chrf"], limits.chrf_min, "min", "character F-score vs reference"),
        check(
            "repetition_increase",
            metrics["repetition"] - metrics["repetition_reference"],
            limits.repetition_increase_max,
            "max",
            "repeated 4-grams above the reference's",
        ),
        check(
            "looping_share",
            metrics["looping_share"],
            limits.looping_share_max,
            "max",
            "answers stuck in a loop that the reference answer is not in",
        ),
        check(
            "longest_repeat_increase",
            metrics["longest_repeat"] - metrics["longest_repeat_reference"],
            limits.longest_repeat_increase_max,
            "max",
            "longest repeated span (tokens)",
        ),
        check(
            "nonword_increase",
            metrics["nonword_share"] - metrics["nonword_share_reference"],
            limits.nonword_increase_max,
            "max",
            "words without letters or digits",
        ),
        check(
            "empty_rate",
            metrics["empty_rate"],
            limits.empty_rate_max,
            "max",
            "answers with no text",
        ),
    ]
    if "script_ratio" in metrics:
        checks.append(
            check(
                "script_ratio",
                metrics["script_ratio"],
                limits.script_ratio_min,
                "min",
                "letters in the reference's script",
            )
        )
    if "perplexity_ratio" in metrics:
        checks.append(
            check(
                "perplexity_ratio",
                metrics["perplexity_ratio"],
                limits.perplexity_ratio_max,
                "max",
                "held-out perplexity vs reference",
            )
        )
    return checks


def _perplexity(score: HeldoutScore | None) -> float | None:
    return math.exp(score.mean_nll) if score is not None and score.logprobs else None


def reference_checks(reference: Reference) -> list[Check]:
    """The absolute checks on the source model's own answers and held-out perplexity."""
    answers = [
        Answer(id=out.id, token_ids=out.token_ids, text=out.text, script=out.script)
        for out in reference.outputs
    ]
    checks, _ = absolute_checks(
        answers,
        _perplexity(reference.heldout),
        reference.vocab_size,
        prefix="reference",
        share_max=REFERENCE_DEGENERATE_SHARE_MAX,
    )
    return checks


def engine_absolute_checks(
    engine: EngineOutputs, reference: Reference, share_max: float = 0.0
) -> list[Check]:
    answers = [
        Answer(
            id=out.id,
            token_ids=engine.token_ids.get(out.id, []),
            text=engine.texts.get(out.id, ""),
            script=out.script,
        )
        for out in reference.outputs
    ]
    checks, _ = absolute_checks(
        answers, _perplexity(engine.heldout), reference.vocab_size, share_max=share_max
    )
    return checks


def reference_record(reference: Reference) -> dict[str, str]:
    return {
        "key": reference.key,
        "model_hash": reference.model_hash,
        "prompts_sha256": reference.prompts_sha256,
        "method": reference.method,
        "provenance": reference.provenance,
    }


def judge(
    engine: EngineOutputs,
    reference: Reference,
    klass: str,
    config: GateConfig | None = None,
) -> QualityVerdict:
    """Judge outputs with the thresholds of a quality class (see :func:`quality_class`)."""
    limits = (config or GateConfig()).for_class(klass)
    metrics = compute_metrics(engine, reference)
    from_reference = reference_checks(reference)
    usable = all(check.passed for check in from_reference)
    checks = engine_absolute_checks(engine, reference, limits.degenerate_share_max)
    checks = checks + _checks(metrics, limits) if usable else from_reference + checks
    return QualityVerdict(
        passed=usable and all(check.passed for check in checks),
        quality_class=klass,
        checks=checks,
        metrics=metrics,
        reference=reference_record(reference),
        reference_usable=usable,
    )


def outputs_of_run(outputs: Sequence[Any], heldout: HeldoutScore | None) -> EngineOutputs:
    """Adapt a RunResult's outputs (objects with id, token_ids, text) for the gate."""
    return EngineOutputs(
        token_ids={o.id: list(o.token_ids) for o in outputs},
        texts={o.id: o.text for o in outputs},
        heldout=heldout,
    )


def gate_run(
    outputs: Sequence[Any],
    heldout: HeldoutScore | None,
    klass: str,
    reference: Reference,
    config: GateConfig | None = None,
) -> QualityVerdict:
    """Judge a run's outputs (objects with id, token_ids and text) in a quality class."""
    return judge(outputs_of_run(outputs, heldout), reference, klass, config)

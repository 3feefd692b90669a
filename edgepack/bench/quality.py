"""The quality gate: compare an engine's greedy outputs with the full-precision reference.

Metrics: token agreement (exact-match rate, matched-prefix length), chrF (sacrebleu), degeneration
(repeated n-grams, distinct-2, longest repeated span, non-word share) measured as the increase over
the reference's own, empty outputs, the share of letters in the reference's script, and perplexity
on a held-out text relative to the reference. Thresholds depend on the precision class; a quantized
KV cache gets the strict set. A run passes only if every check passes.
"""

from __future__ import annotations

import math
import sys
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from edgepack.bench.reference import HeldoutScore, Reference
from edgepack.bench.verdict import Check, QualityVerdict
from edgepack.errors import BadInputError, ToolMissingError
from edgepack.precisions import KV_FORMATS, WEIGHT_FORMATS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPEAT_NGRAM = 4
LOOP_MARGIN = 0.5


class Thresholds(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    prefix_fraction_min: float
    """Mean share of each reference answer the engine reproduces token for token from the start."""
    chrf_min: float
    """Corpus chrF (0-100) of the engine's answers against the reference answers."""
    repetition_increase_max: float
    """Mean repeated-4-gram fraction above the reference's."""
    longest_repeat_increase_max: float
    """Mean longest repeated token span above the reference's, in tokens."""
    nonword_increase_max: float
    """Share of words without a letter or digit above the reference's."""
    looping_share_max: float
    """Share of answers that loop (repeated 4-grams more than LOOP_MARGIN above the reference's
    answer): means hide one answer stuck in a loop; this does not."""
    empty_rate_max: float = 0.0
    script_ratio_min: float = 0.9
    """Share of the engine's letters in the reference's script, relative to the reference."""
    perplexity_ratio_max: float


DEFAULT_THRESHOLDS: dict[str, Thresholds] = {
    "full": Thresholds(
        looping_share_max=0.0,
        prefix_fraction_min=0.6,
        chrf_min=70,
        repetition_increase_max=0.08,
        longest_repeat_increase_max=12,
        nonword_increase_max=0.05,
        perplexity_ratio_max=1.02,
    ),
    "half": Thresholds(
        looping_share_max=0.0,
        prefix_fraction_min=0.45,
        chrf_min=60,
        repetition_increase_max=0.1,
        longest_repeat_increase_max=16,
        nonword_increase_max=0.06,
        perplexity_ratio_max=1.05,
    ),
    "strict": Thresholds(
        looping_share_max=0.0,
        prefix_fraction_min=0.45,
        chrf_min=60,
        repetition_increase_max=0.1,
        longest_repeat_increase_max=16,
        nonword_increase_max=0.06,
        perplexity_ratio_max=1.05,
    ),
    "8bit": Thresholds(
        looping_share_max=0.1,
        prefix_fraction_min=0.2,
        chrf_min=40,
        repetition_increase_max=0.15,
        longest_repeat_increase_max=24,
        nonword_increase_max=0.08,
        perplexity_ratio_max=1.2,
    ),
    "4bit": Thresholds(
        looping_share_max=0.25,
        prefix_fraction_min=0.08,
        chrf_min=28,
        repetition_increase_max=0.2,
        longest_repeat_increase_max=32,
        nonword_increase_max=0.1,
        perplexity_ratio_max=1.6,
    ),
}


class GateConfig(BaseModel):
    """Thresholds per class, each overridable from a TOML file (``[thresholds.4bit]`` ...)."""

    model_config = ConfigDict(extra="forbid")
    thresholds: dict[Literal["full", "half", "strict", "8bit", "4bit"], dict[str, float]] = {}

    def for_class(self, quality_class: str) -> Thresholds:
        base = DEFAULT_THRESHOLDS[quality_class]
        overrides = self.thresholds.get(quality_class, {})  # type: ignore[call-overload]
        try:
            return Thresholds.model_validate({**base.model_dump(), **overrides})
        except ValidationError as exc:
            raise BadInputError(f"gate config: {exc.errors()[0]['msg']}") from exc

    @classmethod
    def load(cls, path: Path | None) -> GateConfig:
        if path is None:
            return cls()
        try:
            return cls.model_validate(tomllib.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError as exc:
            raise BadInputError(f"gate config {path} does not exist") from exc
        except (tomllib.TOMLDecodeError, ValidationError) as exc:
            raise BadInputError(
                f"{path}: not a valid gate config: {exc}",
                hint="keys: [thresholds.<full|half|strict|8bit|4bit>] chrf_min = 60 ...",
            ) from exc


def quality_class(precision: str, kv_cache_dtype: str) -> str:
    if KV_FORMATS[kv_cache_dtype].quantized:
        return "strict"
    return WEIGHT_FORMATS[precision].quality.value


# ---- metrics on token ids and texts ----


def matched_prefix(engine: Sequence[int], reference: Sequence[int]) -> int:
    count = 0
    for mine, theirs in zip(engine, reference, strict=False):
        if mine != theirs:
            break
        count += 1
    return count


def repeated_ngram_fraction(tokens: Sequence[int], n: int = REPEAT_NGRAM) -> float:
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def distinct_fraction(tokens: Sequence[int], n: int = 2) -> float:
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 1.0


def longest_repeated_span(tokens: Sequence[int]) -> int:
    """Length of the longest token span that occurs at least twice (overlaps allowed)."""
    best = 0
    length = len(tokens)
    for shift in range(1, length):
        run = 0
        for i in range(length - shift):
            run = run + 1 if tokens[i] == tokens[i + shift] else 0
            best = max(best, run)
    return best


def nonword_share(text: str) -> float:
    words = text.split()
    if not words:
        return 0.0
    return sum(1 for word in words if not any(ch.isalnum() for ch in word)) / len(words)


def script_of(character: str) -> str:
    """The first word of a letter's Unicode name (LATIN, CYRILLIC, CJK, ...)."""
    return unicodedata.name(character, "UNKNOWN").split()[0]


def dominant_script(texts: Sequence[str]) -> str | None:
    counts: dict[str, int] = {}
    for text in texts:
        for ch in text:
            if ch.isalpha():
                counts[script_of(ch)] = counts.get(script_of(ch), 0) + 1
    return max(counts, key=lambda k: counts[k]) if counts else None


def script_share(texts: Sequence[str], script: str) -> float:
    letters = [ch for text in texts for ch in text if ch.isalpha()]
    if not letters:
        return 0.0
    return sum(1 for ch in letters if script_of(ch) == script) / len(letters)


def chrf(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    try:
        from sacrebleu.metrics.chrf import CHRF
    except ImportError as exc:
        raise ToolMissingError(
            "the quality gate needs sacrebleu for chrF", hint="pip install 'edgepack[quality]'"
        ) from exc
    return float(CHRF().corpus_score(list(hypotheses), [list(references)]).score)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


class EngineOutputs(BaseModel):
    """What the gate needs from a run: greedy answers per prompt id, and the held-out score."""

    token_ids: dict[str, list[int]]
    texts: dict[str, str]
    heldout: HeldoutScore | None = None


def compute_metrics(engine: EngineOutputs, reference: Reference) -> dict[str, float]:
    missing = [out.id for out in reference.outputs if out.id not in engine.token_ids]
    if missing:
        raise BadInputError(f"the run has no output for reference prompts: {', '.join(missing)}")
    refs = reference.outputs
    mine = [engine.token_ids[out.id] for out in refs]
    texts = [engine.texts[out.id] for out in refs]
    ref_texts = [out.text for out in refs]
    pairs = list(zip(mine, [r.token_ids for r in refs], strict=True))
    metrics = {
        "exact_match_rate": _mean([float(m == r) for m, r in pairs]),
        "prefix_tokens": _mean([matched_prefix(m, r) for m, r in pairs]),
        "prefix_fraction": _mean([matched_prefix(m, r) / max(len(r), 1) for m, r in pairs]),
        "chrf": chrf(texts, ref_texts),
        "repetition": _mean([repeated_ngram_fraction(m) for m in mine]),
        "repetition_reference": _mean([repeated_ngram_fraction(r.token_ids) for r in refs]),
        "looping_share": _mean(
            [
                float(repeated_ngram_fraction(m) - repeated_ngram_fraction(r) > LOOP_MARGIN)
                for m, r in pairs
            ]
        ),
        "distinct2": _mean([distinct_fraction(m) for m in mine]),
        "longest_repeat": _mean([longest_repeated_span(m) for m in mine]),
        "longest_repeat_reference": _mean([longest_repeated_span(r.token_ids) for r in refs]),
        "nonword_share": _mean([nonword_share(t) for t in texts]),
        "nonword_share_reference": _mean([nonword_share(t) for t in ref_texts]),
        "empty_rate": _mean([float(not t.strip()) for t in texts]),
    }
    script = dominant_script(ref_texts)
    if script is not None:
        reference_share = script_share(ref_texts, script)
        metrics["script_ratio"] = script_share(texts, script) / reference_share
    metrics |= _perplexity_metrics(engine.heldout, reference.heldout)
    return metrics


def _perplexity_metrics(
    engine: HeldoutScore | None, reference: HeldoutScore | None
) -> dict[str, float]:
    if engine is None or reference is None or engine.token_ids != reference.token_ids:
        return {}
    return {
        "perplexity": math.exp(engine.mean_nll),
        "perplexity_reference": math.exp(reference.mean_nll),
        "perplexity_ratio": math.exp(engine.mean_nll - reference.mean_nll),
    }


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


def judge(
    engine: EngineOutputs,
    reference: Reference,
    klass: str,
    config: GateConfig | None = None,
) -> QualityVerdict:
    """Judge outputs with the thresholds of a quality class (see :func:`quality_class`)."""
    limits = (config or GateConfig()).for_class(klass)
    metrics = compute_metrics(engine, reference)
    checks = _checks(metrics, limits)
    return QualityVerdict(
        passed=all(check.passed for check in checks),
        quality_class=klass,
        checks=checks,
        metrics=metrics,
        reference={
            "key": reference.key,
            "model_hash": reference.model_hash,
            "prompts_sha256": reference.prompts_sha256,
            "method": reference.method,
        },
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

"""What the gate measures: token agreement, chrF, degeneration, script and perplexity metrics of
an engine's answers against the reference's."""

from __future__ import annotations

import math
from collections.abc import Sequence

from pydantic import BaseModel

from edgepack.errors import BadInputError, ToolMissingError
from edgepack.quality import absolute
from edgepack.quality.reference import HeldoutScore, Reference

REPEAT_NGRAM = 4
LOOP_MARGIN = 0.5


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


def dominant_script(texts: Sequence[str]) -> str | None:
    return absolute.dominant_script("\n".join(texts))


def script_share(texts: Sequence[str], script: str) -> float:
    return absolute.script_share("\n".join(texts), script) or 0.0


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

"""Gate thresholds per precision class (full, half, 8-bit, 4-bit, strict for a quantized KV
cache), overridable from a TOML file."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from edgepack.errors import BadInputError
from edgepack.precisions import KV_FORMATS, WEIGHT_FORMATS
from edgepack.userfiles import first_problem, read_user_text

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


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
    degenerate_share_max: float = 0.0
    """Share of the engine's answers that may fail one absolute check (loop, distinct-2, ...).
    None at full, half and 8-bit precision: there a degenerate answer fails the gate on its own. The
    4-bit class allows one answer in ten, because greedy decoding of a small 4-bit model falls into
    a number loop now and then (the demo's int4 engine: "Jupiter, with approximately
    111,900,000,000,000,..."; llama.cpp on the Q4_1 GGUF loops in French): an engine whose answers
    are mostly degenerate fails, and every degenerate answer is named in the check either way."""
    perplexity_ratio_max: float
    """Held-out perplexity over the reference's. The 4-bit limit, 1.5, is set from published
    figures, not the demo's: 4-bit round-to-nearest of OPT-125M, a model of the demo's size,
    scores 1.35 on WikiText-2 (27.65 → 37.28; GPTQ paper, Frantar et al. 2022, table 3) and
    BLOOM-560M 1.16; LLaMA-3-8B in q2_K, a 2-bit quantization, 1.56 (llama.cpp's perplexity
    scoreboard). 1.5 admits what 4-bit does to a model this small and refuses a 2-bit's damage
    (the old 1.6 admitted it). 8-bit: 1.2 (q8_0 measures 1.0004-1.0007: generous)."""


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
        perplexity_ratio_max=1.5,
        degenerate_share_max=0.1,
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
        hint = "keys: [thresholds.<full|half|strict|8bit|4bit>] chrf_min = 60 ..."
        text = read_user_text(path, "gate config", hint)
        try:
            return cls.model_validate(tomllib.loads(text))
        except (tomllib.TOMLDecodeError, ValidationError) as exc:
            raise BadInputError(
                f"{path}: not a valid gate config: {first_problem(exc)}", hint=hint, detail=str(exc)
            ) from exc


def quality_class(precision: str, kv_cache_dtype: str) -> str:
    if KV_FORMATS[kv_cache_dtype].quantized:
        return "strict"
    return WEIGHT_FORMATS[precision].quality.value

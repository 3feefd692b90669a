"""The quality gate's metric functions and thresholds, on hand-made token sequences and texts."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgepack.errors import BadInputError
from edgepack.quality.metrics import (
    distinct_fraction,
    dominant_script,
    longest_repeated_span,
    matched_prefix,
    nonword_share,
    repeated_ngram_fraction,
    script_share,
)
from edgepack.quality.thresholds import DEFAULT_THRESHOLDS, GateConfig, quality_class
from edgepack.quality.verdict import Check


def test_matched_prefix() -> None:
    assert matched_prefix([1, 2, 3, 9], [1, 2, 3, 4]) == 3
    assert matched_prefix([5], [1, 2]) == 0
    assert matched_prefix([1, 2], [1, 2, 3]) == 2


def test_repetition_and_distinct() -> None:
    varied = list(range(40))
    loop = [7, 8, 9] * 14
    assert repeated_ngram_fraction(varied) == 0
    assert repeated_ngram_fraction(loop) > 0.8
    assert distinct_fraction(varied) == 1
    assert distinct_fraction(loop) < 0.1
    assert repeated_ngram_fraction([1, 2]) == 0  # too short for a 4-gram


def test_longest_repeated_span() -> None:
    assert longest_repeated_span([1, 2, 3, 4, 5]) == 0
    assert longest_repeated_span([1, 2, 3, 9, 1, 2, 3]) == 3
    assert longest_repeated_span([4] * 10) == 9


def test_nonword_share_counts_words_without_letters_or_digits() -> None:
    assert nonword_share("The capital of France is Paris.") == 0
    assert nonword_share("strugg (str, 1, 1, 1) ) ) ) )") == pytest.approx(4 / 9)
    assert nonword_share("") == 0


def test_script_detection() -> None:
    english = ["The capital of France is Paris."]
    russian = ["Столица Франции — Париж."]
    assert dominant_script(english) == "LATIN"
    assert dominant_script(russian) == "CYRILLIC"
    assert script_share(russian, "LATIN") == 0
    assert script_share(english + russian, "LATIN") == pytest.approx(25 / 45, abs=0.05)


@pytest.mark.parametrize(
    ("precision", "kv", "expected"),
    [
        ("fp32", "fp32", "full"),
        ("fp16", "fp16", "half"),
        ("fp8", "fp16", "8bit"),
        ("int4", "fp32", "4bit"),
        ("fp16", "fp8", "strict"),
    ],
)
def test_quality_class(precision: str, kv: str, expected: str) -> None:
    assert quality_class(precision, kv) == expected


def test_thresholds_loosen_with_fewer_bits() -> None:
    order = ["full", "half", "8bit", "4bit"]
    chrf = [DEFAULT_THRESHOLDS[c].chrf_min for c in order]
    ppl = [DEFAULT_THRESHOLDS[c].perplexity_ratio_max for c in order]
    loops = [DEFAULT_THRESHOLDS[c].looping_share_max for c in order]
    assert chrf == sorted(chrf, reverse=True)
    assert ppl == sorted(ppl)
    assert loops == sorted(loops)
    assert DEFAULT_THRESHOLDS["full"].looping_share_max == 0
    assert DEFAULT_THRESHOLDS["strict"].chrf_min >= DEFAULT_THRESHOLDS["8bit"].chrf_min


def test_gate_config_overrides_one_class(tmp_path: Path) -> None:
    config_file = tmp_path / "gate.toml"
    config_file.write_text("[thresholds.4bit]\nchrf_min = 50\n")
    config = GateConfig.load(config_file)
    assert config.for_class("4bit").chrf_min == 50
    assert (
        config.for_class("4bit").perplexity_ratio_max
        == DEFAULT_THRESHOLDS["4bit"].perplexity_ratio_max
    )
    assert config.for_class("full") == DEFAULT_THRESHOLDS["full"]


@pytest.mark.parametrize(
    "text",
    ["[thresholds.5bit]\nchrf_min = 1\n", "[thresholds.4bit]\nchrf_mn = 1\n", "not toml ["],
)
def test_bad_gate_config_is_bad_input(tmp_path: Path, text: str) -> None:
    config_file = tmp_path / "gate.toml"
    config_file.write_text(text)
    with pytest.raises(BadInputError):
        GateConfig.load(config_file).for_class("4bit")


def test_check_describes_failure_margin() -> None:
    check = Check(name="chrf", value=20, limit=28, direction="min", passed=False)
    assert "FAILED by 8" in check.describe()
    assert check.margin == 8

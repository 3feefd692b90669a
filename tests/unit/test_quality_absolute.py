"""The absolute checks: each criterion on hand-made answers, and the gate's order (the reference
first, then the engine, then the comparison)."""

from __future__ import annotations

import math

import pytest

from edgepack.quality.absolute import (
    Answer,
    absolute_checks,
    flag_answer,
    is_word,
    loop_share,
    perplexity_limit,
)
from edgepack.quality.gate import judge
from edgepack.quality.metrics import EngineOutputs
from edgepack.quality.reference import HeldoutScore, Reference, ReferenceOutput
from edgepack.quality.verdict import REFERENCE_UNUSABLE

PROSE = (
    "The lighthouse keeper climbed the narrow stairs every evening, cleaned the lens and lit "
    "the lamp so that ships could find their way around the rocks in the dark."
)


def _ids(text: str) -> list[int]:
    """Stand-in token ids: one per word piece of four characters (enough for loop shapes)."""
    pieces = [text[i : i + 4] for i in range(0, len(text), 4)]
    table: dict[str, int] = {}
    return [table.setdefault(piece, len(table)) for piece in pieces]


def _flags(text: str, script: str | None = "LATIN", tokens: list[int] | None = None) -> list[str]:
    return flag_answer("a", _ids(text) if tokens is None else tokens, text, script).failed


def test_natural_prose_passes_every_criterion() -> None:
    assert _flags(PROSE) == []
    assert _flags("Paris.") == []  # too short for the share criteria, and not empty
    assert _flags("5") == []
    code = "def add(a, b):\n    return a + b\n\nThis function returns the sum of a and b."
    assert _flags(code) == []


@pytest.mark.parametrize(
    ("text", "tokens", "criterion"),
    [
        ("", [], "empty"),
        ("   \n ", [5, 5], "empty"),
        ("clips " * 40, [101] * 40, "loop"),
        ("of the " * 30, [7, 8] * 30, "loop"),
        ("ab cd ef gh " * 10, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12] * 5, "loop"),
        ("!!!! ???? #### %%%% " * 5, None, "char_class"),
        ("0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0", None, "char_class"),
        ("@@x $$z ^^v &&u ++q ==p ~~o |p| @a@ $b$", None, "nonwords"),
    ],
)
def test_degenerate_answers_fail_their_criterion(
    text: str, tokens: list[int] | None, criterion: str
) -> None:
    assert criterion in _flags(text, tokens=tokens)


def test_low_distinct_bigrams_fail_without_a_short_loop() -> None:
    # Two units alternating irregularly: no single periodic run, yet few distinct bigrams.
    tokens = [1, 2, 1, 2, 2, 1, 2, 1, 1, 2, 2, 2, 1, 1, 2, 1, 2, 2, 1, 1] * 3
    flags = flag_answer("a", tokens, PROSE, "LATIN")
    assert "distinct" in flags.failed
    assert flags.distinct2 is not None and flags.distinct2 < 0.25


def test_wrong_script_fails_and_japanese_mixes_scripts() -> None:
    russian = "Столица Франции — Париж, это большой и красивый город на реке Сене."
    assert "script" in _flags(russian, "LATIN")
    assert _flags(russian, "CYRILLIC") == []
    japanese = "日本の首都は東京です。とても大きな都市で、たくさんの人が住んでいます。"
    assert "script" not in _flags(japanese, "HIRAGANA")
    assert "script" not in _flags(japanese, "CJK")
    assert "script" not in _flags(PROSE, None)


def test_words_and_numbers() -> None:
    for word in ("Paris.", "don't", "well-known", "(yes)", "100", "3.5%", "12:30", "Größe"):
        assert is_word(word), word
    for word in ("strugg(str,", "@@x", "a1b2", "###", "ab$cd"):
        assert not is_word(word), word


def test_loop_share_counts_the_repeated_run_only() -> None:
    assert loop_share(list(range(50))) == 0
    assert loop_share([1] * 10 + list(range(100, 130))) == pytest.approx(10 / 40)
    assert loop_share([1, 2]) == 0
    assert loop_share([3, 4, 3, 4]) == 0  # two repeats are not a loop


def test_perplexity_limit_is_the_vocabularys_square_root() -> None:
    assert perplexity_limit(49152) == pytest.approx(math.sqrt(49152))
    answers = [Answer(id="a", token_ids=_ids(PROSE), text=PROSE, script="LATIN")]
    checks, _ = absolute_checks(answers, perplexity=40_000.0, vocab_size=49152)
    failed = [c.name for c in checks if not c.passed]
    assert failed == ["absolute_perplexity"]
    checks, _ = absolute_checks(answers, perplexity=math.nan, vocab_size=49152)
    assert [c.name for c in checks if not c.passed] == ["absolute_perplexity"]
    checks, _ = absolute_checks(answers, perplexity=20.0, vocab_size=49152)
    assert all(c.passed for c in checks)


def _reference(texts: dict[str, str], nll: float = 3.0) -> Reference:
    heldout = HeldoutScore(token_ids=list(range(21)), logprobs=[-nll] * 20)
    return Reference(
        key="k", model_hash="m", prompts_sha256="p", max_new_tokens=64, method="test",
        versions={}, compute_s=0.0, vocab_size=49152, provenance="hand-made",
        heldout=heldout,
        outputs=[
            ReferenceOutput(id=i, prompt_token_ids=[1], token_ids=_ids(t), text=t, script="LATIN")
            for i, t in texts.items()
        ],
    )  # fmt: skip


def _engine(texts: dict[str, str], nll: float = 3.0) -> EngineOutputs:
    heldout = HeldoutScore(token_ids=list(range(21)), logprobs=[-nll] * 20)
    return EngineOutputs(
        token_ids={i: _ids(t) for i, t in texts.items()}, texts=texts, heldout=heldout
    )


ANSWERS = {"p1": PROSE, "p2": "The capital of France is Paris, a large city on the Seine river."}


def test_a_degenerate_reference_is_unusable_whatever_the_engine() -> None:
    looping = {"p1": "clips " * 40, "p2": "clips " * 40}
    verdict = judge(_engine(looping), _reference(looping), "full")
    assert not verdict.passed and not verdict.reference_usable
    assert verdict.summary().startswith(REFERENCE_UNUSABLE)
    failed = [c.name for c in verdict.failed_checks]
    assert "reference_loop" in failed and "absolute_loop" in failed
    assert "chrf" not in [c.name for c in verdict.checks]  # nothing is compared with it


def test_a_reference_with_uniform_perplexity_is_unusable() -> None:
    verdict = judge(_engine(ANSWERS), _reference(ANSWERS, nll=math.log(49152)), "full")
    assert not verdict.reference_usable
    assert [c.name for c in verdict.failed_checks] == ["reference_perplexity"]


def test_the_engine_fails_absolute_checks_and_names_the_answer() -> None:
    engine = {**ANSWERS, "p2": ""}
    verdict = judge(_engine(engine), _reference(ANSWERS), "4bit")
    assert verdict.reference_usable and not verdict.passed
    [empty] = [c for c in verdict.failed_checks if c.name == "absolute_empty"]
    assert "p2" in empty.detail
    assert verdict.reference["provenance"] == "hand-made"


def test_a_healthy_engine_passes() -> None:
    verdict = judge(_engine(ANSWERS), _reference(ANSWERS), "full")
    assert verdict.passed, verdict.summary()


def test_one_degenerate_answer_in_ten_is_named_and_fails_only_above_4bit() -> None:
    answers = {f"p{i}": f"{PROSE} Answer number {i} is here." for i in range(10)}
    engine = {**answers, "p3": "Jupiter, with approximately 111" + ",000" * 40}
    for klass, passes in (("full", False), ("half", False), ("8bit", False), ("4bit", True)):
        verdict = judge(_engine(engine), _reference(answers), klass)
        [loop] = [c for c in verdict.checks if c.name == "absolute_loop"]
        assert loop.passed is passes, klass
        assert loop.value == pytest.approx(0.1) and "p3" in loop.detail
    two = {**engine, "p5": "clips " * 40}
    verdict = judge(_engine(two), _reference(answers), "4bit")
    assert "absolute_loop" in [c.name for c in verdict.failed_checks]


def test_one_odd_reference_answer_does_not_make_it_unusable() -> None:
    answers = {f"p{i}": f"{PROSE} Answer number {i} is here." for i in range(8)}
    odd = {**answers, "p0": "clips " * 40}
    assert judge(_engine(answers), _reference(odd), "4bit").reference_usable
    broken = {**odd, "p1": "clips " * 40, "p2": "of the " * 30}
    assert not judge(_engine(answers), _reference(broken), "4bit").reference_usable

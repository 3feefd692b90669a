"""Absolute checks: text no person would accept fails on its own, whatever the reference says.

Every answer (the engine's and, first, the reference's own) is looked at alone:

- ``empty``: no visible character;
- ``loop``: more than LOOP_SHARE_MAX of its tokens lie in one run that repeats a unit of at most
  LOOP_MAX_PERIOD tokens at least LOOP_MIN_REPEATS times ("clips clips clips", "1) 1) 1)");
- ``distinct``: distinct token bigrams (distinct-2) below DISTINCT2_MIN, for answers of at least
  MIN_TOKENS tokens;
- ``nonwords``: more than NONWORD_SHARE_MAX of its words are neither words nor numbers, for answers
  of at least MIN_WORDS words in a script that separates words with spaces;
- ``char_class``: letters are fewer than LETTER_SHARE_MIN of its visible characters, or it uses at
  most MIN_DISTINCT_CHARS distinct ones ("!!!!", "0 0 0"), for answers of at least MIN_CHARS;
- ``script``: fewer than SCRIPT_SHARE_MIN of its letters are in the script of its prompt (or the
  script the prompt set names for it).

The held-out text is judged in absolute terms too: a perplexity above
vocab^PERPLEXITY_VOCAB_EXPONENT means broken. Salad of real subword pieces ("clipsIsrael
ationsendeavour") has letters, words and varied bigrams: the perplexity check and the comparison
with the reference catch it, not these.

How the limits were chosen (``scripts/calibrate_absolute.py`` prints the figures; none of the
natural text is a model's output): natural text cut into windows of 128 tokens of the demo
model's tokenizer (the bench's answer length): the prompt sets' held-out passages, the package
descriptions of the installed Python distributions (2 983 windows of English prose with code, shell
commands and tables) and the message translations installed with Debian's packages (German, French,
Spanish, Russian, Chinese, Japanese, Greek, Arabic: 63 000 windows). Known-bad text: uniformly
random tokens, one token repeated, n-grams of 2-16 random tokens repeated, random digit and symbol
tokens, the "strugg (str, 1, 1) 1)" salad of README §1. Each limit passes at least 97.6 % of
every natural source's windows (most sources 99.9 %) and fails every loop, the salad and the
symbol text; the figures are in the constants' comments ("p1": the 1 % of windows on the bad
side).
"""

from __future__ import annotations

import itertools
import math
import unicodedata
from collections.abc import Sequence

from pydantic import BaseModel

from edgepack.quality.verdict import Check

LOOP_MAX_PERIOD = 16
"""Tokens in the repeated unit: "short n-gram" loops. Longer (sentence) loops are judged against the
reference (``looping_share``): a small model's greedy answer may legitimately restate a sentence."""
LOOP_MIN_REPEATS = 3
LOOP_SHARE_MAX = 0.5
"""Natural windows: p1 ≤ 0.13, the worst of 66 000 0.46 (a table's rules), none beyond; every loop
of a 1-16 token unit: 1.0."""
DISTINCT2_MIN = 0.25
"""Natural windows: p1 ≥ 0.35, 0.03 % (package descriptions) to 0.14 % (Chinese messages) below;
loops of a 16-token unit 0.13, the salad 0.10."""
NONWORD_SHARE_MAX = 0.9
"""Natural windows in spaced scripts: p1 ≤ 0.55 but for package descriptions (link and badge
tables: 2.4 % beyond); symbol junk such as "@@x $$z ^^v" fails here, random symbol tokens
(14 %) fail the letter share instead."""
LETTER_SHARE_MIN = 0.3
"""Natural windows: p1 ≥ 0.53 in every language, 0.34 in package descriptions (0.9 % below: code
and tables); random digit and symbol tokens: ≤ 0.01."""
MIN_DISTINCT_CHARS = 3
SCRIPT_SHARE_MIN = 0.2
"""Translated messages keep their language's script in all but 0.1-1.1 % of windows (untranslated
English entries inside Russian or Chinese catalogs); an English prompt answered in Cyrillic: 0."""
MIN_TOKENS = 16
MIN_WORDS = 8
MIN_CHARS = 20
"""Below these sizes distinct-n, non-word and character shares say nothing ("5", "Paris.")."""
PERPLEXITY_VOCAB_EXPONENT = 0.5
"""Held-out perplexity above vocab^0.5 is broken. Uniform guessing scores the vocabulary size
(49 152 for SmolLM2: ln V = 10.8 nats per token); a model that knows only how often each token
occurs (a unigram model) scores in the high hundreds on prose; healthy small LMs score tens (GPT-2
124M: ~30 on WikiText). vocab^0.5 (222 for SmolLM2, 1.6 k for a 2.6 M vocabulary) means the model
removed less than half of a uniform guess's uncertainty, in nats: worse than counting tokens."""

CRITERIA = ("empty", "loop", "distinct", "nonwords", "char_class", "script")


class AnswerFlags(BaseModel):
    """What the absolute checks measured on one answer, and which criteria it fails."""

    id: str
    loop_share: float
    distinct2: float | None
    nonword_share: float | None
    letter_share: float | None
    script_share: float | None
    failed: list[str]


def loop_share(tokens: Sequence[int]) -> float:
    """Share of tokens in the longest run repeating a unit of ≤ LOOP_MAX_PERIOD tokens at least
    LOOP_MIN_REPEATS times."""
    n = len(tokens)
    best = 0
    for period in range(1, min(LOOP_MAX_PERIOD, n // LOOP_MIN_REPEATS) + 1):
        run = 0
        for i in range(n - period):
            run = run + 1 if tokens[i] == tokens[i + period] else 0
            covered = run + period
            if covered >= LOOP_MIN_REPEATS * period:
                best = max(best, covered)
    return best / n if n else 0.0


def distinct2(tokens: Sequence[int]) -> float:
    grams = list(itertools.pairwise(tokens))
    return len(set(grams)) / len(grams) if grams else 1.0


_INNER = "'’-"
_NUMBER = set("0123456789.,:%/+-−×=°$€£")


def is_word(word: str) -> bool:
    """Letters (inner apostrophes, hyphens allowed) or a number, surrounding punctuation aside."""
    core = word.strip("\"'“”‘’«»()[]{}<>.,;:!?…*_`#")
    if not core:
        return False
    if all(ch.isalpha() or ch in _INNER for ch in core) and core[0].isalpha():
        return True
    return any(ch.isdigit() for ch in core) and all(ch in _NUMBER for ch in core)


def nonword_share(text: str) -> float:
    words = text.split()
    return sum(1 for word in words if not is_word(word)) / len(words) if words else 0.0


def letter_share(text: str) -> float:
    visible = [ch for ch in text if not ch.isspace()]
    return sum(1 for ch in visible if ch.isalpha()) / len(visible) if visible else 0.0


def script_of(character: str) -> str:
    """The first word of a letter's Unicode name (LATIN, CYRILLIC, CJK, HIRAGANA, ...)."""
    return unicodedata.name(character, "UNKNOWN").split()[0]


def dominant_script(text: str) -> str | None:
    counts: dict[str, int] = {}
    for ch in text:
        if ch.isalpha():
            counts[script_of(ch)] = counts.get(script_of(ch), 0) + 1
    return max(counts, key=lambda k: counts[k]) if counts else None


UNSPACED_SCRIPTS = {"CJK", "HIRAGANA", "KATAKANA", "THAI", "LAO", "KHMER", "MYANMAR", "TIBETAN"}
"""Scripts written without spaces between words: there a "word" of split() is a sentence."""


def spaced_script(script: str | None) -> bool:
    return script is not None and script not in UNSPACED_SCRIPTS


def scripts_of(script: str) -> set[str]:
    """Japanese writes in kanji (CJK) and kana together; every other script stands alone."""
    japanese = {"CJK", "HIRAGANA", "KATAKANA"}
    return japanese if script in japanese else {script}


def script_share(text: str, script: str) -> float | None:
    letters = [ch for ch in text if ch.isalpha()]
    if not letters:
        return None
    wanted = scripts_of(script)
    return sum(1 for ch in letters if script_of(ch) in wanted) / len(letters)


def flag_answer(
    answer_id: str, tokens: Sequence[int], text: str, script: str | None
) -> AnswerFlags:
    """Measure one answer; ``script``: the script it must be written in (None: any)."""
    visible = "".join(text.split())
    words = text.split()
    flags = AnswerFlags(
        id=answer_id,
        loop_share=loop_share(tokens),
        distinct2=distinct2(tokens) if len(tokens) >= MIN_TOKENS else None,
        nonword_share=nonword_share(text)
        if len(words) >= MIN_WORDS and spaced_script(dominant_script(text))
        else None,
        letter_share=letter_share(text) if len(visible) >= MIN_CHARS else None,
        script_share=script_share(text, script) if script else None,
        failed=[],
    )
    failed = []
    if not visible:
        failed.append("empty")
    if flags.loop_share > LOOP_SHARE_MAX:
        failed.append("loop")
    if flags.distinct2 is not None and flags.distinct2 < DISTINCT2_MIN:
        failed.append("distinct")
    if flags.nonword_share is not None and flags.nonword_share > NONWORD_SHARE_MAX:
        failed.append("nonwords")
    if flags.letter_share is not None and (
        flags.letter_share < LETTER_SHARE_MIN or len(set(visible)) <= MIN_DISTINCT_CHARS
    ):
        failed.append("char_class")
    if flags.script_share is not None and flags.script_share < SCRIPT_SHARE_MIN:
        failed.append("script")
    return flags.model_copy(update={"failed": failed})


def perplexity_limit(vocab_size: int) -> float:
    return math.exp(PERPLEXITY_VOCAB_EXPONENT * math.log(vocab_size))


CRITERION_DETAIL = {
    "empty": "answers with no visible text",
    "loop": f"answers more than {LOOP_SHARE_MAX:.0%} a loop of ≤ {LOOP_MAX_PERIOD} tokens",
    "distinct": f"answers whose distinct-2 is below {DISTINCT2_MIN}",
    "nonwords": f"answers more than {NONWORD_SHARE_MAX:.0%} non-words",
    "char_class": f"answers under {LETTER_SHARE_MIN:.0%} letters or of ≤ {MIN_DISTINCT_CHARS} "
    "distinct characters",
    "script": f"answers under {SCRIPT_SHARE_MIN:.0%} letters in their prompt's script",
}


class Answer(BaseModel):
    id: str
    token_ids: list[int]
    text: str
    script: str | None


REFERENCE_DEGENERATE_SHARE_MAX = 0.25
"""The reference is unusable when more than a quarter of its answers fail one criterion (a random
or broken model fails nearly all); one odd answer of a real model does not make it unusable."""


def absolute_checks(
    answers: Sequence[Answer],
    perplexity: float | None,
    vocab_size: int | None,
    prefix: str = "absolute",
    share_max: float = 0.0,
) -> tuple[list[Check], list[AnswerFlags]]:
    """One check per criterion (the share of answers failing it, at most ``share_max``) and the
    held-out perplexity against vocab^0.5; check names are ``<prefix>_<criterion>``. Every
    failing answer is named in its check's detail, passing or not."""
    flags = [flag_answer(a.id, a.token_ids, a.text, a.script) for a in answers]
    checks = []
    for criterion in CRITERIA:
        failing = [f.id for f in flags if criterion in f.failed]
        share = len(failing) / len(flags) if flags else 0.0
        detail = CRITERION_DETAIL[criterion] + (f": {', '.join(failing)}" if failing else "")
        checks.append(
            Check(
                name=f"{prefix}_{criterion}",
                value=share,
                limit=share_max,
                direction="max",
                passed=share <= share_max,
                detail=detail,
            )
        )
    if perplexity is not None and vocab_size:
        limit = perplexity_limit(vocab_size)
        checks.append(
            Check(
                name=f"{prefix}_perplexity",
                value=perplexity,
                limit=limit,
                direction="max",
                passed=perplexity <= limit,
                detail=f"held-out perplexity; uniform guessing scores {vocab_size}, the vocabulary",
            )
        )
    return checks, flags

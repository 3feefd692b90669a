#!/usr/bin/env python3
"""Figures behind the absolute checks' limits (edgepack/quality/absolute.py): their measures on
natural text that is not any model's output, and on known-bad text.

    python scripts/calibrate_absolute.py MODEL_DIR   # a folder with the tokenizer, e.g. the demo's

Natural text: the prompt sets' held-out passages, the package descriptions (METADATA) of the
installed Python distributions, and the message translations installed under /usr/share/locale
(gettext .mo files) in several languages. Each is cut into windows of 128 tokens.
"""

from __future__ import annotations

import gettext
import json
import random
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

from edgepack.quality.absolute import (
    DISTINCT2_MIN,
    LETTER_SHARE_MIN,
    LOOP_SHARE_MAX,
    NONWORD_SHARE_MAX,
    SCRIPT_SHARE_MIN,
    distinct2,
    dominant_script,
    letter_share,
    loop_share,
    nonword_share,
    script_share,
    spaced_script,
)
from edgepack.resources import data_dir

WINDOW = 128
LANGUAGES = {"de": "LATIN", "fr": "LATIN", "es": "LATIN", "ru": "CYRILLIC", "zh_CN": "CJK",
             "ja": "CJK", "el": "GREEK", "ar": "ARABIC"}  # fmt: skip
SALAD = "strugg (str, 1, 1, 1, 1) 1) 1) (str, 1) 1) 1, 1) 1) 1) strugg (str, 1, 1) 1) 1) 1)"


def metadata_texts() -> Iterator[tuple[str, str]]:
    for dist in metadata.distributions():
        body = dist.metadata.get_payload() or dist.metadata.get("Description") or ""  # type: ignore[attr-defined]
        if len(body) > 2000:
            yield f"pypi:{dist.metadata['Name']}", body


def translations(language: str) -> str:
    parts = []
    for mo in sorted(Path("/usr/share/locale", language, "LC_MESSAGES").glob("*.mo")):
        try:
            catalog = gettext.GNUTranslations(mo.open("rb"))
        except (OSError, UnicodeDecodeError):
            continue
        parts += [v for k, v in catalog._catalog.items() if k and isinstance(v, str)]  # type: ignore[attr-defined]
    return "\n".join(parts)


def windows(tokenizer, text: str) -> Iterator[list[int]]:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) < WINDOW:
        yield ids
    for start in range(0, len(ids) - WINDOW + 1, WINDOW):
        yield ids[start : start + WINDOW]


def measure(tokenizer, ids: list[int], script: str | None) -> dict[str, float]:
    text = tokenizer.decode(ids)
    share = script_share(text, script) if script else None
    return {
        "loop": loop_share(ids),
        "distinct2": distinct2(ids),
        "nonwords": nonword_share(text) if spaced_script(dominant_script(text)) else 0.0,
        "letters": letter_share(text),
        "script": 1.0 if share is None else share,
    }


HIGH_IS_BAD = {
    "loop": True,
    "distinct2": False,
    "nonwords": True,
    "letters": False,
    "script": False,
}


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summarize(name: str, rows: list[dict[str, float]], bad: bool = False) -> None:
    """Natural text: the 1st percentile on the bad side and the worst window; known-bad text:
    the median and the window that looks best."""
    if not rows:
        return
    cells = []
    for key, high_bad in HIGH_IS_BAD.items():
        values = [r[key] for r in rows]
        if bad:
            best = min(values) if high_bad else max(values)
            cells.append(f"{key}={quantile(values, 0.5):.2f}/{best:.2f}")
        else:
            worst = max(values) if high_bad else min(values)
            p1 = quantile(values, 0.99 if high_bad else 0.01)
            cells.append(f"{key}={p1:.2f}/{worst:.2f}")
    print(f"{name:20s} n={len(rows):5d} " + " ".join(cells))
    beyond = {key: sum(1 for r in rows if _fails(key, r[key])) / len(rows) for key in HIGH_IS_BAD}
    print(
        f"{'':20s} share beyond the limit: " + " ".join(f"{k}={v:.4f}" for k, v in beyond.items())
    )


def _fails(key: str, value: float) -> bool:
    limits = {"loop": LOOP_SHARE_MAX, "distinct2": DISTINCT2_MIN, "nonwords": NONWORD_SHARE_MAX,
              "letters": LETTER_SHARE_MIN, "script": SCRIPT_SHARE_MIN}  # fmt: skip
    return value > limits[key] if HIGH_IS_BAD[key] else value < limits[key]


def main(model_dir: str) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    print("natural text: 1st percentile on the bad side / worst window")
    natural: dict[str, list[dict[str, float]]] = {}
    for path in sorted(data_dir("prompts").glob("*.json")):
        heldout = json.loads(path.read_text()).get("heldout")
        if heldout:
            text = heldout["text"]
            natural[f"heldout:{path.stem}"] = [
                measure(tokenizer, w, dominant_script(text)) for w in windows(tokenizer, text)
            ]
    pypi = [
        measure(tokenizer, w, "LATIN") for _, t in metadata_texts() for w in windows(tokenizer, t)
    ]
    natural["pypi descriptions"] = pypi
    for language, script in LANGUAGES.items():
        text = translations(language)
        natural[f"locale:{language}"] = [
            measure(tokenizer, w, script) for w in windows(tokenizer, text)
        ]
    for name, rows in natural.items():
        summarize(name, rows)
    rng = random.Random(0)
    vocab = tokenizer.vocab_size
    bad: dict[str, list[dict[str, float]]] = {"random tokens": [], "one token": []}
    for _ in range(200):
        bad["random tokens"].append(
            measure(tokenizer, [rng.randrange(vocab) for _ in range(WINDOW)], None)
        )
        bad["one token"].append(measure(tokenizer, [rng.randrange(vocab)] * WINDOW, None))
    for n in (2, 4, 8, 16):
        rows = []
        for _ in range(100):
            unit = [rng.randrange(vocab) for _ in range(n)]
            rows.append(measure(tokenizer, (unit * WINDOW)[:WINDOW], None))
        bad[f"{n}-gram loop"] = rows
    symbols = [i for i in range(vocab) if not any(c.isalpha() for c in tokenizer.decode([i]))]
    bad["digits, symbols"] = [
        measure(tokenizer, [rng.choice(symbols) for _ in range(WINDOW)], None) for _ in range(100)
    ]
    salad = tokenizer(SALAD * 4, add_special_tokens=False)["input_ids"][:WINDOW]
    bad["salad"] = [measure(tokenizer, salad, "LATIN")]
    print("\nknown-bad text: median / best-looking window")
    for name, rows in bad.items():
        summarize(name, rows, bad=True)


if __name__ == "__main__":
    main(sys.argv[1])

"""What edgepack hands Edge-LLM's C++ tools on the device and how it reads what they write.

Written against Edge-LLM 0.11 (REFERENCE.md §12: ``examples/llm/llm_inference.cpp`` and
``INPUT_FORMAT.md`` for the request and response files, ``examples/utils/profileFormatter.cpp``
for ``--profileOutputFile``, ``examples/utils/benchLogger.cpp`` for ``llm_bench``'s summary).
Output these parsers do not recognise raises, naming the version they were written against: a
guessed number is worse than none.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from edgepack.backends.edgellm.toolchain import EDGELLM_VERSION
from edgepack.errors import RemoteError

WRITTEN_AGAINST = f"Edge-LLM {EDGELLM_VERSION}"
PREFILL_KEYS = ("computed_tokens", "average_time_per_run_ms", "tokens_per_second")
GENERATION_KEYS = ("generated_tokens", "tokens_per_second", "average_time_per_token_ms")
PEAK_KEYS = ("peak_unified_memory_bytes", "peak_gpu_memory_bytes")


def request_file(prompts: Sequence[str], max_new_tokens: int, batch_size: int) -> dict[str, Any]:
    """``llm_inference --inputFile``: greedy decoding (top_k 1) so answers are reproducible."""
    return {
        "batch_size": batch_size,
        "temperature": 1.0,
        "top_p": 1.0,
        "top_k": 1,
        "max_generate_length": max_new_tokens,
        "requests": [{"messages": [{"role": "user", "content": text}]} for text in prompts],
    }


def _unrecognised(what: str, detail: str) -> RemoteError:
    return RemoteError(
        f"{what} is not in the format edgepack reads ({WRITTEN_AGAINST}): {detail}",
        hint="the device's Edge-LLM differs from the pinned release; rebuild it at "
        f"v{EDGELLM_VERSION} or update edgepack",
    )


def _json(text: str, what: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError as error:
        raise _unrecognised(what, f"not JSON ({error})") from error
    if not isinstance(data, dict):
        raise _unrecognised(what, "not a JSON object")
    return data


def parse_answers(text: str, expected: int) -> list[str]:
    """``--outputFile``: ``responses[{output_text, request_idx, ...}]``, in request order."""
    data = _json(text, "llm_inference's output file")
    responses = data.get("responses")
    if not isinstance(responses, list) or not all(
        isinstance(r, dict) and "output_text" in r and "request_idx" in r for r in responses
    ):
        raise _unrecognised(
            "llm_inference's output file", "no responses[{output_text, request_idx}]"
        )
    ordered = sorted(responses, key=lambda r: int(r["request_idx"]))
    if [int(r["request_idx"]) for r in ordered] != list(range(expected)):
        raise _unrecognised(
            "llm_inference's output file", f"{len(responses)} answers for {expected} prompts"
        )
    return [str(r["output_text"]) for r in ordered]


def parse_profile(text: str) -> dict[str, Any]:
    """``--profileOutputFile``: prefill and generation figures and the peak memory."""
    data = _json(text, "llm_inference's profile")
    prefill, generation = data.get("prefill"), data.get("generation")
    missing = [
        f"prefill.{k}" for k in PREFILL_KEYS if not isinstance(prefill, dict) or k not in prefill
    ]
    missing += [
        f"generation.{k}"
        for k in GENERATION_KEYS
        if not isinstance(generation, dict) or k not in generation
    ]
    peak_key = next((key for key in PEAK_KEYS if key in data), None)
    if peak_key is None:
        missing.append(" or ".join(PEAK_KEYS))
    if missing:
        raise _unrecognised("llm_inference's profile", "missing " + ", ".join(missing))
    assert isinstance(prefill, dict) and isinstance(generation, dict) and peak_key
    return {
        "prefill_tokens": int(prefill["computed_tokens"]),
        "prefill_ms_per_run": float(prefill["average_time_per_run_ms"]),
        "prefill_tok_s": float(prefill["tokens_per_second"]),
        "generated_tokens": int(generation["generated_tokens"]),
        "decode_tok_s": float(generation["tokens_per_second"]),
        "decode_ms_per_token": float(generation["average_time_per_token_ms"]),
        "peak_memory_bytes": int(data[peak_key]),
        "peak_memory_kind": peak_key.removeprefix("peak_").removesuffix("_memory_bytes"),
        "stages": data.get("stages", []),
    }


_FIELD = re.compile(r"^([A-Za-z][\w ()/]*?):\s*(.+)$")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def parse_llm_bench(stdout: str) -> dict[str, Any]:
    """The ``=== Results Summary ===`` block of ``llm_bench``."""
    _, marker, block = stdout.partition("=== Results Summary ===")
    if not marker:
        raise _unrecognised("llm_bench's output", "no '=== Results Summary ===' block")
    fields: dict[str, str] = {}
    for line in block.splitlines():
        for part in line.split(", "):
            if match := _FIELD.match(part.strip()):
                fields.setdefault(match[1], match[2].strip())
    needed = ("Mode", "Batch Size", "E2E Time (actual performance)", "Tokens/sec (E2E)")
    missing = [name for name in needed if name not in fields]
    if missing:
        raise _unrecognised("llm_bench's output", "missing " + ", ".join(missing))
    e2e = _NUMBER.search(fields["E2E Time (actual performance)"])
    rate = _NUMBER.search(fields["Tokens/sec (E2E)"])
    if e2e is None or rate is None:
        raise _unrecognised("llm_bench's output", "E2E time or tokens/sec is not a number")
    result: dict[str, Any] = {
        "mode": fields["Mode"],
        "batch_size": int(fields["Batch Size"]),
        "e2e_ms": float(e2e[0]),
        "tokens_per_s": float(rate[0]),
    }
    for name, key in (
        ("PastKVLen", "past_kv_len"),
        ("OSL", "osl"),
        ("InputLen", "input_len"),
        ("ReuseKVLen", "reuse_kv_len"),
        ("Iterations", "iterations"),
    ):
        if name in fields and (number := _NUMBER.search(fields[name])):
            result[key] = int(number[0])
    _check_decode_rate(result)
    return result


def _check_decode_rate(result: dict[str, Any]) -> None:
    """benchLogger: decode tok/s = (osl > 1 ? osl - 1 : 1) * 1000 / e2e_ms (batch 1; how the
    figure scales with the batch is not recorded here, so only batch 1 is cross-checked)."""
    if result["mode"] != "decode" or "osl" not in result or result["batch_size"] != 1:
        return
    steps = result["osl"] - 1 if result["osl"] > 1 else 1
    expected = steps * 1000 / result["e2e_ms"] if result["e2e_ms"] > 0 else 0.0
    if abs(expected - result["tokens_per_s"]) > 0.02 * expected:
        raise _unrecognised(
            "llm_bench's output",
            f"Tokens/sec {result['tokens_per_s']} disagrees with E2E {result['e2e_ms']} ms "
            f"for OSL {result['osl']}",
        )

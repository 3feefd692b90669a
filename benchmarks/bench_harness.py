"""`edgepack bench`'s decode tok/s against a bare onnxruntime-genai loop on the same engine.

    python -m benchmarks run [--quick] bench_harness

The demo's int4 bundle (``common.demo_bundle``, cached) is loaded once; both sides drive that one
`onnxruntime_genai.Model`, greedy, 128 new tokens, on the same prompt token ids (the chat template
of the default prompt set's prompts):

- **bare**: the smallest loop a user would write — `GeneratorParams` with `min_length` forcing
  128 new tokens, `append_tokens`, then `generate_next_token` until `is_done`; decode tok/s =
  batch × 127 / the wall time from the first token to the last.
- **bench**: the call `edgepack bench` makes (`OrtEngine.generate`) and the figure it reports
  (`edgepack.bench.engine.decode_rate`). Batch 1 is a prompt whose own answer runs to 128 tokens
  (bench lets batch-1 answers stop at their end-of-sequence token); batch 3 is the prompt set's
  first batch, generated with end-of-sequence ignored as bench's batched runs are.
- **bench, EOS-stopped batch** (batch 3 only): the batched call as bench made it before issue #16
  (each answer stopping at its end-of-sequence token, the batch running until the longest ends).

Runs are interleaved (bare and bench alternate which goes first) so that load from elsewhere on the
machine hits both. Nothing is asserted: the raw samples go to the result file, and the report
compares each bench row with the bare loop's at the same batch.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import demo_bundle
from benchmarks.needs import require_module
from benchmarks.report import Row
from edgepack.bench.engine import decode_rate
from edgepack.bench.machine import engine_threads
from edgepack.errors import ToolFailedError
from edgepack.quality.prompts import PromptSet
from edgepack.resources import data_dir

NEW_TOKENS = 128
BATCH = 3
TABLE = "Harness: `edgepack bench` against a bare onnxruntime-genai loop (demo int4)"
SERIES = {
    "bench_1": ("edgepack bench: decode tok/s b1", "bare_1"),
    "bare_1": ("bare loop: decode tok/s b1", None),
    f"bench_{BATCH}": (f"edgepack bench: decode tok/s b{BATCH} (total)", f"bare_{BATCH}"),
    f"bench_eos_{BATCH}": (
        f"bench before #16, EOS-stopped batch: decode tok/s b{BATCH} (total)",
        f"bare_{BATCH}",
    ),
    f"bare_{BATCH}": (f"bare loop: decode tok/s b{BATCH} (total)", None),
}
"""Each series of samples: its row's label and the series it is compared with."""


def params(quick: bool) -> dict[str, Any]:
    return {"precision": "int4", "runs": 3 if quick else 10}


def bare_decode(model: Any, rows: list[list[int]], pad_id: int) -> float:
    """Decode tok/s of one fixed-length greedy generation in a plain onnxruntime-genai loop."""
    import numpy as np
    import onnxruntime_genai as og

    width = max(len(row) for row in rows)
    batch = np.full((len(rows), width), pad_id, dtype=np.int32)
    for index, row in enumerate(rows):
        batch[index, : len(row)] = row
    params = og.GeneratorParams(model)
    length = width + NEW_TOKENS
    params.set_search_options(
        batch_size=len(rows), max_length=length, min_length=length, do_sample=False
    )
    generator = og.Generator(model, params)
    generator.append_tokens(batch)
    generator.generate_next_token()
    first = time.perf_counter()
    while not generator.is_done():
        generator.generate_next_token()
    seconds = time.perf_counter() - first
    return len(rows) * (NEW_TOKENS - 1) / seconds


def long_answer_prompt(engine: Any, encoded: list[list[int]]) -> list[int]:
    """The first prompt whose own (EOS-stopping) answer runs to NEW_TOKENS tokens."""
    for prompt in encoded:
        if engine.generate([prompt], NEW_TOKENS).new_tokens[0] >= NEW_TOKENS:
            return prompt
    raise ToolFailedError(f"no prompt of the default set is answered with {NEW_TOKENS} tokens")


def _series(
    engine: Any, single: list[int], first_batch: list[list[int]]
) -> dict[str, Callable[[], float]]:
    pad_id = int(engine.pad_token_id)

    def bench(prompts: list[list[int]], ignore_eos: bool) -> Callable[[], float]:
        return lambda: decode_rate([engine.generate(prompts, NEW_TOKENS, ignore_eos=ignore_eos)])

    return {
        "bare_1": lambda: bare_decode(engine.model, [single], pad_id),
        "bench_1": bench([single], ignore_eos=False),
        f"bare_{BATCH}": lambda: bare_decode(engine.model, first_batch, pad_id),
        f"bench_{BATCH}": bench(first_batch, ignore_eos=True),
        f"bench_eos_{BATCH}": bench(first_batch, ignore_eos=False),
    }


def _interleaved(series: dict[str, Callable[[], float]], runs: int) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {name: [] for name in series}
    for sample in series.values():
        sample()  # warmup
    names = list(series)
    for run_index in range(runs):
        order = names if run_index % 2 == 0 else _swap_pairs(names)
        for name in order:
            samples[name].append(series[name]())
        print(f"run {run_index + 1}/{runs}:", {n: round(v[-1], 1) for n, v in samples.items()})
    return samples


def _swap_pairs(names: list[str]) -> list[str]:
    """bare/bench pairs in the other order, so neither side always runs first."""
    swapped = list(names)
    for index in range(0, len(swapped) - 1, 2):
        swapped[index], swapped[index + 1] = swapped[index + 1], swapped[index]
    return swapped


def measure(params: dict[str, Any], workdir: Path) -> dict[str, Any]:
    require_module("onnxruntime_genai", "pip install onnxruntime-genai")
    from edgepack.backends.ort.runner import OrtEngine

    bundle = demo_bundle(workdir, params["precision"])
    prompt_set = PromptSet.load(data_dir("prompts") / "default.json")
    load_before = os.getloadavg()[0]
    with OrtEngine.load(bundle / "engine", engine_threads()) as engine:
        encoded = [engine.encode_chat(prompt.text) for prompt in prompt_set.prompts]
        single = long_answer_prompt(engine, encoded)
        samples = _interleaved(_series(engine, single, encoded[:BATCH]), params["runs"])
    settings = {
        "bundle": str(bundle),
        "new_tokens": NEW_TOKENS,
        "greedy": True,
        "load_average_1min_before": load_before,
        "batch_1_prompt_tokens": len(single),
        f"batch_{BATCH}_prompt_tokens": [len(p) for p in encoded[:BATCH]],
    }
    return {"settings": settings, "samples": samples}


def rows(result: dict[str, Any]) -> list[Row]:
    """Decode tok/s of each series; a bench row's peer is the bare loop at its batch."""
    samples = result["data"]["samples"]
    found = []
    for series, (label, peer) in SERIES.items():
        peers = (SERIES[peer][0],) if peer else ()
        found.append(Row(TABLE, label, "tok/s", tuple(samples.get(series, ())), peers))
    return found

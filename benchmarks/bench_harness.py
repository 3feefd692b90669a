"""`edgepack bench`'s decode tok/s against a bare onnxruntime-genai loop on the same engine.

    python benchmarks/bench_harness.py [--runs 10] [--bundle DIR] [--out benchmarks/results]

The demo's int4 bundle (built with `edgepack build`, cached, unless `--bundle` names one) is loaded
once; both sides drive that one `onnxruntime_genai.Model`, greedy, 128 new tokens, on the same
prompt token ids (the chat template of the default prompt set's prompts):

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
machine hits both; each run gives one paired ratio bench / bare. Nothing is asserted: the figures
go to `bench_harness.json` (raw samples included) and `bench_harness.md`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.needs import require_module, run_main
from edgepack.bench.engine import decode_rate
from edgepack.bench.machine import engine_threads, machine_facts
from edgepack.bench.stats import Spread
from edgepack.errors import ToolFailedError
from edgepack.quality.prompts import PromptSet
from edgepack.resources import data_dir

NAME = "bench_harness"
NEW_TOKENS = 128
BATCH = 3
RUNS, QUICK_RUNS = 10, 3
WORKDIR = Path("benchmark-work") / NAME
RESULTS = Path(__file__).resolve().parent / "results"


def build_bundle(output: Path) -> Path:
    """The demo's int4 bundle for this machine, through edgepack's stage cache."""
    command = [sys.executable, "-m", "edgepack", "build", "--target", "host-x86_64-cpu",
               "--precision", "int4", "--model", "demo:smollm2-135m",
               "--output", str(output)]  # fmt: skip
    print("$", " ".join(command), flush=True)
    built = subprocess.run(command, capture_output=True, text=True, check=False)
    if built.returncode != 0:
        tail = (built.stderr.strip().splitlines() or ["no output"])[-1]
        raise ToolFailedError(f"edgepack build failed: {tail}")
    return output


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
    for measure in series.values():
        measure()  # warmup
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


def _row(batch: int, bare: list[float], bench: list[float], what: str) -> dict[str, Any]:
    ratios = [b / a for a, b in zip(bare, bench, strict=True)]
    return {
        "batch": batch,
        "bench": what,
        "bare_tok_s": Spread.of(bare).model_dump(),
        "bench_tok_s": Spread.of(bench).model_dump(),
        "ratio": Spread.of(ratios).model_dump(),
    }


def measure(bundle: Path, runs: int) -> dict[str, Any]:
    from edgepack.backends.ort.runner import OrtEngine

    require_module("onnxruntime_genai", "pip install onnxruntime-genai")
    prompt_set = PromptSet.load(data_dir("prompts") / "default.json")
    threads = engine_threads()
    load_before = os.getloadavg()[0]
    with OrtEngine.load(bundle / "engine", threads) as engine:
        encoded = [engine.encode_chat(prompt.text) for prompt in prompt_set.prompts]
        single = long_answer_prompt(engine, encoded)
        samples = _interleaved(_series(engine, single, encoded[:BATCH]), runs)
    rows = [
        _row(1, samples["bare_1"], samples["bench_1"], "bench"),
        _row(BATCH, samples[f"bare_{BATCH}"], samples[f"bench_{BATCH}"], "bench"),
        _row(BATCH, samples[f"bare_{BATCH}"], samples[f"bench_eos_{BATCH}"], "EOS-stopped batch"),
    ]
    return {
        "name": NAME,
        "machine": machine_facts(),
        "settings": {
            "bundle": str(bundle),
            "threads": threads,
            "runs": runs,
            "new_tokens": NEW_TOKENS,
            "greedy": True,
            "load_average_1min": [load_before, os.getloadavg()[0]],
            "batch_1_prompt_tokens": len(single),
            f"batch_{BATCH}_prompt_tokens": [len(p) for p in encoded[:BATCH]],
        },
        "rows": rows,
        "raw": samples,
    }


def run(quick: bool, bundle: Path | None = None) -> dict[str, Any]:
    """Measure (3 runs when ``quick``, else 10); builds the demo's int4 bundle unless given."""
    return measure(bundle or build_bundle(WORKDIR / "int4"), QUICK_RUNS if quick else RUNS)


def _cell(spread: dict[str, Any], fmt: str) -> str:
    low, median, high = (fmt.format(spread[key]) for key in ("min", "median", "max"))
    return f"{median} ({low}–{high})"


def markdown(result: dict[str, Any]) -> str:
    settings, machine = result["settings"], result["machine"]
    load = settings["load_average_1min"]
    lines = [
        "# `edgepack bench` against a bare onnxruntime-genai loop",
        "",
        f"{machine['cpu_model']}, {settings['threads']} threads, onnxruntime-genai "
        f"{machine['libraries'].get('onnxruntime-genai', '?')}; demo int4 engine; greedy, "
        f"{settings['new_tokens']} new tokens; n = {settings['runs']} interleaved runs a side; "
        "median (min–max). Ratio: per run, bench / bare. The machine's 1-minute load average "
        f"went from {load[0]:.1f} to {load[1]:.1f} on {machine['usable_cores']} cores (other "
        "work shares them: the spread is theirs). Written by `benchmarks/bench_harness.py`.",
        "",
        "| batch | bench figure | bare loop tok/s | bench tok/s | ratio bench / bare |",
        "|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['batch']} | {row['bench']} | {_cell(row['bare_tok_s'], '{:.1f}')} | "
            f"{_cell(row['bench_tok_s'], '{:.1f}')} | {_cell(row['ratio'], '{:.3f}')} |"
        )
    return "\n".join(lines) + "\n"


def write(result: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{NAME}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"{NAME}.md").write_text(markdown(result))
    print(f"wrote {out / NAME}.json and .md")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=RUNS)
    parser.add_argument(
        "--bundle", type=Path, help="an int4 ort bundle (default: build the demo's)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    result = measure(args.bundle or build_bundle(WORKDIR / "int4"), args.runs)
    write(result, args.out)
    print(markdown(result))


if __name__ == "__main__":
    run_main(main)

"""Benchmark a bundle on this machine: load times, TTFT, prefill and decode speed, memory, texts.

Procedure: verify the bundle; time a first load with the engine files evicted from the page cache,
then warm loads; warm up; then ``runs`` repetitions, each generating every prompt alone (batch 1,
each answer stopping at its end-of-sequence token: these are the answers the gate judges) and
every prompt again in batches of ``batch_size`` with end-of-sequence ignored, so that every
sequence of a batch makes ``max_new_tokens`` and no decode step is spent on a finished one (a
static batch runs until its longest answer ends; README, "What bench's tok/s count"). One run is
one sample of each figure (totals over its prompts), so the spread shows run-to-run noise; the
per-prompt numbers are kept raw.
"""

from __future__ import annotations

import hashlib
import os
import resource
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edgepack.bench.engine import BenchEngine, GenerationSample, PromptT, decode_rate
from edgepack.bench.machine import machine_facts
from edgepack.bench.result import (
    BenchSettings,
    LoadTimes,
    Metrics,
    PromptOutput,
    RunResult,
)
from edgepack.bench.stats import Spread
from edgepack.bundle import Manifest, bundle_summary, verify_bundle
from edgepack.errors import BadInputError
from edgepack.quality.prompts import Prompt, PromptSet
from edgepack.quality.reference import HeldoutScore

WARM_LOADS = 2


@dataclass(frozen=True)
class BenchOptions:
    runs: int = 3
    warmup: int = 1
    batch_size: int = 3
    max_new_tokens: int = 128
    prompts_file: Path | None = None

    def problems(self) -> list[str]:
        checks = {
            "--runs": self.runs,
            "--batch-size": self.batch_size,
            "--max-new-tokens": self.max_new_tokens,
        }
        found = [f"{flag} must be at least 1" for flag, value in checks.items() if value < 1]
        if self.warmup < 0:
            found.append("--warmup cannot be negative")
        return found


ProgressCallback = Callable[[str, int, int], None]
"""(phase, done, total)"""


def drop_from_page_cache(directory: Path) -> bool:
    """Ask the kernel to drop the cached pages of every file (clean pages only; no root needed)."""
    if not hasattr(os, "posix_fadvise"):
        return False
    for file in directory.rglob("*"):
        if file.is_file():
            fd = os.open(file, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
    return True


EngineLoaderFor = Callable[[Manifest, Path], Callable[[], BenchEngine[list[int]]]]
"""How a bundle's engine is opened: (manifest, engine folder) → loader; from the backend."""


def bench_bundle(
    bundle_dir: Path,
    options: BenchOptions,
    loader_for: EngineLoaderFor,
    progress: ProgressCallback = lambda *a: None,
) -> RunResult:
    manifest = verify_bundle(bundle_dir)
    engine_dir = bundle_dir / manifest.engine_dir
    loader = loader_for(manifest, engine_dir)
    cold = drop_from_page_cache(engine_dir)
    return measure_engine(
        loader,
        options.prompts_file or bundle_dir / manifest.prompts_file,
        options,
        {"dir": str(bundle_dir.resolve()), **bundle_summary(manifest)},
        "dropped" if cold else "unknown",
        progress,
    )


def measure_engine(
    load: Callable[[], BenchEngine[PromptT]],
    prompts_path: Path,
    options: BenchOptions,
    bundle: dict[str, Any],
    first_page_cache: str,
    progress: ProgressCallback = lambda *a: None,
) -> RunResult:
    """Loads (first, then warm), warmup, ``runs`` measured repetitions, held-out scoring."""
    problems = options.problems()
    if problems:
        raise BadInputError("; ".join(problems))
    prompt_set = PromptSet.load(prompts_path)
    progress("loading engine", 0, 1 + WARM_LOADS)
    first_load_s = load().load_s
    warm_loads = []
    engine = None
    for index in range(WARM_LOADS):
        engine = None  # release the previous engine before loading the next
        engine = load()
        warm_loads.append(engine.load_s)
        progress("loading engine", 2 + index, 1 + WARM_LOADS)
    assert engine is not None  # WARM_LOADS >= 1
    if not engine.supports_batching:
        options = replace(options, batch_size=1)
    encoded = [engine.encode_chat(p.text) for p in prompt_set.prompts]
    runs = _measure(engine, encoded, options, progress)
    return RunResult(
        location="local",
        bundle=bundle,
        machine=machine_facts(),
        settings=BenchSettings(
            runs=options.runs,
            warmup=options.warmup,
            batch_size=options.batch_size,
            max_new_tokens=options.max_new_tokens,
            prompts_file=str(prompts_path),
            prompts_sha256=hashlib.sha256(prompts_path.read_bytes()).hexdigest(),
            threads=getattr(engine, "threads", None),
        ),
        load=LoadTimes(
            first_s=first_load_s, first_page_cache=first_page_cache, warm=Spread.of(warm_loads)
        ),
        metrics=_metrics(runs, options.batch_size),
        outputs=_outputs(prompt_set.prompts, runs[-1].single),
        heldout=_score_heldout(engine, prompt_set),
        raw={"runs": [run.raw() for run in runs]},
    )


@dataclass
class _RunSamples:
    single: list[GenerationSample]
    batched: list[GenerationSample]

    def raw(self) -> dict[str, Any]:
        def rows(samples: list[GenerationSample]) -> list[dict[str, Any]]:
            return [
                {
                    "prompt_tokens": s.prompt_tokens,
                    "new_tokens": s.new_tokens,
                    "ttft_s": s.ttft_s,
                    "decode_s": s.decode_s,
                    "total_s": s.total_s,
                }
                for s in samples
            ]

        return {"single": rows(self.single), "batched": rows(self.batched)}


def _score_heldout(engine: BenchEngine[PromptT], prompt_set: PromptSet) -> HeldoutScore | None:
    scored = None if prompt_set.heldout is None else engine.score_text(prompt_set.heldout.text)
    return None if scored is None else HeldoutScore(token_ids=scored[0], logprobs=scored[1])


def _measure(
    engine: BenchEngine[PromptT],
    encoded: list[PromptT],
    options: BenchOptions,
    progress: ProgressCallback,
) -> list[_RunSamples]:
    for index in range(options.warmup):
        progress("warmup", index, options.warmup)
        engine.generate([encoded[0]], options.max_new_tokens)
    batches = (
        [
            encoded[start : start + options.batch_size]
            for start in range(0, len(encoded), options.batch_size)
        ]
        if options.batch_size > 1
        else []
    )
    steps_per_run = len(encoded) + len(batches)
    total = options.runs * steps_per_run
    runs = []
    for run_index in range(options.runs):
        done = run_index * steps_per_run
        single = []
        for offset, prompt in enumerate(encoded):
            progress("generating", done + offset, total)
            single.append(engine.generate([prompt], options.max_new_tokens))
        batched = []
        for offset, batch in enumerate(batches):
            progress("generating batched", done + len(encoded) + offset, total)
            batched.append(engine.generate(batch, options.max_new_tokens, ignore_eos=True))
        runs.append(_RunSamples(single, batched))
    progress("generating", total, total)
    return runs


def _metrics(runs: list[_RunSamples], batch_size: int) -> Metrics:
    def per_run(value: Callable[[_RunSamples], float]) -> Spread:
        return Spread.of([value(run) for run in runs])

    def mean(values: list[float]) -> float:
        return sum(values) / len(values)

    batched = batch_size > 1
    return Metrics(
        ttft_s=per_run(lambda r: mean([s.ttft_s for s in r.single])),
        prefill_tok_s=per_run(
            lambda r: sum(sum(s.prompt_tokens) for s in r.single) / sum(s.ttft_s for s in r.single)
        ),
        decode_tok_s=per_run(lambda r: decode_rate(r.single)),
        decode_tok_s_batched=per_run(lambda r: decode_rate(r.batched)) if batched else None,
        e2e_s=per_run(lambda r: mean([s.total_s for s in r.single])),
        batched_e2e_s=per_run(lambda r: mean([s.total_s for s in r.batched])) if batched else None,
        peak_rss_bytes=_peak_rss_bytes(),
    )


def _peak_rss_bytes() -> int:
    usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(usage) * 1024  # Linux reports KiB


def _outputs(prompts: list[Prompt], samples: list[GenerationSample]) -> list[PromptOutput]:
    return [
        PromptOutput(
            id=prompt.id,
            prompt=prompt.text,
            text=sample.texts[0],
            prompt_tokens=sample.prompt_tokens[0],
            new_tokens=sample.new_tokens[0],
            token_ids=sample.output_token_ids[0],
        )
        for prompt, sample in zip(prompts, samples, strict=True)
    ]

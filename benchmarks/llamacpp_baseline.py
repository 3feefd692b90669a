"""A llama.cpp baseline on the demo model's own Q4_1 GGUF, written as an edgepack run result.

    pip install llama-cpp-python        # compiles llama.cpp (~10 minutes on two cores)
    python benchmarks/llamacpp_baseline.py [--runs 3] [--out runs/llamacpp-q4_1.json]
    edgepack report runs/smollm2-…-int4-….json runs/llamacpp-q4_1.json   # cross-engine rows

Same prompt set, same chat template token ids (llama.cpp tokenizes the rendered template itself),
greedy, 128 new tokens, batch 1 (llama-cpp-python has no batched generation). The result is judged
by the same quality gate as the edgepack engines when `--bundle` names a demo bundle.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.needs import require_module, run_main
from edgepack.bench.machine import machine_facts
from edgepack.bench.result import BenchSettings, LoadTimes, Metrics, PromptOutput, RunResult
from edgepack.bench.stats import Spread
from edgepack.bundle import read_manifest
from edgepack.demo import get_demo_model, locate_gguf
from edgepack.quality.prompts import PromptSet
from edgepack.resources import data_dir


def load(gguf: Path, threads: int) -> tuple[Any, float]:
    from llama_cpp import Llama

    started = time.perf_counter()
    model = Llama(model_path=str(gguf), n_ctx=2048, n_threads=threads, verbose=False)
    return model, time.perf_counter() - started


def generate(model: Any, prompt_ids: list[int], max_new_tokens: int) -> dict[str, Any]:
    """Greedy generation with the first token timed apart from the rest."""
    model.reset()
    started = time.perf_counter()
    tokens: list[int] = []
    first = started
    for token in model.generate(prompt_ids, top_k=1, top_p=1.0, temp=0.0, reset=True):
        if not tokens:
            first = time.perf_counter()
        if token == model.token_eos():
            break
        tokens.append(int(token))
        if len(tokens) >= max_new_tokens:
            break
    finished = time.perf_counter()
    return {
        "ids": tokens,
        "ttft_s": first - started,
        "decode_s": finished - first,
        "total_s": finished - started,
        "prompt_tokens": len(prompt_ids),
    }


def chat_ids(model: Any, tokenizer_dir: Path, text: str) -> list[int]:
    from edgepack.bench.chat import render_chat_template

    rendered = render_chat_template(tokenizer_dir, [{"role": "user", "content": text}])
    return [int(t) for t in model.tokenize(rendered.encode(), add_bos=False, special=True)]


def measure(args: argparse.Namespace) -> RunResult:
    gguf = locate_gguf(get_demo_model("smollm2-135m"))
    prompts_file = data_dir("prompts") / "default.json"
    prompt_set = PromptSet.load(prompts_file)
    model, first_load = load(gguf, args.threads)
    warm = [load(gguf, args.threads)[1] for _ in range(2)]
    encoded = [chat_ids(model, args.bundle / "engine", p.text) for p in prompt_set.prompts]
    generate(model, encoded[0], args.max_new_tokens)  # warmup
    runs = [
        [generate(model, ids, args.max_new_tokens) for ids in encoded] for _ in range(args.runs)
    ]
    return RunResult(
        location="local",
        bundle={
            "dir": str(gguf),
            "bundle_id": hashlib.sha256(gguf.read_bytes()).hexdigest(),
            "model": "smollm2-135m-instruct",
            "target": "host-x86_64-cpu",
            "backend": "llama.cpp",
            "precision": "q4_1",
            "engine_bytes": gguf.stat().st_size,
        },
        machine=machine_facts() | {"libraries": {"llama-cpp-python": _version()}},
        settings=BenchSettings(
            runs=args.runs,
            warmup=1,
            batch_size=1,
            max_new_tokens=args.max_new_tokens,
            prompts_file=str(prompts_file),
            prompts_sha256=hashlib.sha256(prompts_file.read_bytes()).hexdigest(),
        ),
        load=LoadTimes(first_s=first_load, first_page_cache="unknown", warm=Spread.of(warm)),
        metrics=_metrics(runs),
        outputs=[
            PromptOutput(
                id=p.id,
                prompt=p.text,
                text=model.detokenize(s["ids"]).decode(errors="replace"),
                prompt_tokens=s["prompt_tokens"],
                new_tokens=len(s["ids"]),
                token_ids=s["ids"],
            )
            for p, s in zip(prompt_set.prompts, runs[-1], strict=True)
        ],
        raw={"runs": runs},
    )


def _metrics(runs: list[list[dict[str, Any]]]) -> Metrics:
    def per_run(value: Any) -> Spread:
        return Spread.of([value(run) for run in runs])

    return Metrics(
        ttft_s=per_run(lambda r: statistics.fmean(s["ttft_s"] for s in r)),
        prefill_tok_s=per_run(
            lambda r: sum(s["prompt_tokens"] for s in r) / sum(s["ttft_s"] for s in r)
        ),
        decode_tok_s=per_run(
            lambda r: sum(max(len(s["ids"]) - 1, 0) for s in r) / sum(s["decode_s"] for s in r)
        ),
        decode_tok_s_batched=None,
        e2e_s=per_run(lambda r: statistics.fmean(s["total_s"] for s in r)),
        batched_e2e_s=None,
        peak_rss_bytes=0,
    )


def _version() -> str:
    import llama_cpp

    return str(llama_cpp.__version__)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--bundle",
        type=Path,
        required=True,
        help="a demo bundle: its chat template, and its reference for the gate",
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--out", type=Path, default=Path("runs/llamacpp-q4_1.json"))
    args = parser.parse_args()
    require_module("llama_cpp", "pip install llama-cpp-python (it compiles llama.cpp)")
    result = measure(args)
    from edgepack.bench.gating import apply_gate
    from edgepack.cache import default_cache_root
    from edgepack.quality.thresholds import GateConfig

    manifest = read_manifest(args.bundle)
    judged = apply_gate(
        result,
        manifest.model_copy(update={"recipe": {**manifest.recipe, "precision": "int4"}}),
        args.bundle / "prompts.json",
        default_cache_root(),
        GateConfig(),
    )
    judged.save(args.out)
    print(
        f"decode {judged.metrics.decode_tok_s.median:.1f} tok/s, quality "
        f"{judged.quality.summary() if judged.quality else 'none'}; written to {args.out}"
    )


if __name__ == "__main__":
    run_main(main)

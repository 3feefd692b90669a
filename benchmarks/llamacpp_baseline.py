"""llama.cpp on the demo model's own Q4_1 GGUF, through ``edgepack bench --engine llamacpp``.

    pip install llama-cpp-python        # compiles llama.cpp (~10 minutes on two cores)
    python -m benchmarks run [--quick] llamacpp_baseline

The same harness as the edgepack engines: the same prompt set and chat template token ids, greedy,
the same threads (``engine_threads``), judged by the same quality gate against the demo model's
reference. Its ``data`` is that run result (``edgepack report`` puts it beside the engines' runs)
and the plan's memory bandwidth, for the roofline.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.common import DEMO_MODEL, TARGET, edgepack, last_line
from benchmarks.demo_precisions import LLAMA_CPP, TABLE
from benchmarks.needs import fail, require_module
from benchmarks.report import Row


def params(quick: bool) -> dict[str, Any]:
    return {"runs": 2 if quick else 5, "max_new_tokens": 32 if quick else 128}


def measure(params: dict[str, Any], workdir: Path) -> dict[str, Any]:
    from edgepack.demo import get_demo_model, locate_gguf

    require_module("llama_cpp", "pip install llama-cpp-python (it compiles llama.cpp)")
    run_file = workdir / "llamacpp-q4_1.json"
    gguf = locate_gguf(get_demo_model(DEMO_MODEL.partition(":")[2]))
    benched = edgepack("bench", "--engine", "llamacpp", "--gguf", str(gguf), "--reference-model",
                       DEMO_MODEL, "--runs", str(params["runs"]), "--warmup", "1",
                       "--max-new-tokens", str(params["max_new_tokens"]),
                       "--json-out", str(run_file))  # fmt: skip
    if not run_file.is_file():
        fail(f"the llama.cpp bench failed: {last_line(benched.stderr)}", benched.returncode or 1)
    planned = edgepack("plan", "--target", TARGET, "--precision", "int4", "--model", DEMO_MODEL,
                       "--json")  # fmt: skip
    bandwidth = json.loads(planned.stdout)["roofline"]["bandwidth_gbps"] if planned.stdout else None
    return {"run": json.loads(run_file.read_text()), "bandwidth_gbps": bandwidth}


def rows(result: dict[str, Any]) -> list[Row]:
    """Decode at batch 1 (llama-cpp-python has no batched generation) and TTFT; the roofline
    reads the whole GGUF once a step."""
    run, bandwidth = result["data"]["run"], result["data"].get("bandwidth_gbps")
    ceiling = bandwidth * 1e9 / run["bundle"]["engine_bytes"] if bandwidth else None
    metrics = run["metrics"]
    decode = tuple(metrics["decode_tok_s"]["samples"])
    ttft = tuple(metrics["ttft_s"]["samples"])
    return [Row(TABLE, LLAMA_CPP, "tok/s", decode, ceiling=ceiling),
            Row(TABLE, "llama.cpp q4_1: TTFT", "s", ttft, higher_is_better=False)]  # fmt: skip

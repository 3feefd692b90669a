"""The recipe space of the default CPU engine (ort int4), one factor at a time around the default.

    python -m benchmarks run [--quick] ort_recipes

Each recipe is a copy of the built-in host-x86_64-cpu profile with a ``[recipe.ort]`` table, in a
directory given to ``edgepack build --targets-dir`` (the default recipe is the built-in profile
itself); the bundle is benched with ``edgepack bench`` (quality gate included), as a user would.
Builds are cached by the stage cache, so a second run only benches. llama.cpp on the demo's Q4_1
GGUF is measured in the same run (``llamacpp_baseline.measure``) and is every row's peer.
Nothing is asserted.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from benchmarks import llamacpp_baseline
from benchmarks.common import TARGET
from benchmarks.demo_precisions import measure_one
from benchmarks.report import Row

TABLE = "CPU engine recipes: ort int4, one factor at a time around the default"
DEFAULT = "default"
RECIPES: dict[str, dict[str, int | str | bool]] = {
    DEFAULT: {},
    "int4 lm_head": {"lm_head": "int4"},
    "rtn, int4 lm_head": {"algorithm": "default", "lm_head": "int4"},
    "block 64, rtn, int4 lm_head": {"block_size": 64, "algorithm": "default", "lm_head": "int4"},
    "block 128, rtn, int4 lm_head": {"block_size": 128, "algorithm": "default", "lm_head": "int4"},
    "asymmetric (zero points)": {"symmetric": False},
    "embedding not shared (unquantized)": {"shared_embeddings": False},
    "1 intra-op thread": {"intra_op_threads": 1},
    "graph optimisation basic": {"graph_optimization": "basic"},
}
"""Each recipe's ``[recipe.ort]`` keys (edgepack.targets.OrtRecipe); the default sets none:
block 32, accuracy level 4 (int8 activations), symmetric, k_quant, int8 lm_head, the tied
embedding shared with it, one thread per physical core, every graph optimisation.

Block sizes are measured with the builder's default (RTN) quantizer and an int4 lm_head, beside
the same at block 32, because on the demo model (onnxruntime-genai 0.18, onnxruntime 1.32)
k_quant fails at block 64 and 128 ("cannot reshape array of size 4320 into shape (960,newaxis)"
on the fused QKV MatMul) and the default quantizer with the int8 lm_head builds an engine that
does not load (the profile refuses that pair). Accuracy level 1 (fp32 activations) was left out:
its bench had not finished after 13 minutes where the default's takes 1.5."""
QUICK = (DEFAULT, "block 128, rtn, int4 lm_head")
LLAMA_CPP = "llama.cpp q4_1 (same run): decode tok/s b1"


def params(quick: bool) -> dict[str, Any]:
    return {
        "recipes": list(QUICK if quick else RECIPES),
        "runs": 2 if quick else 5,
        "llamacpp": llamacpp_baseline.params(quick),
    }


def toml_value(value: int | str | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return f'"{value}"' if isinstance(value, str) else str(value)


def recipe_profile(keys: dict[str, int | str | bool], directory: Path) -> Path | None:
    """A targets directory whose TARGET profile is the built-in one plus ``[recipe.ort]``."""
    from edgepack.resources import data_dir

    if not keys:
        return None
    directory.mkdir(parents=True, exist_ok=True)
    table = "".join(f"{key} = {toml_value(value)}\n" for key, value in keys.items())
    builtin = (data_dir("targets") / f"{TARGET}.toml").read_text(encoding="utf-8")
    (directory / f"{TARGET}.toml").write_text(f"{builtin}\n[recipe.ort]\n{table}", "utf-8")
    return directory


def measure(params: dict[str, Any], workdir: Path) -> dict[str, Any]:
    peer = llamacpp_baseline.measure(params["llamacpp"], workdir / "llamacpp")
    entries = []
    for name in params["recipes"]:
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        targets = recipe_profile(RECIPES[name], workdir / "targets" / slug)
        load_before = os.getloadavg()[0]
        entry = measure_one("int4", workdir, params["runs"], slug, targets)
        load = {"before": load_before, "after": os.getloadavg()[0]}
        entries.append({"recipe": name, "keys": RECIPES[name], "load_average": load, **entry})
    return {"llamacpp": peer, "recipes": entries}


def recipe_rows(entry: dict[str, Any]) -> list[Row]:
    """Decode b1 and b3 against llama.cpp b1, TTFT and engine size, for one recipe."""
    name = entry["recipe"] + (" (the default)" if entry["recipe"] == DEFAULT else "")
    if "run" not in entry:
        return [Row(TABLE, name, "", (), note=f"failed: {entry['error']}")]
    run = entry["run"]
    if run.get("quality") and not run["quality"]["passed"]:
        name += " [quality gate FAILED]"
    metrics, batch = run["metrics"], run["settings"].get("batch_size", 1)
    batched = tuple((metrics.get("decode_tok_s_batched") or {}).get("samples", ()))
    return [
        Row(TABLE, f"{name}: decode tok/s b1", "tok/s",
            tuple(metrics["decode_tok_s"]["samples"]), (LLAMA_CPP,)),
        Row(TABLE, f"{name}: decode tok/s b{batch} (total)", "tok/s", batched, (LLAMA_CPP,)),
        Row(TABLE, f"{name}: TTFT", "s", tuple(metrics["ttft_s"]["samples"]),
            higher_is_better=False),
        Row(TABLE, f"{name}: engine size", "MB", (entry["engine_bytes"] / 1e6,),
            higher_is_better=False),
    ]  # fmt: skip


def rows(result: dict[str, Any]) -> list[Row]:
    peer = result["data"]["llamacpp"]["run"]["metrics"]["decode_tok_s"]["samples"]
    found = [Row(TABLE, LLAMA_CPP, "tok/s", tuple(peer))]
    for entry in result["data"]["recipes"]:
        found += recipe_rows(entry)
    return found

"""Work that runs inside the Edge-LLM tool environment: ``<toolenv>/bin/python worker.py JOB.json``.

This file is run by path with the tool environment's interpreter, where edgepack itself is not
installed: it imports only the standard library and what that environment pins (torch,
transformers, onnx, ModelOpt, tensorrt_edgellm). Two jobs:

- ``quantize``: Edge-LLM's own ``quantize_and_export`` (the code of ``tensorrt-edgellm-quantize
  llm``), calibrated on the given prompts, on CUDA where the host has it and on the CPU otherwise
  (ModelOpt's fake quantization); it writes the unified Hugging Face checkpoint the export reads.
- ``inspect``: what an exported ``llm/`` directory holds, for edgepack to judge: the ONNX graph's
  operators and domains, its inputs and outputs, the dtypes of its weight initializers, the
  runtime ``config.json`` and every file's size. The ONNX is read without its external data.
"""

from __future__ import annotations

import collections
import json
import sys
import time
from pathlib import Path
from typing import Any

ONNX_TYPE_NAMES = {
    1: "float32",
    3: "int8",
    6: "int32",
    7: "int64",
    10: "float16",
    16: "bfloat16",
    17: "float8e4m3fn",
    22: "int4",
    23: "float4e2m1",
}


def quantize(job: dict[str, Any]) -> dict[str, Any]:
    import torch
    from tensorrt_edgellm.quantization.quantize import quantize_and_export

    prompts = [p["text"] for p in json.loads(Path(job["prompts"]).read_text())["prompts"]]

    def calibration_texts() -> Any:
        yield from prompts

    device = "cuda" if torch.cuda.is_available() else "cpu"
    started = time.perf_counter()
    quantize_and_export(
        model_dir=job["model_dir"],
        output_dir=job["output_dir"],
        quantization=job["quantization"],
        kv_cache_quantization=job.get("kv_cache_quantization"),
        dtype="fp16",
        device=device,
        text_dataset=calibration_texts,
        num_samples=len(prompts),
    )
    quant_config = Path(job["output_dir"]) / "hf_quant_config.json"
    return {
        "device": device,
        "wall_s": time.perf_counter() - started,
        "calibration_samples": len(prompts),
        "hf_quant_config": json.loads(quant_config.read_text()) if quant_config.is_file() else None,
    }


def _shape(value: Any) -> list[Any]:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def _io(values: Any) -> list[dict[str, Any]]:
    return [
        {
            "name": v.name,
            "shape": _shape(v),
            "dtype": ONNX_TYPE_NAMES.get(v.type.tensor_type.elem_type, "other"),
        }
        for v in values
    ]


def inspect(job: dict[str, Any]) -> dict[str, Any]:
    import onnx

    directory = Path(job["llm_dir"])
    model = onnx.load(str(directory / "model.onnx"), load_external_data=False)
    ops = collections.Counter(f"{n.domain or 'ai.onnx'}::{n.op_type}" for n in model.graph.node)
    weights = collections.Counter(
        ONNX_TYPE_NAMES.get(i.data_type, "other") for i in model.graph.initializer if i.dims
    )
    config = directory / "config.json"
    return {
        "opsets": {o.domain or "ai.onnx": o.version for o in model.opset_import},
        "ops": dict(sorted(ops.items())),
        "initializer_dtypes": dict(sorted(weights.items())),
        "inputs": _io(model.graph.input),
        "outputs": _io(model.graph.output),
        "config": json.loads(config.read_text()) if config.is_file() else None,
        "files": {p.name: p.stat().st_size for p in sorted(directory.iterdir()) if p.is_file()},
    }


JOBS = {"quantize": quantize, "inspect": inspect}


def main() -> None:
    job = json.loads(Path(sys.argv[1]).read_text())
    result = JOBS[job["job"]](job)
    Path(job["result"]).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

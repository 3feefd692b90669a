"""TensorRT-LLM 1.2.x as the planner knows it: the precisions and KV dtypes it builds and what it
needs. Its stages are not implemented yet; ``edgepack plan`` sizes and validates its targets."""

from __future__ import annotations

from edgepack.backends.base import BackendDescription, Requirement

TRTLLM = BackendDescription(
    name="trtllm",
    summary="TensorRT-LLM 1.2.x engine path: Ada/Hopper workstations (native or NGC container)",
    weight_precisions=("fp16", "bf16", "fp8", "int8_sq", "int8_wo", "int4_awq", "nvfp4"),
    kv_dtypes=("fp16", "bf16", "fp8", "int8"),
    build_ram_factor=3.5,
    needs=(
        Requirement("program", "trtllm-build", "use the NGC image nvcr.io/nvidia/tensorrt-llm"),
    ),
)

"""TensorRT Edge-LLM as the planner knows it: the precisions and KV dtypes it builds and what it
needs. Its stages are not implemented yet; ``edgepack plan`` sizes and validates its targets."""

from __future__ import annotations

from edgepack.backends.base import BackendDescription, Requirement

EDGELLM = BackendDescription(
    name="edgellm",
    summary="TensorRT Edge-LLM: Jetson Thor/Orin and DGX Spark; engines built on the device",
    weight_precisions=("fp16", "fp8", "int8_sq", "int4_awq", "nvfp4"),
    kv_dtypes=("fp16", "fp8"),
    build_ram_factor=3.5,
    needs=(
        Requirement(
            "program",
            "tensorrt-edgellm-export",
            "pip install tensorrt-edgellm",
            distribution="tensorrt-edgellm",
        ),
    ),
)

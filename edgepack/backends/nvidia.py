"""The NVIDIA toolchains as the planner knows them: what they build and what they need.

Their build stages land in their own modules as each backend is implemented; until then the
descriptions here let ``edgepack plan`` size and validate every NVIDIA target.
"""

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

TRTRTX = BackendDescription(
    name="trtrtx",
    summary="TensorRT for RTX: Ampere/Ada/Blackwell RTX; engines built ahead of time on any host",
    weight_precisions=("fp16", "fp8", "int8_wo", "int4", "nvfp4"),
    kv_dtypes=("fp16",),
    build_ram_factor=4.0,
    needs=(
        Requirement(
            "python", "tensorrt_rtx", "pip install tensorrt-rtx-cu13", distribution="tensorrt_rtx"
        ),
    ),
)

"""The NVIDIA toolchains as the planner knows them: what they build and what they need.

Their build stages land in their own modules as each backend is implemented; until then the
descriptions here let ``edgepack plan`` size and validate every NVIDIA target. TensorRT for RTX
(``trtrtx``) is implemented: it is re-exported from :mod:`edgepack.backends.trtrtx`.
"""

from __future__ import annotations

from edgepack.backends.base import BackendDescription, Requirement
from edgepack.backends.trtrtx import TRTRTX  # TensorRT for RTX builds for real, in its own module

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

__all__ = ["EDGELLM", "TRTLLM", "TRTRTX"]

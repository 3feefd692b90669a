"""Numeric formats for weights and KV caches: storage cost, quality class, hardware floor.

Which precisions a *target* supports is written in its profile; the facts here only say what a
format costs and the lowest compute capability that can run it, which is used to reject a profile
that claims something its GPU cannot do.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class QualityClass(str, Enum):
    """How far a format may drift from the full-precision model (the quality gate's thresholds)."""

    FULL = "full"
    HALF = "half"
    EIGHT_BIT = "8bit"
    FOUR_BIT = "4bit"


@dataclass(frozen=True)
class WeightFormat:
    name: str
    bits_per_weight: float
    """Storage bits per weight including block scales (e.g. int4 + fp16 scale per 128 weights)."""
    quality: QualityClass
    min_compute_capability: float | None
    """Lowest GPU compute capability with kernels for it; None for formats every device runs."""
    description: str
    block_size: int | None = None
    hardware: str | None = None
    """The hardware feature the floor stands for, named in plan errors."""


def _block_bits(value_bits: int, scale_bits: int, block: int) -> float:
    return value_bits + scale_bits / block


WEIGHT_FORMATS: dict[str, WeightFormat] = {
    fmt.name: fmt
    for fmt in (
        WeightFormat("fp32", 32, QualityClass.FULL, None, "32-bit float"),
        WeightFormat("fp16", 16, QualityClass.HALF, None, "16-bit float"),
        WeightFormat("bf16", 16, QualityClass.HALF, 8.0, "bfloat16"),
        WeightFormat(
            "fp8",
            8,
            QualityClass.EIGHT_BIT,
            8.9,
            "FP8 E4M3 weights and activations",
            hardware="FP8 tensor cores",
        ),
        WeightFormat("int8_sq", 8, QualityClass.EIGHT_BIT, 7.0, "INT8 SmoothQuant (W8A8)"),
        WeightFormat("int8_wo", 8, QualityClass.EIGHT_BIT, 7.0, "INT8 weight-only"),
        WeightFormat(
            "int4",
            _block_bits(4, 16 + 4, 32),
            QualityClass.FOUR_BIT,
            None,
            "INT4 weight-only, round-to-nearest blocks with zero points (ONNX Runtime GenAI)",
            block_size=32,
        ),
        WeightFormat(
            "int4_wo",
            _block_bits(4, 16, 128),
            QualityClass.FOUR_BIT,
            7.5,
            "INT4 weight-only, round-to-nearest groups, fp16 scale per 128 weights (TensorRT-LLM)",
            block_size=128,
        ),
        WeightFormat(
            "int4_awq",
            _block_bits(4, 16, 128),
            QualityClass.FOUR_BIT,
            7.5,
            "INT4 AWQ weight-only, fp16 scale per 128 weights",
            block_size=128,
        ),
        WeightFormat(
            "nvfp4",
            _block_bits(4, 8, 16),
            QualityClass.FOUR_BIT,
            10.0,
            "NVFP4: FP4 E2M1 with an FP8 scale per 16 weights",
            block_size=16,
            hardware="FP4 tensor cores",
        ),
    )
}


@dataclass(frozen=True)
class KvFormat:
    name: str
    bytes_per_element: float
    min_compute_capability: float | None
    quantized: bool


KV_FORMATS: dict[str, KvFormat] = {
    fmt.name: fmt
    for fmt in (
        KvFormat("fp32", 4, None, quantized=False),
        KvFormat("fp16", 2, None, quantized=False),
        KvFormat("bf16", 2, 8.0, quantized=False),
        KvFormat("fp8", 1, 8.9, quantized=True),
        KvFormat("int8", 1, 7.0, quantized=True),
    )
}


def fitting_block_size(choices: tuple[int, ...], dims: tuple[int, ...]) -> int | None:
    """The first block size of ``choices`` (preferred first) that divides every dimension."""
    return next((block for block in choices if all(dim % block == 0 for dim in dims)), None)


UNQUANTIZED_BYTES = 2.0
"""Bytes per parameter of the parts NVIDIA toolchains leave in FP16 (embedding, lm_head)."""

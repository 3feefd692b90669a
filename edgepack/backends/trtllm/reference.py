"""A small reference forward of a TensorRT-LLM decoder checkpoint, written from the checkpoint's
own layout (REFERENCE.md §12) and nothing else: ``config.json`` + ``rank0.safetensors``.

Every weight is dequantized with its scaling factors as the engine will read them (FP8 per
tensor, INT8 per output channel, INT4 in groups with the AWQ/SmoothQuant pre-quant scale), the
activations the checkpoint quantizes are fake-quantized with their scale, and the network runs in
fp32: RMSNorm, RoPE (rotate-half, the config's ``rotary_base`` and ``rotary_scaling``; without a
``rotary_base`` TensorRT-LLM uses 10000, so does this), grouped-query attention, the gated MLP
(``proj(silu(fc(x)) * gate(x))``), a tied or separate lm_head. Runs in the worker (torch).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgepack.errors import ToolFailedError

DEFAULT_ROTARY_BASE = 10000.0
"""TensorRT-LLM's default when a checkpoint's config has no rotary_base."""
FP8_MAX = 448.0
INT8_MAX = 127.0
SUPPORTED_ALGOS = (None, "FP8", "W8A8_SQ_PER_CHANNEL", "W4A16_AWQ", "W8A16", "W4A16", "NVFP4")
WEIGHT_ONLY_ACTIVATIONS = ("NVFP4",)
"""Activations the reference leaves unquantized: NVFP4's are quantized per 16 values with dynamic
FP8 scales, which the engine computes at run time (the weights are checked as stored)."""
INT4_ALGOS = ("W4A16_AWQ", "W4A16")


@dataclass
class CheckpointModel:
    config: dict[str, Any]
    tensors: dict[str, Any]
    activation_peaks: dict[str, float] = field(default_factory=dict)
    """Largest |input| seen by each quantized linear (name → value), for the scale check."""
    _dequantized: dict[str, Any] = field(default_factory=dict)
    """Each weight dequantized once (a forward step would otherwise redo all of them)."""

    @classmethod
    def load(cls, directory: Path) -> CheckpointModel:
        from safetensors.torch import load_file

        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
        algo = quant_algo(config)
        if algo not in SUPPORTED_ALGOS:
            raise ToolFailedError(f"the checkpoint check does not know quant_algo {algo!r}")
        return cls(config, load_file(str(directory / "rank0.safetensors")))

    @property
    def algo(self) -> str | None:
        return quant_algo(self.config)

    def tensor(self, name: str) -> Any:
        if name not in self.tensors:
            raise ToolFailedError(f"the checkpoint has no tensor {name}")
        return self.tensors[name]

    def float_tensor(self, name: str) -> Any:
        """An unquantized tensor (embedding, norms, lm_head) in fp32, converted once."""
        if name not in self._dequantized:
            self._dequantized[name] = self.tensor(name).float()
        return self._dequantized[name]

    # --- weights ---------------------------------------------------------------------------
    def effective_weight(self, prefix: str) -> Any:
        """The (out, in) fp32 matrix the engine multiplies by: dequantized, pre-quant scale
        folded back in (so it compares with the source model's weight)."""
        weight = self.dequantized_weight(prefix)
        pre = self.tensors.get(f"{prefix}.prequant_scaling_factor")
        return weight * pre.float().reshape(1, -1) if pre is not None else weight

    def dequantized_weight(self, prefix: str) -> Any:
        if prefix not in self._dequantized:
            self._dequantized[prefix] = self._dequantize(prefix)
        return self._dequantized[prefix]

    def _dequantize(self, prefix: str) -> Any:
        import torch

        raw = self.tensor(f"{prefix}.weight")
        scale = self.tensors.get(f"{prefix}.weights_scaling_factor")
        if scale is None or self.algo is None:
            return raw.float()
        if raw.dtype == torch.float8_e4m3fn:
            return raw.float() * scale.float()
        if self.algo in INT4_ALGOS:
            return _dequantize_int4(raw, scale.float(), self.config)
        if self.algo == "NVFP4":
            scale_2 = self.tensor(f"{prefix}.weights_scaling_factor_2")
            return _dequantize_nvfp4(raw, scale, scale_2, self.config)
        return raw.float() * scale.float().reshape(-1, 1)  # int8, one scale per output channel

    # --- the forward -----------------------------------------------------------------------
    def linear(self, prefix: str, x: Any) -> Any:
        import torch

        pre = self.tensors.get(f"{prefix}.prequant_scaling_factor")
        if pre is not None:
            x = x * pre.float()
        act = self.tensors.get(f"{prefix}.activation_scaling_factor")
        if act is not None and self.algo not in WEIGHT_ONLY_ACTIVATIONS:
            peak = float(x.abs().max())
            self.activation_peaks[prefix] = max(self.activation_peaks.get(prefix, 0.0), peak)
            x = _fake_quant(x, act.float(), self.algo)
        return torch.nn.functional.linear(x, self.dequantized_weight(prefix))


def quant_algo(config: dict[str, Any]) -> str | None:
    algo = (config.get("quantization") or {}).get("quant_algo")
    return str(algo) if algo is not None else None


def kv_algo(config: dict[str, Any]) -> str | None:
    algo = (config.get("quantization") or {}).get("kv_cache_quant_algo")
    return str(algo) if algo is not None else None


def _fake_quant(x: Any, scale: Any, algo: str | None) -> Any:
    import torch

    if algo == "FP8":
        return (x / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn).float() * scale
    return torch.round(x / scale).clamp(-INT8_MAX - 1, INT8_MAX) * scale


def _dequantize_int4(raw: Any, scale: Any, config: dict[str, Any]) -> Any:
    """ModelOpt's INT4 export (its pack_int4_in_uint8): two signed nibbles per byte, packed along
    the output rows (the low nibble is row 2i, the high one 2i+1), so the stored matrix is
    (out / 2, in); one scale per ``group_size`` inputs of each output row: (out, in / group)."""
    import torch

    packed = raw.to(torch.int16) & 0xFF
    low, high = packed & 0x0F, (packed >> 4) & 0x0F
    nibbles = torch.stack((low, high), dim=1).reshape(-1, raw.shape[1])
    values = torch.where(nibbles >= 8, nibbles - 16, nibbles).float()
    group = int((config.get("quantization") or {}).get("group_size") or values.shape[1])
    return values * scale.reshape(values.shape[0], -1).repeat_interleave(group, dim=1)


E2M1 = (0, 0.5, 1, 1.5, 2, 3, 4, 6, 0, -0.5, -1, -1.5, -2, -3, -4, -6)


def _dequantize_nvfp4(raw: Any, scale: Any, scale_2: Any, config: dict[str, Any]) -> Any:
    """NVFP4 (ModelOpt's NVFP4QTensor): two E2M1 codes per byte along the inputs (low nibble
    first), an FP8 scale per ``group_size`` inputs, one fp32 global scale."""
    import torch

    packed = raw.to(torch.int16) & 0xFF
    codes = torch.stack((packed & 0x0F, (packed >> 4) & 0x0F), dim=-1).reshape(raw.shape[0], -1)
    values = torch.tensor(E2M1)[codes.long()]
    group = int((config.get("quantization") or {}).get("group_size") or 16)
    blocks = scale.float().repeat_interleave(group, dim=1)[:, : values.shape[1]]
    return values * blocks * scale_2.float()


# --- the decoder -------------------------------------------------------------------------------


@dataclass
class KvCache:
    keys: list[Any] = field(default_factory=list)
    values: list[Any] = field(default_factory=list)


def forward(model: CheckpointModel, tokens: list[int], cache: KvCache) -> Any:
    """Logits (fp32) of ``tokens`` appended after the cache's; the cache grows."""
    import torch

    config = model.config
    past = cache.keys[0].shape[1] if cache.keys else 0
    positions = torch.arange(past, past + len(tokens))
    x = model.float_tensor("transformer.vocab_embedding.weight")[torch.tensor(tokens)]
    rope = _rope_tables(config, positions)
    for layer in range(int(config["num_hidden_layers"])):
        x = _layer(model, layer, x, rope, cache, past)
    x = _rms_norm(x, model.float_tensor("transformer.ln_f.weight"), float(config["norm_epsilon"]))
    head = (
        "lm_head.weight"
        if "lm_head.weight" in model.tensors
        else "transformer.vocab_embedding.weight"
    )
    return torch.nn.functional.linear(x, model.float_tensor(head))


def _layer(
    model: CheckpointModel, layer: int, x: Any, rope: tuple[Any, Any], cache: KvCache, past: int
) -> Any:
    config = model.config
    prefix = f"transformer.layers.{layer}"
    eps = float(config["norm_epsilon"])
    normed = _rms_norm(x, model.float_tensor(f"{prefix}.input_layernorm.weight"), eps)
    attended = _attention(model, prefix, layer, normed, rope, cache, past)
    x = x + model.linear(f"{prefix}.attention.dense", attended)
    normed = _rms_norm(x, model.float_tensor(f"{prefix}.post_layernorm.weight"), eps)
    gated = _silu(model.linear(f"{prefix}.mlp.fc", normed)) * model.linear(
        f"{prefix}.mlp.gate", normed
    )
    return x + model.linear(f"{prefix}.mlp.proj", gated)


def _attention(
    model: CheckpointModel,
    prefix: str,
    layer: int,
    x: Any,
    rope: tuple[Any, Any],
    cache: KvCache,
    past: int,
) -> Any:
    import torch

    config = model.config
    heads, kv_heads = int(config["num_attention_heads"]), int(config["num_key_value_heads"])
    head_size = int(config.get("head_size") or int(config["hidden_size"]) // heads)
    qkv = model.linear(f"{prefix}.attention.qkv", x)
    q, k, v = qkv.split([heads * head_size, kv_heads * head_size, kv_heads * head_size], dim=-1)
    q = _apply_rope(q.reshape(-1, heads, head_size).transpose(0, 1), rope)
    k = _apply_rope(k.reshape(-1, kv_heads, head_size).transpose(0, 1), rope)
    v = v.reshape(-1, kv_heads, head_size).transpose(0, 1)
    k, v = _kv_store(model, prefix, k), _kv_store(model, prefix, v)
    if layer < len(cache.keys):
        k = torch.cat((cache.keys[layer], k), dim=1)
        v = torch.cat((cache.values[layer], v), dim=1)
        cache.keys[layer], cache.values[layer] = k, v
    else:
        cache.keys.append(k)
        cache.values.append(v)
    repeat = heads // kv_heads
    k, v = k.repeat_interleave(repeat, dim=0), v.repeat_interleave(repeat, dim=0)
    scores = q @ k.transpose(1, 2) / math.sqrt(head_size)
    new, total = q.shape[1], k.shape[1]
    mask = torch.ones(new, total, dtype=torch.bool).tril(diagonal=past)
    scores = scores.masked_fill(~mask, float("-inf"))
    out = torch.softmax(scores, dim=-1) @ v
    return out.transpose(0, 1).reshape(new, heads * head_size)


def _kv_store(model: CheckpointModel, prefix: str, tensor: Any) -> Any:
    """What the KV cache holds: fp16 values, or FP8 with the checkpoint's KV scale."""
    import torch

    if kv_algo(model.config) == "FP8":
        scale = model.tensor(f"{prefix}.attention.kv_cache_scaling_factor").float()
        return (tensor / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn).float() * scale
    return tensor.half().float()


def _rms_norm(x: Any, weight: Any, eps: float) -> Any:
    import torch

    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def _silu(x: Any) -> Any:
    import torch

    return torch.nn.functional.silu(x)


def rotary_inverse_frequencies(config: dict[str, Any]) -> Any:
    """1 / base^(2i/d), with the config's rotary_scaling (linear or llama3) applied."""
    import torch

    heads = int(config["num_attention_heads"])
    dim = int(config.get("head_size") or int(config["hidden_size"]) // heads)
    base = float(config.get("rotary_base") or DEFAULT_ROTARY_BASE)
    inverse = 1.0 / base ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    scaling = config.get("rotary_scaling")
    if not scaling:
        return inverse
    kind = scaling.get("type") or scaling.get("rope_type")
    factor = float(scaling.get("factor", 1.0))
    if kind == "linear":
        return inverse / factor
    if kind == "llama3":
        return _llama3_scaled(inverse, scaling, factor)
    raise ToolFailedError(f"the checkpoint check does not know rotary_scaling type {kind!r}")


def _llama3_scaled(inverse: Any, scaling: dict[str, Any], factor: float) -> Any:
    import torch

    low = float(scaling.get("low_freq_factor", 1.0))
    high = float(scaling.get("high_freq_factor", 4.0))
    original = float(scaling.get("original_max_position_embeddings", 8192))
    wavelength = 2 * math.pi / inverse
    smooth = (original / wavelength - low) / (high - low)
    scaled = torch.where(wavelength > original / low, inverse / factor, inverse)
    middle = (wavelength <= original / low) & (wavelength >= original / high)
    blended = (1 - smooth) * inverse / factor + smooth * inverse
    return torch.where(middle, blended, scaled)


def _rope_tables(config: dict[str, Any], positions: Any) -> tuple[Any, Any]:
    import torch

    angles = positions.double()[:, None] * rotary_inverse_frequencies(config)[None, :]
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos().float(), angles.sin().float()


def _apply_rope(x: Any, rope: tuple[Any, Any]) -> Any:
    import torch

    cos, sin = rope
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin

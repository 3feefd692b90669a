"""The checkpoint check: before an engine build is spent on a checkpoint, prove that it means
what the model means.

Three looks, all on this machine, run in the worker:

- every linear's effective weight (dequantized, pre-quant scale folded back) against the source
  model's weight: relative error per tensor, the worst named;
- every activation scale against the largest input that linear sees on the prompt (a scale far
  from it quantizes everything to a few levels or clips it);
- the reference forward (:mod:`edgepack.backends.trtllm.reference`) over a prompt's prefill and
  greedy decode steps against transformers on the source model: max |Δlogit| and top-1 agreement.

The limits per precision live in :data:`CHECK_LIMITS` (one place; quality/ has no per-precision
artifact API on this branch yet).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgepack.backends.trtllm.reference import (
    FP8_MAX,
    INT8_MAX,
    CheckpointModel,
    KvCache,
    forward,
)
from edgepack.errors import ToolFailedError

CHECK_PROMPT = "What is the capital of France?"
DECODE_STEPS = 8
ROPE_TYPES = ("rope_gpt_neox",)


@dataclass(frozen=True)
class CheckLimits:
    max_abs_logit_diff: float
    min_top1: int
    """Of the prefill's next token and the decode steps (DECODE_STEPS + 1 in all)."""
    max_weight_error: float
    """Relative Frobenius error of a linear's effective weight against the source weight."""


CHECK_LIMITS: dict[str, CheckLimits] = {
    "fp16": CheckLimits(0.25, 9, 0.002),
    "bf16": CheckLimits(1.0, 8, 0.01),
    "fp8": CheckLimits(10.0, 7, 0.08),
    "int8_sq": CheckLimits(12.0, 5, 2.0),
    "int8_wo": CheckLimits(4.0, 7, 0.03),
    "int4_awq": CheckLimits(25.0, 3, 0.3),
    "int4_wo": CheckLimits(25.0, 3, 0.3),
    "nvfp4": CheckLimits(20.0, 5, 0.2),
}
"""Measured on SmolLM2-135M-Instruct (the demo model), with margin: fp16 0.040 / 9 of 9, fp8 5.6 /
9 (2 calibration windows), nvfp4 11.6 / 8 (on CUDA), int4_awq 17.5 / 4 (group 64, on CUDA).
SmoothQuant moves activation outliers into the weights, so its effective weights differ from the
source by design (0.76 on one down projection): its limit only catches a broken scale, and the
logits decide. A planted ×100 scaling factor is ~99 off, outside every weight limit."""
ACTIVATION_SCALE_RANGE = (0.02, 8.0)
"""The largest |input| of a linear over its scale's representable peak (448 FP8, 127 INT8)."""
ACTIVATION_SCALE_HIGH = {"int8_sq": 64.0}
"""SmoothQuant divides each input channel by its calibrated peak (ModelOpt's scale is then 1/127
everywhere): a channel the calibration saw little of can exceed its peak many times on a new
prompt (19× seen with two windows) while the output barely moves; a broken scale (×100) still
falls below the range's low end."""
ATTENTION = ("attention.qkv", "attention.dense")
MLP = ("mlp.fc", "mlp.gate", "mlp.proj")


def source_weights(hf_model: Any, layer: int) -> dict[str, Any]:
    """The source model's weights of one layer under the checkpoint's names."""
    import torch

    block = hf_model.model.layers[layer]
    attention, mlp = block.self_attn, block.mlp
    return {
        "attention.qkv": torch.cat(
            (attention.q_proj.weight, attention.k_proj.weight, attention.v_proj.weight)
        ),
        "attention.dense": attention.o_proj.weight,
        "mlp.fc": mlp.gate_proj.weight,
        "mlp.gate": mlp.up_proj.weight,
        "mlp.proj": mlp.down_proj.weight,
    }


def weight_errors(model: CheckpointModel, hf_model: Any) -> dict[str, float]:
    import torch

    errors = {}
    for layer in range(int(model.config["num_hidden_layers"])):
        for name, source in source_weights(hf_model, layer).items():
            prefix = f"transformer.layers.{layer}.{name}"
            got = model.effective_weight(prefix)
            want = source.detach().float()
            if got.shape != want.shape:
                raise ToolFailedError(
                    f"checkpoint check: {prefix}.weight has shape {tuple(got.shape)}, the source "
                    f"model's {tuple(want.shape)}"
                )
            errors[prefix] = float(torch.linalg.norm(got - want) / torch.linalg.norm(want))
    return errors


def activation_ratios(model: CheckpointModel) -> dict[str, float]:
    """Observed input peak over the peak the activation scale can represent, per linear."""
    levels = FP8_MAX if model.algo == "FP8" else INT8_MAX
    ratios = {}
    for prefix, peak in model.activation_peaks.items():
        scale = float(model.tensor(f"{prefix}.activation_scaling_factor").float().max())
        ratios[prefix] = peak / (scale * levels) if scale > 0 else float("inf")
    return ratios


def compare_logits(model: CheckpointModel, hf_model: Any, prompt: list[int]) -> dict[str, Any]:
    """Greedy-decode through the checkpoint, then transformers on the same tokens."""
    import torch

    cache = KvCache()
    logits = forward(model, prompt, cache)[-1]
    steps, tokens = [logits], []
    for _ in range(DECODE_STEPS):
        tokens.append(int(steps[-1].argmax()))
        steps.append(forward(model, [tokens[-1]], cache)[-1])
    tokens.append(int(steps[-1].argmax()))
    with torch.no_grad():
        reference = hf_model(torch.tensor([prompt + tokens[:-1]])).logits[0].float()
    wanted = reference[len(prompt) - 1 :]
    diffs = [float((want - got).abs().max()) for want, got in zip(wanted, steps, strict=True)]
    agree = [int(want.argmax()) == token for want, token in zip(wanted, tokens, strict=True)]
    return {
        "steps": len(steps),
        "max_abs_logit_diff": max(diffs),
        "per_step_max_abs_logit_diff": diffs,
        "top1_agreement": sum(agree),
        "tokens": tokens,
    }


def check_checkpoint(
    directory: Path, hf_model: Any, prompt: list[int], precision: str
) -> dict[str, Any]:
    """Run the three looks; raise naming the tensor or the figure that is out of its limit."""
    model = CheckpointModel.load(directory)
    rope = model.config.get("position_embedding_type")
    if rope not in ROPE_TYPES:
        raise ToolFailedError(f"checkpoint check: position_embedding_type {rope!r} is not known")
    limits = CHECK_LIMITS[precision]
    errors = weight_errors(model, hf_model)
    logits = compare_logits(model, hf_model, prompt)
    ratios = activation_ratios(model)
    record = {
        "limits": vars(limits),
        "prompt_tokens": len(prompt),
        "logits": logits,
        "worst_weight": _worst(errors),
        "activation_ratio_range": [min(ratios.values()), max(ratios.values())] if ratios else None,
        "rotary_base": model.config.get("rotary_base"),
        "kv_cache_quant_algo": (model.config.get("quantization") or {}).get("kv_cache_quant_algo"),
    }
    _require(errors, ratios, logits, limits, precision)
    return record


def _worst(values: dict[str, float]) -> dict[str, Any]:
    name = max(values, key=lambda key: values[key])
    return {"tensor": name, "relative_error": values[name]}


def _require(
    errors: dict[str, float],
    ratios: dict[str, float],
    logits: dict[str, Any],
    limits: CheckLimits,
    precision: str,
) -> None:
    hint = "the checkpoint does not mean what the model means; it was not built into an engine"
    bad_weights = {name: e for name, e in errors.items() if e > limits.max_weight_error}
    if bad_weights:
        worst = _worst(bad_weights)
        raise ToolFailedError(
            f"checkpoint check ({precision}): {worst['tensor']}.weight dequantized with its "
            f"scaling factors is off the source weight by {worst['relative_error']:.3g} "
            f"(relative; limit {limits.max_weight_error}), {len(bad_weights)} tensor(s) out",
            hint=hint,
        )
    low, high = ACTIVATION_SCALE_RANGE
    high = ACTIVATION_SCALE_HIGH.get(precision, high)
    bad_scales = {name: r for name, r in ratios.items() if not low <= r <= high}
    if bad_scales:
        name = next(iter(bad_scales))
        raise ToolFailedError(
            f"checkpoint check ({precision}): {name}.activation_scaling_factor does not fit its "
            f"input: the largest |input| is {bad_scales[name]:.3g}× the scale's range "
            f"(expected {low} to {high})",
            hint=hint,
        )
    diff, top1 = logits["max_abs_logit_diff"], logits["top1_agreement"]
    if diff > limits.max_abs_logit_diff or top1 < limits.min_top1:
        raise ToolFailedError(
            f"checkpoint check ({precision}): the checkpoint's logits disagree with transformers "
            f"on the source model: max |Δlogit| {diff:.3f} (limit {limits.max_abs_logit_diff}), "
            f"top-1 {top1}/{logits['steps']} (at least {limits.min_top1})",
            hint=hint,
        )

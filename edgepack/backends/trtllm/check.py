"""The checkpoint check: before an engine build is spent on a checkpoint, prove that it means
what the model means.

Three looks, all on this machine, run in the worker:

- every linear's effective weight (dequantized, pre-quant scale folded back) against the source
  model's weight: relative error per tensor, the worst named;
- every activation scale against the largest input that linear sees on the prompt (a scale far
  from it quantizes everything to a few levels or clips it);
- the reference forward (:mod:`edgepack.backends.trtllm.reference`) over a prompt's prefill and
  greedy decode steps against transformers on the source model: KL divergence, top-1 agreement
  and max |Δlogit| per step.

The weights and the logits are judged by the quality gate's artifact limits of the precision's
class (:mod:`edgepack.quality.artifact`, chosen from published figures, not from this model); a
failure exits 9 naming the step or the tensor.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgepack.backends.trtllm.reference import (
    FP8_MAX,
    INT8_MAX,
    CheckpointModel,
    KvCache,
    forward,
)
from edgepack.errors import QualityGateError, ToolFailedError
from edgepack.quality.artifact import (
    ARTIFACT_LIMITS,
    ArtifactLimits,
    artifact_class,
    judge_artifact,
    logit_figures,
    require_artifact,
    tensor_figure,
)

CHECK_PROMPT = "What is the capital of France?"
DECODE_STEPS = 8
ROPE_TYPES = ("rope_gpt_neox",)
SMOOTHQUANT_WEIGHT_ERROR_MAX = 2.0
"""SmoothQuant moves activation outliers into the weights by design (each input channel scaled
by its calibrated peak), so an int8_sq linear's effective weight is not the source weight
quantized; its tensor check only catches a broken scale (×100 gives ~99) and the logits decide."""
ACTIVATION_SCALE_RANGE = (0.02, 8.0)
"""The largest |input| of a linear over its scale's representable peak (448 FP8, 127 INT8)."""
ACTIVATION_SCALE_HIGH = {"int8_sq": 64.0}
"""SmoothQuant divides each input channel by its calibrated peak (ModelOpt's scale is then 1/127
everywhere): a channel the calibration saw little of can exceed its peak many times on a new
prompt (19× seen with two windows) while the output barely moves; a broken scale (×100) still
falls below the range's low end."""
ATTENTION = ("attention.qkv", "attention.dense")
MLP = ("mlp.fc", "mlp.gate", "mlp.proj")
HINT = "the checkpoint does not mean what the model means; it was not built into an engine"


def check_limits(precision: str) -> ArtifactLimits:
    """The artifact limits of the precision's class (with SmoothQuant's weight allowance)."""
    limits = ARTIFACT_LIMITS[artifact_class(precision)]
    if precision == "int8_sq":
        return limits.model_copy(update={"tensor_relative_error_max": SMOOTHQUANT_WEIGHT_ERROR_MAX})
    return limits


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


def weight_figures(model: CheckpointModel, hf_model: Any) -> list[Any]:
    figures = []
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
            figures.append(tensor_figure(f"{prefix}.weight", want.numpy(), got.numpy()))
    return figures


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
    names = ["prefill", *(f"decode {i}" for i in range(1, DECODE_STEPS + 1))]
    figures = logit_figures(wanted.numpy(), torch.stack(steps).float().numpy(), names)
    return {
        "steps": len(figures),
        "max_abs_logit_diff": max(f.max_abs_logit_diff for f in figures),
        "top1_agreement": sum(f.top1_match for f in figures),
        "tokens": tokens,
        "figures": figures,
    }


def check_checkpoint(
    directory: Path, hf_model: Any, prompt: list[int], precision: str
) -> dict[str, Any]:
    """Run the three looks; raise (exit 9) naming the tensor or step that is out of its limit."""
    model = CheckpointModel.load(directory)
    rope = model.config.get("position_embedding_type")
    if rope not in ROPE_TYPES:
        raise ToolFailedError(f"checkpoint check: position_embedding_type {rope!r} is not known")
    limits = check_limits(precision)
    what = f"the {precision} checkpoint"
    weights = judge_artifact(
        what, precision, tensors=weight_figures(model, hf_model), limits=limits
    )
    logits = compare_logits(model, hf_model, prompt)
    ratios = activation_ratios(model)
    steps = judge_artifact(what, precision, steps=logits.pop("figures"), limits=limits)
    record = {
        "limits": limits.model_dump(),
        "prompt_tokens": len(prompt),
        "logits": logits,
        "verdict": {
            "passed": weights.passed and steps.passed,
            "quality_class": steps.quality_class,
            "checks": [c.model_dump() for c in weights.checks + steps.checks],
        },
        "weights": weights.model_dump(mode="json"),
        "steps": steps.model_dump(mode="json"),
        "activation_ratio_range": [min(ratios.values()), max(ratios.values())] if ratios else None,
        "rotary_base": model.config.get("rotary_base"),
        "kv_cache_quant_algo": (model.config.get("quantization") or {}).get("kv_cache_quant_algo"),
    }
    # In the order a broken factor shows itself: its own tensor, the scales after it, the logits.
    require_artifact(weights, hint=HINT)
    _require_scales(ratios, precision)
    require_artifact(steps, hint=HINT)
    return record


def _require_scales(ratios: dict[str, float], precision: str) -> None:
    low, high = ACTIVATION_SCALE_RANGE
    high = ACTIVATION_SCALE_HIGH.get(precision, high)
    bad_scales = {name: r for name, r in ratios.items() if not low <= r <= high}
    if bad_scales:
        name = next(iter(bad_scales))
        raise QualityGateError(
            f"checkpoint check ({precision}): {name}.activation_scaling_factor does not fit its "
            f"input: the largest |input| is {bad_scales[name]:.3g}× the scale's range "
            f"(expected {low} to {high})",
            hint=HINT,
        )

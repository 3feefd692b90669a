"""Is an Edge-LLM export what the plan asked for? Judged on the host before anything ships.

What this can verify: the ONNX carries Edge-LLM's plugin ops (one ``trt_edgellm::AttentionPlugin``
per decoder layer), the I/O the runtime binds (``inputs_embeds`` of the hidden size, one paged
``past_key_values_N``/``present_key_values_N`` pair per layer of the model's KV heads and head
size, ``logits`` over the vocabulary), weights stored in the precision asked for (int8 for int8_sq,
float8 for fp8, none quantized for fp16), a runtime ``config.json`` written by the pinned Edge-LLM
with the model's shape, the plan's KV dtype and a context that holds the plan's sequence length,
and file sizes that fit the plan's weight accounting. What it cannot: run the network. Its plugin
ops exist only in TensorRT with Edge-LLM's plugin library, so neither ONNX Runtime nor this host
computes a single logit of it; the numbers are judged on the device, by the quality gate on
``llm_inference``'s answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgepack.backends.edgellm.toolchain import (
    ATTENTION_PLUGIN,
    EDGELLM_VERSION,
    KV_PAGE_TOKENS,
    PLUGIN_DOMAIN,
)

if TYPE_CHECKING:
    from edgepack.plan import Plan

QUANTIZED_WEIGHT_DTYPES = {
    "fp16": (),
    "int8_sq": ("int8",),
    "fp8": ("float8e4m3fn",),
    "int4_awq": ("int4", "int8", "int32"),  # packed int4 (plugin layouts pack into int8/int32)
    "nvfp4": ("float4e2m1", "int8"),
}
DATA_SIZE_RANGE = (0.8, 1.3)
"""model.onnx.data against the plan's bytes read per decode step (weights but the embedding
table, which Edge-LLM keeps in embedding.safetensors); scales and padding sit inside this."""


@dataclass(frozen=True)
class ExportCheck:
    name: str
    ok: bool
    detail: str

    def record(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


def check_export(summary: dict[str, Any], plan: Plan) -> list[ExportCheck]:
    return [
        _plugins(summary, plan),
        _io(summary, plan),
        _weights(summary, plan),
        *_config(summary, plan),
        _sizes(summary, plan),
    ]


def _plugins(summary: dict[str, Any], plan: Plan) -> ExportCheck:
    layers = plan.model.num_layers
    found = summary["ops"].get(f"{PLUGIN_DOMAIN}::{ATTENTION_PLUGIN}", 0)
    domain = PLUGIN_DOMAIN in summary["opsets"]
    ok = domain and found == layers
    return ExportCheck(
        "plugin ops",
        ok,
        f"{found} {PLUGIN_DOMAIN}::{ATTENTION_PLUGIN} for {layers} layers"
        + ("" if domain else f"; opset domain {PLUGIN_DOMAIN} missing"),
    )


def _io(summary: dict[str, Any], plan: Plan) -> ExportCheck:
    spec = plan.model
    kv_shape = [2, "num_pages", KV_PAGE_TOKENS, spec.num_kv_heads, spec.head_dim]
    inputs = {value["name"]: value["shape"] for value in summary["inputs"]}
    outputs = {value["name"]: value["shape"] for value in summary["outputs"]}
    wrong = []
    if inputs.get("inputs_embeds", [None, None])[1:] != [spec.hidden_size]:
        wrong.append(f"inputs_embeds {inputs.get('inputs_embeds')} (hidden {spec.hidden_size})")
    if outputs.get("logits", [None, None])[1:] != [spec.vocab_size]:
        wrong.append(f"logits {outputs.get('logits')} (vocabulary {spec.vocab_size})")
    for layer in range(spec.num_layers):
        for names, kind in ((inputs, "past"), (outputs, "present")):
            shape = names.get(f"{kind}_key_values_{layer}")
            if shape != kv_shape:
                wrong.append(f"{kind}_key_values_{layer} {shape}")
    extra = sorted(name for name in inputs if name.startswith("past_key_values_"))
    if len(extra) != spec.num_layers:
        wrong.append(f"{len(extra)} past_key_values inputs for {spec.num_layers} layers")
    detail = "; ".join(wrong[:3]) if wrong else f"{spec.num_layers} paged KV pairs {kv_shape}"
    return ExportCheck("inputs and outputs", not wrong, detail)


def _weights(summary: dict[str, Any], plan: Plan) -> ExportCheck:
    dtypes: dict[str, int] = summary["initializer_dtypes"]
    expected = QUANTIZED_WEIGHT_DTYPES[plan.precision]
    quantized = sum(count for dtype, count in dtypes.items() if dtype in expected)
    layers = plan.model.num_layers
    if not expected:
        narrow = {d: n for d, n in dtypes.items() if d in ("int8", "float8e4m3fn", "float4e2m1")}
        return ExportCheck(
            "weight precision",
            not narrow,
            f"no quantized weights ({dtypes})"
            if not narrow
            else f"quantized weights in an fp16 export: {narrow}",
        )
    ok = quantized >= layers
    return ExportCheck(
        "weight precision",
        ok,
        f"{quantized} {'/'.join(expected)} weight tensors for {layers} layers ({dtypes})",
    )


def _config(summary: dict[str, Any], plan: Plan) -> list[ExportCheck]:
    config = summary.get("config")
    if config is None:
        return [ExportCheck("config.json", False, "the export wrote no llm/config.json")]
    spec = plan.model
    expected = {
        "edgellm_version": EDGELLM_VERSION,
        "hidden_size": spec.hidden_size,
        "num_hidden_layers": spec.num_layers,
        "num_attention_heads": spec.num_heads,
        "num_key_value_heads": spec.num_kv_heads,
        "vocab_size": spec.vocab_size,
        "kv_cache_dtype": plan.kv_cache_dtype,
    }
    wrong = [
        f"{k} {config.get(k)!r} (expected {v!r})" for k, v in expected.items() if config.get(k) != v
    ]
    context = config.get("max_position_embeddings") or 0
    fits = context >= plan.limits.max_seq_len
    return [
        ExportCheck("config.json", not wrong, "; ".join(wrong) or "shape, version and KV dtype"),
        ExportCheck(
            "context limit",
            fits,
            f"max_position_embeddings {context} for --max-seq-len {plan.limits.max_seq_len}",
        ),
    ]


def _sizes(summary: dict[str, Any], plan: Plan) -> ExportCheck:
    files: dict[str, int] = summary["files"]
    data = files.get("model.onnx.data", 0) + sum(
        size
        for name, size in files.items()
        if name.endswith(".safetensors") and name != "embedding.safetensors"
    )
    expected = plan.weight_bytes_read_per_step
    low, high = DATA_SIZE_RANGE
    ratio = data / expected if expected else 0.0
    embedding = files.get("embedding.safetensors", 0)
    ok = low <= ratio <= high and embedding > 0
    return ExportCheck(
        "file sizes",
        ok,
        f"weights {data / 1e6:.1f} MB = {ratio:.2f}x the plan's {expected / 1e6:.1f} MB "
        f"(allowed {low}-{high}); embedding.safetensors {embedding / 1e6:.1f} MB",
    )

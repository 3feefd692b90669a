"""TensorRT Edge-LLM's host half for real: the demo model quantized to int8_sq by Edge-LLM's own
quantizer (on this CPU) and exported by ``tensorrt-edgellm-export``, both run from the Edge-LLM
tool environment, for the Jetson AGX Orin (``--until export``: the engine is built on a device).
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgepack.backends.edgellm.toolchain import EDGELLM_VERSION, TOOLENV
from edgepack.bundle import read_manifest
from edgepack.cli.main import run
from edgepack.toolenv import TOOLENV_DIR_ENV
from tests.conftest import require_demo_stack

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def int8_bundle(
    session_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, dict[str, object]]]:
    """One build per session; the tool environment lives in the session's cache (made once)."""
    require_demo_stack()
    bundle = tmp_path_factory.mktemp("edgellm") / "int8_sq"
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(TOOLENV_DIR_ENV, str(session_cache / "toolenvs"))
        with contextlib.redirect_stdout(out):
            code = run([
                "build", "--target", "jetson-agx-orin-64gb", "--precision", "int8_sq",
                "--model", "demo:smollm2-135m", "--until", "export", "--output", str(bundle),
                "--json",
            ])  # fmt: skip
    assert code == 0, out.getvalue()
    yield bundle, json.loads(out.getvalue())


def test_export_bundle_holds_the_checked_onnx(int8_bundle: tuple[Path, dict[str, object]]) -> None:
    bundle, result = int8_bundle
    assert [stage["name"] for stage in result["stages"]] == ["quantize", "export"]  # type: ignore[index]
    llm = bundle / "engine" / "llm"
    for name in ("model.onnx", "model.onnx.data", "config.json", "embedding.safetensors"):
        assert (llm / name).is_file(), name
    record = json.loads((bundle / "engine" / "edgellm-export.json").read_text())
    assert all(check["ok"] for check in record["checks"]), record["checks"]
    ops = record["inspection"]["ops"]
    assert ops["trt_edgellm::AttentionPlugin"] == 30
    assert ops["ai.onnx::QuantizeLinear"] > 0
    assert record["inspection"]["initializer_dtypes"]["int8"] >= 30 * 7
    assert json.loads((llm / "config.json").read_text())["edgellm_version"] == EDGELLM_VERSION


def test_manifest_records_versions_and_calibration(
    int8_bundle: tuple[Path, dict[str, object]],
) -> None:
    bundle, _ = int8_bundle
    manifest = read_manifest(bundle)
    assert manifest.tools["tensorrt-edgellm"] == EDGELLM_VERSION
    assert manifest.tools["edgellm-toolenv"] == TOOLENV.key
    quantize = manifest.recipe["stage_config"]["quantize"]
    assert quantize["quantization"] == "int8_sq" and len(quantize["calibration"]["sha256"]) == 64
    assert quantize["kv_cache_quantization"] is None
    toolenv = json.loads((bundle / "engine" / "edgellm-export.json").read_text())["toolenv"]
    assert toolenv["installed"]["tensorrt-edgellm"] == EDGELLM_VERSION
    assert toolenv["installed"]["transformers"] == "5.14.1"
    assert toolenv["installed"]["torch"].startswith("2.13.0")

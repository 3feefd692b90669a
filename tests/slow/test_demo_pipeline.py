"""The embedded default end to end: the real demo model through the real ONNX Runtime GenAI builder,
the stage cache, the bundle, the local bench and the quality gate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgepack.bundle import read_manifest
from edgepack.cli.main import run
from edgepack.errors import ExitCode
from tests.conftest import build_demo

pytestmark = pytest.mark.slow


def bench(bundle: Path, out: Path, *extra: str) -> int:
    return run([
        "bench", "--bundle", str(bundle), "--runs", "1", "--warmup", "0",
        "--json-out", str(out), *extra,
    ])  # fmt: skip


def test_manifest_is_a_lockfile(demo_bundles: dict[str, Path]) -> None:
    manifest = read_manifest(demo_bundles["int4"])
    assert manifest.recipe["precision"] == "int4"
    assert manifest.recipe["stage_config"]["engine"]["extra_options"]["block_size"] == "32"
    assert manifest.target["name"] == "host-x86_64-cpu"
    assert {"onnxruntime-genai", "onnxruntime", "transformers", "torch"} <= set(manifest.tools)
    assert len(manifest.model["hash"]) == 64
    assert [stage["name"] for stage in manifest.stages] == ["engine", "runtime"]
    names = {record.path for record in manifest.files}
    assert {
        "engine/model.onnx",
        "engine/genai_config.json",
        "engine/tokenizer.json",
        "prompts.json",
    } <= names


def test_second_build_reuses_every_stage(demo_bundles: dict[str, Path], tmp_path: Path) -> None:
    again = build_demo("int4", tmp_path / "again")
    assert again["all_cached"] is True
    assert all(stage["cache_hit"] for stage in again["stages"])  # type: ignore[union-attr]
    assert again["bundle_id"] == read_manifest(demo_bundles["int4"]).bundle_id


def test_force_and_repeat_rebuild_without_the_cache(
    demo_bundles: dict[str, Path], tmp_path: Path
) -> None:
    # Another recipe (batch 2), so forcing it leaves the shared int4 cache entry alone.
    args = ("--max-batch-size", "2", "--force", "--repeat", "2")
    forced = build_demo("int4", tmp_path / "forced", *args)
    stages = forced["stages"]
    assert isinstance(stages, list) and len(stages) == 2
    for stage in stages:
        assert stage["cache_hit"] is False
        assert stage["repeat"]["n"] == 2
        assert stage["repeat"]["min"] <= stage["repeat"]["median"] <= stage["repeat"]["max"]
    manifest = read_manifest(tmp_path / "forced")
    assert [stage["repeat"]["n"] for stage in manifest.stages] == [2, 2]


def test_verify_fails_after_one_engine_byte_changes(
    demo_bundles: dict[str, Path], tmp_path: Path
) -> None:
    copy = tmp_path / "copy"
    build_demo("int4", copy)
    assert run(["bundle", "verify", str(copy)]) == 0
    data = copy / "engine" / "model.onnx.data"
    with data.open("r+b") as handle:
        handle.seek(12345)
        byte = handle.read(1)
        handle.seek(12345)
        handle.write(bytes([byte[0] ^ 0xFF]))
    assert run(["bundle", "verify", str(copy)]) == ExitCode.BUNDLE_INVALID


@pytest.mark.parametrize("precision", ["int4", "fp32"])
def test_healthy_bundles_bench_and_pass_the_gate(
    demo_bundles: dict[str, Path], tmp_path: Path, precision: str
) -> None:
    out = tmp_path / "run.json"
    assert bench(demo_bundles[precision], out) == 0
    result = json.loads(out.read_text())
    assert result["quality"]["passed"] is True
    assert result["gate_enforced"] is True
    answers = {o["id"]: o["text"] for o in result["outputs"]}
    assert "Paris" in answers["capital-france"]
    metrics = result["metrics"]
    assert metrics["decode_tok_s"]["median"] > 0
    assert metrics["decode_tok_s_batched"]["n"] == 1
    assert len(metrics["ttft_s"]["samples"]) == 1
    assert result["load"]["first_page_cache"] == "dropped"
    assert result["machine"]["libraries"]["onnxruntime-genai"]
    assert len(result["raw"]["runs"][0]["single"]) == len(result["outputs"]) == 12


def test_fp32_engine_matches_the_reference_exactly(
    demo_bundles: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "run.json"
    assert bench(demo_bundles["fp32"], out) == 0
    metrics = json.loads(out.read_text())["quality"]["metrics"]
    assert metrics["exact_match_rate"] >= 0.9
    assert metrics["perplexity_ratio"] == pytest.approx(1.0, abs=0.01)


def test_no_gate_is_recorded(demo_bundles: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "run.json"
    assert bench(demo_bundles["int4"], out, "--no-gate", "--max-new-tokens", "8") == 0
    result = json.loads(out.read_text())
    assert result["gate_enforced"] is False
    assert result["quality"] is None

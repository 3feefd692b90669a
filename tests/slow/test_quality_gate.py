"""The quality gate catches what a benchmark alone does not: each failure is planted for real,
and each test asserts the check that names it.

Degenerate outputs (token salad, repetition loops, empty answers, the wrong script) are planted
into a real run of the healthy int4 demo engine, tokenized with the engine's own tokenizer; the
scrambled-weights case builds a real engine from perturbed weights and judges its answers against
the source model's reference; a random-initialised model of the demo's architecture is built and
benched as its own source (its reference is unusable). Healthy bundles pass a second prompt set.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edgepack.bench.gating import apply_gate
from edgepack.bench.result import RunResult
from edgepack.bundle import read_manifest
from edgepack.cli.main import run
from edgepack.errors import ExitCode
from edgepack.quality.thresholds import GateConfig
from edgepack.quality.verdict import REFERENCE_UNUSABLE
from edgepack.resources import data_dir
from tests.conftest import prompt_subset
from tests.slow.test_demo_pipeline import bench

pytestmark = pytest.mark.slow

SALAD = "strugg (str, 1, 1, 1, 1) 1) 1) (str, 1) 1) 1, 1) 1) 1) strugg (str, 1, 1) 1) 1) 1)"
CYRILLIC = str.maketrans(
    "abcdeghiklmnoprstuyABCDEGHIKLMNOPRSTUY", "абцдегхиклмнопрстуыАБЦДЕГХИКЛМНОПРСТУЫ"
)


@pytest.fixture(scope="module")
def int4_run(demo_bundles: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "int4.json"
    assert bench(demo_bundles["int4"], out) == 0
    return out


def _tokenizer(bundle: Path) -> object:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(bundle / "engine" / "tokenizer.json"))


def _plant(run_file: Path, bundle: Path, texts: dict[str, str]) -> RunResult:
    """The run with the given answers, re-tokenized like the engine would have produced them."""
    tokenizer = _tokenizer(bundle)
    result = RunResult.load_file(run_file)
    for output in result.outputs:
        text = texts.get(output.id, texts.get("*", output.text))
        output.text = text
        output.token_ids = tokenizer.encode(text, add_special_tokens=False).ids  # type: ignore[attr-defined]
    return result


def _judge(result: RunResult, bundle: Path, cache: Path) -> list[str]:
    manifest = read_manifest(bundle)
    judged = apply_gate(result, manifest, bundle / "prompts.json", cache, GateConfig())
    assert judged.quality is not None
    return [check.name for check in judged.quality.failed_checks]


def test_the_unaltered_run_passes(
    int4_run: Path, demo_bundles: dict[str, Path], session_cache: Path
) -> None:
    assert _judge(RunResult.load_file(int4_run), demo_bundles["int4"], session_cache) == []


def test_token_salad_fails(
    int4_run: Path, demo_bundles: dict[str, Path], session_cache: Path
) -> None:
    planted = _plant(int4_run, demo_bundles["int4"], {"*": SALAD})
    failed = _judge(planted, demo_bundles["int4"], session_cache)
    assert "chrf" in failed
    assert "prefix_fraction" in failed
    assert "absolute_distinct" in failed  # text no person accepts, whatever the reference says


def test_a_short_loop_fails_on_its_own(
    int4_run: Path, demo_bundles: dict[str, Path], session_cache: Path
) -> None:
    result = RunResult.load_file(int4_run)
    one = {result.outputs[4].id: "clips " * 60}
    failed = _judge(
        _plant(int4_run, demo_bundles["int4"], one), demo_bundles["int4"], session_cache
    )
    assert {"absolute_loop", "absolute_distinct"} <= set(failed)


def test_repetition_loop_fails(
    int4_run: Path, demo_bundles: dict[str, Path], session_cache: Path
) -> None:
    result = RunResult.load_file(int4_run)
    loops = {o.id: " ".join([o.text.split(".")[0] + "."] * 12) for o in result.outputs}
    failed = _judge(
        _plant(int4_run, demo_bundles["int4"], loops), demo_bundles["int4"], session_cache
    )
    assert "looping_share" in failed
    assert "repetition_increase" in failed or "longest_repeat_increase" in failed


def test_a_third_of_answers_looping_fails(
    int4_run: Path, demo_bundles: dict[str, Path], session_cache: Path
) -> None:
    result = RunResult.load_file(int4_run)
    loops = {o.id: " ".join(["Paris is the capital."] * 20) for o in result.outputs[::3]}
    failed = _judge(
        _plant(int4_run, demo_bundles["int4"], loops), demo_bundles["int4"], session_cache
    )
    assert "looping_share" in failed


def test_empty_outputs_fail(
    int4_run: Path, demo_bundles: dict[str, Path], session_cache: Path
) -> None:
    result = RunResult.load_file(int4_run)
    half_empty = {o.id: "" for o in result.outputs[::2]}
    failed = _judge(
        _plant(int4_run, demo_bundles["int4"], half_empty), demo_bundles["int4"], session_cache
    )
    assert "empty_rate" in failed
    assert "absolute_empty" in failed


def test_wrong_script_fails(
    int4_run: Path, demo_bundles: dict[str, Path], session_cache: Path
) -> None:
    result = RunResult.load_file(int4_run)
    cyrillic = {o.id: o.text.translate(CYRILLIC) for o in result.outputs}
    failed = _judge(
        _plant(int4_run, demo_bundles["int4"], cyrillic), demo_bundles["int4"], session_cache
    )
    assert "script_ratio" in failed
    assert "absolute_script" in failed


def _scrambled_model(source: Path, destination: Path) -> Path:
    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(source, destination)
    weights_file = destination / "model.safetensors"
    weights = load_file(str(weights_file))
    generator = torch.Generator().manual_seed(0)
    for name, tensor in weights.items():
        if tensor.dim() == 2:
            noise = torch.randn(tensor.shape, generator=generator, dtype=tensor.dtype)
            weights[name] = tensor + noise * tensor.std() * 0.6
    save_file(weights, str(weights_file), metadata={"format": "pt"})
    return destination


def _build_own(model: Path, precision: str, tmp_path: Path) -> Path:
    """A bundle of ``model`` in a cache of its own, gone with the test: its engine and its
    reference serve no other test."""
    bundle = tmp_path / f"{model.name}-bundle"
    assert run([
        "build", "--target", "host-x86_64-cpu", "--precision", precision,
        "--model", str(model), "--output", str(bundle), "--runtime", "none",
        "--cache-dir", str(tmp_path / "cache"),
    ]) == 0  # fmt: skip
    return bundle


def test_engine_from_scrambled_weights_fails(
    demo_bundles: dict[str, Path], session_cache: Path, tmp_path: Path
) -> None:
    healthy = read_manifest(demo_bundles["fp32"])
    scrambled_model = _scrambled_model(Path(healthy.model["directory"]), tmp_path / "scrambled")
    bundle = _build_own(scrambled_model, "fp32", tmp_path)
    out = tmp_path / "run.json"
    assert bench(bundle, out, "--no-gate") == 0
    result = RunResult.load_file(out)
    # Judged against what the engine claims to be: the demo model's fp32 build.
    failed = _judge(result, demo_bundles["fp32"], session_cache)
    assert {"chrf", "perplexity_ratio"} <= set(failed)


def test_bench_exits_with_the_gate_status(
    demo_bundles: dict[str, Path], session_cache: Path, tmp_path: Path
) -> None:
    strict = tmp_path / "gate.toml"
    strict.write_text("[thresholds.4bit]\nchrf_min = 99.5\n")
    out = tmp_path / "run.json"
    code = bench(demo_bundles["int4"], out, "--gate-config", str(strict))
    assert code == ExitCode.QUALITY_GATE
    verdict = json.loads(out.read_text())["quality"]
    assert verdict["passed"] is False
    assert [c["name"] for c in verdict["checks"] if not c["passed"]] == ["chrf"]


def _random_model(source: Path, destination: Path) -> Path:
    """A model of the demo's architecture with random weights (from its config; no weights
    read), saved as an HF folder with the demo's tokenizer: a fine-tune gone wrong looks so."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(source)))
    model.save_pretrained(str(destination))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                 "chat_template.jinja", "generation_config.json"):  # fmt: skip
        if (source / name).is_file():
            shutil.copyfile(source / name, destination / name)
    return destination


def test_a_random_weights_model_is_an_unusable_reference(
    demo_bundles: dict[str, Path], session_cache: Path, tmp_path: Path
) -> None:
    source = Path(read_manifest(demo_bundles["int4"]).model["directory"])
    model = _random_model(source, tmp_path / "random-model")
    bundle = _build_own(model, "int4", tmp_path)
    prompt_subset(demo_bundles["int4"], tmp_path / "prompts.json", 4)
    out = tmp_path / "run.json"
    code = bench(
        bundle, out, "--prompts", str(tmp_path / "prompts.json"), "--max-new-tokens", "48",
        "--cache-dir", str(tmp_path / "cache"),
    )  # fmt: skip
    assert code == ExitCode.QUALITY_GATE
    verdict = json.loads(out.read_text())["quality"]
    assert verdict["passed"] is False and verdict["reference_usable"] is False
    failed = {c["name"] for c in verdict["checks"] if not c["passed"]}
    assert "reference_perplexity" in failed  # near the uniform distribution's
    assert failed & {"reference_loop", "reference_distinct"}
    assert "chrf" not in {c["name"] for c in verdict["checks"]}  # nothing compared with it
    assert RunResult.load_file(out).quality.summary().startswith(REFERENCE_UNUSABLE)  # type: ignore[union-attr]


@pytest.mark.parametrize("precision", ["fp32", "int4"])
def test_healthy_bundles_pass_the_second_prompt_set(
    demo_bundles: dict[str, Path], tmp_path: Path, precision: str
) -> None:
    out = tmp_path / "run.json"
    everyday = data_dir("prompts") / "everyday.json"
    # 64 new tokens: the reference of a new prompt set is computed on the CPU (about 9 tok/s).
    code = bench(demo_bundles[precision], out, "--prompts", str(everyday), "--max-new-tokens", "64")
    assert code == 0
    result = json.loads(out.read_text())
    assert result["quality"]["passed"] is True, result["quality"]["checks"]
    assert result["settings"]["prompts_file"].endswith("everyday.json")
    assert {o["id"] for o in result["outputs"]} >= {"capital-italy", "french-sky"}


def test_gate_rejudges_a_saved_result(
    int4_run: Path, demo_bundles: dict[str, Path], session_cache: Path, tmp_path: Path
) -> None:
    assert run(["gate", str(int4_run)]) == 0
    strict = tmp_path / "gate.toml"
    strict.write_text("[thresholds.4bit]\nchrf_min = 99.5\n")
    rejudged = tmp_path / "rejudged.json"
    code = run(["gate", str(int4_run), "--gate-config", str(strict), "--json-out", str(rejudged)])
    assert code == ExitCode.QUALITY_GATE
    verdict = json.loads(rejudged.read_text())["quality"]
    assert [c["name"] for c in verdict["checks"] if not c["passed"]] == ["chrf"]
    assert "dequantized" in verdict["reference"]["provenance"]
    # Against a source model named on the command line (here the same demo model).
    planted = _plant(int4_run, demo_bundles["int4"], {})
    planted.save(tmp_path / "copy.json")
    assert run(["gate", str(tmp_path / "copy.json"), "--reference-model", "demo:smollm2-135m"]) == 0

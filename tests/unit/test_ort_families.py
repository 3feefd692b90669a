"""Model families of the ort backend: the architectures read from the installed builder, the plan's
refusal of the others, and the config fixes of the copy the builder reads."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from edgepack.backends.ort import architectures
from edgepack.backends.ort.architectures import (
    BuilderSupport,
    builder_architectures,
    builder_support,
    supported_architectures,
    transformers_architectures,
)
from edgepack.backends.ort.builder_input import (
    builder_options,
    normalise_config,
    prepare_builder_input,
)
from edgepack.errors import ExitCode
from edgepack.models import resolve_spec
from edgepack.plan import PlanRequest, make_plan
from edgepack.targets import TargetRegistry
from tests.unit.conftest import CliResult

BUILDER_SOURCE = """
def create_model(config, extra_options):
    if config.architectures[0] == "AlphaForCausalLM" or config.architectures[0] == "AlphaModel":
        pass
    elif config.architectures[0] == "BetaForCausalLM" and config.max_position_embeddings == 4:
        pass
    elif config.architectures[0] == "BetaForCausalLM" and config.max_position_embeddings != 4:
        pass
    elif config.architectures[0] == "WhisperForConditionalGeneration":
        pass
    elif config.architectures[0] != "NotThisOne" and config.model_type == "NorThisOne":
        pass
"""
AUTO_SOURCE = """
MODEL_FOR_CAUSAL_LM_MAPPING_NAMES = OrderedDict([
    ("alpha", "AlphaForCausalLM"),
    ("beta", ("BetaForCausalLM", "BetaModel")),
])
MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES = OrderedDict([
    ("whisper", "WhisperForConditionalGeneration"),
])
SOMETHING_ELSE = OrderedDict([("gamma", "GammaForCausalLM")])
"""
GENAI_INSTALLED = importlib.util.find_spec("onnxruntime_genai") is not None


def test_the_builder_dispatch_is_read_from_its_source() -> None:
    found = builder_architectures(BUILDER_SOURCE)
    assert found == [
        "AlphaForCausalLM",
        "AlphaModel",
        "BetaForCausalLM",
        "WhisperForConditionalGeneration",
    ]


def test_supported_needs_transformers_to_know_the_class_and_edgepack_to_use_it() -> None:
    assert transformers_architectures(AUTO_SOURCE) == {
        "AlphaForCausalLM",
        "BetaForCausalLM",
        "BetaModel",
        "WhisperForConditionalGeneration",
    }
    # AlphaModel: remote code only (transformers lacks it); Whisper: not a text decoder.
    assert supported_architectures(BUILDER_SOURCE, AUTO_SOURCE) == [
        "AlphaForCausalLM",
        "BetaForCausalLM",
    ]


def test_the_refusal_names_the_architecture_the_version_and_the_way_out() -> None:
    support = BuilderSupport("0.18.0", "5.24.0", ("LlamaForCausalLM", "Qwen3ForCausalLM"))
    assert support.problem("Qwen3ForCausalLM") is None
    problem = support.problem("BertForMaskedLM")
    assert problem == (
        "architecture BertForMaskedLM is not supported by the ort backend with "
        "onnxruntime-genai 0.18.0; supported: LlamaForCausalLM, Qwen3ForCausalLM; use another "
        "--backend or a model of a supported family"
    )
    assert "speech encoder-decoder" in str(support.problem("WhisperForConditionalGeneration"))


def _plan_problems(architecture: str) -> list[str]:
    spec = dataclasses.replace(resolve_spec("smollm2-135m-instruct"), architecture=architecture)
    target = TargetRegistry.default().get("host-x86_64-cpu")
    return make_plan(PlanRequest(target, spec, "int4", backend="ort")).problems


def test_the_plan_refuses_what_the_builder_cannot_build(monkeypatch: pytest.MonkeyPatch) -> None:
    support = BuilderSupport("9.9.9", "5.0.0", ("LlamaForCausalLM",))
    monkeypatch.setattr(architectures, "builder_support", lambda _root: support)
    assert _plan_problems("LlamaForCausalLM") == []
    (problem,) = _plan_problems("MadeUpForCausalLM")
    assert problem.startswith("architecture MadeUpForCausalLM is not supported by the ort")
    assert "onnxruntime-genai 9.9.9; supported: LlamaForCausalLM;" in problem


@pytest.mark.skipif(not GENAI_INSTALLED, reason="onnxruntime-genai is not installed")
def test_the_installed_builder_is_parsed_once_per_version(tmp_path: Path) -> None:
    builder_support.cache_clear()
    support = builder_support(tmp_path)
    assert support is not None
    assert {"LlamaForCausalLM", "Qwen3ForCausalLM", "MistralForCausalLM"} <= set(
        support.architectures
    )
    assert "BertForMaskedLM" not in support.architectures
    (cached,) = (tmp_path / "ort-architectures").iterdir()
    assert support.genai_version in cached.name
    record = json.loads(cached.read_text())
    record["architectures"] = ["OnlyFromTheCache"]
    cached.write_text(json.dumps(record))
    builder_support.cache_clear()
    again = builder_support(tmp_path)
    assert again is not None and again.architectures == ("OnlyFromTheCache",)
    builder_support.cache_clear()


@pytest.mark.skipif(not GENAI_INSTALLED, reason="onnxruntime-genai is not installed")
def test_build_refuses_a_bert_folder_before_any_work(
    tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    model = tmp_path / "bert"
    model.mkdir()
    config = {
        "architectures": ["BertForMaskedLM"], "model_type": "bert", "hidden_size": 64,
        "num_attention_heads": 4, "num_hidden_layers": 2, "intermediate_size": 128,
        "vocab_size": 1000,
    }  # fmt: skip
    (model / "config.json").write_text(json.dumps(config))
    output = tmp_path / "bundle"
    result = cli(
        "build", "-t", "host-x86_64-cpu", "-p", "int4", "-m", str(model), "-o", str(output)
    )
    assert result.code == ExitCode.INVALID_PLAN
    assert "architecture BertForMaskedLM is not supported by the ort backend" in result.flat_err
    assert "Traceback" not in result.err and not output.exists()


GEMMA3_ROPE = {
    "full_attention": {"rope_theta": 1000000.0, "rope_type": "linear", "factor": 8.0},
    "sliding_attention": {"rope_theta": 10000.0, "rope_type": "default"},
}


def test_gemma3_rope_per_layer_type_is_flattened() -> None:
    config = {"model_type": "gemma3_text", "rope_parameters": GEMMA3_ROPE, "num_hidden_layers": 2}
    fixed, fixes = normalise_config(config)
    rope = fixed["rope_parameters"]
    assert (rope["rope_type"], rope["rope_theta"], rope["factor"]) == ("linear", 1000000.0, 8.0)
    assert rope["rope_local_base_freq"] == 10000.0
    assert rope["sliding_attention"] == GEMMA3_ROPE["sliding_attention"]
    assert len(fixes) == 1
    assert config["rope_parameters"] == GEMMA3_ROPE  # the input is not changed
    assert normalise_config(fixed)[1] == []  # a fixed config needs nothing more


def test_gemma3_inside_a_text_config_is_flattened_too() -> None:
    config = {"text_config": {"rope_parameters": GEMMA3_ROPE}}
    fixed, _ = normalise_config(config)
    assert fixed["text_config"]["rope_parameters"]["rope_local_base_freq"] == 10000.0


def test_a_window_without_layer_types_slides_every_layer() -> None:
    mistral = {"model_type": "mistral", "sliding_window": 4096, "num_hidden_layers": 3}
    fixed, fixes = normalise_config(mistral)
    assert fixed["layer_types"] == ["sliding_attention"] * 3 and fixes
    assert builder_options(mistral) == {"windowed_kv_cache": "false"}


@pytest.mark.parametrize(
    "config",
    [
        {"sliding_window": None, "num_hidden_layers": 2},
        {"sliding_window": 131072, "use_sliding_window": False, "num_hidden_layers": 2},
        {"sliding_window": 8, "layer_types": ["full_attention", "sliding_attention"]},
        {"rope_parameters": {"rope_type": "default", "rope_theta": 1e6}},
    ],
)
def test_configs_the_builder_reads_right_are_left_alone(config: dict[str, object]) -> None:
    assert normalise_config(config) == (config, [])


def test_the_builder_reads_a_copy_and_the_users_folder_is_untouched(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    config = {"sliding_window": 8, "num_hidden_layers": 2, "rope_parameters": GEMMA3_ROPE}
    (model / "config.json").write_text(json.dumps(config))
    (model / "model.safetensors").write_bytes(b"weights")
    before = hashlib.sha256((model / "config.json").read_bytes()).hexdigest()
    prepared = prepare_builder_input(model, tmp_path / "scratch")
    assert prepared.directory == tmp_path / "scratch"
    assert (prepared.directory / "model.safetensors").resolve() == model / "model.safetensors"
    copied = json.loads((prepared.directory / "config.json").read_text())
    assert copied["layer_types"] == ["sliding_attention"] * 2
    assert prepared.options == {"windowed_kv_cache": "false"} and len(prepared.fixes) == 2
    assert hashlib.sha256((model / "config.json").read_bytes()).hexdigest() == before
    assert sorted(p.name for p in model.iterdir()) == ["config.json", "model.safetensors"]


def test_a_config_that_needs_nothing_is_read_in_place(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"num_hidden_layers": 2}))
    prepared = prepare_builder_input(tmp_path, tmp_path / "scratch")
    assert prepared.directory == tmp_path and prepared.fixes == () and prepared.options == {}
    assert not (tmp_path / "scratch").exists()

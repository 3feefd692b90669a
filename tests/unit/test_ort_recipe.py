"""A target profile's ``[recipe.ort]``: validated, carried into the engine stage and its cache key,
and the threads it pins honoured by both runners."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from edgepack.backends.ort import ORT
from edgepack.backends.ort.backend import write_session_options
from edgepack.backends.ort.runner import pinned_threads
from edgepack.bundle import Manifest
from edgepack.errors import ExitCode, ProfileError
from edgepack.models import resolve_spec
from edgepack.pipeline import stage_key
from edgepack.plan import Plan, PlanRequest, make_plan
from edgepack.remote.runtime_bench import recipe_threads
from edgepack.targets import TargetProfile, load_profile

CPU = "host-x86_64-cpu"
BEFORE = "[toolchain]"


def recipe_text(*lines: str) -> tuple[str, str]:
    """A replacement that puts ``[recipe.ort]`` with ``lines`` before the toolchain table."""
    return BEFORE, "[recipe.ort]\n" + "".join(f"{line}\n" for line in lines) + "\n" + BEFORE


def engine_stage(profile: TargetProfile, precision: str = "int4") -> tuple[Plan, Mapping[str, Any]]:
    plan = make_plan(PlanRequest(profile, resolve_spec("smollm2-135m-instruct"), precision))
    (engine, *_) = ORT.stages(plan)
    return plan, engine.config


INVALID = {
    "misspelt key": (["blok_size = 64"], ["unknown key 'recipe.ort.blok_size'", '"block_size"']),
    "block size the builder lacks": (["block_size = 48"], ["key 'recipe.ort.block_size'"]),
    "no threads": (["intra_op_threads = 0"], ["key 'recipe.ort.intra_op_threads'"]),
    "unknown level": (['graph_optimization = "max"'], ["key 'recipe.ort.graph_optimization'"]),
    "string for a flag": (['symmetric = "no"'], ["key 'recipe.ort.symmetric'"]),
    "an unloadable combination": (['algorithm = "default"'], ["key 'recipe.ort'", "int4"]),
}


@pytest.mark.parametrize(("lines", "expected"), INVALID.values(), ids=INVALID)
def test_a_bad_recipe_names_the_key_and_hints_the_keys(
    profile_variant: Callable[..., Path], lines: list[str], expected: list[str]
) -> None:
    path = profile_variant(CPU, recipe_text(*lines))
    with pytest.raises(ProfileError) as caught:
        load_profile(path)
    assert caught.value.exit_code == ExitCode.INVALID_PROFILE
    for fragment in expected:
        assert fragment in caught.value.message
    assert caught.value.hint is not None and "block_size, accuracy_level" in caught.value.hint


def test_the_default_algorithm_loads_with_an_int4_lm_head(
    profile_variant: Callable[..., Path],
) -> None:
    path = profile_variant(CPU, recipe_text('algorithm = "default"', 'lm_head = "int4"'))
    _, config = engine_stage(load_profile(path))
    assert config["extra_options"] == {"block_size": "32", "accuracy_level": "4",
                                       "algo_config": "default"}  # fmt: skip


def test_a_recipe_for_a_backend_the_target_does_not_allow_is_refused(
    profile_variant: Callable[..., Path],
) -> None:
    path = profile_variant("ada-sm89", ("[build]", "[recipe.ort]\nblock_size = 64\n\n[build]"))
    with pytest.raises(ProfileError) as caught:
        load_profile(path)
    assert "recipe.ort is set but 'ort' is not in backends.allowed" in caught.value.message


def test_the_recipe_reaches_the_builder_options_and_session(
    profile_variant: Callable[..., Path],
) -> None:
    lines = (
        "block_size = 128",
        'lm_head = "int4"',
        "symmetric = false",
        "shared_embeddings = false",
        "intra_op_threads = 1",
        'graph_optimization = "basic"',
    )
    _, config = engine_stage(load_profile(profile_variant(CPU, recipe_text(*lines))))
    assert config["extra_options"] == {
        "block_size": "128",
        "accuracy_level": "4",
        "algo_config": "k_quant",
        "is_symmetric": "false",
        "shared_embeddings": "false",
    }
    assert config["session_options"] == {
        "intra_op_num_threads": 1,
        "graph_optimization_level": "ORT_ENABLE_BASIC",
    }


def test_quantization_keys_leave_fp32_alone_but_session_keys_do_not(
    profile_variant: Callable[..., Path],
) -> None:
    profile = load_profile(
        profile_variant(CPU, recipe_text("block_size = 64", "inter_op_threads = 2"))
    )
    _, config = engine_stage(profile, "fp32")
    assert config["extra_options"] == {}
    assert config["session_options"] == {"inter_op_num_threads": 2}


def test_the_engine_cache_key_follows_the_recipe(profile_variant: Callable[..., Path]) -> None:
    variants = {
        "none": profile_variant(CPU, directory="none"),
        "block 64": profile_variant(CPU, recipe_text("block_size = 64"), directory="b64"),
        "block 128": profile_variant(CPU, recipe_text("block_size = 128"), directory="b128"),
        "threads": profile_variant(CPU, recipe_text("intra_op_threads = 1"), directory="t1"),
        "empty": profile_variant(CPU, recipe_text(), directory="empty"),
    }
    keys = {}
    for name, path in variants.items():
        plan, _ = engine_stage(load_profile(path))
        (engine, *_) = ORT.stages(plan)
        keys[name] = stage_key(plan, engine, {"model": "0" * 64})
    assert len({keys[name] for name in ("none", "block 64", "block 128", "threads")}) == 4
    assert keys["empty"] == keys["none"]  # a table of defaults is the same engine


def test_a_recipe_leaves_the_runtime_stage_key_alone(profile_variant: Callable[..., Path]) -> None:
    plain = load_profile(profile_variant(CPU, directory="plain"))
    recipe = load_profile(profile_variant(CPU, recipe_text("block_size = 64"), directory="b64"))
    assert plain.content_hash() == recipe.content_hash()


def test_the_hash_is_the_hardware_facts_as_before_recipes(
    profile_variant: Callable[..., Path],
) -> None:
    plain = load_profile(profile_variant(CPU, directory="plain"))
    facts = plain.model_dump(mode="json")
    assert facts.pop("recipe") is None
    # the hash of the facts alone, as content_hash computed it before [recipe] existed
    import hashlib

    expected = hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()
    assert plain.content_hash() == expected


def test_pinned_threads_round_trip_through_the_engine_config(tmp_path: Path) -> None:
    config = {"model": {"decoder": {"session_options": {"log_id": "x"}, "filename": "m.onnx"}}}
    (tmp_path / "genai_config.json").write_text(json.dumps(config), encoding="utf-8")
    assert pinned_threads(tmp_path) is None
    write_session_options(tmp_path, {"intra_op_num_threads": 1})
    written = json.loads((tmp_path / "genai_config.json").read_text(encoding="utf-8"))
    assert written["model"]["decoder"]["session_options"] == {
        "log_id": "x",
        "intra_op_num_threads": 1,
    }
    assert written["model"]["decoder"]["filename"] == "m.onnx"
    assert pinned_threads(tmp_path) == 1
    assert pinned_threads(tmp_path / "missing") is None


def _manifest(engine_config: dict[str, object]) -> Manifest:
    return Manifest(
        edgepack_version="0",
        model={},
        recipe={"stage_config": {"engine": engine_config}},
        target={},
        tools={},
        plan={},
        stages=[],
    )


def test_the_device_runtime_is_given_the_recipe_threads() -> None:
    assert recipe_threads(_manifest({"session_options": {"intra_op_num_threads": 1}})) == 1
    assert recipe_threads(_manifest({"extra_options": {}})) is None
    assert recipe_threads(_manifest({"session_options": {"intra_op_num_threads": True}})) is None

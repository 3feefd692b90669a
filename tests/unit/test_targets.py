"""Target profiles: the shipped files, strict validation, derived values and user directories."""

from __future__ import annotations

import os
import re

import pytest

from edgepack.errors import BadInputError, ExitCode, ProfileError
from edgepack.precisions import WEIGHT_FORMATS
from edgepack.resources import TARGETS_PATH_ENV, data_dir
from edgepack.targets import TargetRegistry, load_profile

SHIPPED = sorted(data_dir("targets").glob("*.toml"))
REFERENCE_TARGETS = {
    "ada-sm89",
    "jetson-thor",
    "jetson-agx-orin-64gb",
    "jetson-orin-nano-8gb",
    "dgx-spark",
    "host-x86_64-cpu",
    "generic-aarch64-cpu",
}


# --- the shipped profiles -------------------------------------------------------------------


def test_the_reference_targets_ship() -> None:
    assert {path.stem for path in SHIPPED} >= REFERENCE_TARGETS


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_profile_loads(path) -> None:
    profile = load_profile(path)
    assert profile.name == path.stem
    assert profile.backends.default in profile.backends.allowed
    assert re.fullmatch(r"[0-9a-f]{64}", profile.content_hash())


@pytest.mark.parametrize(
    ("name", "cuda_arch", "sm"),
    [
        ("ada-sm89", "89", "SM89"),
        ("jetson-thor", "110a", "SM110"),
        ("dgx-spark", "121a", "SM121"),
        ("jetson-agx-orin-64gb", "87", "SM87"),
        ("jetson-orin-nano-8gb", "87", "SM87"),
    ],
)
def test_derived_cuda_arch_and_sm(registry, name, cuda_arch, sm) -> None:
    profile = registry.get(name)
    assert profile.gpu is not None
    assert profile.gpu.cuda_arch == cuda_arch
    assert profile.gpu.sm == sm
    assert profile.sm_label == sm


@pytest.mark.parametrize(
    ("name", "label"),
    [("host-x86_64-cpu", "CPU (x86_64)"), ("generic-aarch64-cpu", "CPU (aarch64)")],
)
def test_cpu_profiles_have_no_gpu(registry, name, label) -> None:
    profile = registry.get(name)
    assert profile.gpu is None
    assert profile.sm_label == label
    assert profile.backends.allowed == ["ort"]


@pytest.mark.parametrize(
    ("name", "size_gb", "bandwidth", "fp8", "nvfp4", "fp8_kv"),
    [  # REFERENCE.md §2
        ("ada-sm89", 48, 960, True, False, True),
        ("jetson-thor", 128, 273, True, True, True),
        ("jetson-agx-orin-64gb", 64, 204.8, False, False, False),
        ("jetson-orin-nano-8gb", 8, 102, False, False, False),
        ("dgx-spark", 128, 273, True, True, True),
    ],
)
def test_profiles_hold_the_reference_facts(
    registry, name, size_gb, bandwidth, fp8, nvfp4, fp8_kv
) -> None:
    profile = registry.get(name)
    assert profile.memory.size_gb == size_gb
    assert profile.memory.bandwidth_gbps == bandwidth
    assert ("fp8" in profile.precisions.weights) is fp8
    assert ("nvfp4" in profile.precisions.weights) is nvfp4
    assert ("fp8" in profile.precisions.kv_cache) is fp8_kv


def test_content_hash_follows_the_facts(registry) -> None:
    ada = registry.get("ada-sm89")
    faster = ada.model_copy(update={"memory": ada.memory.model_copy(update={"size_gb": 96})})
    assert faster.content_hash() != ada.content_hash()
    assert ada.content_hash() == registry.get("ada-sm89").content_hash()


# --- strict validation ----------------------------------------------------------------------

ORIN = "jetson-agx-orin-64gb"
ORIN_WEIGHTS = 'weights = ["fp16", "int8_sq", "int4_awq", "fp32", "int4"]'
ORIN_KV = 'kv_cache = ["fp16", "fp32"]'
CPU = "host-x86_64-cpu"

INVALID = {
    "unknown key in a section": (
        "ada-sm89",
        [("bandwidth_gbps = 960", "bandwith_gbps = 960")],
        ["unknown key 'memory.bandwith_gbps'", 'did you mean "bandwidth_gbps"'],
    ),
    "misspelt section": (
        "ada-sm89",
        [("[precisions]", "[precision]")],
        ["unknown key 'precision'", 'did you mean "precisions"'],
    ),
    "misspelt key in the optional gpu section": (
        "ada-sm89",
        [('compute_capability = "8.9"', 'compute_capabilty = "8.9"')],
        ["unknown key 'gpu.compute_capabilty'", 'did you mean "compute_capability"'],
    ),
    "misspelt key in a defaulted section": (
        "ada-sm89",
        [("gpu_name_contains =", "gpu_name_contain =")],
        ["unknown key 'detect.gpu_name_contain'", 'did you mean "gpu_name_contains"'],
    ),
    "missing key": (
        "ada-sm89",
        [("bandwidth_gbps = 960", "")],
        ["key 'memory.bandwidth_gbps'", "required"],
    ),
    "string for a number": (
        "ada-sm89",
        [("size_gb = 48", 'size_gb = "48"')],
        ["key 'memory.size_gb'", "number"],
    ),
    "number for a string": (
        "ada-sm89",
        [('compute_capability = "8.9"', "compute_capability = 8.9")],
        ["key 'gpu.compute_capability'", "string"],
    ),
    "string for a boolean": (
        "dgx-spark",
        [("family_specific = true", 'family_specific = "yes"')],
        ["key 'gpu.family_specific'", "boolean"],
    ),
    "malformed compute capability": (
        "ada-sm89",
        [('compute_capability = "8.9"', 'compute_capability = "89"')],
        ["key 'gpu.compute_capability'"],
    ),
    "fraction above 1": (
        "ada-sm89",
        [("llm_fraction = 0.9", "llm_fraction = 1.5")],
        ["key 'memory.llm_fraction'"],
    ),
    "fp8 on cc 8.7": (
        ORIN,
        [(ORIN_WEIGHTS, ORIN_WEIGHTS.replace('"fp16"', '"fp16", "fp8"'))],
        ["fp8 needs compute capability >= 8.9", "8.7"],
    ),
    "fp8 KV cache on cc 8.7": (
        ORIN,
        [(ORIN_KV, 'kv_cache = ["fp16", "fp8"]')],
        ["kv fp8 needs compute capability >= 8.9", "8.7"],
    ),
    "nvfp4 on cc 8.9": (
        "ada-sm89",
        [('"int4_awq"]', '"int4_awq", "nvfp4"]')],
        ["nvfp4 needs compute capability >= 10.0", "8.9"],
    ),
    "GPU weight precision without a GPU": (
        CPU,
        [('weights = ["fp32", "fp16", "int4"]', 'weights = ["fp32", "fp16", "int8_sq"]')],
        ["int8_sq needs a GPU"],
    ),
    "GPU KV dtype without a GPU": (
        CPU,
        [('kv_cache = ["fp32", "fp16"]', 'kv_cache = ["fp32", "bf16"]')],
        ["bf16 needs a GPU"],
    ),
    "unknown weight precision": (
        "ada-sm89",
        [('"int4_awq"]', '"int4awq"]')],
        ["key 'precisions.weights'", "'int4awq'", 'did you mean "int4_awq"'],
    ),
    "unknown KV dtype": (
        "ada-sm89",
        [('kv_cache = ["fp16"', 'kv_cache = ["fp61"')],
        ["key 'precisions.kv_cache'", "'fp61'", 'did you mean "fp16"'],
    ),
    "default backend not allowed": (
        "ada-sm89",
        [('default = "trtllm"', 'default = "ort"')],
        ["key 'backends'", "default backend 'ort' is not in allowed"],
    ),
    "unknown backend": (
        "ada-sm89",
        [('allowed = ["trtllm"', 'allowed = ["trt-llm"')],
        ["key 'backends.allowed.0'", "trtllm"],
    ),
    "unknown engine location": (
        "ada-sm89",
        [('engine_location = "host"', 'engine_location = "cloud"')],
        ["key 'build.engine_location'"],
    ),
    "infinite bandwidth": (
        "ada-sm89",
        [("bandwidth_gbps = 960", "bandwidth_gbps = inf")],
        ["key 'memory.bandwidth_gbps'", "finite"],
    ),
    "nan memory": (
        "ada-sm89",
        [("size_gb = 48", "size_gb = nan")],
        ["key 'memory.size_gb'", "finite"],
    ),
    "negative infinite power": (
        "ada-sm89",
        [("max_w = 300", "max_w = -inf")],
        ["key 'power.max_w'"],
    ),
    "invalid TOML": (
        "ada-sm89",
        [("size_gb = 48", "size_gb = ")],
        ["not valid TOML"],
    ),
}


@pytest.mark.parametrize(("base", "replacements", "expected"), INVALID.values(), ids=INVALID)
def test_invalid_profile_is_rejected_naming_file_and_key(
    profile_variant, base, replacements, expected
) -> None:
    path = profile_variant(base, *replacements)
    with pytest.raises(ProfileError) as caught:
        load_profile(path)
    assert caught.value.exit_code == ExitCode.INVALID_PROFILE
    assert str(path) in caught.value.message
    for fragment in expected:
        assert fragment in caught.value.message


@pytest.mark.parametrize("base", [ORIN, "ada-sm89", CPU])
def test_unedited_copy_loads(profile_variant, base) -> None:
    """The control for the table above: only the edit makes those files invalid."""
    assert load_profile(profile_variant(base)).name == base


def test_every_weight_precision_is_checked_against_the_gpu(profile_variant) -> None:
    """A profile may only claim the formats its compute capability has kernels for."""
    for name, fmt in WEIGHT_FORMATS.items():
        floor = fmt.min_compute_capability
        if floor is None or floor <= 8.7:
            continue
        path = profile_variant(ORIN, (ORIN_WEIGHTS, f'weights = ["fp16", "{name}"]'))
        with pytest.raises(ProfileError, match=f"{name} needs compute capability"):
            load_profile(path)


def test_name_must_match_the_file_name(profile_variant) -> None:
    path = profile_variant("ada-sm89", name="my-workstation")
    with pytest.raises(ProfileError) as caught:
        load_profile(path)
    message = caught.value.message
    assert str(path) in message
    assert "key 'name'" in message
    assert "'ada-sm89'" in message and "'my-workstation'" in message


def test_profile_that_is_not_utf8_is_rejected_naming_the_file(tmp_path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes('description = "Jetson f\u00fcr die Werkstatt"\n'.encode("latin-1"))
    with pytest.raises(ProfileError) as caught:
        load_profile(path)
    assert str(path) in caught.value.message


def test_missing_profile_file_is_bad_input(tmp_path) -> None:
    with pytest.raises(BadInputError, match="does not exist"):
        load_profile(tmp_path / "nothing.toml")


# --- the registry and user profile directories ----------------------------------------------


def _renamed(profile_variant, new_name, directory="user"):
    return profile_variant(
        "ada-sm89",
        ('name = "ada-sm89"', f'name = "{new_name}"'),
        name=new_name,
        directory=directory,
    )


def _faster_ada(profile_variant, bandwidth, directory):
    return profile_variant(
        "ada-sm89",
        ("bandwidth_gbps = 960", f"bandwidth_gbps = {bandwidth}"),
        directory=directory,
    )


def test_default_registry_has_the_builtin_profiles() -> None:
    assert set(TargetRegistry.default().names()) >= REFERENCE_TARGETS


def test_targets_dir_adds_a_new_profile(profile_variant) -> None:
    path = _renamed(profile_variant, "my-ada")
    registry = TargetRegistry.default([path.parent])
    assert registry.get("my-ada").name == "my-ada"
    assert registry.path_of("my-ada") == path
    assert "ada-sm89" in registry.names()


def test_env_path_adds_profiles_from_every_directory(profile_variant, monkeypatch) -> None:
    first = _renamed(profile_variant, "my-ada", directory="one")
    second = _renamed(profile_variant, "my-other-ada", directory="two")
    monkeypatch.setenv(TARGETS_PATH_ENV, os.pathsep.join([str(first.parent), str(second.parent)]))
    names = TargetRegistry.default().names()
    assert {"my-ada", "my-other-ada", "ada-sm89"} <= set(names)


def test_user_profile_overrides_builtin(profile_variant, monkeypatch) -> None:
    path = _faster_ada(profile_variant, 1000, "user")
    assert TargetRegistry.default([path.parent]).get("ada-sm89").memory.bandwidth_gbps == 1000
    monkeypatch.setenv(TARGETS_PATH_ENV, str(path.parent))
    registry = TargetRegistry.default()
    assert registry.get("ada-sm89").memory.bandwidth_gbps == 1000
    assert registry.path_of("ada-sm89") == path


def test_targets_dir_wins_over_env_path(profile_variant, monkeypatch) -> None:
    from_env = _faster_ada(profile_variant, 1000, "env")
    from_flag = _faster_ada(profile_variant, 2000, "flag")
    monkeypatch.setenv(TARGETS_PATH_ENV, str(from_env.parent))
    registry = TargetRegistry.default([from_flag.parent])
    assert registry.get("ada-sm89").memory.bandwidth_gbps == 2000


def test_missing_targets_dir_is_bad_input(tmp_path) -> None:
    with pytest.raises(BadInputError, match="does not exist"):
        TargetRegistry.default([tmp_path / "nowhere"])


def test_unknown_target_suggests_the_closest(registry) -> None:
    with pytest.raises(BadInputError) as caught:
        registry.get("ada-sm8")
    assert 'did you mean "ada-sm89"' in caught.value.message
    assert caught.value.hint

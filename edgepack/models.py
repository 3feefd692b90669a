"""ModelSpec: the architecture facts of a causal LM and the parameter accounting built on them.

A spec comes from an HF directory's ``config.json`` or from a bundled model card (``models/*.toml``,
config facts only, no weights). It counts parameters per part, which the planner turns into bytes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgepack.errors import BadInputError, did_you_mean
from edgepack.resources import data_dir

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEMO_PREFIX = "demo:"


@dataclass(frozen=True)
class ParameterCounts:
    embedding: int
    lm_head: int
    """Zero when the lm_head is tied to the embedding table."""
    attention: int
    mlp: int
    norms: int

    @property
    def total(self) -> int:
        return self.embedding + self.lm_head + self.attention + self.mlp + self.norms

    @property
    def transformer_blocks(self) -> int:
        """The weights quantization acts on: attention and MLP projections."""
        return self.attention + self.mlp


@dataclass(frozen=True)
class ModelSpec:
    name: str
    architecture: str
    model_type: str
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool
    max_position_embeddings: int
    qkv_bias: bool = False
    qk_norm: bool = False
    source: str = ""
    """Where the facts came from: a card file or a config.json path."""
    hf_id: str | None = None

    @property
    def parameters(self) -> ParameterCounts:
        embedding = self.vocab_size * self.hidden_size
        q_width = self.num_heads * self.head_dim
        kv_width = self.num_kv_heads * self.head_dim
        per_layer_attention = (
            self.hidden_size * q_width  # q_proj
            + 2 * self.hidden_size * kv_width  # k_proj, v_proj
            + q_width * self.hidden_size  # o_proj
            + ((q_width + 2 * kv_width) if self.qkv_bias else 0)
            + (2 * self.head_dim if self.qk_norm else 0)
        )
        per_layer_mlp = 3 * self.hidden_size * self.intermediate_size  # gate, up, down
        return ParameterCounts(
            embedding=embedding,
            lm_head=0 if self.tie_word_embeddings else embedding,
            attention=self.num_layers * per_layer_attention,
            mlp=self.num_layers * per_layer_mlp,
            norms=(2 * self.num_layers + 1) * self.hidden_size,
        )

    def kv_elements_per_token(self) -> int:
        """K and V values stored per token across all layers."""
        return self.num_layers * 2 * self.num_kv_heads * self.head_dim

    @classmethod
    def from_config(cls, config: dict[str, Any], name: str, source: str) -> ModelSpec:
        """Build a spec from the keys of an HF ``config.json`` (or a model card holding them)."""
        try:
            return cls._from_config(config, name, source)
        except KeyError as exc:
            raise BadInputError(
                f"{source}: config lacks {exc.args[0]!r}; edgepack plans decoder-only causal LMs",
                hint="check that this is a causal LM's config.json",
            ) from exc
        except (TypeError, ValueError, ZeroDivisionError, AttributeError) as exc:
            raise BadInputError(
                f"{source}: config has a malformed value ({exc})",
                hint="sizes and counts must be positive integers",
            ) from exc

    @classmethod
    def _from_config(cls, config: dict[str, Any], name: str, source: str) -> ModelSpec:
        heads = int(config["num_attention_heads"])
        hidden = int(config["hidden_size"])
        model_type = str(config.get("model_type", "unknown"))
        return cls(
            name=name,
            architecture=str((config.get("architectures") or ["unknown"])[0]),
            model_type=model_type,
            hidden_size=hidden,
            num_layers=int(config["num_hidden_layers"]),
            num_heads=heads,
            num_kv_heads=int(config.get("num_key_value_heads") or heads),
            head_dim=int(config.get("head_dim") or hidden // heads),
            intermediate_size=int(config["intermediate_size"]),
            vocab_size=int(config["vocab_size"]),
            tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
            max_position_embeddings=int(config.get("max_position_embeddings", 4096)),
            qkv_bias=bool(config.get("attention_bias", model_type == "qwen2")),
            qk_norm=model_type.startswith("qwen3"),
            source=source,
            hf_id=config.get("hf_id") or config.get("_name_or_path") or None,
        )


def card_names() -> list[str]:
    return sorted(path.stem for path in data_dir("models").glob("*.toml"))


def load_card(name: str) -> ModelSpec:
    path = data_dir("models") / f"{name}.toml"
    card = tomllib.loads(path.read_text(encoding="utf-8"))
    return ModelSpec.from_config({**card["config"], "hf_id": card["hf_id"]}, name, str(path))


def _card_aliases() -> dict[str, str]:
    aliases: dict[str, str] = {}
    for name in card_names():
        card = tomllib.loads((data_dir("models") / f"{name}.toml").read_text(encoding="utf-8"))
        for alias in [name, card.get("hf_id", ""), *card.get("aliases", [])]:
            if alias:
                aliases[alias.lower()] = name
    return aliases


def spec_from_directory(directory: Path) -> ModelSpec:
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise BadInputError(
            f"{directory} has no config.json",
            hint="--model takes an HF model folder or a card name",
        )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadInputError(f"{config_path} is not valid JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise BadInputError(f"{config_path} is not a JSON object")
    return ModelSpec.from_config(config, name=directory.name, source=str(config_path))


def resolve_spec(reference: str) -> ModelSpec:
    """A spec for ``--model``: a local HF folder, a bundled card name or alias, or ``demo:NAME``."""
    path = Path(reference).expanduser()
    if path.is_dir():
        return spec_from_directory(path)
    if reference.startswith(DEMO_PREFIX):
        from edgepack.demo import DEMO_MODELS  # light: no heavy imports at module level

        demo = DEMO_MODELS.get(reference.removeprefix(DEMO_PREFIX))
        if demo is None:
            known = ", ".join(DEMO_PREFIX + n for n in DEMO_MODELS)
            raise BadInputError(f"unknown demo model {reference!r}", hint=f"known: {known}")
        return load_card(demo.card)
    _refuse_a_wrong_path(reference, path)
    aliases = _card_aliases()
    card = aliases.get(reference.lower())
    if card is None:
        raise BadInputError(
            f"unknown model {reference!r}{did_you_mean(reference.lower(), aliases)}",
            hint=f"give a local HF folder, demo:smollm2-135m, or a card: {', '.join(card_names())}",
        )
    return load_card(card)


def _refuse_a_wrong_path(reference: str, path: Path) -> None:
    """A --model that is a file, or is written as a path (not a card name) and does not exist."""
    if path.exists():
        raise BadInputError(
            f"--model {reference} is a file, not a model folder",
            hint="give the Hugging Face folder that holds config.json",
        )
    if reference.startswith(("/", "./", "../", "~")):
        raise BadInputError(
            f"model folder {reference} does not exist",
            hint="--model takes an HF model folder, demo:smollm2-135m or a card name",
        )


@dataclass(frozen=True)
class ModelSource:
    """Where a build's weights come from: an HF folder on this machine."""

    reference: str
    """What the user typed: a folder, ``demo:NAME``, or a hub id / card name in the HF cache."""
    directory: Path
    spec: ModelSpec


def _hf_cache_snapshot(hf_id: str) -> Path | None:
    """The newest snapshot of ``hf_id`` in the local Hugging Face cache, if it was downloaded."""
    hf_home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    hub = Path(os.environ.get("HF_HUB_CACHE", hf_home / "hub"))
    snapshots = hub / f"models--{hf_id.replace('/', '--')}" / "snapshots"
    candidates = [s for s in snapshots.glob("*") if (s / "config.json").is_file()]
    return max(candidates, key=lambda s: s.stat().st_mtime) if candidates else None


def resolve_model_source(
    reference: str, cache_root: Path, progress: Callable[[str], None] | None = None
) -> ModelSource:
    """Find the weights for ``--model`` on this machine. Nothing is ever downloaded."""
    path = Path(reference).expanduser()
    if path.is_dir():
        return ModelSource(reference, path.resolve(), spec_from_directory(path))
    if reference.startswith(DEMO_PREFIX):
        from edgepack.demo import materialize_demo_model

        directory = materialize_demo_model(
            reference.removeprefix(DEMO_PREFIX), cache_root, progress
        )
        card_name = resolve_spec(reference).name
        spec = dataclasses.replace(spec_from_directory(directory), name=card_name)
        return ModelSource(reference, directory, spec)
    spec = resolve_spec(reference)  # raises for unknown names
    hf_id = spec.hf_id or reference
    snapshot = _hf_cache_snapshot(hf_id)
    if snapshot is None:
        raise BadInputError(
            f"{reference!r} ({hf_id}) has no weights on this machine and edgepack never downloads",
            hint=f"download it yourself (`hf download {hf_id}`) and pass its folder to --model",
        )
    return ModelSource(reference, snapshot, spec_from_directory(snapshot))

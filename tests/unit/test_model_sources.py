"""Where build weights come from: local folders, the HF cache, never a download."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgepack.errors import BadInputError
from edgepack.models import resolve_model_source

QWEN3_CONFIG = {
    "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": 1024,
    "intermediate_size": 3072, "num_hidden_layers": 28, "num_attention_heads": 16,
    "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936,
    "tie_word_embeddings": True, "max_position_embeddings": 40960,
}  # fmt: skip


def test_hub_id_not_in_the_cache_is_refused_without_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    with pytest.raises(BadInputError, match="never downloads") as error:
        resolve_model_source("qwen3-0.6b", tmp_path / "cache")
    assert "Qwen/Qwen3-0.6B" in str(error.value)
    assert error.value.hint is not None and "--model" in error.value.hint


def test_hub_id_found_in_the_hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    snapshot = tmp_path / "hf" / "hub" / "models--Qwen--Qwen3-0.6B" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps(QWEN3_CONFIG))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    source = resolve_model_source("Qwen/Qwen3-0.6B", tmp_path / "cache")
    assert source.directory == snapshot
    assert source.spec.num_layers == 28


def test_local_folder_is_used_as_it_is(tmp_path: Path) -> None:
    folder = tmp_path / "my-model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(QWEN3_CONFIG))
    source = resolve_model_source(str(folder), tmp_path / "cache")
    assert source.directory == folder.resolve()
    assert source.spec.name == "my-model"

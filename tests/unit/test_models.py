"""Model specs: bundled cards against the official parameter counts, and resolving --model."""

from __future__ import annotations

import json

import pytest

from edgepack.errors import BadInputError
from edgepack.models import ModelSpec, card_names, load_card, resolve_spec

# Totals from the model cards on the Hugging Face Hub.
OFFICIAL_PARAMETERS = {
    "qwen2.5-7b-instruct": 7.62e9,
    "qwen3-8b": 8.19e9,
    "qwen3-0.6b": 0.60e9,
    "llama-3.1-8b-instruct": 8.03e9,
    "smollm2-135m-instruct": 134.5e6,
}

SMALL_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 1000,
    "tie_word_embeddings": True,
    "max_position_embeddings": 512,
}


def test_every_card_loads() -> None:
    assert set(card_names()) >= set(OFFICIAL_PARAMETERS)
    for name in card_names():
        spec = load_card(name)
        assert spec.name == name
        assert spec.hf_id
        assert spec.parameters.total > 0


@pytest.mark.parametrize(("name", "official"), OFFICIAL_PARAMETERS.items())
def test_parameter_count_matches_the_official_total(name, official) -> None:
    assert load_card(name).parameters.total == pytest.approx(official, rel=0.01)


def test_qwen3_0_6b_non_embedding_parameters() -> None:
    counts = load_card("qwen3-0.6b").parameters
    assert counts.total - counts.embedding - counts.lm_head == pytest.approx(0.44e9, rel=0.01)


@pytest.mark.parametrize(
    ("name", "tied"),
    [
        ("qwen2.5-7b-instruct", False),
        ("qwen3-8b", False),
        ("llama-3.1-8b-instruct", False),
        ("qwen3-0.6b", True),
        ("smollm2-135m-instruct", True),
    ],
)
def test_tied_lm_head_is_counted_once(name, tied) -> None:
    spec = load_card(name)
    counts = spec.parameters
    assert spec.tie_word_embeddings is tied
    assert counts.embedding == spec.vocab_size * spec.hidden_size
    assert counts.lm_head == (0 if tied else counts.embedding)


@pytest.mark.parametrize(
    ("name", "head_dim"),
    [
        ("qwen2.5-7b-instruct", 128),  # 3584 / 28
        ("smollm2-135m-instruct", 64),  # 576 / 9
        ("qwen3-0.6b", 128),  # explicit in config.json; hidden / heads would give 64
    ],
)
def test_head_dim(name, head_dim) -> None:
    assert load_card(name).head_dim == head_dim


def test_kv_elements_per_token_of_qwen3_8b() -> None:
    spec = load_card("qwen3-8b")
    assert spec.kv_elements_per_token() == 36 * 2 * 8 * 128
    assert spec.kv_elements_per_token() * 2 == 144 * 1024  # FP16 bytes: 144 KiB per token


def test_qwen2_has_qkv_bias_and_qwen3_has_qk_norm() -> None:
    qwen2, qwen3, llama = (
        load_card("qwen2.5-7b-instruct"),
        load_card("qwen3-8b"),
        load_card("llama-3.1-8b-instruct"),
    )
    assert (qwen2.qkv_bias, qwen2.qk_norm) == (True, False)
    assert (qwen3.qkv_bias, qwen3.qk_norm) == (False, True)
    assert (llama.qkv_bias, llama.qk_norm) == (False, False)


def test_small_config_counts_by_hand() -> None:
    spec = ModelSpec.from_config(SMALL_CONFIG, name="tiny", source="test")
    counts = spec.parameters
    assert spec.head_dim == 16
    assert counts.embedding == 1000 * 64
    assert counts.lm_head == 0
    # q and o: 64×64 each; k and v: 64×32 each
    assert counts.attention == 2 * (2 * 64 * 64 + 2 * 64 * 32)
    assert counts.mlp == 2 * 3 * 64 * 256
    assert counts.norms == (2 * 2 + 1) * 64


# --- resolve_spec ---------------------------------------------------------------------------


def test_resolve_local_folder(tmp_path) -> None:
    folder = tmp_path / "TinyLlama"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(SMALL_CONFIG), encoding="utf-8")
    spec = resolve_spec(str(folder))
    assert spec.name == "TinyLlama"
    assert spec.source == str(folder / "config.json")
    assert (spec.hidden_size, spec.num_layers, spec.num_kv_heads) == (64, 2, 2)
    assert spec.architecture == "LlamaForCausalLM"


def test_local_config_without_kv_heads_means_multi_head_attention(tmp_path) -> None:
    config = {k: v for k, v in SMALL_CONFIG.items() if k != "num_key_value_heads"}
    (tmp_path / "config.json").write_text(json.dumps(config), encoding="utf-8")
    assert resolve_spec(str(tmp_path)).num_kv_heads == 4


@pytest.mark.parametrize("key", ["hidden_size", "num_hidden_layers", "vocab_size"])
def test_config_missing_a_key_is_bad_input(tmp_path, key) -> None:
    config = {k: v for k, v in SMALL_CONFIG.items() if k != key}
    (tmp_path / "config.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(BadInputError) as caught:
        resolve_spec(str(tmp_path))
    assert key in caught.value.message
    assert "config.json" in caught.value.message


@pytest.mark.parametrize(
    "text",
    [
        '{"hidden_size": 64,',  # cut off: a partial download
        "[1, 2]",
        json.dumps({**SMALL_CONFIG, "hidden_size": "big"}),
    ],
    ids=["truncated JSON", "not an object", "not a number"],
)
def test_malformed_config_is_bad_input(tmp_path, text) -> None:
    """A broken config.json is the user's input: exit 2 with the file named, not a crash."""
    (tmp_path / "config.json").write_text(text, encoding="utf-8")
    with pytest.raises(BadInputError) as caught:
        resolve_spec(str(tmp_path))
    assert "config.json" in caught.value.message


def test_folder_without_config_is_bad_input(tmp_path) -> None:
    with pytest.raises(BadInputError, match=r"no config\.json"):
        resolve_spec(str(tmp_path))


@pytest.mark.parametrize(
    ("reference", "card"),
    [
        ("qwen3-8b", "qwen3-8b"),
        ("qwen2.5-7b", "qwen2.5-7b-instruct"),
        ("Qwen/Qwen2.5-7B-Instruct", "qwen2.5-7b-instruct"),
        ("Qwen/Qwen3-0.6B", "qwen3-0.6b"),
        ("llama-3.1-8b", "llama-3.1-8b-instruct"),
        ("meta-llama/Llama-3.1-8B-Instruct", "llama-3.1-8b-instruct"),
        ("LLAMA3.1-8B", "llama-3.1-8b-instruct"),
        ("smollm2-135m", "smollm2-135m-instruct"),
        ("HuggingFaceTB/SmolLM2-135M-Instruct", "smollm2-135m-instruct"),
    ],
)
def test_resolve_card_names_aliases_and_hf_ids(reference, card) -> None:
    assert resolve_spec(reference).name == card


def test_resolve_demo_model() -> None:
    spec = resolve_spec("demo:smollm2-135m")
    assert spec.name == "smollm2-135m-instruct"
    assert spec.hidden_size == 576


def test_unknown_demo_model_is_bad_input() -> None:
    with pytest.raises(BadInputError) as caught:
        resolve_spec("demo:gpt-5")
    assert "demo:smollm2-135m" in (caught.value.hint or "")


def test_unknown_model_suggests_the_closest() -> None:
    with pytest.raises(BadInputError) as caught:
        resolve_spec("qwen3-8c")
    assert "'qwen3-8c'" in caught.value.message
    assert 'did you mean "qwen3-8b"' in caught.value.message
    assert "qwen3-8b" in (caught.value.hint or "")

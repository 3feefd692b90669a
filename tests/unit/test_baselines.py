"""Baseline engine helpers that need no model: quality classes, labels, unreachable servers."""

from __future__ import annotations

import pytest

from edgepack.bench.baselines import OllamaServer, _gguf_quant_label, baseline_quality_class
from edgepack.cli.main import run
from edgepack.errors import ExitCode, RemoteError


@pytest.mark.parametrize(
    ("name", "klass"),
    [
        ("SmolLM2-135M-Instruct.Q4_1.gguf", "4bit"),
        ("qwen2.5-7b-instruct-q4_k_m.gguf", "4bit"),
        ("model-Q8_0.gguf", "8bit"),
        ("llama3.1:8b-instruct-fp16", "half"),
        ("model.F16.gguf", "half"),
        ("model-f32.gguf", "full"),
        ("llama3.2", "4bit"),
    ],
)
def test_quality_class_from_names(name: str, klass: str) -> None:
    assert baseline_quality_class(name) == klass


def test_gguf_quant_label() -> None:
    assert _gguf_quant_label("SmolLM2-135M-Instruct.Q4_1.gguf") == "Q4_1"
    assert _gguf_quant_label("qwen2.5-7b-instruct-q4_k_m.gguf") == "Q4_K_M"
    assert _gguf_quant_label("weights.gguf") == "weights.gguf"


def test_unreachable_ollama_is_a_remote_error() -> None:
    server = OllamaServer("http://127.0.0.1:9", "m", timeout_s=2)
    with pytest.raises(RemoteError, match="cannot reach Ollama"):
        server.post("/api/chat", {"model": "m", "messages": []})


def test_baseline_needs_a_reference_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["bench", "--engine", "ollama", "--ollama-model", "m"]) == ExitCode.BAD_INPUT
    assert "--reference-model" in capsys.readouterr().err


def test_the_llamacpp_context_is_a_default_plans() -> None:
    from edgepack.bench.baselines import LLAMACPP_CONTEXT
    from edgepack.plan import Limits

    assert Limits().max_seq_len == LLAMACPP_CONTEXT


def test_engine_threads_count_usable_physical_cores() -> None:
    import os

    from edgepack.bench.machine import engine_threads

    assert 1 <= engine_threads() <= len(os.sched_getaffinity(0))

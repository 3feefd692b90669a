"""Baseline engines in edgepack's format: llama.cpp for real on the demo GGUF, Ollama replayed."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from edgepack.cli.main import run
from edgepack.demo import get_demo_model, locate_gguf
from edgepack.errors import ExitCode
from tests.conftest import require_demo_stack
from tests.slow.ollama_replay import DECODE_NS_PER_TOKEN, ollama_replay

pytestmark = pytest.mark.slow
COMMON = ["--reference-model", "demo:smollm2-135m", "--runs", "1", "--warmup", "0"]


def _bench(out: Path, *args: str) -> int:
    return run(["bench", *args, *COMMON, "--json-out", str(out)])


def test_ollama_baseline_is_timed_by_its_own_fields_and_judged(
    session_cache: Path, tmp_path: Path
) -> None:
    require_demo_stack()
    out = tmp_path / "ollama.json"
    with ollama_replay() as url:
        code = _bench(out, "--engine", "ollama", "--ollama-model", "smollm2:135m-fp16",
                      "--ollama-url", url)  # fmt: skip
    assert code == 0
    result = json.loads(out.read_text())
    assert result["bundle"]["backend"] == "ollama"
    assert result["quality"]["passed"] is True
    assert result["quality"]["quality_class"] == "half"
    assert result["metrics"]["decode_tok_s"]["median"] == pytest.approx(
        1e9 / DECODE_NS_PER_TOKEN, rel=0.02
    )
    assert result["metrics"]["decode_tok_s_batched"] is None
    assert result["settings"]["batch_size"] == 1


def test_ollama_token_salad_fails_the_gate(session_cache: Path, tmp_path: Path) -> None:
    require_demo_stack()
    out = tmp_path / "salad.json"
    with ollama_replay(lambda answer: "strugg (str, 1, 1, 1) 1) 1) " * 8) as url:
        code = _bench(out, "--engine", "ollama", "--ollama-model", "smollm2", "--ollama-url", url)
    assert code == ExitCode.QUALITY_GATE
    assert json.loads(out.read_text())["quality"]["passed"] is False


def test_llamacpp_baseline_on_the_demo_gguf(session_cache: Path, tmp_path: Path) -> None:
    require_demo_stack()
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed (pip install 'edgepack[llamacpp]')")
    gguf = locate_gguf(get_demo_model("smollm2-135m"))
    out = tmp_path / "llamacpp.json"
    assert _bench(out, "--engine", "llamacpp", "--gguf", str(gguf)) == 0
    result = json.loads(out.read_text())
    assert result["bundle"]["backend"] == "llama.cpp"
    assert result["bundle"]["precision"] == "Q4_1"
    assert result["quality"]["quality_class"] == "4bit"
    # Q4_1 of a 135M model answers in French loops now and then; the 4-bit class allows a few.
    assert result["quality"]["passed"] is True
    assert all(o["text"].strip() for o in result["outputs"])
    assert result["metrics"]["decode_tok_s"]["median"] > 0

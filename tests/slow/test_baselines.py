"""Baseline engines in edgepack's format: llama.cpp for real on the demo GGUF, Ollama replayed
(recorded answers of a real 4-bit engine of the demo model, which must pass, and degenerate ones,
which must fail naming their check)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from edgepack.bench.machine import engine_threads
from edgepack.cli.main import run
from edgepack.demo import get_demo_model, locate_gguf
from edgepack.errors import ExitCode
from tests.conftest import require_demo_stack
from tests.slow.ollama_replay import DECODE_NS_PER_TOKEN, RECORDED_MODEL, ollama_replay

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
        code = _bench(out, "--engine", "ollama", "--ollama-model", RECORDED_MODEL,
                      "--ollama-url", url)  # fmt: skip
    assert code == 0
    result = json.loads(out.read_text())
    assert result["bundle"]["backend"] == "ollama"
    assert result["quality"]["passed"] is True
    assert result["quality"]["quality_class"] == "4bit"
    assert result["quality"]["metrics"]["exact_match_rate"] < 1  # not the reference's answers
    assert result["settings"]["threads"] == engine_threads()
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
    verdict = json.loads(out.read_text())["quality"]
    assert verdict["passed"] is False
    failed = {c["name"] for c in verdict["checks"] if not c["passed"]}
    assert {"chrf", "absolute_distinct"} <= failed


def test_ollama_looping_answers_fail_on_their_own(session_cache: Path, tmp_path: Path) -> None:
    require_demo_stack()
    out = tmp_path / "loops.json"
    with ollama_replay(lambda answer: answer.split()[0] + " clips" * 60) as url:
        code = _bench(out, "--engine", "ollama", "--ollama-model", RECORDED_MODEL,
                      "--ollama-url", url)  # fmt: skip
    assert code == ExitCode.QUALITY_GATE
    verdict = json.loads(out.read_text())["quality"]
    failed = {c["name"] for c in verdict["checks"] if not c["passed"]}
    assert {"absolute_loop", "absolute_distinct", "looping_share"} <= failed


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
    # The threads and context of the engines it is compared with, recorded.
    assert result["settings"]["threads"] == engine_threads()
    assert result["bundle"]["limits"] == {"n_ctx": 2048}

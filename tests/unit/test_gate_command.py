"""`edgepack gate RESULT.json`: a saved run judged again, against a cached reference (no model
runs: the reference of a hand-made source folder is written into the cache by its key)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from edgepack.bench.result import BenchSettings, LoadTimes, Metrics, PromptOutput, RunResult
from edgepack.bench.stats import Spread
from edgepack.cache import FileHashIndex
from edgepack.cli.main import run
from edgepack.errors import ExitCode
from edgepack.quality.reference import (
    Reference,
    ReferenceOutput,
    prompts_sha256,
    reference_key,
)

ANSWER = "The capital of France is Paris, a large and old city on the river Seine."
CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
    "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
    "num_hidden_layers": 2, "vocab_size": 49152, "max_position_embeddings": 512,
    "dtype": "bfloat16",
}  # fmt: skip


def _ids(text: str) -> list[int]:
    """One id per distinct word, as a tokenizer would give."""
    table: dict[str, int] = {}
    return [table.setdefault(word, 100 + len(table)) for word in text.split()]


def _result(tmp_path: Path, text: str, max_new_tokens: int = 32) -> Path:
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({"name": "t", "prompts": [{"id": "p1", "text": "Capital?"}]}))
    spread = Spread.of([1.0])
    result = RunResult(
        location="local",
        bundle={"dir": str(tmp_path / "gone"), "precision": "int4", "model": "m"},
        machine={},
        settings=BenchSettings(
            runs=1, warmup=0, batch_size=1, max_new_tokens=max_new_tokens,
            prompts_file=str(prompts),
            prompts_sha256=hashlib.sha256(prompts.read_bytes()).hexdigest(),
        ),
        load=LoadTimes(first_s=1.0, first_page_cache="unknown", warm=spread),
        metrics=Metrics(
            ttft_s=spread, prefill_tok_s=spread, decode_tok_s=spread, decode_tok_s_batched=None,
            e2e_s=spread, batched_e2e_s=None, peak_rss_bytes=1,
        ),
        outputs=[
            PromptOutput(id="p1", prompt="Capital?", text=text, prompt_tokens=3,
                         new_tokens=len(_ids(text)), token_ids=_ids(text))
        ],
    )  # fmt: skip
    path = tmp_path / "run.json"
    result.save(path)
    return path


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A source folder whose reference (healthy answers) sits in the cache under its key."""
    folder = tmp_path / "source-model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(CONFIG))
    model_hash = FileHashIndex(tmp_path / "cache" / "file-hashes.json").tree_hash(folder)
    prompts_hash = prompts_sha256(_result(tmp_path, ANSWER).parent / "prompts.json")
    key = reference_key(model_hash, prompts_hash, 32)
    reference = Reference(
        key=key, model_hash=model_hash, prompts_sha256=prompts_hash, max_new_tokens=32,
        method="hand-made", versions={}, compute_s=0.0, vocab_size=49152,
        provenance="the model folder source-model as given (bfloat16 weights), run in float32",
        heldout=None,
        outputs=[ReferenceOutput(id="p1", prompt_token_ids=[1], token_ids=_ids(ANSWER),
                                 text=ANSWER, script="LATIN")],
    )  # fmt: skip
    cached = tmp_path / "cache" / "references" / f"{key}.json"
    cached.parent.mkdir(parents=True)
    cached.write_text(reference.model_dump_json())
    return folder


def _gate(*args: str, cache: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    code = run(["gate", *args, "--cache-dir", str(cache)])
    return code, capsys.readouterr().out


def test_a_healthy_run_passes_and_names_its_reference(
    source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = _result(tmp_path, ANSWER)
    code, out = _gate(str(result), "--reference-model", str(source), "--json",
                      cache=tmp_path / "cache", capsys=capsys)  # fmt: skip
    assert code == 0, out
    verdict = json.loads(out)
    assert verdict["passed"] is True and verdict["quality_class"] == "4bit"
    assert "bfloat16" in verdict["reference"]["provenance"]


def test_a_looping_run_fails_with_exit_9_naming_the_check(
    source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = _result(tmp_path, "clips " * 30)
    rejudged = tmp_path / "rejudged.json"
    code, out = _gate(str(result), "--reference-model", str(source), "--json-out", str(rejudged),
                      cache=tmp_path / "cache", capsys=capsys)  # fmt: skip
    assert code == ExitCode.QUALITY_GATE
    assert "absolute_loop = 1 (needs <= 0.1): FAILED" in out
    failed = [c["name"] for c in json.loads(rejudged.read_text())["quality"]["checks"]
              if not c["passed"]]  # fmt: skip
    assert "absolute_loop" in failed and "chrf" in failed
    assert RunResult.load_file(result).quality is None  # the input is left as it was


def test_a_gone_bundle_or_prompt_set_is_named(
    source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = _result(tmp_path, ANSWER)
    code, _ = _gate(str(result), cache=tmp_path / "cache", capsys=capsys)
    assert code == ExitCode.BAD_INPUT  # no bundle at the recorded path, no --reference-model
    (tmp_path / "prompts.json").write_text("{}")
    code, _ = _gate(str(result), "--reference-model", str(source), cache=tmp_path / "cache",
                    capsys=capsys)  # fmt: skip
    assert code == ExitCode.BAD_INPUT  # the prompt set changed since the run

"""More families than Llama through the real ort backend: plan, build, bench and the gate.

Each family is a tiny random-initialised model made from its transformers config (hidden 64,
2 layers) with the demo model's tokenizer: no weights are needed to prove that the builder, the
engine, the bench and the gate's plumbing work for it. Random weights make the reference unusable,
which the gate must say (exit 9). Gemma 3 and Mistral need the config fixes of the builder's copy
(per-layer-type RoPE, a sliding window shorter than the prompts); the fp32 engines'
log-probabilities must match transformers': the fixes build the model transformers runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from edgepack.cli.main import run
from edgepack.errors import ExitCode
from edgepack.quality.verdict import REFERENCE_UNUSABLE
from tests.conftest import require_demo_stack

pytestmark = pytest.mark.slow

TINY = {
    "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
    "max_position_embeddings": 4096, "vocab_size": 49152,
    "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2, "initializer_range": 0.25,
}  # fmt: skip
"""Weights far from zero, so that attention (RoPE, the window) shapes the logits."""
FAMILIES: dict[str, tuple[str, str, dict[str, Any]]] = {
    # name: (model_type, precision, config beyond TINY)
    "qwen2": ("qwen2", "int4", {"tie_word_embeddings": True}),
    "qwen3": ("qwen3", "int4", {"tie_word_embeddings": True}),
    "gemma3": ("gemma3_text", "fp32", {"sliding_window": 8}),
    "mistral": ("mistral", "fp32", {"sliding_window": 8}),
    "phi3": ("phi3", "fp32", {"sliding_window": 8}),
}
SCORED = list(range(100, 140))
"""Token ids to score: longer than the sliding windows above, so a window left out shows."""
LOGPROB_TOLERANCE = 1e-3
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")
PROMPTS = 2
NEW_TOKENS = 24


@pytest.fixture(scope="module")
def tokenizer_source(session_cache: Path) -> Path:
    """The demo model's folder (converted once per session), for its tokenizer files."""
    require_demo_stack()
    from edgepack.demo import materialize_demo_model

    return materialize_demo_model("smollm2-135m", session_cache)


def _tiny_model(model_type: str, extra: dict[str, Any], tokenizer: Path, out: Path) -> Path:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    config = AutoConfig.for_model(model_type, **TINY, **extra)
    AutoModelForCausalLM.from_config(config).save_pretrained(str(out))
    for name in TOKENIZER_FILES:
        shutil.copyfile(tokenizer / name, out / name)
    return out


def _max_logprob_gap(model: Path, engine_dir: Path) -> float:
    """The largest difference between the engine's and transformers' log-probabilities of
    :data:`SCORED` (an fp32 engine built right matches to float rounding)."""
    import torch
    from transformers import AutoModelForCausalLM

    from edgepack.backends.ort.runner import OrtEngine

    source = AutoModelForCausalLM.from_pretrained(str(model), dtype=torch.float32).eval()
    with torch.no_grad():
        logits = source(torch.tensor([SCORED])).logits[0, :-1]
    expected = torch.log_softmax(logits, dim=-1)[torch.arange(len(SCORED) - 1), SCORED[1:]]
    with OrtEngine.load(engine_dir) as engine:
        scored = torch.tensor(engine.score(SCORED), dtype=torch.float32)
    return float((scored - expected).abs().max())


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run(list(argv))
    return code, out.getvalue(), err.getvalue()


def _prompts(bundle: Path, destination: Path) -> Path:
    data = json.loads((bundle / "prompts.json").read_text(encoding="utf-8"))
    data["name"], data["prompts"] = f"first-{PROMPTS}", data["prompts"][:PROMPTS]
    destination.write_text(json.dumps(data), encoding="utf-8")
    return destination


@pytest.mark.parametrize("family", list(FAMILIES))
def test_a_tiny_random_model_plans_builds_and_benches(
    family: str, tokenizer_source: Path, tmp_path: Path
) -> None:
    model_type, precision, extra = FAMILIES[family]
    model = _tiny_model(model_type, extra, tokenizer_source, tmp_path / family)
    config_hash = hashlib.sha256((model / "config.json").read_bytes()).hexdigest()
    recipe = ("-t", "host-x86_64-cpu", "-p", precision, "-m", str(model))

    code, out, err = _cli("plan", *recipe, "--json")
    assert code == 0, err
    assert json.loads(out)["valid"] is True

    bundle = tmp_path / "bundle"
    code, _, err = _cli("build", *recipe, "-o", str(bundle), "--runtime", "none")
    assert code == 0, err
    assert (bundle / "engine" / "model.onnx").is_file()

    run_file = tmp_path / "run.json"
    code, _, err = _cli(
        "bench", "--bundle", str(bundle), "--runs", "1", "--warmup", "0",
        "--prompts", str(_prompts(bundle, tmp_path / "prompts.json")),
        "--max-new-tokens", str(NEW_TOKENS), "--json-out", str(run_file),
    )  # fmt: skip
    assert code == ExitCode.QUALITY_GATE, err
    assert "Traceback" not in err and "internal error" not in err
    verdict = json.loads(run_file.read_text())["quality"]
    assert verdict["passed"] is False and verdict["reference_usable"] is False
    assert f"quality gate failed: {REFERENCE_UNUSABLE}" in " ".join(err.split())
    assert len(json.loads(run_file.read_text())["outputs"]) == PROMPTS
    if precision == "fp32":
        assert _max_logprob_gap(model, bundle / "engine") < LOGPROB_TOLERANCE
    # The builder read a copy: the user's folder is as it was.
    assert hashlib.sha256((model / "config.json").read_bytes()).hexdigest() == config_hash

"""A trtllm bundle benched where its engine is: built with --builder ssh:HOST (checkpoint here,
engine on the stand-in GPU host), deployed there, then ``edgepack bench --host HOST``: the runtime
rendered here and compiled there (the host's fixture cmake), the prompt set answered inside the
telemetry samplers, trtllm-bench's report parsed, and the gate's verdict.

The stand-in runtime answers what the test chose. Healthy: the greedy tokens of the bundle's own
fp16 checkpoint, computed here by edgepack's reference forward of the checkpoint (not the
reference answers the gate compares with). Salad: the FP8-KV failure of the original study."""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edgepack.cli.main import run
from edgepack.errors import ExitCode
from tests.conftest import prompt_subset, require_demo_stack
from tests.integration.conftest import NetnsDevice, SshServer
from tests.integration.gpu_host import GpuHost, start_gpu_host

pytestmark = pytest.mark.integration
NEW_TOKENS = 24
SALAD = "strugg (str, 1, 1, 1, 1) 1) 1) 1) 1) 1) 1) 1) 1) 1) 1) 1) 1)"
TIMINGS = {"load_s": 18.0, "ttft_s": 0.021, "prefill_tok_s": 1800.0, "decode_tok_s": 83.7,
           "e2e_s": 0.31}  # fmt: skip
BENCH = {"request_s": 10.5, "output_tok_s": 251.2, "avg_request_latency_ms": 286.0}


def _cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run(list(args))
    return code, out.getvalue(), err.getvalue()


def _checkpoint_answers(checkpoint: Path, model_dir: Path, prompts: Path) -> dict[str, list[int]]:
    """Greedy answers of the checkpoint itself (edgepack's reference forward of its tensors)."""
    import torch
    from transformers import AutoTokenizer

    from edgepack.backends.trtllm.reference import CheckpointModel, KvCache, forward
    from edgepack.quality.prompts import chat_ids

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = CheckpointModel.load(checkpoint)
    answers = {}
    with torch.no_grad():
        for prompt in json.loads(prompts.read_text())["prompts"]:
            cache, tokens = KvCache(), []
            logits = forward(model, chat_ids(tokenizer, prompt["text"]), cache)[-1]
            while len(tokens) < NEW_TOKENS and int(logits.argmax()) != tokenizer.eos_token_id:
                tokens.append(int(logits.argmax()))
                logits = forward(model, [tokens[-1]], cache)[-1]
            answers[prompt["id"]] = tokens
    return answers


@pytest.fixture
def deployed(
    tmp_path: Path,
    session_cache: Path,
    sshd_factory: Callable[..., SshServer],
    netns_factory: Callable[[], NetnsDevice],
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[GpuHost, Path, Path]:
    """The fp16 trtllm bundle, deployed to the stand-in host. Its engine is built with
    --builder local and the fixture trtllm-build on this machine's PATH (test_engine_builders
    covers --builder ssh): the checkpoint is not shipped a second time in the suite."""
    require_demo_stack()
    host = start_gpu_host(tmp_path, sshd_factory, netns_factory)
    local_bin = tmp_path / "local-bin"
    local_bin.mkdir()
    (local_bin / "trtllm-build").symlink_to(host.directory / "bin" / "trtllm-build")
    monkeypatch.setenv("PATH", f"{local_bin}:{os.environ['PATH']}")
    monkeypatch.setenv("EDGEPACK_FIXTURE_STATE", str(host.state_file))
    bundle = tmp_path / "bundle"
    code, out, err = _cli("build", "--target", "ada-sm89", "--precision", "fp16", "--model",
                          "demo:smollm2-135m", "--builder", "local", "--output", str(bundle),
                          "--json")  # fmt: skip
    assert code == 0, out + err
    code, out, err = _cli("deploy", "--host", host.alias, "--root", str(host.root),
                          "--bundle", str(bundle), "--json")  # fmt: skip
    assert code == 0, out + err
    prompts = tmp_path / "prompts.json"
    prompt_subset(bundle, prompts, 4)
    return host, bundle, prompts


def _bench(host: GpuHost, prompts: Path, out: Path) -> tuple[int, dict[str, Any], str]:
    code, _, err = _cli(
        "bench", "--host", f"{host.alias}:{host.root}", "--runs", "1", "--warmup", "0",
        "--batch-size", "3", "--max-new-tokens", str(NEW_TOKENS), "--prompts", str(prompts),
        "--json-out", str(out),
    )  # fmt: skip
    return code, json.loads(out.read_text()) if out.is_file() else {}, err


def test_a_healthy_engine_passes_the_gate_and_salad_fails_it(
    deployed: tuple[GpuHost, Path, Path], session_cache: Path, tmp_path: Path
) -> None:
    from transformers import AutoTokenizer

    from edgepack.bundle import read_manifest

    host, bundle, prompts = deployed
    manifest = read_manifest(bundle)
    checkpoint = session_cache / "stages" / manifest.stages[0]["key"] / "output"
    model_dir = Path(str(manifest.model["directory"]))
    healthy = _checkpoint_answers(checkpoint, model_dir, prompts)
    host.set_state(answers=healthy, timings=TIMINGS, bench=BENCH)

    code, result, err = _bench(host, prompts, tmp_path / "healthy.json")
    assert code == 0, err
    assert result["quality"]["passed"] is True
    assert result["location"] == host.alias
    assert result["machine"]["runtime_build"]["mode"] == "host"
    assert [o["token_ids"] for o in result["outputs"]] == list(healthy.values())
    assert result["outputs"][0]["text"]  # decoded here: the executor has no tokenizer
    assert result["load"]["first_s"] == pytest.approx(18.0)
    assert result["metrics"]["decode_tok_s"]["median"] == pytest.approx(83.7)
    assert result["metrics"]["decode_tok_s_batched"]["median"] == pytest.approx(3 * 83.7)
    bench = result["raw"]["trtllm_bench"]
    assert bench["system_output_throughput_tok_s"] == pytest.approx(251.2)
    assert bench["kv_cache_dtype"] is None and bench["tensorrt_llm"] == "1.2.1"
    assert result["telemetry"]["nvidia_smi"]["power_w"]["max"] == pytest.approx(287.91)

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    salad = tokenizer(SALAD, add_special_tokens=False)["input_ids"][:NEW_TOKENS]
    host.set_state(answers={prompt_id: salad for prompt_id in healthy})
    code, result, err = _bench(host, prompts, tmp_path / "salad.json")
    assert code == ExitCode.QUALITY_GATE, err
    assert result["quality"]["passed"] is False

"""``edgepack bench --remote --runner runtime`` on an Edge-LLM release: the bundle's C++ runtime,
compiled on the device at deploy (``runtime``), run there on the device's engine.

The runtime takes the prompt set with each prompt's token count (counted here with the bundle's
tokenizer, without the chat template, as the ``llm_inference`` path counts them: Edge-LLM's API
returns no prompt length), answers it inside the telemetry samplers at batch 1 and, for
``--batch-size`` above 1, at that batch, and prints every edgepack runtime's ``--json`` lines: the
answers' texts and token ids as Edge-LLM returned them, load, TTFT (the batch asked for one
token: the API is not streamed), prefill and decode figures per repeat. They become the usual
RunResult (:mod:`edgepack.remote.runtime_bench`), which the host's gate judges.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import uuid
from pathlib import Path
from typing import Any

from edgepack.backends.edgellm.on_device import fingerprint
from edgepack.backends.edgellm.remote_bench import (
    open_deployed,
    read_release_file,
    release_tokenizer,
)
from edgepack.backends.edgellm.runtime import runtime_binary
from edgepack.bench.local import BenchOptions
from edgepack.bench.result import RunResult
from edgepack.bundle import Manifest
from edgepack.errors import RemoteError
from edgepack.quality.prompts import PromptSet
from edgepack.remote.connector import Connector, shell
from edgepack.remote.device_run import run_with_telemetry, upload_prompt_set
from edgepack.remote.facts import DeviceFacts
from edgepack.remote.runtime_bench import (
    BATCHED_OUTPUT,
    PASSES_SCRIPT,
    RUNTIME_BUILD_INFO,
    SINGLE_OUTPUT,
    DeployedRelease,
    RuntimeRun,
    check_limits,
    parse_runtime_json,
    runtime_result,
)
from edgepack.remote.telemetry import summarize


def bench_edgellm_runtime(
    connector: Connector,
    root: str,
    options: BenchOptions,
    cache_root: Path,
    interval_ms: int = 500,
) -> RunResult:
    deployed = open_deployed(connector, root)
    facts, found, engine = deployed.facts, deployed.found, deployed.engine
    directory, manifest = deployed.release, deployed.manifest
    device = fingerprint(facts, found)
    check_limits(manifest, options)
    binary = runtime_binary(connector, manifest, facts.root, device)
    release = _release(connector, facts, directory, manifest, options)
    run_dir = posixpath.join(facts.root, "runs", uuid.uuid4().hex[:12])
    connector.make_dirs([run_dir])
    asked = _upload_asked(connector, release, release_tokenizer(connector, directory, manifest,
                                                                cache_root), run_dir)  # fmt: skip
    argv = [
        "env", f"EDGELLM_PLUGIN_PATH={found.plugin}", binary, "--bundle", directory,
        "--engine", engine, "--prompts", asked, "--json", "--warmup", str(options.warmup),
        "--repeat", str(options.runs), "--max-new-tokens", str(options.max_new_tokens),
    ]  # fmt: skip
    workload = shell(PASSES_SCRIPT, run_dir, str(options.batch_size), *argv)
    done, logs = run_with_telemetry(connector, run_dir, workload, interval_ms)
    if done.status != 0:
        raise RemoteError(
            f"{connector.label}: the Edge-LLM runtime failed (exit status {done.status}): "
            f"{done.error_line()}",
            hint=f"its self-test there: {binary} --self-test --bundle {directory} "
            f"--engine {engine}",
        )
    single = _pass(connector, run_dir, SINGLE_OUTPUT)
    batched = _pass(connector, run_dir, BATCHED_OUTPUT) if options.batch_size > 1 else None
    result = runtime_result(connector.label, facts, release, options, single, batched)
    result.machine["edgellm"] = found.record()
    result.machine["engine"] = {"dir": engine, **deployed.engine_record}
    result.telemetry = summarize(logs, interval_ms, result.metrics.decode_tok_s.median)
    return result


def _release(
    connector: Connector,
    facts: DeviceFacts,
    directory: str,
    manifest: Manifest,
    options: BenchOptions,
) -> DeployedRelease:
    """The release as the runtime bench reads it; ``--prompts`` uploaded where given."""
    data = read_release_file(connector, posixpath.join(directory, manifest.prompts_file))
    info = read_release_file(connector, posixpath.join(directory, RUNTIME_BUILD_INFO))
    release = DeployedRelease(
        directory=directory,
        manifest=manifest,
        build_info=json.loads(info),
        prompts=PromptSet.model_validate_json(data),
        prompts_sha256=hashlib.sha256(data).hexdigest(),
        prompts_file=posixpath.join(directory, manifest.prompts_file),
    )
    if options.prompts_file is None:
        return release
    return release.asking(upload_prompt_set(connector, facts, options.prompts_file))


def _upload_asked(
    connector: Connector, release: DeployedRelease, tokenizer: Any, run_dir: str
) -> str:
    """The prompt set with each prompt's token count, as the runtime reads it."""
    encode = tokenizer.encode
    asked = {
        "name": release.prompts.name,
        "prompts": [
            {
                "id": prompt.id,
                "text": prompt.text,
                "prompt_tokens": len(encode(prompt.text, add_special_tokens=False).ids),
            }
            for prompt in release.prompts.prompts
        ],
    }
    path = posixpath.join(run_dir, "prompts.asked.json")
    connector.run(shell('printf %s "$1" > "$2"', json.dumps(asked), path))
    return path


def _pass(connector: Connector, run_dir: str, name: str) -> RuntimeRun:
    data = connector.read_bytes(posixpath.join(run_dir, name))
    if data is None:
        raise RemoteError(f"{connector.label}: the Edge-LLM runtime wrote no {name}")
    return parse_runtime_json(data.decode(errors="replace"), f"{connector.label}:{name}")

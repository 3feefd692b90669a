"""``edgepack bench --remote`` on an Edge-LLM release: Edge-LLM's own tools, on the device.

Inside the telemetry samplers (tegrastats on a Jetson, nvidia-smi on DGX Spark), the device runs:

1. ``llm_inference --inputFile <the prompt set as a request> --outputFile --dumpProfile
   --profileOutputFile``: the answers the host's quality gate judges, and the prefill, decode and
   peak-memory figures of answering them;
2. ``llm_bench --mode decode --pastKVLen <max seq len - 1>`` and ``--mode prefill --inputLen
   <max input len>``: the headline figures at the plan's lengths.

All of it is parsed (``bench_io``) into a RunResult. ``llm_inference`` writes no token ids, so the
answers are tokenized here with the bundle's own tokenizer (``engine/llm/tokenizer.json``) for
the gate's token comparisons; it reports no load time either, which stays unmeasured.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgepack.backends.edgellm.bench_io import (
    parse_answers,
    parse_llm_bench,
    parse_profile,
    request_file,
)
from edgepack.backends.edgellm.device import DeviceEdgeLlm
from edgepack.backends.edgellm.on_device import (
    engine_dir,
    fingerprint,
    probe,
    read_engine_record,
)
from edgepack.backends.edgellm.toolchain import LLM_DIR
from edgepack.bench.local import BenchOptions
from edgepack.bench.result import BenchSettings, LoadTimes, Metrics, PromptOutput, RunResult
from edgepack.bench.stats import Spread
from edgepack.bundle import MANIFEST, Manifest, bundle_summary
from edgepack.errors import RemoteError
from edgepack.quality.prompts import PromptSet
from edgepack.remote.connector import Connector, shell
from edgepack.remote.device_run import current_release_dir, run_with_telemetry, upload_prompt_set
from edgepack.remote.facts import DeviceFacts, gather_facts
from edgepack.remote.telemetry import summarize

OUTPUTS = ("answers.json", "profile.json", "bench-decode.txt", "bench-prefill.txt")
LOGS = {11: "llm_inference.log", 12: "bench-decode.txt", 13: "bench-prefill.txt"}
# $1 run dir, $2 plugin, $3 engine dir, $4 llm_inference, $5 llm_bench, $6 warmup, $7 iterations,
# $8 prefill input length, $9 decode past length. Exit 11/12/13 names the tool that failed.
BENCH_SCRIPT = """run=$1 plugin=$2 engine=$3 infer=$4 bench=$5 warmup=$6 iterations=$7
input=$8 past=$9
export EDGELLM_PLUGIN_PATH="$plugin"
"$infer" --engineDir "$engine" --inputFile "$run/request.json" --outputFile "$run/answers.json" \\
  --warmup "$warmup" --dumpProfile --profileOutputFile "$run/profile.json" \\
  > "$run/llm_inference.log" 2>&1 || exit 11
"$bench" --engineDir "$engine" --mode decode --pastKVLen "$past" --batchSize 1 \\
  --iterations "$iterations" --warmup "$warmup" > "$run/bench-decode.txt" 2>&1 || exit 12
"$bench" --engineDir "$engine" --mode prefill --inputLen "$input" --batchSize 1 \\
  --iterations "$iterations" --warmup "$warmup" > "$run/bench-prefill.txt" 2>&1 || exit 13"""


def read_release_file(connector: Connector, path: str) -> bytes:
    data = connector.read_bytes(path)
    if data is None:
        raise RemoteError(
            f"{connector.label}: {path} is missing", hint="deploy the bundle again (it verifies)"
        )
    return data


@dataclass(frozen=True)
class DeployedEdgeLlm:
    """The current release on the device, its manifest, the device's Edge-LLM and the engine
    built there for that release."""

    facts: DeviceFacts
    release: str
    manifest: Manifest
    found: DeviceEdgeLlm
    engine: str
    engine_record: dict[str, Any]


def open_deployed(connector: Connector, root: str, needs: tuple[str, ...] = ()) -> DeployedEdgeLlm:
    """What a bench on the device starts from; refused where the engine (or a tool) is missing."""
    facts = gather_facts(connector, root)
    release = current_release_dir(connector, facts)
    manifest = Manifest.model_validate_json(
        read_release_file(connector, posixpath.join(release, MANIFEST))
    )
    found = probe(connector)
    engine = engine_dir(facts.root, manifest, fingerprint(facts, found))
    record = read_engine_record(connector, engine)
    missing = [tool for tool in needs if tool not in found.tools]
    if record is None or missing or found.plugin is None:
        raise RemoteError(
            f"{connector.label}: no engine of this release for this device's Edge-LLM "
            f"({engine})" + (f", or no {'/'.join(missing)}" if missing else ""),
            hint=f"deploy the bundle again: `edgepack deploy --host {connector.label}` builds it",
        )
    return DeployedEdgeLlm(facts, release, manifest, found, engine, record)


def bench_edgellm_remote(
    connector: Connector,
    root: str,
    options: BenchOptions,
    cache_root: Path,
    interval_ms: int = 500,
) -> RunResult:
    deployed = open_deployed(connector, root, needs=("llm_inference", "llm_bench"))
    facts, release, manifest, found = (
        deployed.facts,
        deployed.release,
        deployed.manifest,
        deployed.found,
    )
    engine, record = deployed.engine, deployed.engine_record
    prompts_file = posixpath.join(release, manifest.prompts_file)
    prompt_bytes = read_release_file(connector, prompts_file)
    prompts = PromptSet.model_validate_json(prompt_bytes)
    prompts_sha = hashlib.sha256(prompt_bytes).hexdigest()
    if options.prompts_file is not None:
        uploaded = upload_prompt_set(connector, facts, options.prompts_file)
        prompts, prompts_sha, prompts_file = uploaded.prompts, uploaded.sha256, uploaded.path
    run_dir = posixpath.join(facts.root, "runs", uuid.uuid4().hex[:12])
    connector.make_dirs([run_dir])
    request = request_file([p.text for p in prompts.prompts], options.max_new_tokens, 1)
    connector.run(shell('printf %s "$1" > "$2"', json.dumps(request), f"{run_dir}/request.json"))
    limits = manifest.recipe.get("limits", {})
    lengths = (str(limits.get("max_input_len", 128)), str(limits.get("max_seq_len", 2049) - 1))
    argv = shell(
        BENCH_SCRIPT,
        run_dir,
        str(found.plugin),
        engine,
        found.tools["llm_inference"],
        found.tools["llm_bench"],
        str(options.warmup),
        str(max(options.runs, 1)),
        *lengths,
    )
    done, logs = run_with_telemetry(connector, run_dir, argv, interval_ms)
    if done.status != 0:
        log = LOGS.get(done.status)
        text = connector.read_bytes(posixpath.join(run_dir, log)) if log else None
        tail = (text or b"").decode(errors="replace").strip().splitlines()[-1:] or [
            done.error_line()
        ]
        raise RemoteError(
            f"{connector.label}: {log or 'the bench'} failed on the device: {tail[0]}",
            hint=f"the whole log is on the device: {posixpath.join(run_dir, log or '')}",
        )
    files = {
        name: read_release_file(connector, posixpath.join(run_dir, name)).decode(errors="replace")
        for name in OUTPUTS
    }
    tokenizer = release_tokenizer(connector, release, manifest, cache_root)
    result = _result(connector.label, manifest, release, prompts, files, tokenizer, options)
    result.settings.prompts_file, result.settings.prompts_sha256 = prompts_file, prompts_sha
    result.machine = {
        "hostname": facts.hostname,
        "arch": facts.arch,
        "runner": "edgellm",
        "edgellm": found.record(),
        "engine": {"dir": engine, **record},
        "device_facts": facts.model_dump(mode="json"),
    }
    result.telemetry = summarize(logs, interval_ms, result.metrics.decode_tok_s.median)
    return result


def release_tokenizer(
    connector: Connector, release: str, manifest: Manifest, cache_root: Path
) -> Any:
    from tokenizers import Tokenizer

    local = cache_root / "remote-releases" / manifest.bundle_id[:16] / "tokenizer.json"
    if not local.is_file():
        local.parent.mkdir(parents=True, exist_ok=True)
        remote = posixpath.join(release, manifest.engine_dir, LLM_DIR, "tokenizer.json")
        local.write_bytes(read_release_file(connector, remote))
    return Tokenizer.from_file(str(local))


def _result(
    label: str,
    manifest: Manifest,
    release: str,
    prompts: PromptSet,
    files: dict[str, str],
    tokenizer: Any,
    options: BenchOptions,
) -> RunResult:
    answers = parse_answers(files["answers.json"], len(prompts.prompts))
    profile = parse_profile(files["profile.json"])
    decode = parse_llm_bench(files["bench-decode.txt"])
    prefill = parse_llm_bench(files["bench-prefill.txt"])
    outputs = []
    for prompt, text in zip(prompts.prompts, answers, strict=True):
        ids = tokenizer.encode(text, add_special_tokens=False).ids
        prompt_ids = tokenizer.encode(prompt.text, add_special_tokens=False).ids
        outputs.append(
            PromptOutput(
                id=prompt.id,
                prompt=prompt.text,
                text=text,
                prompt_tokens=len(prompt_ids),
                new_tokens=len(ids),
                token_ids=ids,
            )
        )
    ttft = profile["prefill_ms_per_run"] / 1000
    return RunResult(
        location=label,
        bundle={"dir": release, **bundle_summary(manifest)},
        machine={},
        settings=BenchSettings(
            runs=options.runs,
            warmup=options.warmup,
            batch_size=1,
            max_new_tokens=options.max_new_tokens,
            prompts_file="",
            prompts_sha256="",
        ),
        load=LoadTimes(first_s=0.0, first_page_cache="not measured", warm=Spread.of([0.0])),
        metrics=Metrics(
            ttft_s=Spread.of([ttft]),
            prefill_tok_s=Spread.of([profile["prefill_tok_s"]]),
            decode_tok_s=Spread.of([profile["decode_tok_s"]]),
            decode_tok_s_batched=None,
            e2e_s=Spread.of([ttft + profile["decode_ms_per_token"] / 1000 * _mean_new(outputs)]),
            batched_e2e_s=None,
            peak_rss_bytes=profile["peak_memory_bytes"],
        ),
        outputs=outputs,
        raw={
            "runner": "edgellm",
            "llm_inference_profile": profile,
            "llm_bench": {"decode": decode, "prefill": prefill},
            "token_ids": "tokenized on the host from the answers (llm_inference writes none)",
            "load": "not measured: llm_inference reports no load time",
        },
    )


def _mean_new(outputs: list[PromptOutput]) -> float:
    return sum(o.new_tokens for o in outputs) / len(outputs) if outputs else 0.0

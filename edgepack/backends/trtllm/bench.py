"""``edgepack bench --remote --host HOST`` on a trtllm bundle: measured where the engine is.

On the host the bundle's C++ runtime (templates/trtllm: TensorRT-LLM's executor API) is rendered
here, shipped with the deploy machinery and compiled there with CMake against the installed
TensorRT-LLM (found by importing it with the host's python3); the executor takes token ids, so
the prompt set is tokenized here with the bundle's tokenizer and the answers' token ids are
decoded here. The runtime answers the prompt set inside the telemetry samplers (batch 1, then the
plan's batch) and gives load, TTFT, prefill and decode figures (parsed as every runtime's, by
:mod:`edgepack.remote.runtime_bench`); then ``trtllm-bench throughput`` runs the engine at the
bench's batch for the throughput figure, its ``--report_json`` parsed (TensorRT-LLM 1.2.x format,
tensorrt_llm/bench/dataclasses/reporting.py) and its KV-cache dtype checked against the bundle's.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import tempfile
import uuid
from pathlib import Path
from typing import Any

from edgepack.backends.trtllm.flags import trtllm_bench_argv
from edgepack.bench.local import BenchOptions
from edgepack.bench.result import RunResult
from edgepack.bundle import MANIFEST, Manifest
from edgepack.errors import RemoteError
from edgepack.quality.prompts import PromptSet, chat_ids
from edgepack.remote.connector import Connector, shell
from edgepack.remote.device_run import current_release_dir, run_with_telemetry
from edgepack.remote.facts import gather_facts
from edgepack.remote.runtime_bench import (
    PASSES_SCRIPT,
    DeployedRelease,
    RuntimeRun,
    parse_runtime_json,
    runtime_result,
)
from edgepack.remote.ship import ship_directory
from edgepack.remote.telemetry import summarize

BUILDS = "builds"
TOKENIZER = "engine/tokenizer/"
REPORT_KEYS = ("request_throughput_req_s", "system_output_throughput_tok_s", "total_latency_ms")
WRITTEN_AGAINST = "TensorRT-LLM 1.2.x (tensorrt_llm/bench/dataclasses/reporting.py)"
ROOT_SCRIPT = 'python3 -c "import os, tensorrt_llm; print(os.path.dirname(tensorrt_llm.__file__))"'
# $1 source, $2 build dir, $3 install prefix, $4 TensorRT-LLM root; the log into $2.log.
COMPILE_SCRIPT = """src=$1; build=$2; prefix=$3; root=$4
[ -x "$prefix/bin/edgepack-runtime" ] && exit 0
{ cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Release -DTRTLLM_ROOT="$root" \\
    -DEDGEPACK_WITH_SDK_HEADERS=ON &&
  cmake --build "$build" --parallel &&
  cmake --install "$build" --prefix "$prefix"; } > "$build.log" 2>&1"""


class _Release:
    """The deployed release: its manifest and small files, read over the connector."""

    def __init__(self, connector: Connector, directory: str) -> None:
        self.connector, self.directory = connector, directory
        self.manifest = Manifest.model_validate_json(self.read(MANIFEST))
        if self.manifest.recipe.get("backend") != "trtllm":
            raise RemoteError(f"{connector.label}: the deployed bundle is not a trtllm bundle")

    def read(self, name: str) -> bytes:
        data = self.connector.read_bytes(posixpath.join(self.directory, name))
        if data is None:
            raise RemoteError(f"{self.connector.label}: the deployed release has no {name}")
        return data

    def fetch_tokenizer(self, destination: Path) -> Path:
        """The bundle's tokenizer files, each checked against the manifest's sha256."""
        destination.mkdir(parents=True, exist_ok=True)
        for record in self.manifest.files:
            if record.path.startswith(TOKENIZER):
                data = self.read(record.path)
                if hashlib.sha256(data).hexdigest() != record.sha256:
                    raise RemoteError(f"{self.connector.label}: {record.path} differs from the "
                                      "manifest", hint="deploy the bundle again")  # fmt: skip
                (destination / record.path.removeprefix(TOKENIZER)).write_bytes(data)
        return destination


def bench_trtllm_remote(
    connector: Connector, root: str, options: BenchOptions, cache_root: Path, interval_ms: int = 500
) -> RunResult:
    from transformers import AutoTokenizer

    facts = gather_facts(connector, root)
    release = _Release(connector, current_release_dir(connector, facts))
    local = cache_root / "remote-releases" / release.manifest.short_id
    tokenizer = AutoTokenizer.from_pretrained(str(release.fetch_tokenizer(local / "tokenizer")))
    prompts_path, prompts = _prompt_set(release, options, local)
    run_dir = posixpath.join(facts.root, "runs", uuid.uuid4().hex[:12])
    connector.make_dirs([run_dir])
    tokens = _upload_tokens(connector, tokenizer, prompts, local, run_dir)
    binary, build_info = compile_runtime(connector, release.manifest, facts.root, local)
    argv = [
        binary, "--bundle", release.directory, "--prompts", tokens, "--json",
        "--warmup", str(options.warmup), "--repeat", str(options.runs),
        "--max-new-tokens", str(options.max_new_tokens),
    ]  # fmt: skip
    workload = shell(PASSES_SCRIPT, run_dir, str(options.batch_size), *argv)
    done, logs = run_with_telemetry(connector, run_dir, workload, interval_ms)
    if done.status != 0:
        raise RemoteError(f"{connector.label}: the trtllm runtime failed: {done.error_line()}")
    single = _decoded(_pass(connector, run_dir, "single.jsonl"), tokenizer)
    batched = None
    if options.batch_size > 1:
        batched = _decoded(_pass(connector, run_dir, "batched.jsonl"), tokenizer)
    deployed = DeployedRelease(
        release.directory, release.manifest, build_info, prompts,
        hashlib.sha256(prompts_path.read_bytes()).hexdigest(), str(prompts_path),
    )  # fmt: skip
    result = runtime_result(connector.label, facts, deployed, options, single, batched)
    result.telemetry = summarize(logs, interval_ms, result.metrics.decode_tok_s.median)
    result.raw["trtllm_bench"] = run_trtllm_bench(
        connector, release, prompts, tokens_of(tokenizer, prompts), run_dir, options
    )
    return result


def _prompt_set(release: _Release, options: BenchOptions, local: Path) -> tuple[Path, PromptSet]:
    if options.prompts_file is not None:
        return options.prompts_file, PromptSet.load(options.prompts_file)
    path = local / "prompts.json"
    path.write_bytes(release.read(release.manifest.prompts_file))
    return path, PromptSet.load(path)


def tokens_of(tokenizer: Any, prompts: PromptSet) -> list[list[int]]:
    return [chat_ids(tokenizer, prompt.text) for prompt in prompts.prompts]


def _upload_tokens(
    connector: Connector, tokenizer: Any, prompts: PromptSet, local: Path, run_dir: str
) -> str:
    """The prompt set as the executor runtime takes it (chat-templated token ids, the EOS id)."""
    data = {
        "name": prompts.name,
        "eos_token_id": tokenizer.eos_token_id,
        "prompts": [
            {"id": prompt.id, "input_ids": ids}
            for prompt, ids in zip(prompts.prompts, tokens_of(tokenizer, prompts), strict=True)
        ],
    }
    path = local / "prompts.tokens.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    remote = posixpath.join(run_dir, path.name)
    connector.put(path, remote, 0, lambda sent: None)
    return remote


def compile_runtime(
    connector: Connector, manifest: Manifest, root: str, local: Path
) -> tuple[str, dict[str, Any]]:
    """The runtime rendered here, shipped, and compiled there against TensorRT-LLM (once per
    source: a rerun finds it installed)."""
    from edgepack.plan import Limits
    from edgepack.runtime.render import render_project
    from edgepack.runtime.spec import RuntimeSpec
    from edgepack.targets import TargetRegistry

    spec = RuntimeSpec.for_target(
        TargetRegistry.default().get(str(manifest.target["name"])), backend="trtllm",
        model_name=str(manifest.model.get("name")), precision=str(manifest.recipe["precision"]),
        kv_cache_dtype=str(manifest.recipe["kv_cache_dtype"]),
        limits=Limits(**manifest.recipe["limits"]),
    )  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="edgepack-trtllm-runtime-") as scratch:
        render_project(spec, Path(scratch) / "src")
        shipped = ship_directory(connector, Path(scratch) / "src", posixpath.join(root, BUILDS),
                                 "runtime")  # fmt: skip
    found = connector.run(shell(ROOT_SCRIPT), check=False)
    lines = found.stdout.strip().splitlines()
    if found.status != 0 or not lines:
        raise RemoteError(
            f"{connector.label}: python3 cannot import tensorrt_llm: {found.error_line()}",
            hint="install TensorRT-LLM 1.2.x there (the runtime compiles against it)",
        )
    build = shipped.remote_dir + ".build"
    prefix = shipped.remote_dir + ".install"
    done = connector.run(shell(COMPILE_SCRIPT, shipped.remote_dir, build, prefix, lines[-1]),
                         check=False, timeout=None)  # fmt: skip
    if done.status != 0:
        log = connector.read_bytes(build + ".log") or b""
        local_log = local / "runtime-build.log"
        local_log.write_bytes(log)
        last = [line for line in log.decode(errors="replace").splitlines() if line.strip()]
        raise RemoteError(
            f"{connector.label}: compiling the trtllm runtime failed: "
            f"{last[-1] if last else done.error_line()}",
            hint=f"the whole log: {local_log}",
        )
    info = {
        "mode": "host",
        "compiler": "cmake against TensorRT-LLM",
        "tensorrt_llm_root": lines[-1],
    }
    return posixpath.join(prefix, "bin", "edgepack-runtime"), info


def _pass(connector: Connector, run_dir: str, name: str) -> RuntimeRun:
    data = connector.read_bytes(posixpath.join(run_dir, name))
    if data is None:
        raise RemoteError(f"{connector.label}: the runtime wrote no {name}")
    return parse_runtime_json(data.decode(errors="replace"), f"{connector.label}:{name}")


def _decoded(run: RuntimeRun, tokenizer: Any) -> RuntimeRun:
    """The executor has no tokenizer: the answers' texts are decoded here from their ids."""
    for output in run.outputs:
        output.text = tokenizer.decode(output.token_ids, skip_special_tokens=True)
    return run


def run_trtllm_bench(
    connector: Connector,
    release: _Release,
    prompts: PromptSet,
    tokens: list[list[int]],
    run_dir: str,
    options: BenchOptions,
) -> dict[str, Any]:
    """``trtllm-bench throughput`` on the engine at the bench's batch; its report, checked."""
    dataset = "".join(
        json.dumps({"task_id": i, "input_ids": ids, "output_tokens": options.max_new_tokens}) + "\n"
        for i, ids in enumerate(tokens)
    )
    with tempfile.TemporaryDirectory() as scratch:
        local = Path(scratch) / "dataset.jsonl"
        local.write_text(dataset, encoding="utf-8")
        remote_dataset = posixpath.join(run_dir, "trtllm-bench-dataset.jsonl")
        connector.put(local, remote_dataset, 0, lambda sent: None)
    report_path = posixpath.join(run_dir, "trtllm-bench.json")
    engine = posixpath.join(release.directory, "engine")
    argv = trtllm_bench_argv(
        str(release.manifest.model.get("name")), engine, posixpath.join(engine, "tokenizer"),
        remote_dataset, report_path, options.batch_size,
    )  # fmt: skip
    done = connector.run(argv, check=False, timeout=None)
    if done.status != 0:
        raise RemoteError(f"{connector.label}: trtllm-bench failed: {done.error_line()}")
    data = connector.read_bytes(report_path)
    return parse_bench_report(data, release.manifest, connector.label)


def parse_bench_report(data: bytes | None, manifest: Manifest, where: str) -> dict[str, Any]:
    if data is None:
        raise RemoteError(f"{where}: trtllm-bench wrote no --report_json file")
    report = json.loads(data)
    performance = report.get("performance") or {}
    missing = [key for key in REPORT_KEYS if key not in performance]
    if missing or "engine" not in report:
        raise RemoteError(
            f"{where}: trtllm-bench's report lacks {', '.join(missing) or 'engine'}: not the "
            f"format this parser was written against ({WRITTEN_AGAINST}); nothing was guessed"
        )
    wanted = (
        manifest.recipe.get("stage_config", {}).get("checkpoint", {}).get("kv_cache_quant_algo")
    )
    if report["engine"].get("kv_cache_dtype") != wanted:
        raise RemoteError(
            f"{where}: trtllm-bench ran the engine with KV cache "
            f"{report['engine'].get('kv_cache_dtype')!r}, the bundle's is {wanted!r}"
        )
    return {
        "parser": WRITTEN_AGAINST,
        "tensorrt_llm": report["engine"].get("version"),
        "kv_cache_dtype": report["engine"].get("kv_cache_dtype"),
        "requests": (report.get("request_info") or {}).get("num_requests"),
        **{
            key: performance[key]
            for key in (*REPORT_KEYS, "avg_request_latency_ms")
            if key in performance
        },
    }

"""``edgepack bench --remote --runner runtime``: the bundle's C++ runtime, benched on the device.

No Python is needed on the device. The deployed release's ``runtime/bin/edgepack-runtime`` first
runs its ``--self-test`` (every file against the manifest's sha256, the device's architecture
against the build's, a short generation), then benches the release's prompt set inside the
telemetry samplers: once at batch 1 (the single-stream figures and the answers the quality gate
judges) and, when ``--batch-size`` is above 1, once more in batches of that size (the batched
figures). Its ``--json`` lines come back and become a RunResult whose ``location`` is the device.

What the runtime does not measure stays empty rather than estimated: it loads the engine once per
pass (no cold load with the page cache dropped, so ``first_page_cache`` is "unknown"), it scores
no held-out text (the gate then judges without the perplexity check), and its ``--warmup N`` runs
every prompt N times where the Python runner warms up on the first prompt only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import posixpath
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgepack.bench.local import BenchOptions
from edgepack.bench.result import BenchSettings, LoadTimes, Metrics, PromptOutput, RunResult
from edgepack.bench.stats import Spread
from edgepack.bundle import MANIFEST, Manifest, bundle_summary
from edgepack.errors import BadInputError, RemoteError
from edgepack.quality.prompts import PromptSet
from edgepack.remote.connector import Connector, shell
from edgepack.remote.device_run import (
    UploadedPrompts,
    current_release_dir,
    run_with_telemetry,
    upload_prompt_set,
)
from edgepack.remote.facts import DeviceFacts, gather_facts
from edgepack.remote.telemetry import summarize
from edgepack.userfiles import first_problem

RUNTIME_BINARY = "runtime/bin/edgepack-runtime"
RUNTIME_BUILD_INFO = "runtime/build-info.json"
SINGLE_OUTPUT = "single.jsonl"
BATCHED_OUTPUT = "batched.jsonl"
RUNTIME_LIBRARIES = ("onnxruntime-genai", "onnxruntime")
T = TypeVar("T")

# $1 the runtime; exits 3 where it is missing, 4 where it is not executable (deployed by an
# edgepack that did not carry execute bits yet).
PREPARE_SCRIPT = '[ -f "$1" ] || exit 3; [ -x "$1" ] || exit 4'

# $1 run directory, $2 batch size, then the runtime's argv without --batch-size. The batch-1 pass
# always runs; the batched pass only for a batch size above 1. The first failure is the status.
PASSES_SCRIPT = f"""out=$1; batch=$2; shift 2
"$@" --batch-size 1 > "$out/{SINGLE_OUTPUT}" || exit $?
[ "$batch" -le 1 ] || "$@" --batch-size "$batch" > "$out/{BATCHED_OUTPUT}\""""


class RuntimeOutput(BaseModel):
    """One ``{"type": "output"}`` line: a prompt's answer from the pass's last repeat."""

    model_config = ConfigDict(extra="ignore")

    id: str
    text: str
    prompt_tokens: int
    new_tokens: int
    """Generated tokens, the end-of-sequence token included where the answer stopped at it."""
    stopped_at_eos: bool
    token_ids: list[int]
    """Generated token ids without the end-of-sequence token."""


class RuntimeTimings(BaseModel):
    """The ``{"type": "timings"}`` line: one sample per repeat of each figure, and the load."""

    model_config = ConfigDict(extra="ignore")

    backend: str
    target: str
    arch: str
    prompts: int
    batches: int
    batch_size: int
    max_new_tokens: int
    warmup: int
    repeat: int
    prompt_tokens: int
    new_tokens: int
    """Totals of the last repeat (the one whose answers were printed)."""
    load_s: float
    ttft_s_samples: list[float] = Field(min_length=1)
    """Mean time to first token of a batch (prefill), per repeat."""
    prefill_tok_s_samples: list[float] = Field(min_length=1)
    decode_tok_s_samples: list[float] = Field(min_length=1)
    """Tokens after each sequence's first over the decode time, all batches of a repeat."""
    e2e_s_samples: list[float] = Field(min_length=1)
    """Mean wall time of one batch's whole generation, per repeat."""
    peak_rss_bytes: int


@dataclass(frozen=True)
class RuntimeRun:
    """What one pass of the runtime printed with ``--json``."""

    outputs: list[RuntimeOutput]
    timings: RuntimeTimings


def parse_runtime_json(text: str, source: str = "the runtime") -> RuntimeRun:
    """Read the runtime's ``--json`` stdout: ``output`` lines, then one ``timings`` line."""
    outputs: list[RuntimeOutput] = []
    timings: RuntimeTimings | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.startswith("{"):
            continue  # not ours: a library may print a notice on stdout
        try:
            record = json.loads(line)
            kind = record.get("type")
            if kind == "output":
                outputs.append(RuntimeOutput.model_validate(record))
            elif kind == "timings":
                timings = RuntimeTimings.model_validate(record)
        except (ValueError, ValidationError) as error:
            raise RemoteError(
                f"{source}: line {number} is not runtime output: {first_problem(error)}",
                hint="a runtime built before edgepack printed token ids and per-repeat samples "
                "cannot be benched: rebuild the bundle with `edgepack build` and deploy it again",
            ) from error
    if timings is None:
        raise RemoteError(f"{source}: the runtime printed no timings line")
    return RuntimeRun(outputs, timings)


@dataclass(frozen=True)
class DeployedRelease:
    """The release on the device whose runtime is benched, as read from there."""

    directory: str
    manifest: Manifest
    build_info: dict[str, Any]
    prompts: PromptSet
    prompts_sha256: str
    prompts_file: str
    """On the device: the release's prompt set, or the one --prompts uploaded."""

    @property
    def binary(self) -> str:
        return posixpath.join(self.directory, RUNTIME_BINARY)

    def asking(self, uploaded: UploadedPrompts) -> DeployedRelease:
        """The same release run on the prompt set --prompts uploaded."""
        return dataclasses.replace(
            self,
            prompts=uploaded.prompts,
            prompts_sha256=uploaded.sha256,
            prompts_file=uploaded.path,
        )


def runtime_libraries(release: DeployedRelease) -> dict[str, str]:
    """The runtime and the ONNX Runtime libraries it was linked with, with their versions.

    build-info.json names the libraries; their versions are those the bundle's build recorded
    (the runtime stage takes the libraries of the ONNX Runtime versions installed on the build
    host), unless build-info.json records versions of its own.
    """
    info = release.build_info
    recorded = info.get("versions")
    versions = recorded if isinstance(recorded, dict) else release.manifest.tools
    built = f"{release.manifest.edgepack_version} ({info.get('mode', '?')} build"
    libraries = {"edgepack-runtime": built + f", {info.get('compiler', '?')})"}
    for name in RUNTIME_LIBRARIES:
        if name in versions:
            libraries[name] = str(versions[name])
    return libraries


def device_machine(facts: DeviceFacts, release: DeployedRelease) -> dict[str, Any]:
    """RunResult.machine for a run without Python on the device: the device's facts."""
    return {
        "hostname": facts.hostname,
        "arch": facts.arch,
        "cpu_model": facts.cpu_model,
        "logical_cores": facts.cpu_cores,
        "memory_bytes": facts.memory_bytes,
        "os": facts.os,
        "kernel": facts.kernel,
        "runner": "runtime",
        "libraries": runtime_libraries(release),
        "runtime_build": release.build_info,
        "device_facts": facts.model_dump(mode="json"),
    }


def _check_pass(
    run: RuntimeRun, release: DeployedRelease, options: BenchOptions, batch: int
) -> None:
    """Refuse output that does not answer what was asked: every prompt, in order, as set."""
    asked = {
        "batch_size": batch,
        "repeat": options.runs,
        "warmup": options.warmup,
        "max_new_tokens": options.max_new_tokens,
    }
    wrong = [
        f"{key} {getattr(run.timings, key)} (asked {value})"
        for key, value in asked.items()
        if getattr(run.timings, key) != value
    ]
    answered = [output.id for output in run.outputs]
    expected = [prompt.id for prompt in release.prompts.prompts]
    if answered != expected:
        wrong.append(f"answers for {answered} (the prompt set has {expected})")
    if wrong:
        raise RemoteError(
            f"the runtime's batch-{batch} pass does not match the request: " + "; ".join(wrong)
        )


def runtime_result(
    label: str,
    facts: DeviceFacts,
    release: DeployedRelease,
    options: BenchOptions,
    single: RuntimeRun,
    batched: RuntimeRun | None,
) -> RunResult:
    """A RunResult from the runtime's passes: batch-1 figures and answers, batched figures."""
    _check_pass(single, release, options, 1)
    if batched is not None:
        _check_pass(batched, release, options, options.batch_size)
    passes = [single] if batched is None else [single, batched]
    first = single.timings
    texts = {prompt.id: prompt.text for prompt in release.prompts.prompts}
    return RunResult(
        location=label,
        bundle={"dir": release.directory, **bundle_summary(release.manifest)},
        machine=device_machine(facts, release),
        settings=BenchSettings(
            runs=options.runs,
            warmup=options.warmup,
            batch_size=options.batch_size,
            max_new_tokens=options.max_new_tokens,
            prompts_file=release.prompts_file,
            prompts_sha256=release.prompts_sha256,
        ),
        load=LoadTimes(
            first_s=first.load_s,
            first_page_cache="unknown",
            warm=Spread.of([run.timings.load_s for run in passes]),
        ),
        metrics=Metrics(
            ttft_s=Spread.of(first.ttft_s_samples),
            prefill_tok_s=Spread.of(first.prefill_tok_s_samples),
            decode_tok_s=Spread.of(first.decode_tok_s_samples),
            decode_tok_s_batched=(
                None if batched is None else Spread.of(batched.timings.decode_tok_s_samples)
            ),
            e2e_s=Spread.of(first.e2e_s_samples),
            batched_e2e_s=None if batched is None else Spread.of(batched.timings.e2e_s_samples),
            peak_rss_bytes=max(run.timings.peak_rss_bytes for run in passes),
        ),
        outputs=[
            PromptOutput(
                id=output.id,
                prompt=texts[output.id],
                text=output.text,
                prompt_tokens=output.prompt_tokens,
                new_tokens=output.new_tokens,
                token_ids=output.token_ids,
            )
            for output in single.outputs
        ],
        raw={
            "runner": "runtime",
            "single": first.model_dump(mode="json"),
            "batched": None if batched is None else batched.timings.model_dump(mode="json"),
        },
    )


def read_release(connector: Connector, facts: DeviceFacts) -> DeployedRelease:
    """The current release's manifest, prompt set and runtime build facts, read on the device."""
    directory = current_release_dir(connector, facts)
    files = _ReleaseFiles(connector, directory)
    manifest = files.parse(MANIFEST, Manifest.model_validate_json)
    binary = posixpath.join(directory, RUNTIME_BINARY)
    status = connector.run(shell(PREPARE_SCRIPT, binary), check=False).status
    if status == 4:
        raise RemoteError(
            f"{connector.label}: {binary} is not executable",
            hint="redeploy the bundle rebuilt: deploy sets the execute bits its manifest records",
        )
    if status == 3:
        raise RemoteError(
            f"{connector.label}: the deployed bundle {manifest.short_id} has no C++ runtime "
            f"({RUNTIME_BINARY})",
            hint=f"build one into the bundle: `edgepack build --target {manifest.target['name']} "
            "--runtime cross ...` (native on a host of the target's arch), then deploy it",
        )
    prompts = files.read(manifest.prompts_file)
    return DeployedRelease(
        directory=directory,
        manifest=manifest,
        build_info=files.parse(RUNTIME_BUILD_INFO, json.loads),
        prompts=files.parse(manifest.prompts_file, PromptSet.model_validate_json),
        prompts_sha256=hashlib.sha256(prompts).hexdigest(),
        prompts_file=posixpath.join(directory, manifest.prompts_file),
    )


class _ReleaseFiles:
    """Small files of a deployed release, each read once over the connector."""

    def __init__(self, connector: Connector, directory: str) -> None:
        self.connector = connector
        self.directory = directory
        self._read: dict[str, bytes] = {}

    def read(self, name: str) -> bytes:
        if name not in self._read:
            path = posixpath.join(self.directory, name)
            data = self.connector.read_bytes(path)
            if data is None:
                raise RemoteError(
                    f"{self.connector.label}: the deployed release has no {path}",
                    hint="deploy the bundle again (deploy verifies every file)",
                )
            self._read[name] = data
        return self._read[name]

    def parse(self, name: str, parse: Callable[[bytes], T]) -> T:
        try:
            return parse(self.read(name))
        except ValueError as error:  # ValidationError and JSONDecodeError are ValueErrors
            raise RemoteError(
                f"{self.connector.label}: {posixpath.join(self.directory, name)} is not valid: "
                f"{first_problem(error)}",
                hint="deploy the bundle again (deploy verifies every file)",
            ) from error


def self_test(connector: Connector, release: DeployedRelease) -> None:
    """The runtime's own check of files, architecture and a short generation on the device."""
    done = connector.run(
        [release.binary, "--bundle", release.directory, "--self-test"], check=False, timeout=None
    )
    if done.status == 0:
        return
    failed: list[str] = []
    for line in done.stdout.splitlines():
        if line.startswith("{") and '"self_test"' in line:
            checks = json.loads(line).get("checks", [])
            failed = [f"{c['name']}: {c['detail']}" for c in checks if not c.get("ok")]
    raise RemoteError(
        f"{connector.label}: the runtime's self-test failed: "
        + ("; ".join(failed) or done.error_line()),
        hint="redeploy the bundle, or build it for this device's target "
        "(`edgepack targets detect HOST` names it)",
    )


def bench_runtime_remote(
    connector: Connector, root: str, options: BenchOptions, interval_ms: int = 500
) -> RunResult:
    """Self-test, then the batch-1 (and batched) passes with telemetry; the result comes back."""
    facts = gather_facts(connector, root)
    release = read_release(connector, facts)
    check_limits(release.manifest, options)
    built_for = release.manifest.target.get("arch")
    if built_for != facts.arch:
        raise RemoteError(
            f"{connector.label} is {facts.arch} but the deployed bundle's runtime was built for "
            f"{built_for} ({release.manifest.target.get('name')})",
            hint="build the bundle for this device's target (`edgepack targets detect HOST` "
            "names it) and deploy it",
        )
    if options.prompts_file is not None:
        release = release.asking(upload_prompt_set(connector, facts, options.prompts_file))
    self_test(connector, release)
    run_dir = posixpath.join(facts.root, "runs", uuid.uuid4().hex[:12])
    argv = [
        release.binary, "--bundle", release.directory, "--prompts", release.prompts_file,
        "--json", "--warmup", str(options.warmup), "--repeat", str(options.runs),
        "--max-new-tokens", str(options.max_new_tokens),
    ]  # fmt: skip
    threads = recipe_threads(release.manifest) or device_threads(facts)
    if threads:
        argv += ["--threads", str(threads)]
    workload = shell(PASSES_SCRIPT, run_dir, str(options.batch_size), *argv)
    done, logs = run_with_telemetry(connector, run_dir, workload, interval_ms)
    if done.status != 0:
        raise RemoteError(
            f"{connector.label}: the runtime failed on the device: {done.error_line()}",
            hint="run it there by hand: "
            f"{release.binary} --bundle {release.directory} --prompt 'Hello' --json",
        )
    single = _pass_output(connector, run_dir, SINGLE_OUTPUT)
    batched = _pass_output(connector, run_dir, BATCHED_OUTPUT) if options.batch_size > 1 else None
    result = runtime_result(connector.label, facts, release, options, single, batched)
    result.settings.threads = threads
    result.telemetry = summarize(logs, interval_ms, result.metrics.decode_tok_s.median)
    return result


def device_threads(facts: DeviceFacts) -> int | None:
    """The runtime's intra-op threads on the device: one per physical core, as edgepack's Python
    runner uses here (``engine_threads``). Passed explicitly because ONNX Runtime's own count can
    go wrong: under qemu-user it read one core of two and ran at half speed."""
    return facts.physical_cores or facts.cpu_cores


def recipe_threads(manifest: Manifest) -> int | None:
    """The intra-op threads the target's ``[recipe.ort]`` pinned in the engine, if it did."""
    engine = manifest.recipe.get("stage_config", {}).get("engine", {})
    threads = engine.get("session_options", {}).get("intra_op_num_threads")
    return threads if isinstance(threads, int) and not isinstance(threads, bool) else None


def check_limits(manifest: Manifest, options: BenchOptions) -> None:
    """The runtime's static layout is sized by the plan's limits; refuse more before running."""
    limits = manifest.recipe.get("limits", {})
    largest = {
        "--batch-size": (options.batch_size, limits.get("max_batch_size")),
        "--max-new-tokens": (
            options.max_new_tokens,
            limits["max_seq_len"] - limits["max_input_len"]
            if "max_seq_len" in limits and "max_input_len" in limits
            else None,
        ),
    }
    problems = [
        f"{flag} {value} is above this bundle's limit of {limit}"
        for flag, (value, limit) in largest.items()
        if limit is not None and value > limit
    ]
    if problems:
        raise BadInputError(
            "; ".join(problems) + " (its runtime has a static memory layout)",
            hint="bench within the limits, or build with larger --max-batch-size / --max-seq-len",
        )


def _pass_output(connector: Connector, run_dir: str, name: str) -> RuntimeRun:
    path = posixpath.join(run_dir, name)
    data = connector.read_bytes(path)
    if data is None:
        raise RemoteError(f"{connector.label}: the runtime wrote no {path}")
    return parse_runtime_json(data.decode(errors="replace"), f"{connector.label}:{path}")

"""The C++ runtime's --json output read back into a RunResult (tests/fixtures/runtime: recorded)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
from collections.abc import Callable
from pathlib import Path

import pytest

from edgepack.bench.local import BenchOptions
from edgepack.bench.result import RunResult
from edgepack.bundle import Manifest
from edgepack.errors import BadInputError, ExitCode, RemoteError
from edgepack.quality.gate import gate_run
from edgepack.quality.prompts import PromptSet
from edgepack.quality.reference import Reference, ReferenceOutput
from edgepack.remote.connector import LocalConnector
from edgepack.remote.device_run import upload_prompt_set
from edgepack.remote.facts import DeviceFacts
from edgepack.remote.runtime_bench import (
    DeployedRelease,
    RuntimeRun,
    bench_runtime_remote,
    device_threads,
    parse_runtime_json,
    runtime_result,
)
from edgepack.resources import data_dir
from tests.unit.conftest import CliResult

RECORDED = Path(__file__).parent.parent / "fixtures" / "runtime"
OPTIONS = BenchOptions(runs=3, warmup=1, batch_size=3, max_new_tokens=16)


def recorded(name: str) -> str:
    return (RECORDED / name).read_text(encoding="utf-8")


def recorded_run(batch: int) -> RuntimeRun:
    return parse_runtime_json(recorded(f"recorded-batch{batch}.jsonl"))


@pytest.fixture
def release() -> DeployedRelease:
    prompts = (data_dir("prompts") / "default.json").read_bytes()
    return DeployedRelease(
        directory="/srv/edgepack/releases/9520c8a665b4b7f9",
        manifest=Manifest.model_validate_json(recorded("recorded-manifest.json")),
        build_info=json.loads(recorded("recorded-build-info.json")),
        prompts=PromptSet.model_validate_json(prompts),
        prompts_sha256="0" * 64,
        prompts_file="/srv/edgepack/releases/9520c8a665b4b7f9/prompts.json",
    )


@pytest.fixture
def facts() -> DeviceFacts:
    return DeviceFacts(
        host="dev",
        root="/srv/edgepack",
        free_bytes=10**10,
        arch="aarch64",
        hostname="orin-1",
        os="Ubuntu 22.04.5 LTS",
        cpu_model="ARMv8 Processor rev 1 (v8l)",
        cpu_cores=12,
        memory_bytes=64 * 2**30,
    )


def test_recorded_output_parses_into_answers_and_per_repeat_samples() -> None:
    run = recorded_run(1)
    prompt_ids = [p.id for p in PromptSet.load(data_dir("prompts") / "default.json").prompts]
    assert [output.id for output in run.outputs] == prompt_ids
    for output in run.outputs:
        assert len(output.token_ids) == output.new_tokens - output.stopped_at_eos
        assert 0 < len(output.token_ids) <= 16 and output.prompt_tokens > 0
    assert run.outputs[0].text.startswith("The capital of France is Paris")
    timings = run.timings
    assert (timings.batch_size, timings.repeat, timings.warmup) == (1, 3, 1)
    assert timings.batches == len(prompt_ids)
    for samples in (timings.ttft_s_samples, timings.decode_tok_s_samples, timings.e2e_s_samples):
        assert len(samples) == 3 and all(value > 0 for value in samples)
    assert timings.prompt_tokens == sum(output.prompt_tokens for output in run.outputs)
    assert timings.new_tokens == sum(output.new_tokens for output in run.outputs)


def test_result_takes_every_figure_from_the_samples(
    release: DeployedRelease, facts: DeviceFacts
) -> None:
    single, batched = recorded_run(1), recorded_run(3)
    result = runtime_result("dev", facts, release, OPTIONS, single, batched)
    assert result.location == "dev"
    metrics = result.metrics
    assert metrics.ttft_s.samples == single.timings.ttft_s_samples
    assert metrics.prefill_tok_s.samples == single.timings.prefill_tok_s_samples
    assert metrics.decode_tok_s.samples == single.timings.decode_tok_s_samples
    assert metrics.e2e_s.samples == single.timings.e2e_s_samples
    assert metrics.decode_tok_s_batched is not None and metrics.batched_e2e_s is not None
    assert metrics.decode_tok_s_batched.samples == batched.timings.decode_tok_s_samples
    assert metrics.batched_e2e_s.samples == batched.timings.e2e_s_samples
    assert metrics.peak_rss_bytes == batched.timings.peak_rss_bytes  # the larger of the two
    assert result.load.first_s == single.timings.load_s
    assert result.load.first_page_cache == "unknown"
    assert result.load.warm.samples == [single.timings.load_s, batched.timings.load_s]
    assert result.heldout is None and result.quality is None
    assert result.bundle["bundle_id"] == release.manifest.bundle_id
    assert result.bundle["dir"] == release.directory
    assert result.settings.prompts_file == release.directory + "/prompts.json"
    assert result.settings.batch_size == 3 and result.settings.runs == 3


def test_outputs_are_the_batch_one_answers_with_their_prompts(
    release: DeployedRelease, facts: DeviceFacts
) -> None:
    single = recorded_run(1)
    result = runtime_result("dev", facts, release, OPTIONS, single, recorded_run(3))
    texts = {prompt.id: prompt.text for prompt in release.prompts.prompts}
    for mine, recorded_output in zip(result.outputs, single.outputs, strict=True):
        assert mine.prompt == texts[mine.id]
        assert mine.token_ids == recorded_output.token_ids
        assert mine.prompt_tokens == recorded_output.prompt_tokens
        assert mine.new_tokens == recorded_output.new_tokens


def test_machine_is_the_device_and_names_the_runtime_and_its_libraries(
    release: DeployedRelease, facts: DeviceFacts
) -> None:
    result = runtime_result("dev", facts, release, OPTIONS, recorded_run(1), None)
    machine = result.machine
    assert machine["arch"] == "aarch64" and machine["logical_cores"] == 12
    assert machine["cpu_model"] == facts.cpu_model and machine["os"] == facts.os
    assert machine["runner"] == "runtime" and "python" not in machine
    libraries = machine["libraries"]
    assert libraries["onnxruntime-genai"] == release.manifest.tools["onnxruntime-genai"]
    assert libraries["edgepack-runtime"].startswith(release.manifest.edgepack_version)
    assert "native build" in libraries["edgepack-runtime"]
    assert machine["runtime_build"]["libraries"] == [
        "libonnxruntime-genai.so",
        "libonnxruntime.so.1",
    ]


def test_without_a_batched_pass_the_batched_figures_stay_empty(
    release: DeployedRelease, facts: DeviceFacts
) -> None:
    options = BenchOptions(runs=3, warmup=1, batch_size=1, max_new_tokens=16)
    result = runtime_result("dev", facts, release, options, recorded_run(1), None)
    assert result.metrics.decode_tok_s_batched is None
    assert result.metrics.batched_e2e_s is None
    assert result.load.warm.n == 1
    assert result.raw["batched"] is None and result.raw["single"]["repeat"] == 3
    RunResult.model_validate_json(result.model_dump_json())  # round-trips as a saved result


def test_the_gate_judges_the_answers(release: DeployedRelease, facts: DeviceFacts) -> None:
    """Against a reference equal to the answers the gate passes with exact matches."""
    result = runtime_result("dev", facts, release, OPTIONS, recorded_run(1), recorded_run(3))
    reference = Reference(
        key="k",
        model_hash="h",
        prompts_sha256="s",
        max_new_tokens=16,
        method="recorded",
        versions={},
        outputs=[
            ReferenceOutput(id=o.id, prompt_token_ids=[1], token_ids=o.token_ids, text=o.text)
            for o in result.outputs
        ],
        heldout=None,
        compute_s=0.0,
    )
    verdict = gate_run(result.outputs, result.heldout, "4bit", reference)
    assert verdict.passed and verdict.metrics["exact_match_rate"] == 1.0
    assert "perplexity_ratio" not in verdict.metrics  # the runtime scores no held-out text


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (BenchOptions(runs=5, warmup=1, batch_size=3, max_new_tokens=16), "repeat 3 (asked 5)"),
        (BenchOptions(runs=3, warmup=1, batch_size=3, max_new_tokens=32), "max_new_tokens 16"),
        (BenchOptions(runs=3, warmup=1, batch_size=2, max_new_tokens=16), "batch_size 3 (asked 2)"),
    ],
)
def test_a_pass_that_does_not_answer_the_request_is_refused(
    release: DeployedRelease, facts: DeviceFacts, options: BenchOptions, message: str
) -> None:
    with pytest.raises(RemoteError, match=message.replace("(", r"\(").replace(")", r"\)")):
        runtime_result("dev", facts, release, options, recorded_run(1), recorded_run(3))


def test_answers_for_other_prompts_are_refused(
    release: DeployedRelease, facts: DeviceFacts
) -> None:
    lines = recorded("recorded-batch1.jsonl").splitlines()
    shortened = parse_runtime_json("\n".join(lines[1:]))  # the first prompt's answer lost
    with pytest.raises(RemoteError, match="the prompt set has"):
        runtime_result("dev", facts, release, OPTIONS, shortened, recorded_run(3))


def test_output_of_an_older_runtime_asks_for_a_rebuild() -> None:
    """Recorded from a runtime built before the answers carried token ids."""
    with pytest.raises(RemoteError, match="line 1 is not runtime output: prompt_tokens") as caught:
        parse_runtime_json(recorded("recorded-older-runtime.jsonl"), "dev:/r/single.jsonl")
    assert str(caught.value).startswith("dev:/r/single.jsonl: ")
    assert "rebuild the bundle" in str(caught.value.hint)


def test_output_without_a_timings_line_is_refused() -> None:
    lines = recorded("recorded-batch1.jsonl").splitlines()
    with pytest.raises(RemoteError, match="printed no timings line"):
        parse_runtime_json("\n".join(lines[:-1]))


def test_lines_that_are_not_json_objects_are_skipped() -> None:
    text = "onnxruntime notice\n" + recorded("recorded-batch1.jsonl")
    assert len(parse_runtime_json(text).outputs) == 12


def deploy_root(tmp_path: Path, manifest: str, runtime: bool = True) -> Path:
    """A deploy root as deploy leaves it: releases/<id> with the recorded bundle files, current
    pointing at it. The runtime is a placeholder; the tests using it refuse before running it."""
    root = tmp_path / "device"
    release = root / "releases" / "9520c8a665b4b7f9"
    release.mkdir(parents=True)
    (release / "manifest.json").write_text(manifest)
    (release / "prompts.json").write_bytes((data_dir("prompts") / "default.json").read_bytes())
    if runtime:
        (release / "runtime" / "bin").mkdir(parents=True)
        (release / "runtime" / "build-info.json").write_text(recorded("recorded-build-info.json"))
        binary = release / "runtime" / "bin" / "edgepack-runtime"
        binary.write_text("never run")
        binary.chmod(0o755)  # deploy sets the execute bits the manifest records
    (root / "current").symlink_to("releases/9520c8a665b4b7f9")
    return root


def test_a_release_without_a_runtime_is_a_one_line_remote_error(tmp_path: Path) -> None:
    root = deploy_root(tmp_path, recorded("recorded-manifest.json"), runtime=False)
    with pytest.raises(RemoteError) as caught:
        bench_runtime_remote(LocalConnector("dev"), str(root), OPTIONS)
    message = str(caught.value)
    assert "\n" not in message
    assert "has no C++ runtime (runtime/bin/edgepack-runtime)" in message
    assert "edgepack build --target host-x86_64-cpu --runtime" in str(caught.value.hint)
    assert caught.value.exit_code == ExitCode.REMOTE


def test_a_runtime_without_its_execute_bit_is_refused_with_the_fix(tmp_path: Path) -> None:
    root = deploy_root(tmp_path, recorded("recorded-manifest.json"))
    (root / "current" / "runtime" / "bin" / "edgepack-runtime").chmod(0o644)
    with pytest.raises(RemoteError, match="edgepack-runtime is not executable") as caught:
        bench_runtime_remote(LocalConnector("dev"), str(root), OPTIONS)
    assert "execute bits" in str(caught.value.hint)


def test_more_than_the_runtime_was_built_for_is_refused_before_it_runs(tmp_path: Path) -> None:
    root = deploy_root(tmp_path, recorded("recorded-manifest.json"))
    options = BenchOptions(runs=1, warmup=0, batch_size=8, max_new_tokens=2000)
    with pytest.raises(BadInputError) as caught:
        bench_runtime_remote(LocalConnector("dev"), str(root), options)
    assert str(caught.value) == (
        "--batch-size 8 is above this bundle's limit of 4; --max-new-tokens 2000 is above this "
        "bundle's limit of 1024 (its runtime has a static memory layout)"
    )


def test_a_runtime_for_another_arch_is_refused_before_it_runs(tmp_path: Path) -> None:
    other = "x86_64" if platform.machine() == "aarch64" else "aarch64"
    manifest = json.loads(recorded("recorded-manifest.json"))
    manifest["target"] |= {"name": f"generic-{other}-cpu", "arch": other}
    root = deploy_root(tmp_path, json.dumps(manifest))
    with pytest.raises(
        RemoteError, match=f"but the deployed bundle's runtime was built for {other}"
    ):
        bench_runtime_remote(LocalConnector("dev"), str(root), OPTIONS)


def test_a_bad_prompt_set_is_refused_before_anything_runs_on_the_device(tmp_path: Path) -> None:
    root = deploy_root(tmp_path, recorded("recorded-manifest.json"))
    bad = tmp_path / "prompts.json"
    bad.write_text('{"name": "empty", "prompts": []}')
    options = dataclasses.replace(OPTIONS, prompts_file=bad)
    with pytest.raises(BadInputError, match="is not a prompt set"):
        bench_runtime_remote(LocalConnector("dev"), str(root), options)
    assert not (root / "runs").exists()


def test_a_prompt_set_of_ones_own_is_uploaded_and_asked(
    release: DeployedRelease, facts: DeviceFacts, tmp_path: Path
) -> None:
    mine = tmp_path / "mine.json"
    mine.write_text('{"name": "mine", "prompts": [{"id": "q", "text": "Why is the sky blue?"}]}')
    facts = facts.model_copy(update={"root": str(tmp_path / "device")})
    uploaded = upload_prompt_set(LocalConnector("dev"), facts, mine)
    assert uploaded.path.startswith(f"{facts.root}/prompts/")
    assert Path(uploaded.path).read_bytes() == mine.read_bytes()
    asked = release.asking(uploaded)
    assert [prompt.id for prompt in asked.prompts.prompts] == ["q"]
    assert asked.prompts_file == uploaded.path
    assert asked.prompts_sha256 == hashlib.sha256(mine.read_bytes()).hexdigest()
    with pytest.raises(RemoteError, match=r"answers for \['capital-france'"):
        runtime_result("dev", facts, asked, OPTIONS, recorded_run(1), None)


def test_nothing_deployed_says_so(tmp_path: Path) -> None:
    with pytest.raises(RemoteError, match="nothing is deployed"):
        bench_runtime_remote(LocalConnector("dev"), str(tmp_path), OPTIONS)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--runner", "runtim"], "unknown --runner 'runtim' (did you mean \"runtime\"?)"),
        (["--runner", "runtime"], "--runner runtime benches a deployed bundle on its device"),
        (
            ["--runner", "runtime", "--host", "dev", "--remote-python", "/usr/bin/python3"],
            "--remote-python is for --runner python",
        ),
    ],
)
def test_runner_option_is_checked_before_any_work(
    cli: Callable[..., CliResult], argv: list[str], message: str
) -> None:
    result = cli("bench", *argv)
    assert result.code == ExitCode.BAD_INPUT
    assert message in result.flat_err


def test_the_runtime_computes_with_one_thread_per_physical_core_of_the_device(
    facts: DeviceFacts,
) -> None:
    """The device's physical cores where lscpu told them, else its online CPUs: never ONNX
    Runtime's own count, which under qemu-user read one core of two."""
    assert device_threads(facts.model_copy(update={"physical_cores": 8})) == 8
    assert device_threads(facts) == 12
    assert device_threads(facts.model_copy(update={"cpu_cores": None})) is None

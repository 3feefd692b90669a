"""The trtllm backend without a GPU: the plan's checks, the golden trtllm-build command lines, and
the parser of trtllm-build's log (recorded formats in tests/fixtures/trtllm/)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edgepack.backends.trtllm.buildlog import explain_failure, explain_status, parse_build_log
from edgepack.backends.trtllm.flags import trtllm_build_argv
from edgepack.errors import ToolFailedError
from edgepack.models import load_card
from edgepack.plan import PlanRequest, make_plan

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "trtllm"
COMMON = [
    "trtllm-build", "--checkpoint_dir", "CKPT", "--output_dir", "ENGINE",
    "--max_batch_size", "4", "--max_input_len", "1024", "--max_seq_len", "2048",
]  # fmt: skip
TAIL = [
    "--kv_cache_type", "paged", "--use_paged_context_fmha", "enable",
    "--multiple_profiles", "enable", "--workers", "1", "--monitor_memory",
]  # fmt: skip


def _argv(precision: str, kv: str = "fp16") -> list[str]:
    placed = []
    for arg in trtllm_build_argv(precision, kv, 4, 1024, 2048):
        placed.append(
            arg if isinstance(arg, str) else ("CKPT" if "Input" in repr(arg) else "ENGINE")
        )
    return placed


@pytest.mark.parametrize(
    ("precision", "kv", "expected"),
    [
        ("fp16", "fp16", [*COMMON, "--gemm_plugin", "auto", *TAIL]),
        ("bf16", "bf16", [*COMMON, "--gemm_plugin", "auto", *TAIL]),
        ("fp8", "fp16", [*COMMON, "--gemm_plugin", "disable", *TAIL]),
        (
            "fp8",
            "fp8",
            [*COMMON, "--gemm_plugin", "disable", *TAIL, "--use_fp8_context_fmha", "enable"],
        ),
        ("int8_sq", "fp16", [*COMMON, "--gemm_plugin", "auto", *TAIL]),
        ("int8_wo", "fp16", [*COMMON, "--gemm_plugin", "auto", *TAIL]),
        ("int4_awq", "fp16", [*COMMON, "--gemm_plugin", "auto", *TAIL]),
    ],
)
def test_golden_trtllm_build_command_lines(precision: str, kv: str, expected: list[str]) -> None:
    assert _argv(precision, kv) == expected


def _fill(name: str, **values: str) -> str:
    defaults = {"version": "1.2.1", "stamp": "12/01/2026-10:00:00", "gemm_plugin": "auto"}
    return (FIXTURES / name).read_text().format(**(defaults | {"output": "/e"} | values))


def test_the_build_log_gives_generation_time_and_peak_memory() -> None:
    figures = parse_build_log(_fill("trtllm-build-success.log"), "build.log")
    assert figures["engine_generation_s"] == pytest.approx(35.9738)
    assert (figures["peak_cpu_mib"], figures["peak_gpu_mib"]) == (212, 775)
    assert (figures["total_build_s"], figures["serialize_s"]) == (41, 2)
    assert figures["tensorrt_llm"] == "1.2.1"
    assert figures["plugins"]["use_paged_context_fmha"] == "True"


def test_a_log_the_parser_does_not_know_is_an_error_not_a_guess() -> None:
    text = _fill("trtllm-build-success.log").replace("Engine generation completed", "Done")
    with pytest.raises(ToolFailedError) as failure:
        parse_build_log(text, "/logs/build.log")
    assert "'Engine generation completed in'" in failure.value.message
    assert failure.value.hint == "the whole log: /logs/build.log"


def test_failures_are_explained_in_one_line() -> None:
    oom = explain_failure(_fill("trtllm-build-oom.log"))
    assert oom.startswith("the build host ran out of GPU memory (TensorRT: Requested size was")
    assert "--max-batch-size" in oom and "\n" not in oom
    other = "[12/01/2026-10:00:00] [TRT] [E] IBuilder::buildSerializedNetwork: Error Code 4\nx\n"
    assert explain_failure(other) == "IBuilder::buildSerializedNetwork: Error Code 4"
    assert "ran out of memory" in explain_status(137, "")


@pytest.fixture
def no_builder_here(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no trtllm-build
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/edgepack-test.sock")


def _plan(registry, model: str, precision: str, **options):  # type: ignore[no-untyped-def]
    request = PlanRequest(target=registry.get("ada-sm89"), model=load_card(model),
                          precision=precision, **options)  # fmt: skip
    return make_plan(request)


def test_no_reachable_builder_refuses_the_plan_naming_three_ways(
    registry, no_builder_here: None
) -> None:
    plan = _plan(registry, "qwen2.5-7b-instruct", "fp8")
    [problem] = plan.problems
    assert "no engine builder for TensorRT-LLM 1.2.1 is reachable" in problem
    for way in ("--builder local", "--builder container", "--builder ssh:HOST"):
        assert way in problem
    assert "nvcr.io/nvidia/tensorrt-llm/release:1.2.1" in problem
    # A build that stops at the checkpoint needs no builder.
    assert _plan(registry, "qwen2.5-7b-instruct", "fp8", needs_engine=False).valid


def test_a_named_ssh_builder_is_the_plan_s(registry, no_builder_here: None) -> None:
    plan = _plan(registry, "qwen2.5-7b-instruct", "fp8", builder="ssh:gpu-box")
    assert plan.valid and plan.builder == "ssh:gpu-box"
    assert plan.summary()["builder"] == "ssh:gpu-box"


def test_group_size_128_is_refused_for_the_demo_model_with_the_fix(registry) -> None:
    options = {"builder": "ssh:gpu-box"}
    [problem] = _plan(registry, "smollm2-135m-instruct", "int4_awq", **options).problems
    assert "blocks of 128" in problem and "hidden size 576" in problem
    assert problem.endswith("pass --group-size 64")
    plan = _plan(registry, "smollm2-135m-instruct", "int4_awq", group_size=64, **options)
    assert plan.valid and plan.group_size == 64
    assert _plan(registry, "qwen2.5-7b-instruct", "int4_awq", **options).group_size == 128


def test_nvfp4_on_a_cpu_host_is_refused_with_the_reason(registry, profile_variant) -> None:
    from edgepack.backends.trtllm.backend import TRTLLM, host_has_cuda
    from edgepack.targets import load_profile

    if host_has_cuda():
        pytest.skip("this host has a CUDA GPU: nvfp4 quantizes here")
    blackwell = load_profile(profile_variant(
        "rtx-pro-blackwell", ('allowed = ["trtrtx"]', 'allowed = ["trtrtx", "trtllm"]'),
    ))  # fmt: skip
    [problem] = TRTLLM.unsupported(blackwell, "nvfp4")
    assert "needs a CUDA GPU" in problem and "does not run on a CPU" in problem


def test_the_kv_cache_dtype_is_always_explicit_in_the_checkpoint_config(registry) -> None:
    from edgepack.backends.trtllm.backend import Calibration, checkpoint_config

    plan = _plan(registry, "qwen2.5-7b-instruct", "fp8", builder="ssh:gpu-box")
    config = checkpoint_config(plan, Calibration.default())
    assert config["kv_cache_dtype"] == "fp16" and config["kv_cache_quant_algo"] is None
    assert config["modelopt_config"] == "FP8_DEFAULT_CFG"
    assert config["calibration"]["sha256"] and "path" not in config["calibration"]
    assert os.sep not in str(config)  # no local path in the stage's cache key


def test_kv_fp8_on_a_7b_model_still_needs_the_flag(cli) -> None:  # type: ignore[no-untyped-def]
    result = cli("plan", "--target", "ada-sm89", "--precision", "fp8", "--kv-cache-dtype", "fp8",
                 "--model", "qwen2.5-7b-instruct", "--builder", "ssh:gpu-box")  # fmt: skip
    assert result.code == 3 and "--allow-kv-quantization" in result.out


def test_doctor_says_plainly_that_tensorrt_and_tensorrt_llm_are_missing(cli) -> None:  # type: ignore[no-untyped-def]
    import importlib.util
    import json

    if importlib.util.find_spec("tensorrt_llm") or importlib.util.find_spec("tensorrt"):
        pytest.skip("TensorRT is installed on this machine")
    result = cli("doctor", "--json")
    assert result.code == 0, result.err
    rows = {(row["where"], row["component"]): row for row in json.loads(result.out)}
    for component in ("TensorRT", "TensorRT-LLM"):
        row = rows[("here", component)]
        assert row["found"] is False and row["detail"] == "not installed" and row["fix"]
    assert rows[("here", "trtllm-build")]["found"] is False

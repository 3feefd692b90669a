"""The ort backend's recipe: what it refuses on a CPU, the builder options the plan sets, and its
honesty on GPU targets (CPU engines: the CPU cores run them, no GPU is demanded at deploy)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from edgepack.backends.ort import ORT
from edgepack.bundle import Manifest
from edgepack.models import resolve_spec
from edgepack.pipeline import manifest_target
from edgepack.plan import Plan, PlanRequest, make_plan
from edgepack.remote.detect import compatibility_problems
from edgepack.remote.facts import DeviceFacts
from edgepack.targets import TargetRegistry
from tests.unit.conftest import CliResult


def _plan(target: str, precision: str) -> Plan:
    registry = TargetRegistry.default()
    return make_plan(
        PlanRequest(registry.get(target), resolve_spec("smollm2-135m-instruct"), precision)
    )


@pytest.mark.parametrize("target", ["host-x86_64-cpu", "generic-aarch64-cpu"])
def test_fp16_on_a_cpu_is_refused_with_the_fix(target: str) -> None:
    plan = _plan(target, "fp16")
    assert not plan.valid
    (problem,) = plan.problems
    assert "fp16" in problem.lower() and "--precision fp32 or int4" in problem


@pytest.mark.parametrize("precision", ["fp32", "int4"])
def test_cpu_precisions_are_valid(precision: str) -> None:
    assert _plan("host-x86_64-cpu", precision).valid


def test_int4_stage_config_comes_from_the_plan() -> None:
    plan = _plan("host-x86_64-cpu", "int4")
    (engine, *_) = ORT.stages(plan)
    options = engine.config["extra_options"]
    assert options["block_size"] == "32"
    assert options["accuracy_level"] == "4"
    assert options["matmul_mixed_precision"] == "last_matmul:int8"
    fp32_engine = ORT.stages(_plan("host-x86_64-cpu", "fp32"))[0]
    assert fp32_engine.config["extra_options"] == {}


GPU_TARGETS = sorted(
    profile.name
    for profile in TargetRegistry.default().all()
    if profile.gpu is not None and "ort" in profile.backends.allowed
)
"""The GPU target profiles that list the ort backend (Jetsons, DGX Spark)."""


def test_gpu_targets_with_ort_exist() -> None:
    assert {"jetson-thor", "dgx-spark"} <= set(GPU_TARGETS)


def _ort_plan(target: str, precision: str) -> Plan:
    registry = TargetRegistry.default()
    request = PlanRequest(
        registry.get(target), resolve_spec("smollm2-135m-instruct"), precision, backend="ort"
    )
    return make_plan(request)


@pytest.mark.parametrize("target", GPU_TARGETS)
def test_fp16_on_a_gpu_target_is_refused_as_on_a_cpu(target: str) -> None:
    """ort builds CPU engines there too: an fp16 one fails on its first decode step."""
    plan = _ort_plan(target, "fp16")
    assert not plan.valid
    (problem,) = plan.problems
    sm = TargetRegistry.default().get(target).sm_label
    assert f"its engines run on the CPU cores there, not on the {sm} GPU" in problem
    assert "--precision fp32 or int4" in problem


@pytest.mark.parametrize("target", GPU_TARGETS)
def test_on_a_gpu_target_the_plan_says_the_cpu_cores_run_it(target: str) -> None:
    plan = _ort_plan(target, "int4")
    assert plan.valid, plan.problems
    assert not plan.on_gpu
    assert plan.runs_on == plan.summary()["runs_on"] == "the device's CPU cores"


def test_the_gpu_backend_of_the_same_target_runs_on_its_gpu() -> None:
    registry = TargetRegistry.default()
    request = PlanRequest(registry.get("jetson-thor"), resolve_spec("qwen3-8b"), "int4_awq")
    plan = make_plan(request)
    assert plan.backend == "edgellm" and plan.on_gpu
    assert plan.runs_on == "the device's SM110 GPU"
    assert manifest_target(plan)["cuda_arch"] == "110a"


def test_plan_output_says_where_it_runs(cli: Callable[..., CliResult]) -> None:
    result = cli("plan", "-t", "jetson-thor", "-b", "ort", "-p", "int4", "-m", "smollm2-135m")
    assert result.code == 0, result.err
    assert "runs on the device's CPU cores" in result.flat_out


@pytest.mark.parametrize("target", GPU_TARGETS)
def test_the_manifest_of_a_cpu_engine_demands_no_gpu_at_deploy(target: str) -> None:
    """Deploy checks the manifest's target against the device: a device of the target's arch
    without the GPU (no nvidia-smi, not a known Jetson) takes the CPU engine."""
    plan = _ort_plan(target, "int4")
    recorded = manifest_target(plan)
    assert recorded["cuda_arch"] is None
    assert recorded["sm"] == f"CPU ({plan.target.arch})"
    assert recorded["runs_on"] == "the device's CPU cores"
    manifest = Manifest(
        edgepack_version="0",
        model={},
        recipe={"backend": "ort"},
        target=recorded,
        tools={},
        plan={},
        stages=[],
    )
    plain = DeviceFacts(host="dev", root="/srv/edgepack", free_bytes=10**10, arch=plan.target.arch)
    assert compatibility_problems(manifest, plain, TargetRegistry.default()) == []
    with_gpu = manifest.model_copy(update={"target": recorded | {"cuda_arch": "87"}})
    assert compatibility_problems(with_gpu, plain, TargetRegistry.default())  # as it was before

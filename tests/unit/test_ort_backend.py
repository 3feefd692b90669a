"""The ort backend's recipe: what it refuses on a CPU and the builder options the plan sets."""

from __future__ import annotations

import pytest

from edgepack.backends.ort import ORT
from edgepack.models import resolve_spec
from edgepack.plan import Plan, PlanRequest, make_plan
from edgepack.targets import TargetRegistry


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

"""TensorRT Edge-LLM: the path for Jetson Thor/Orin and DGX Spark (REFERENCE.md §4, §12).

The host quantizes and exports (``stages``: in an environment of Edge-LLM's own pins, see
``toolchain``); the engine is built on the device by ``llm_build`` (Edge-LLM ONNX and engines are
specific to the Edge-LLM and TensorRT release and, for engines, to the SM), and runs there.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edgepack.backends.base import BackendDescription, DeviceCheck, Stage
from edgepack.backends.edgellm.stages import UV, device_engine_stage, host_stages
from edgepack.backends.edgellm.toolchain import EDGELLM_VERSION, MODELOPT_VERSION, TOOLENV
from edgepack.errors import ToolMissingError

if TYPE_CHECKING:
    from edgepack.plan import Plan
    from edgepack.remote.connector import Connector
    from edgepack.remote.facts import DeviceFacts
    from edgepack.runtime.spec import RuntimeBuild
    from edgepack.targets import TargetProfile

ORIN_JETPACK = "7.2"
"""Edge-LLM 0.11 supports Orin (SM87) only on JetPack 7.2 (CUDA 13.2)."""
CUDA_ONLY_PRECISIONS = ("nvfp4",)
"""ModelOpt calibrates NVFP4 only on a CUDA GPU (its FP8/INT8/INT4-AWQ run on a CPU)."""


NO_CUDA = (
    "{precision} quantization needs a CUDA GPU on the host that quantizes (ModelOpt's NVFP4 "
    "calibration) and this host has none: the build refuses it here; quantize on a GPU host or "
    "use --precision fp8, int8_sq or int4_awq"
)


def host_has_cuda() -> bool:
    """A CUDA GPU on this host, by its device node or driver tool; no library is loaded."""
    return Path("/dev/nvidia0").exists() or shutil.which("nvidia-smi") is not None


@dataclass(frozen=True)
class EdgeLlmBackend(BackendDescription):
    def known_issues(self, target: TargetProfile, precision: str) -> list[str]:
        issues = []
        if precision in CUDA_ONLY_PRECISIONS and not host_has_cuda():
            issues.append(NO_CUDA.format(precision=precision))
        jetpack = target.toolchain.jetpack
        if target.gpu and target.gpu.sm == "SM87" and jetpack and jetpack != ORIN_JETPACK:
            issues.append(
                f"Edge-LLM {EDGELLM_VERSION} supports Orin only on JetPack {ORIN_JETPACK}; "
                f"{target.name} describes JetPack {jetpack}: the device must run the Edge-LLM "
                "build of its own JetPack, or the engine build refuses this export"
            )
        return issues

    def tool_versions(self) -> dict[str, str]:
        return {
            "tensorrt-edgellm": EDGELLM_VERSION,
            "nvidia-modelopt": MODELOPT_VERSION,
            "edgellm-toolenv": TOOLENV.key,
        }

    def stages(self, plan: Plan) -> list[Stage]:
        if plan.precision in CUDA_ONLY_PRECISIONS and not host_has_cuda():
            raise ToolMissingError(
                NO_CUDA.format(precision=plan.precision).split(": the build")[0],
                hint="quantize on a GPU host, or use --precision fp8, int8_sq or int4_awq",
            )
        return host_stages(plan)

    def device_engine_stage(self, plan: Plan, host: str) -> Stage:
        return device_engine_stage(plan, host)

    def runtime_stage(self, plan: Plan, build: RuntimeBuild) -> Stage:
        from edgepack.backends.edgellm.runtime import runtime_stage

        return runtime_stage(plan, build)

    def device_checks(
        self, connector: Connector, facts: DeviceFacts, target: TargetProfile | None
    ) -> list[DeviceCheck]:
        from edgepack.backends.edgellm.device import doctor_rows
        from edgepack.backends.edgellm.on_device import probe

        return doctor_rows(probe(connector), facts, target)


EDGELLM = EdgeLlmBackend(
    name="edgellm",
    summary="TensorRT Edge-LLM: Jetson Thor/Orin and DGX Spark; engines built on the device",
    weight_precisions=("fp16", "fp8", "int8_sq", "int4_awq", "nvfp4"),
    kv_dtypes=("fp16", "fp8"),
    build_ram_factor=3.5,
    needs=(UV,),
    engine_on_device=True,
)

"""ONNX Runtime GenAI: the embedded default. Builds on any host, runs on CPUs anywhere."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from edgepack.backends.base import BackendDescription, Requirement, Stage, StageContext
from edgepack.process import python_module_command, run_tool

if TYPE_CHECKING:
    from edgepack.plan import Plan

ORT_GENAI = Requirement(
    "python", "onnxruntime_genai", "pip install 'edgepack[ort]'", distribution="onnxruntime-genai"
)
ONNXRUNTIME = Requirement(
    "python", "onnxruntime", "pip install 'edgepack[ort]'", distribution="onnxruntime"
)
BUILDER_PRECISION = {"fp32": "fp32", "fp16": "fp16", "int4": "int4"}


@dataclass(frozen=True)
class OrtBackend(BackendDescription):
    def default_kv_dtype(self, precision: str) -> str:
        return "fp16" if precision == "fp16" else "fp32"

    def unquantized_bytes(self, precision: str) -> float:
        return 2.0 if precision == "fp16" else 4.0

    def stages(self, plan: Plan) -> list[Stage]:
        config = {
            "precision": BUILDER_PRECISION[plan.precision],
            "execution_provider": "cpu",
            "extra_options": _extra_options(plan),
        }
        return [
            Stage(
                name="engine",
                description="onnxruntime-genai model builder",
                config=config,
                inputs=("model",),
                run=_run_builder,
                requirements=(ORT_GENAI,),
            )
        ]


def _extra_options(plan: Plan) -> dict[str, str]:
    if plan.precision != "int4":
        return {}
    from edgepack.precisions import WEIGHT_FORMATS

    return {
        "int4_block_size": str(WEIGHT_FORMATS["int4"].block_size),
        "int4_accuracy_level": "4",
    }


def _run_builder(context: StageContext) -> None:
    config = context.plan
    options = _extra_options(config)
    cache = context.output_dir.parent / (context.output_dir.name + ".builder-cache")
    command = [
        *python_module_command("onnxruntime_genai.models.builder"),
        "-i",
        str(context.inputs["model"]),
        "-o",
        str(context.output_dir),
        "-p",
        BUILDER_PRECISION[config.precision],
        "-e",
        "cpu",
        "-c",
        str(cache),
    ]
    if options:
        command += ["--extra_options", *(f"{k}={v}" for k, v in options.items())]
    run_tool(
        command,
        install_hint=ORT_GENAI.install_hint,
        log=context.log,
        env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
    )


ORT = OrtBackend(
    name="ort",
    summary="ONNX Runtime GenAI: the embedded default; CPU anywhere, CUDA where present",
    weight_precisions=("fp32", "fp16", "int4"),
    kv_dtypes=("fp32", "fp16"),
    build_ram_factor=4.0,
    needs=(ORT_GENAI, ONNXRUNTIME),
)

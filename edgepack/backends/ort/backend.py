"""ONNX Runtime GenAI: the embedded default. Builds on any host; its engines are CPU engines, so
on a GPU target (a Jetson, DGX Spark) they run on the device's CPU cores."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edgepack.backends.base import (
    BackendDescription,
    EngineLoader,
    Requirement,
    Stage,
    StageContext,
)
from edgepack.backends.ort.architectures import architecture_problems
from edgepack.backends.ort.builder_input import FIXES_VERSION, prepare_builder_input
from edgepack.precisions import WEIGHT_FORMATS
from edgepack.process import OFFLINE_HUB, python_module_command, run_tool

if TYPE_CHECKING:
    from edgepack.models import ModelSpec
    from edgepack.plan import Plan
    from edgepack.runtime.spec import RuntimeBuild
    from edgepack.targets import OrtRecipe, TargetProfile

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
        """The embedding table and lm_head: int8 beside int4 blocks, else the model's io dtype."""
        return {"fp16": 2.0, "int4": 1.0}.get(precision, 4.0)

    def unsupported(self, target: TargetProfile, precision: str) -> list[str]:
        if precision != "fp16":
            return []
        where = f"the CPU of {target.name}"
        if target.gpu is not None:
            where += f" (its engines run on the CPU cores there, not on the {target.gpu.sm} GPU)"
        return [
            f"ONNX Runtime GenAI has no fp16 path for {where}: its model builder leaves "
            "FP16-on-CPU out of its supported combinations, and such an engine fails on its first "
            "decode step ('Shape mismatch attempting to re-use buffer'); use --precision fp32 or "
            "int4"
        ]

    def runs_on_gpu(self, target: TargetProfile) -> bool:
        return False  # the builder is run with `-e cpu`: CPU engines on every target

    def stages(self, plan: Plan) -> list[Stage]:
        config = {
            "precision": BUILDER_PRECISION[plan.precision],
            "execution_provider": "cpu",
            "extra_options": _extra_options(plan),
            "model_fixes": FIXES_VERSION,
        }
        if session := _session_options(plan):
            config["session_options"] = session  # only then: the default's key stays as it was
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

    def runtime_stage(self, plan: Plan, build: RuntimeBuild) -> Stage:
        return runtime_stage(plan, build)

    def engine_loader(self, engine_dir: Path) -> EngineLoader:
        from edgepack.backends.ort.runner import OrtEngine
        from edgepack.bench.machine import engine_threads

        return lambda: OrtEngine.load(engine_dir, engine_threads())

    def model_problems(self, spec: ModelSpec) -> list[str]:
        return architecture_problems(spec.architecture)


INT4_ACCURACY_LEVEL = "4"
"""int8 activations in the int4 MatMuls: the CPU EP's fastest kernels (its default too)."""
INT4_ALGORITHM = "k_quant"
INT4_MIXED_PRECISION = "last_matmul:int8"
"""Keep the lm_head in int8: on SmolLM2-135M this raised chrF against the fp32 reference from 26 to
38 and cut the held-out perplexity ratio from 1.52 to 1.43, for 17 % more bytes."""
GRAPH_OPTIMIZATION_LEVELS = {
    "disable_all": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}


def _recipe(plan: Plan) -> OrtRecipe:
    from edgepack.targets import OrtRecipe

    recipe = plan.target.recipe
    return recipe.ort if recipe is not None and recipe.ort is not None else OrtRecipe()


def _extra_options(plan: Plan) -> dict[str, str]:
    """The builder's int4 options: edgepack's defaults, then the target's ``[recipe.ort]``."""
    if plan.precision != "int4":
        return {}
    recipe = _recipe(plan)
    options = {
        "block_size": str(recipe.block_size or WEIGHT_FORMATS["int4"].block_size),
        "accuracy_level": str(recipe.accuracy_level or INT4_ACCURACY_LEVEL),
        "algo_config": recipe.algorithm or INT4_ALGORITHM,
    }
    if recipe.lm_head != "int4":
        options["matmul_mixed_precision"] = INT4_MIXED_PRECISION
    for key, flag in (
        ("is_symmetric", recipe.symmetric),
        ("shared_embeddings", recipe.shared_embeddings),
    ):
        if flag is not None:
            options[key] = str(flag).lower()
    return options


def _session_options(plan: Plan) -> dict[str, int | str]:
    """What the recipe sets in the engine's genai_config.json ``session_options``."""
    recipe = _recipe(plan)
    level = recipe.graph_optimization
    chosen = {
        "intra_op_num_threads": recipe.intra_op_threads,
        "inter_op_num_threads": recipe.inter_op_threads,
        "graph_optimization_level": GRAPH_OPTIMIZATION_LEVELS[level] if level else None,
    }
    return {key: value for key, value in chosen.items() if value is not None}


def write_session_options(engine_dir: Path, options: dict[str, int | str]) -> None:
    if not options:
        return
    path = engine_dir / "genai_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config["model"]["decoder"].setdefault("session_options", {}).update(options)
    path.write_text(json.dumps(config, indent=4) + "\n", encoding="utf-8")


def _run_builder(context: StageContext) -> None:
    config = context.plan
    cache = context.output_dir.parent / (context.output_dir.name + ".builder-cache")
    scratch = context.output_dir.parent / (context.output_dir.name + ".builder-input")
    source = prepare_builder_input(context.inputs["model"], scratch)
    for fix in source.fixes:
        context.log(f"builder input: {fix}")
    options = {**_extra_options(config), **source.options}
    command = [
        *python_module_command("onnxruntime_genai.models.builder"),
        "-i",
        str(source.directory),
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
    try:
        run_tool(
            command,
            install_hint=ORT_GENAI.install_hint,
            log=context.log,
            env=OFFLINE_HUB,
        )
        write_session_options(context.output_dir, _session_options(config))
    finally:
        shutil.rmtree(cache, ignore_errors=True)  # the builder's scratch files, not the engine
        shutil.rmtree(scratch, ignore_errors=True)


CMAKE = Requirement("program", "cmake", "apt-get install cmake")


def runtime_stage(plan: Plan, build: RuntimeBuild) -> Stage:
    """The C++ runtime against the ONNX Runtime GenAI C API, built for the target's arch."""
    from edgepack.runtime.render import sources_hash

    config = {"mode": build.mode, "sysroot": build.sysroot, "sources": sources_hash("ort")}
    if build.mode == "container":
        config["image"] = _container_image_key()
    return Stage(
        name="runtime",
        description=f"C++ runtime ({build.mode} build for {plan.target.arch})",
        config=config,
        inputs=(),
        run=lambda context: _build_runtime(context, build),
        requirements=(CMAKE,) if build.mode != "container" else (),
    )


def _container_image_key() -> str | None:
    """The Dockerfile's digest: a changed image rebuilds the runtime."""
    from edgepack.container import default_dockerfile, dockerfile_digest

    dockerfile = default_dockerfile()
    return dockerfile_digest(dockerfile) if dockerfile else None


def _build_runtime(context: StageContext, build: RuntimeBuild) -> None:
    from edgepack.backends.ort.libraries import ort_libraries
    from edgepack.cache import default_cache_root
    from edgepack.runtime.build import build_runtime
    from edgepack.runtime.spec import RuntimeSpec

    spec = RuntimeSpec.from_plan(context.plan, sysroot=build.sysroot)
    cache_root = build.cache_root or default_cache_root()
    libraries = ort_libraries(spec.arch, cache_root, context.log)
    build_runtime(
        spec, build.mode, context.output_dir, libraries=libraries,
        logs_dir=cache_root / "logs", log=context.log,
    )  # fmt: skip


ORT = OrtBackend(
    name="ort",
    summary="ONNX Runtime GenAI: the embedded default; CPU engines anywhere (on a GPU target, "
    "its CPU cores)",
    weight_precisions=("fp32", "fp16", "int4"),
    kv_dtypes=("fp32", "fp16"),
    build_ram_factor=4.0,
    needs=(
        ORT_GENAI,
        ONNXRUNTIME,
        Requirement("python", "transformers", "pip install transformers", "transformers"),
        Requirement("python", "torch", "pip install torch", "torch"),
    ),
)

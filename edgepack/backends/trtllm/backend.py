"""TensorRT-LLM 1.2.x, the engine path for Ada/Hopper workstations (REFERENCE.md §1, §5, §6).

Two stages, each cached by content:

- ``checkpoint`` (this host, a child process: :mod:`edgepack.backends.trtllm.worker`): the
  Hugging Face model as a TensorRT-LLM checkpoint, quantized by ModelOpt where the precision asks
  (fake quantization on a CPU), its KV-cache dtype explicit, accepted only after the checkpoint
  check (:mod:`edgepack.backends.trtllm.check`);
- ``engine`` (where the GPU is, through the plan's engine builder: this machine, the NGC image
  in a container, or a GPU host over SSH): ``trtllm-build`` with the precision's flags
  (:mod:`edgepack.backends.trtllm.flags`), its log parsed into the stage record
  (:mod:`edgepack.backends.trtllm.buildlog`).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgepack.backends.base import BackendDescription, Requirement, Stage, StageContext
from edgepack.backends.trtllm.buildlog import explain_failure, parse_build_log
from edgepack.backends.trtllm.check import CHECK_PROMPT, DECODE_STEPS, check_limits
from edgepack.backends.trtllm.flags import trtllm_build_argv
from edgepack.backends.trtllm.tool import trtllm_build_tool
from edgepack.errors import BadInputError, ToolFailedError
from edgepack.process import OFFLINE_HUB, python_module_command, run_logged, tool_failure
from edgepack.resources import data_dir

if TYPE_CHECKING:
    from edgepack.builders.job import ToolSpec
    from edgepack.plan import Plan
    from edgepack.targets import TargetProfile

INSTALL_HINT = "pip install 'edgepack[trtrtx]' (ModelOpt, torch, transformers)"
MODELOPT = Requirement("python", "modelopt", INSTALL_HINT, distribution="nvidia-modelopt")
TORCH = Requirement("python", "torch", "pip install torch", distribution="torch")
TRANSFORMERS = Requirement("python", "transformers", "pip install transformers", "transformers")
SAFETENSORS = Requirement("python", "safetensors", "pip install safetensors", "safetensors")
MODELOPT_LINE = "0.47."
"""ModelOpt changes its config format between minor versions (REFERENCE.md §6): pinned."""
WORKER_MODULE = "edgepack.backends.trtllm.worker"
DEFAULT_TENSORRT_LLM = "1.2.1"
CALIBRATION_WINDOW = 64
ENGINE_RECORD = "engine.json"
TOKENS_FILE = "prompts.tokens.json"


@dataclass(frozen=True)
class Recipe:
    modelopt_config: str | None
    """The ``mtq`` config (ModelOpt 0.47 names); None: no quantization."""
    dtype: str
    """The checkpoint's dtype: unquantized weights and activations."""
    quant_algo: str | None
    """What the exported checkpoint must say."""


RECIPES: dict[str, Recipe] = {
    "fp16": Recipe(None, "float16", None),
    "bf16": Recipe(None, "bfloat16", None),
    "fp8": Recipe("FP8_DEFAULT_CFG", "float16", "FP8"),
    "int8_sq": Recipe("INT8_SMOOTHQUANT_CFG", "float16", "W8A8_SQ_PER_CHANNEL"),
    "int8_wo": Recipe("INT8_WEIGHT_ONLY_CFG", "float16", "W8A16"),
    "int4_wo": Recipe("INT4_BLOCKWISE_WEIGHT_ONLY_CFG", "float16", "W4A16_AWQ"),
    "int4_awq": Recipe("INT4_AWQ_CFG", "float16", "W4A16_AWQ"),
    "nvfp4": Recipe("NVFP4_DEFAULT_CFG", "float16", "NVFP4"),
}
KV_QUANT_ALGO = {"fp8": "FP8", "int8": "INT8"}
NEEDS_CUDA = ("nvfp4",)


def host_has_cuda() -> bool:
    """A CUDA GPU on this host (its driver's device node), without importing torch."""
    return Path("/dev/nvidiactl").exists() and shutil.which("nvidia-smi") is not None


@dataclass(frozen=True)
class Calibration:
    """What calibrates the quantizers: the bundle's prompt set or the user's file."""

    path: Path
    format: str
    """"prompts" (a prompt-set JSON, chat-templated) or "text" (one sample per line)."""
    samples: int | None = None

    @classmethod
    def default(cls, samples: int | None = None) -> Calibration:
        return cls(data_dir("prompts") / "default.json", "prompts", samples)

    @classmethod
    def from_file(cls, path: Path, samples: int | None = None) -> Calibration:
        if not path.is_file():
            raise BadInputError(f"--calib-dataset {path} does not exist")
        text = path.read_text(encoding="utf-8", errors="replace")
        try:
            data = json.loads(text)
            is_prompts = isinstance(data, dict) and "prompts" in data
        except ValueError:
            is_prompts = False
        return cls(path, "prompts" if is_prompts else "text", samples)

    def record(self) -> dict[str, Any]:
        return {
            "name": self.path.name,
            "format": self.format,
            "sha256": hashlib.sha256(self.path.read_bytes()).hexdigest(),
            "window_tokens": CALIBRATION_WINDOW,
            "samples": self.samples,
        }


@dataclass(frozen=True)
class TrtLlmBackend(BackendDescription):
    def default_kv_dtype(self, precision: str) -> str:
        return "bf16" if precision == "bf16" else "fp16"

    def unsupported(self, target: TargetProfile, precision: str) -> list[str]:
        found = []
        if (
            precision in NEEDS_CUDA
            and precision in target.precisions.weights
            and not host_has_cuda()
        ):
            found.append(
                f"{precision} needs a CUDA GPU on the host that makes the checkpoint: ModelOpt's "
                f"{precision} calibration does not run on a CPU, and this host has none; make "
                "it on a CUDA host, or use fp8 or int4_awq here"
            )
        version = _modelopt_version()
        if RECIPES[precision].modelopt_config and version and not version.startswith(MODELOPT_LINE):
            found.append(
                f"nvidia-modelopt {version} is installed; the trtllm backend is pinned to "
                f"{MODELOPT_LINE}x (its quantization configs change between minor versions): "
                "pip install 'nvidia-modelopt==0.47.*'"
            )
        return found

    def engine_tool(self, target: TargetProfile) -> ToolSpec:
        return trtllm_build_tool(target.toolchain.tensorrt_llm or DEFAULT_TENSORRT_LLM)

    def stages(self, plan: Plan) -> list[Stage]:
        calibration = (
            Calibration.from_file(Path(plan.calib_dataset), plan.calib_samples)
            if plan.calib_dataset
            else Calibration.default(plan.calib_samples)
        )
        checkpoint = checkpoint_config(plan, calibration)
        engine = engine_config(plan)
        needs = (TORCH, TRANSFORMERS, SAFETENSORS) + ((MODELOPT,) if checkpoint["quantize"] else ())
        return [
            Stage("checkpoint", _checkpoint_description(plan), checkpoint, ("model",),
                  lambda context: run_checkpoint(checkpoint, calibration, context), needs),
            Stage("engine", f"trtllm-build for {plan.target.sm_label} ({plan.builder})", engine,
                  ("checkpoint", "model"), lambda context: run_engine(engine, context)),
        ]  # fmt: skip


def _modelopt_version() -> str | None:
    try:
        return importlib.metadata.version("nvidia-modelopt")
    except importlib.metadata.PackageNotFoundError:
        return None


def _checkpoint_description(plan: Plan) -> str:
    recipe = RECIPES[plan.precision]
    if recipe.modelopt_config is None:
        return f"TensorRT-LLM {plan.precision} checkpoint, checked against transformers"
    return f"ModelOpt {recipe.modelopt_config} → TensorRT-LLM checkpoint, checked"


def checkpoint_config(plan: Plan, calibration: Calibration) -> dict[str, Any]:
    """Every setting that changes the checkpoint (the stage's cache key)."""
    recipe = RECIPES[plan.precision]
    kv_algo = KV_QUANT_ALGO.get(plan.kv_cache_dtype)
    quantize = recipe.modelopt_config is not None or kv_algo is not None
    return {
        "precision": plan.precision,
        "modelopt_config": recipe.modelopt_config,
        "quantize": quantize,
        "quant_algo": recipe.quant_algo,
        "dtype": recipe.dtype,
        "decoder_type": "llama",
        "group_size": plan.group_size,
        "kv_cache_dtype": plan.kv_cache_dtype,
        "kv_cache_quant_algo": kv_algo,
        "calibration": calibration.record() if quantize else None,
        "device": "cuda" if plan.precision in NEEDS_CUDA else "cpu",
        "check": {
            "prompt": CHECK_PROMPT,
            "decode_steps": DECODE_STEPS,
            "limits": check_limits(plan.precision).model_dump(),
        },
    }


def engine_config(plan: Plan) -> dict[str, Any]:
    limits = plan.limits
    argv = trtllm_build_argv(
        plan.precision, plan.kv_cache_dtype,
        limits.max_batch_size, limits.max_input_len, limits.max_seq_len,
    )  # fmt: skip
    return {
        "argv": [str(arg) if isinstance(arg, str) else repr(arg) for arg in argv],
        "builder": plan.builder,
        "tensorrt_llm": plan.engine_tool_version,
        "compute_capability": plan.target.gpu.compute_capability if plan.target.gpu else None,
    }


def run_checkpoint(config: dict[str, Any], calibration: Calibration, context: StageContext) -> None:
    job = {
        "config": {**config, "calibration": _with_path(config["calibration"], calibration)},
        "inputs": {name: str(path) for name, path in context.inputs.items()},
        "output_dir": str(context.output_dir),
    }
    run_worker(job, context)


def _with_path(record: dict[str, Any] | None, calibration: Calibration) -> dict[str, Any] | None:
    return None if record is None else {**record, "path": str(calibration.path)}


def run_worker(job: dict[str, Any], context: StageContext) -> None:
    """The worker in a child process; a failure is its one ``error:`` line and the log's path."""
    parent = context.output_dir.parent
    job_path = parent / f"{context.output_dir.name}.job.json"
    log_path = parent / f"{context.output_dir.name}.log"
    job_path.write_text(json.dumps(job, indent=2), encoding="utf-8")
    kept = _kept_log_path(context)
    scratch = parent / f"{context.output_dir.name}.tmp"
    scratch.mkdir(exist_ok=True)
    try:
        status = run_logged(
            [*python_module_command(WORKER_MODULE), str(job_path)], log_path, log=context.log,
            env={**OFFLINE_HUB, "TMPDIR": str(scratch)},
            cwd=parent,
        )  # fmt: skip
        if status != 0:
            shutil.copyfile(log_path, kept)
            raise tool_failure("the checkpoint stage", status, kept)
    finally:
        job_path.unlink(missing_ok=True)
        shutil.rmtree(scratch, ignore_errors=True)


def _kept_log_path(context: StageContext) -> Path:
    """Logs of failed stages outlive the stage's private directory."""
    logs = context.output_dir.parent.parent.parent / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    return logs / f"checkpoint-{context.output_dir.parent.name}.log"


def run_engine(config: dict[str, Any], context: StageContext) -> None:
    from edgepack.builders.job import BuildJob

    if context.builder is None:
        raise ToolFailedError("the engine stage has no engine builder (--builder)")
    plan = context.plan
    tool = TRTLLM.engine_tool(plan.target)
    limits = plan.limits
    argv = trtllm_build_argv(
        plan.precision, plan.kv_cache_dtype,
        limits.max_batch_size, limits.max_input_len, limits.max_seq_len,
    )  # fmt: skip
    checkpoint_dir = context.inputs["checkpoint"]
    job = BuildJob(tool, argv, {"checkpoint": _build_input(checkpoint_dir, context.output_dir)},
                   explain_failure=explain_failure, label="trtllm-build")  # fmt: skip
    outcome = context.builder.run(job, context.output_dir, context.log)
    figures = parse_build_log(outcome.log_text, str(outcome.log_path))
    _engine_files(checkpoint_dir, context.output_dir)
    shutil.copyfile(outcome.log_path, context.output_dir / "trtllm-build.log")
    record = {
        "stage": "engine",
        **outcome.record(),
        "tensorrt_llm": figures["tensorrt_llm"] or config["tensorrt_llm"],
        "build": figures,
        "engine_bytes": sum(f.size for f in outcome.files if f.path.endswith(".engine")),
    }
    (context.output_dir / ENGINE_RECORD).write_text(json.dumps(record, indent=2) + "\n")


def _build_input(checkpoint_dir: Path, output_dir: Path) -> Path:
    """The files trtllm-build reads (config.json and the rank weights), without the tokenizer
    and the stage record, in a sibling of the stage's output directory."""
    staged = output_dir.parent / f"{output_dir.name}.checkpoint"
    staged.mkdir(parents=True, exist_ok=True)
    for path in checkpoint_dir.iterdir():
        if path.name == "config.json" or path.name.startswith("rank"):
            target = staged / path.name
            if not target.exists():
                try:
                    target.hardlink_to(path)
                except OSError:
                    shutil.copyfile(path, target)
    return staged


def _engine_files(checkpoint_dir: Path, out: Path) -> None:
    """Beside the engine: the tokenizer (the runtime takes token ids), the prompt set's token
    ids, and the checkpoint stage's record."""
    shutil.copytree(checkpoint_dir / "tokenizer", out / "tokenizer", dirs_exist_ok=True)
    for name in ("checkpoint.json", TOKENS_FILE):
        if (checkpoint_dir / name).is_file():
            shutil.copyfile(checkpoint_dir / name, out / name)
    for name in ("config.json", "rank0.engine"):
        if not (out / name).is_file():
            raise ToolFailedError(
                f"trtllm-build reported success but wrote no {name}",
                hint="its engine directory holds config.json and rank0.engine",
            )


TRTLLM = TrtLlmBackend(
    name="trtllm",
    summary="TensorRT-LLM 1.2.x engine path: Ada/Hopper workstations (native or NGC container)",
    weight_precisions=tuple(RECIPES),
    kv_dtypes=("fp16", "bf16", "fp8", "int8"),
    build_ram_factor=3.5,
    needs=(MODELOPT, TORCH, TRANSFORMERS, SAFETENSORS),
    group_size_option=True,
)

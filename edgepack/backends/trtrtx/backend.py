"""TensorRT for RTX: real TensorRT engines for RTX workstations, built ahead of time on any host.

TensorRT-RTX builds an engine on a machine without a GPU (its CPU-only ahead-of-time mode) for the
compute capability the target profile names, and finishes it just in time on the user's GPU
(REFERENCE.md §11). Three stages, each cached by content:

- ``export``: ``torch.onnx.export(dynamo=True)`` of the Hugging Face model as a plain ONNX decoder
  with KV-cache inputs and outputs (no custom ops), accepted only after its logits agree with
  transformers on a prompt, prefill and decode steps alike;
- ``quantize``: ModelOpt's ONNX quantization (fp8 calibrated on the shipped prompt set; int8
  weight-only per output channel; int4 weight-only in blocks the planner picked), or ModelOpt
  AutoCast's fp16 conversion; the network ends in fp16 with an fp16 KV cache either way
  (TensorRT-RTX networks are strongly typed: the ONNX types are the engine's types);
- ``engine``: the TensorRT-RTX builder, restricted to the target's compute capability, with one
  optimization profile for prefill and one for decode from the plan's limits.

Each stage runs in a child process (:mod:`edgepack.backends.trtrtx.worker`), so torch, ModelOpt and
TensorRT-RTX never load into edgepack's own process and each stage's peak memory is its own.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgepack.backends.base import (
    BackendDescription,
    EngineLoader,
    Requirement,
    Stage,
    StageContext,
    StageName,
)
from edgepack.backends.calibration import calibration_record as shared_calibration_record
from edgepack.errors import EdgepackError
from edgepack.precisions import WEIGHT_FORMATS, fitting_block_size
from edgepack.process import OFFLINE_HUB, python_module_command, run_tool

if TYPE_CHECKING:
    from edgepack.models import ModelSpec
    from edgepack.plan import Plan
    from edgepack.targets import TargetProfile

INSTALL_HINT = "pip install 'edgepack[trtrtx]'"
TENSORRT_RTX = Requirement("python", "tensorrt_rtx", INSTALL_HINT, "tensorrt-rtx-cu13")
MODELOPT = Requirement("python", "modelopt", INSTALL_HINT, distribution="nvidia-modelopt")
TORCH = Requirement("python", "torch", "pip install torch", distribution="torch")
TRANSFORMERS = Requirement("python", "transformers", "pip install transformers", "transformers")
ONNXRUNTIME = Requirement("python", "onnxruntime", INSTALL_HINT, distribution="onnxruntime")
ONNX = Requirement("python", "onnx", INSTALL_HINT, distribution="onnx")

SUPPORTED_SM = ("SM75", "SM80", "SM86", "SM89", "SM120", "SM121")
"""Compute capabilities TensorRT-RTX 1.7 builds for (its ComputeCapability enum). Hopper (SM90)
and Jetson (SM87, SM110) are not among them: their runtime refuses these engines."""

INT4_BLOCK_SIZES = (128, 64, 32)
"""ModelOpt's default block first; TensorRT-RTX parses any block that divides the GEMM's K."""
QUANTIZE_MODES = {"fp8": "fp8", "int8_wo": "int4", "int4": "int4"}
"""ModelOpt 0.47's ONNX quantizer knows int8 (W8A8), fp8 and int4 (weight-only); int8 weight-only
comes from the int4 one (see INT8_WEIGHT_ONLY)."""
INT8_WEIGHT_ONLY = {"calibration_method": "rtn_dq", "block_size": -1, "weight_bits": 8}
"""ModelOpt 0.47's ONNX ``int8`` mode quantizes activations too (W8A8). Its weight-only quantizer
(``int4``, round to nearest, DequantizeLinear only) keeps the layers named in ``layers_8bit`` at 8
bits with one scale per output channel: naming every weight MatMul there gives INT8 weight-only
(symmetric int8 weights, fp32 scales, a DequantizeLinear into each MatMul, activations untouched),
TensorRT-RTX's "INT8 WoQ GEMM". Round to nearest needs no calibration data."""
NVFP4_UNAVAILABLE = (
    "{target} ({sm}) runs nvfp4, but trtrtx cannot quantize to it: ModelOpt 0.47's ONNX "
    "quantizer, which trtrtx quantizes with, has no NVFP4 mode (only int8, fp8 and int4), and "
    "its torch NVFP4 path calibrates on a CUDA GPU; use --precision fp8, int8_wo or int4 with "
    "trtrtx on this target"
)
"""Why the plan refuses nvfp4 on an FP4-capable target (Blackwell), beside the generic "cannot
build" line: one line, the reason and the fix."""
KEEP_LM_HEAD = True
"""The lm_head stays fp16, as the planner counts it: ModelOpt's fp8 pass would quantize it (its int4
pass leaves a tied, transposed lm_head alone anyway)."""
INT4_METHOD = "rtn_dq"
"""Round to nearest: AWQ-clip search took about 30 minutes on two CPU cores for 135 M parameters."""
FP16_CONVERSION = {
    "method": "modelopt.onnx.autocast.convert_to_mixed_precision",
    "kept_fp32": "RMSNorm statistics (Pow, ReduceMean, Add, Sqrt, Reciprocal)",
    "io": "fp16",
}
"""After quantizing (in fp32: ModelOpt's own fp16 pass took 8 minutes for fp8 and its int4 path
has none), the network goes to fp16 but for the norms' statistics, which overflow in fp16."""
CALIBRATION_WINDOW = 32
"""Calibration samples: the chat-templated prompts, packed and cut into windows of this many
tokens (AWQ needs samples of one shape)."""
EXPORT_OPSET = 21
EXPORT_CHECK = {
    "prompt": "What is the capital of France?",
    "decode_steps": 8,
    "max_abs_logit_diff": 0.01,
}
"""The exported fp32 graph must match transformers to this tolerance at every step (tighter than
the full class's artifact limit where the two differ)."""
FP16_CHECK_LIMIT = 0.25
"""The fp16 network (SmolLM2: 0.04) must match as well. Every network, quantized ones included, is
judged with its precision class's limits of :mod:`edgepack.quality.artifact`: the stage fails
beyond them."""
DECODE_PAST_OPT = 256
PREFILL_OPT = 128
WORKER_MODULE = "edgepack.backends.trtrtx.worker"
JOB_FILE = "job.json"


_StageSpec = tuple[StageName, str, dict[str, Any], tuple[str, ...], tuple[Requirement, ...]]
"""name, description, config, inputs, requirements"""


@dataclass(frozen=True)
class TrtRtxBackend(BackendDescription):
    def block_sizes(self, precision: str) -> tuple[int, ...]:
        return INT4_BLOCK_SIZES if precision == "int4" else super().block_sizes(precision)

    def weight_bytes(self, spec: ModelSpec, precision: str) -> dict[str, float]:
        """int4 blocks carry one fp16 scale each and no zero point."""
        sizes = super().weight_bytes(spec, precision)
        block = _int4_block(spec) if precision == "int4" else None
        if block is None:
            return sizes
        ratio = (4 + 16 / block) / WEIGHT_FORMATS["int4"].bits_per_weight
        return {
            part: size * ratio if part in ("attention", "mlp") else size
            for part, size in sizes.items()
        }

    def unsupported(self, target: TargetProfile, precision: str) -> list[str]:
        """nvfp4 where the target's GPU has FP4: refused for the quantizer's sake, with the fix
        (where the GPU lacks FP4 the plan already refuses it for the hardware's)."""
        if precision == "nvfp4" and precision in target.precisions.weights:
            return [NVFP4_UNAVAILABLE.format(target=target.name, sm=target.sm_label)]
        return []

    def known_issues(self, target: TargetProfile, precision: str) -> list[str]:
        sm = target.gpu.sm if target.gpu else None
        if sm not in SUPPORTED_SM:
            return [
                f"TensorRT-RTX builds no engines for {target.sm_label}; it targets {_sm_list()}"
            ]
        return []

    def stages(self, plan: Plan) -> list[Stage]:
        sm = _require_sm(plan.target)
        specs: list[_StageSpec] = [
            ("export", "torch.onnx dynamo export, checked against transformers", _export_config(),
             ("model",), (TORCH, TRANSFORMERS, ONNXRUNTIME)),
            ("quantize", _quantize_description(plan.precision), _quantize_config(plan),
             ("export", "model"), (MODELOPT, ONNX)),
            ("engine", f"TensorRT-RTX engine for {sm}", _engine_config(plan, sm),
             ("quantize", "model"), (TENSORRT_RTX,)),
        ]  # fmt: skip
        return [
            Stage(
                name, description, config, inputs, _worker(name, config), needs,
                recipe_independent=name == "export",
            )
            for name, description, config, inputs, needs in specs
        ]  # fmt: skip

    def engine_loader(self, engine_dir: Path) -> EngineLoader:
        """Refuses at once where no GPU of the engine's compute capability is present."""
        from edgepack.backends.trtrtx.runner import trtrtx_loader

        return trtrtx_loader(engine_dir)


def _sm_list() -> str:
    return ", ".join(SUPPORTED_SM)


def _require_sm(target: TargetProfile) -> str:
    sm = target.gpu.sm if target.gpu else None
    if sm is None or sm not in SUPPORTED_SM:
        raise EdgepackError(
            f"TensorRT-RTX cannot build an engine for {target.name} ({target.sm_label}); "
            f"it targets {_sm_list()}",
            hint="pick an RTX target (ada-sm89, rtx-pro-blackwell) or another backend",
        )
    return sm


def _int4_block(spec: ModelSpec) -> int | None:
    return fitting_block_size(INT4_BLOCK_SIZES, (spec.hidden_size, spec.intermediate_size))


def _export_config() -> dict[str, Any]:
    from edgepack.quality.artifact import ARTIFACT_LIMITS

    return {
        "exporter": "torch.onnx.export(dynamo=True)",
        "opset": EXPORT_OPSET,
        "dtype": "fp32",
        "check": {
            **EXPORT_CHECK,
            "limits": {"class": "full", **ARTIFACT_LIMITS["full"].model_dump()},
        },
    }


def _quantize_description(precision: str) -> str:
    if precision == "fp16":
        return "fp16 conversion (ModelOpt AutoCast)"
    if precision == "int8_wo":
        return "int8 weight-only quantization, per output channel (ModelOpt ONNX)"
    return f"{precision} quantization (ModelOpt ONNX)"


def calibration_record() -> dict[str, Any]:
    """The shared calibration record, with the window the prompts are packed into."""
    return {**shared_calibration_record(), "window_tokens": CALIBRATION_WINDOW}


def network_check(precision: str) -> dict[str, Any]:
    """The quantize stage's check: the export check's prompt and steps, judged with the limits of
    the precision's class (in the config, so changed limits re-judge: a new cache key)."""
    from edgepack.quality.artifact import ARTIFACT_LIMITS, artifact_class

    klass = artifact_class(precision)
    check = {
        "prompt": EXPORT_CHECK["prompt"],
        "decode_steps": EXPORT_CHECK["decode_steps"],
        "gate": True,
        "limits": {"class": klass, **ARTIFACT_LIMITS[klass].model_dump()},
    }
    return check | ({"max_abs_logit_diff": FP16_CHECK_LIMIT} if precision == "fp16" else {})


def _quantize_config(plan: Plan) -> dict[str, Any]:
    config: dict[str, Any] = {
        "precision": plan.precision,
        "fp16_conversion": FP16_CONVERSION,
        "check": network_check(plan.precision),
    }
    if plan.precision == "fp16":
        return config
    config |= {
        "method": "modelopt.onnx.quantization.quantize",
        "high_precision_dtype": "fp32",
        "keep_lm_head": KEEP_LM_HEAD,
        "quantize_mode": QUANTIZE_MODES[plan.precision],
        "calibration": calibration_record(),
        "calibration_eps": ["cpu"],
    }
    if plan.precision == "int4":
        block = _int4_block(plan.model)
        return {**config, "block_size": block, "calibration_method": INT4_METHOD}
    if plan.precision == "int8_wo":
        return {**config, **INT8_WEIGHT_ONLY, "calibration": None}
    # MatMul only: quantizing the residual and RoPE Adds as well broke FP8 (REFERENCE.md §11).
    return {**config, "op_types_to_quantize": ["MatMul"], "disable_mha_qdq": True}


def _engine_config(plan: Plan, sm: str) -> dict[str, Any]:
    limits, spec = plan.limits, plan.model
    return {
        "compute_capability": sm,
        "kv_cache_dtype": plan.kv_cache_dtype,
        "layout": {
            "layers": spec.num_layers,
            "kv_heads": spec.num_kv_heads,
            "head_dim": spec.head_dim,
        },
        "profiles": _profiles(limits.max_batch_size, limits.max_input_len, limits.max_seq_len),
    }


def _profiles(batch: int, max_input: int, max_seq: int) -> dict[str, dict[str, list[int]]]:
    """min/opt/max of (batch, new tokens, past tokens): prefill starts from an empty cache,
    decode adds one token to a cache of up to max_seq - 1."""
    return {
        "prefill": {
            "batch": [1, 1, batch],
            "tokens": [1, min(PREFILL_OPT, max_input), max_input],
            "past": [0, 0, 0],
        },
        "decode": {
            "batch": [1, 1, batch],
            "tokens": [1, 1, 1],
            "past": [1, min(DECODE_PAST_OPT, max_seq - 1), max_seq - 1],
        },
    }


def _worker(stage: str, config: dict[str, Any]) -> Callable[[StageContext], None]:
    def run(context: StageContext) -> None:
        run_worker(stage, config, context)

    return run


def run_worker(stage: str, config: dict[str, Any], context: StageContext) -> None:
    """Run one stage in a child process that reads its job from a JSON file."""
    job = {
        "stage": stage,
        "config": config,
        "inputs": {name: str(path) for name, path in context.inputs.items()},
        "output_dir": str(context.output_dir),
    }
    job_path = context.output_dir.parent / f"{context.output_dir.name}.{JOB_FILE}"
    job_path.parent.mkdir(parents=True, exist_ok=True)
    job_path.write_text(json.dumps(job, indent=2), encoding="utf-8")
    scratch = context.output_dir.parent / f"{context.output_dir.name}.tmp"
    scratch.mkdir(exist_ok=True)
    try:
        run_tool(
            [*python_module_command(WORKER_MODULE), str(job_path)],
            install_hint=INSTALL_HINT,
            log=context.log,
            # ModelOpt writes whole models to tempfile's directory and not all of them are
            # removed: inside the stage's private directory, they go when the stage ends.
            env={**OFFLINE_HUB, "TMPDIR": str(scratch)},
            # ModelOpt compiles a C++ extension on first use with setuptools in the working
            # directory; in a source checkout that would pick up edgepack's own project layout.
            cwd=job_path.parent,
        )
    finally:
        job_path.unlink(missing_ok=True)
        shutil.rmtree(scratch, ignore_errors=True)


TRTRTX = TrtRtxBackend(
    name="trtrtx",
    summary="TensorRT for RTX: Ampere/Ada/Blackwell RTX; engines built ahead of time on any host",
    weight_precisions=("fp16", "fp8", "int8_wo", "int4"),
    kv_dtypes=("fp16",),
    build_ram_factor=4.0,
    needs=(TENSORRT_RTX, MODELOPT, TORCH, TRANSFORMERS, ONNXRUNTIME, ONNX),
)

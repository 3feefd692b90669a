"""The Plan: target × model × precision × backend, validated all at once, with memory and roofline.

``make_plan`` never stops at the first problem: it collects every one, each with its fix, so a user
learns everything wrong with a command line in one run. Unknown names (target, model, precision)
are bad input and raise at once; everything else becomes a problem or a warning on the plan.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from edgepack.backends import BACKENDS, Backend
from edgepack.errors import BadInputError, InvalidPlanError, did_you_mean
from edgepack.models import ModelSpec
from edgepack.precisions import KV_FORMATS, WEIGHT_FORMATS, fitting_block_size
from edgepack.targets import TargetProfile

GIB = 1024**3
GB = 1e9
KV_QUANTIZATION_SAFE_PARAMS = 30e9
"""Below this size an FP8/INT8 KV cache has destroyed output quality (Qwen2.5-7B: token salad)."""
GPU_RUNTIME_OVERHEAD = 0.6 * GIB
"""CUDA context, cuBLAS workspaces and the runtime's own buffers, outside weights/KV/activations."""
CPU_RUNTIME_OVERHEAD = 0.15 * GIB
STUDY_BATCH = 3
"""The batch of the original FP16-vs-FP8 study and the default of `edgepack bench`."""


@dataclass(frozen=True)
class Limits:
    max_batch_size: int = 4
    max_input_len: int = 1024
    max_seq_len: int = 2048

    def problems(self, spec: ModelSpec) -> list[str]:
        found = []
        for name, value in asdict(self).items():
            if value < 1:
                found.append(f"--{name.replace('_', '-')} must be at least 1 (got {value})")
        if self.max_input_len >= self.max_seq_len:
            found.append(
                f"--max-input-len {self.max_input_len} leaves no room to generate within "
                f"--max-seq-len {self.max_seq_len}; make max-seq-len larger"
            )
        if self.max_seq_len > spec.max_position_embeddings:
            found.append(
                f"--max-seq-len {self.max_seq_len} exceeds {spec.name}'s context of "
                f"{spec.max_position_embeddings} tokens; use at most that"
            )
        return found


@dataclass(frozen=True)
class MemoryEstimate:
    weights_by_part: dict[str, float]
    kv_bytes_per_token: float
    kv_cache_bytes: float
    activation_bytes: float
    runtime_overhead_bytes: float
    budget_bytes: float
    build_host_ram_bytes: float

    @property
    def weight_bytes(self) -> float:
        return sum(self.weights_by_part.values())

    @property
    def total_bytes(self) -> float:
        return (
            self.weight_bytes
            + self.kv_cache_bytes
            + self.activation_bytes
            + self.runtime_overhead_bytes
        )

    @property
    def fits(self) -> bool:
        return self.total_bytes <= self.budget_bytes


@dataclass(frozen=True)
class RooflinePoint:
    batch: int
    context_tokens: int
    tokens_per_s: float
    """Aggregate decode tokens/s over the batch: the bandwidth ceiling."""


@dataclass(frozen=True)
class Plan:
    target: TargetProfile
    model: ModelSpec
    backend: str
    precision: str
    kv_cache_dtype: str
    limits: Limits
    memory: MemoryEstimate
    roofline: list[RooflinePoint]
    weight_bytes_read_per_step: float
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    missing_tools: list[str] = field(default_factory=list)
    allow_kv_quantization: bool = False
    group_size: int | None = None
    """The quantization block (group) size the backend uses for this model; None: no blocks."""
    builder: str | None = None
    """Where the engine is built (``local``, ``container``, ``ssh:HOST``), for backends whose
    engine is built where the GPU is."""
    engine_tool_version: str | None = None
    """The engine tool's version as the builder probed it (set by the build before any stage)."""
    calib_dataset: str | None = None
    calib_samples: int | None = None

    @property
    def valid(self) -> bool:
        return not self.problems

    def require_valid(self) -> None:
        if self.problems:
            raise InvalidPlanError(self.problems)

    @property
    def on_gpu(self) -> bool:
        """Whether the engine runs on the target's GPU (an ort engine never does)."""
        return BACKENDS[self.backend].runs_on_gpu(self.target)

    @property
    def runs_on(self) -> str:
        """Where the engine runs on the device, in words."""
        gpu = self.target.gpu
        return f"the device's {gpu.sm} GPU" if gpu and self.on_gpu else "the device's CPU cores"

    def summary(self) -> dict[str, Any]:
        """The plan as plain data: printed by --json and recorded in bundle manifests."""
        return {
            "valid": self.valid,
            "target": self.target.name,
            "target_hash": self.target.content_hash(),
            "sm": self.target.sm_label,
            "runs_on": self.runs_on,
            "model": self.model.name,
            "model_parameters": self.model.parameters.total,
            "backend": self.backend,
            "precision": self.precision,
            "kv_cache_dtype": self.kv_cache_dtype,
            "limits": asdict(self.limits),
            "memory": {
                "weights_by_part": self.memory.weights_by_part,
                "weight_bytes": self.memory.weight_bytes,
                "kv_bytes_per_token": self.memory.kv_bytes_per_token,
                "kv_cache_bytes": self.memory.kv_cache_bytes,
                "activation_bytes": self.memory.activation_bytes,
                "runtime_overhead_bytes": self.memory.runtime_overhead_bytes,
                "total_bytes": self.memory.total_bytes,
                "budget_bytes": self.memory.budget_bytes,
                "fits": self.memory.fits,
                "build_host_ram_bytes": self.memory.build_host_ram_bytes,
            },
            "roofline": {
                "bandwidth_gbps": self.target.memory.bandwidth_gbps,
                "weight_bytes_read_per_step": self.weight_bytes_read_per_step,
                "points": [asdict(point) for point in self.roofline],
            },
            "group_size": self.group_size,
            "builder": self.builder,
            "problems": self.problems,
            "warnings": self.warnings,
            "missing_tools": self.missing_tools,
        }


@dataclass(frozen=True)
class PlanRequest:
    target: TargetProfile
    model: ModelSpec
    precision: str
    backend: str | None = None
    kv_cache_dtype: str | None = None
    limits: Limits = Limits()
    allow_kv_quantization: bool = False
    group_size: int | None = None
    """--group-size: the block size to quantize in (the backend's preference when None)."""
    builder: str | None = None
    """--builder: where the engine is built (the default where None)."""
    needs_engine: bool = True
    """False for a build that stops before the engine (--until): no builder is needed."""
    calib_dataset: str | None = None
    calib_samples: int | None = None


def _require_name(value: str, known: Mapping[str, Any], what: str, flag: str) -> None:
    if value not in known:
        raise BadInputError(
            f"unknown {what} {value!r}{did_you_mean(value, known)}",
            hint=f"{flag} takes one of: {', '.join(known)}",
        )


def make_plan(request: PlanRequest) -> Plan:
    """Validate a request and size it; unknown names raise, every other problem is collected."""
    target, spec = request.target, request.model
    _require_name(request.precision, WEIGHT_FORMATS, "precision", "--precision")
    backend_name = request.backend or target.backends.default
    _require_name(backend_name, BACKENDS, "backend", "--backend")
    backend = BACKENDS[backend_name]
    kv_dtype = request.kv_cache_dtype or backend.default_kv_dtype(request.precision)
    _require_name(kv_dtype, KV_FORMATS, "KV-cache dtype", "--kv-cache-dtype")

    backend_reasons = backend.unsupported(target, request.precision)
    problems = [
        *_precision_problems(target, backend, request.precision, bool(backend_reasons)),
        *_backend_problems(target, backend_name),
        *_kv_problems(target, backend, kv_dtype),
        *_block_size_problems(spec, backend, request.precision, request.group_size),
        *request.limits.problems(spec),
        *backend_reasons,
        *backend.model_problems(spec),
    ]
    warnings: list[str] = []
    _check_kv_quantization(request, kv_dtype, problems, warnings)
    warnings += backend.known_issues(target, request.precision)
    group_size = _group_size(spec, backend, request, warnings)
    builder = _builder(backend, request, problems, warnings)

    memory = _estimate_memory(request, backend, kv_dtype)
    problems += _memory_problems(target, memory, request)
    read_per_step = _weight_bytes_read_per_step(memory.weights_by_part, spec)
    missing = [f"{r.name} ({r.install_hint})" for r in backend.requirements() if not r.available()]
    if missing:
        warnings.append("building needs tools this machine lacks: " + "; ".join(missing))
    return Plan(
        target=target,
        model=spec,
        backend=backend_name,
        precision=request.precision,
        kv_cache_dtype=kv_dtype,
        limits=request.limits,
        memory=memory,
        roofline=_roofline(target, request.limits, read_per_step, memory.kv_bytes_per_token),
        weight_bytes_read_per_step=read_per_step,
        problems=problems,
        warnings=warnings,
        missing_tools=missing,
        allow_kv_quantization=request.allow_kv_quantization,
        group_size=group_size,
        builder=builder,
        calib_dataset=request.calib_dataset,
        calib_samples=request.calib_samples,
    )


def _group_size(
    spec: ModelSpec, backend: Backend, request: PlanRequest, warnings: list[str]
) -> int | None:
    choices = _block_choices(backend, request.precision, request.group_size)
    chosen = fitting_block_size(choices, tuple(quantized_dims(spec).values()))
    if chosen is not None and chosen != choices[0]:
        dims = ", ".join(f"{name} {dim}" for name, dim in quantized_dims(spec).items())
        warnings.append(
            f"{request.precision} group size {chosen}: {choices[0]} does not divide "
            f"{spec.name}'s {dims}"
        )
    return chosen


def _builder(
    backend: Backend, request: PlanRequest, problems: list[str], warnings: list[str]
) -> str | None:
    """Where the engine is built, for a backend that builds it where the GPU is."""
    if backend.engine_on_device:
        from edgepack.builders.choice import device_builder_problems

        problems += device_builder_problems(request.builder, backend.name)
        return request.builder
    tool = backend.engine_tool(request.target)
    if tool is None:
        if request.builder is not None:
            warnings.append(
                f"--builder is not used: the {backend.name} backend builds its engine here"
            )
        return None
    if not request.needs_engine:
        return request.builder
    from edgepack.builders.choice import plan_builder

    builder, found = plan_builder(tool, request.builder)
    problems += found
    return builder


def _precision_problems(
    target: TargetProfile, backend: Backend, precision: str, backend_explains: bool
) -> list[str]:
    """The target's and the backend's; the generic backend line only where the backend's own
    reasons (``unsupported``) say nothing more precise."""
    found = []
    supported = ", ".join(target.precisions.weights)
    if precision not in target.precisions.weights:
        fmt = WEIGHT_FORMATS[precision]
        floor = fmt.min_compute_capability
        reason = f"does not support {precision} weights"
        if target.gpu is None and floor:
            reason = f"has no GPU for {precision} weights"
        elif target.gpu and floor and target.gpu.capability < floor:
            reason = (
                f"has no {fmt.hardware or precision + ' kernels'} ({precision} needs compute "
                f"capability >= {floor})"
            )
        found.append(f"{target.name} ({target.sm_label}) {reason}; supported: {supported}")
    if precision not in backend.weight_precisions and not backend_explains:
        found.append(
            f"backend {backend.name} cannot build {precision}; it builds: "
            f"{', '.join(backend.weight_precisions)}"
        )
    return found


def _backend_problems(target: TargetProfile, backend_name: str) -> list[str]:
    if backend_name in target.backends.allowed:
        return []
    return [
        f"backend {backend_name} is not available for {target.name}; "
        f"use --backend {' or '.join(target.backends.allowed)}"
    ]


def _kv_problems(target: TargetProfile, backend: Backend, kv_dtype: str) -> list[str]:
    found = []
    if kv_dtype not in target.precisions.kv_cache:
        found.append(
            f"{target.name} ({target.sm_label}) does not support a {kv_dtype} KV cache; "
            f"supported: {', '.join(target.precisions.kv_cache)}"
        )
    if kv_dtype not in backend.kv_dtypes:
        found.append(
            f"backend {backend.name} has no {kv_dtype} KV cache; it offers: "
            f"{', '.join(backend.kv_dtypes)}"
        )
    return found


def quantized_dims(spec: ModelSpec) -> dict[str, int]:
    """The GEMM input dimensions that block quantization splits into blocks."""
    return {"hidden size": spec.hidden_size, "intermediate size": spec.intermediate_size}


def block_size_for(spec: ModelSpec, backend: Backend, precision: str) -> int | None:
    """The block size the backend uses for this model, or None (no blocks, or none fits)."""
    return fitting_block_size(backend.block_sizes(precision), tuple(quantized_dims(spec).values()))


def _block_choices(backend: Backend, precision: str, requested: int | None) -> tuple[int, ...]:
    choices = backend.block_sizes(precision)
    return (requested,) if requested is not None and choices else choices


def _block_size_problems(
    spec: ModelSpec, backend: Backend, precision: str, requested: int | None = None
) -> list[str]:
    choices = _block_choices(backend, precision, requested)
    if requested is not None and not backend.group_size_option:
        return [f"--group-size is not used by the {backend.name} backend; it picks its own blocks"]
    if requested is not None and not backend.block_sizes(precision):
        return [f"--group-size is for block-quantized precisions; {precision} has no blocks"]
    if not choices or fitting_block_size(choices, tuple(quantized_dims(spec).values())):
        return []
    dims = quantized_dims(spec)
    bad = {name: dim for name, dim in dims.items() if dim % min(choices)}
    described = ", ".join(f"{name} {dim}" for name, dim in bad.items())
    blocks = " or ".join(", ".join(str(block) for block in choices).rsplit(", ", 1))
    which = "which does not divide" if len(choices) == 1 else "none of which divides"
    dividing = [b for b in (16, 32, 64, 128) if all(d % b == 0 for d in dims.values())]
    alternatives = f"block sizes that divide it: {dividing}" if dividing else "no block size fits"
    fix = f"; pass --group-size {dividing[-1]}" if dividing and backend.group_size_option else ""
    return [
        f"{precision} quantizes in blocks of {blocks} with {backend.name}, {which} "
        f"{spec.name}'s {described}; {alternatives}{fix}"
    ]


def _check_kv_quantization(
    request: PlanRequest, kv_dtype: str, problems: list[str], warnings: list[str]
) -> None:
    if not KV_FORMATS[kv_dtype].quantized:
        return
    params = request.model.parameters.total
    if params >= KV_QUANTIZATION_SAFE_PARAMS:
        return
    why = (
        f"a {kv_dtype} KV cache on a {params / 1e9:.1f} B-parameter model is known to destroy "
        "output quality (Qwen2.5-7B turned every answer into token salad)"
    )
    if request.allow_kv_quantization:
        warnings.append(why + "; the quality gate will use its strict thresholds")
    else:
        problems.append(why + "; pass --allow-kv-quantization to try it under the strict gate")


def _estimate_memory(request: PlanRequest, backend: Backend, kv_dtype: str) -> MemoryEstimate:
    spec, limits, target = request.model, request.limits, request.target
    kv_per_token = spec.kv_elements_per_token() * KV_FORMATS[kv_dtype].bytes_per_element
    activation_bytes_per_value = 2 if target.gpu else 4
    prefill_values = (
        limits.max_batch_size
        * limits.max_input_len
        * (4 * spec.hidden_size + 2 * spec.intermediate_size)
    )
    logits = limits.max_batch_size * spec.vocab_size * 4
    return MemoryEstimate(
        weights_by_part=backend.weight_bytes(spec, request.precision),
        kv_bytes_per_token=kv_per_token,
        kv_cache_bytes=limits.max_batch_size * limits.max_seq_len * kv_per_token,
        activation_bytes=prefill_values * activation_bytes_per_value + logits,
        runtime_overhead_bytes=GPU_RUNTIME_OVERHEAD if target.gpu else CPU_RUNTIME_OVERHEAD,
        budget_bytes=target.memory.size_gb * GB * target.memory.llm_fraction,
        build_host_ram_bytes=backend.build_host_ram_bytes(spec, request.precision),
    )


def _memory_problems(
    target: TargetProfile, memory: MemoryEstimate, request: PlanRequest
) -> list[str]:
    found = []
    if not memory.fits:
        found.append(
            f"{request.model.name} at {request.precision} needs {memory.total_bytes / GB:.1f} GB "
            f"(weights {memory.weight_bytes / GB:.1f}, KV {memory.kv_cache_bytes / GB:.1f}, "
            f"activations {memory.activation_bytes / GB:.1f}) but {target.name} gives the LLM "
            f"{memory.budget_bytes / GB:.1f} GB ({target.memory.llm_fraction:.0%} of "
            f"{target.memory.size_gb:g} GB); use a smaller precision or lower "
            "--max-batch-size/--max-seq-len"
        )
    if target.build.engine_location == "device":
        device_bytes = target.memory.size_gb * GB
        if memory.build_host_ram_bytes > device_bytes:
            found.append(
                f"building the engine on {target.name} needs about "
                f"{memory.build_host_ram_bytes / GB:.1f} GB of RAM; the device has "
                f"{target.memory.size_gb:g} GB; use a smaller model"
            )
    return found


def _weight_bytes_read_per_step(weights_by_part: dict[str, float], spec: ModelSpec) -> float:
    """Decode reads every weight once per step, except the embedding table (one row per token).

    A tied lm_head is the embedding table read in full as the output projection.
    """
    read = sum(size for part, size in weights_by_part.items() if part != "embedding")
    if spec.tie_word_embeddings:
        read += weights_by_part["embedding"]
    return read


def _roofline(
    target: TargetProfile, limits: Limits, read_per_step: float, kv_per_token: float
) -> list[RooflinePoint]:
    bandwidth = target.memory.bandwidth_gbps * GB
    batches = sorted({1, min(STUDY_BATCH, limits.max_batch_size), limits.max_batch_size})
    contexts = (limits.max_input_len, limits.max_seq_len)
    return [
        RooflinePoint(
            batch=batch,
            context_tokens=context,
            tokens_per_s=batch * bandwidth / (read_per_step + batch * context * kv_per_token),
        )
        for batch in batches
        for context in contexts
    ]

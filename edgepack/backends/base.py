"""The Backend protocol every toolchain satisfies, and the pieces backends share.

A backend declares what it supports (weight precisions, KV dtypes), how it stores weights (so the
planner can size them), what it needs installed, and the stages it runs. Stages declare their config
and inputs so the pipeline can key their outputs by content. Nothing here imports a heavy library.
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from edgepack.errors import BadInputError, EdgepackError, ToolMissingError
from edgepack.precisions import UNQUANTIZED_BYTES, WEIGHT_FORMATS
from edgepack.versions import distribution_version

if TYPE_CHECKING:
    from edgepack.bench.engine import BenchEngine
    from edgepack.builders.job import EngineBuilder, ToolSpec
    from edgepack.models import ModelSpec
    from edgepack.plan import Plan
    from edgepack.remote.connector import Connector
    from edgepack.remote.facts import DeviceFacts
    from edgepack.runtime.spec import RuntimeBuild
    from edgepack.targets import TargetProfile

EngineLoader = Callable[[], "BenchEngine[list[int]]"]

StageName = Literal["checkpoint", "quantize", "export", "engine", "runtime", "wheels"]


@dataclass(frozen=True)
class Requirement:
    """Something a backend needs on the machine that builds: a Python module or a program."""

    kind: Literal["python", "program"]
    name: str
    install_hint: str
    distribution: str | None = None
    """The pip distribution whose version goes into the lockfile (python requirements)."""

    def available(self) -> bool:
        if self.kind == "python":
            return importlib.util.find_spec(self.name) is not None
        return shutil.which(self.name) is not None

    def version(self) -> str | None:
        if self.kind != "python" or self.distribution is None:
            return None
        return distribution_version(self.distribution)


@dataclass(frozen=True)
class StageContext:
    """What a running stage gets: the plan, its inputs' directories and where to write."""

    plan: Plan
    inputs: Mapping[str, Path]
    """``model`` (the HF folder) and the output directory of each earlier stage, by stage name."""
    output_dir: Path
    log: Callable[[str], None]
    builder: EngineBuilder | None = None
    """Where the engine stage runs its tool, for backends whose engine is built where the GPU
    is (:meth:`Backend.engine_tool`)."""


@dataclass(frozen=True)
class Stage:
    name: StageName
    description: str
    config: Mapping[str, Any]
    """Every setting that changes the output; part of the cache key."""
    inputs: tuple[str, ...]
    run: Callable[[StageContext], None]
    requirements: tuple[Requirement, ...] = ()
    recipe_independent: bool = False
    """The output depends on ``config`` and ``inputs`` alone, not on the target, precision or
    limits of the build (an fp32 export): one cache entry serves every recipe."""


class Backend(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def summary(self) -> str: ...

    @property
    def weight_precisions(self) -> tuple[str, ...]: ...

    @property
    def kv_dtypes(self) -> tuple[str, ...]: ...

    def default_kv_dtype(self, precision: str) -> str: ...

    def weight_bytes(self, spec: ModelSpec, precision: str) -> dict[str, float]: ...

    def build_host_ram_bytes(self, spec: ModelSpec, precision: str) -> float: ...

    def block_sizes(self, precision: str) -> tuple[int, ...]: ...

    @property
    def group_size_option(self) -> bool: ...

    @property
    def engine_on_device(self) -> bool: ...

    def requirements(self) -> tuple[Requirement, ...]: ...

    def known_issues(self, target: TargetProfile, precision: str) -> list[str]: ...

    def unsupported(self, target: TargetProfile, precision: str) -> list[str]: ...

    def runs_on_gpu(self, target: TargetProfile) -> bool: ...

    def model_problems(self, spec: ModelSpec) -> list[str]: ...

    def tool_versions(self) -> dict[str, str]: ...

    def stages(self, plan: Plan) -> list[Stage]: ...

    def runtime_stage(self, plan: Plan, build: RuntimeBuild) -> Stage: ...

    def engine_loader(self, engine_dir: Path) -> EngineLoader: ...

    def engine_tool(self, target: TargetProfile) -> ToolSpec | None: ...

    def device_engine_stage(self, plan: Plan, host: str) -> Stage: ...

    def device_checks(
        self, connector: Connector, facts: DeviceFacts, target: TargetProfile | None
    ) -> list[DeviceCheck]: ...


@dataclass(frozen=True)
class DeviceCheck:
    """One thing ``edgepack doctor --host`` looks for on a device for a backend."""

    component: str
    found: bool
    detail: str
    fix: str = ""


@dataclass(frozen=True)
class BackendDescription:
    """Shared behaviour of the backends: weight accounting and requirement checks.

    NVIDIA toolchains keep the embedding table and lm_head unquantized (FP16) unless asked
    otherwise; a backend that stores them differently overrides :meth:`unquantized_bytes`.
    """

    name: str
    summary: str
    weight_precisions: tuple[str, ...]
    kv_dtypes: tuple[str, ...]
    build_ram_factor: float
    """Host RAM needed to build, as a multiple of the model's FP16 parameter bytes."""
    needs: tuple[Requirement, ...] = field(default=())
    group_size_option: bool = False
    """Whether ``--group-size`` picks the block size this backend quantizes in."""
    engine_on_device: bool = False
    """The engine is built on the device itself (``--builder ssh:DEVICE``, alias ``--host``),
    by :meth:`device_engine_stage`, or at deploy."""

    def default_kv_dtype(self, precision: str) -> str:
        return "fp16"

    def unquantized_bytes(self, precision: str) -> float:
        return max(UNQUANTIZED_BYTES, WEIGHT_FORMATS[precision].bits_per_weight / 8)

    def weight_bytes(self, spec: ModelSpec, precision: str) -> dict[str, float]:
        params = spec.parameters
        per_weight = WEIGHT_FORMATS[precision].bits_per_weight / 8
        kept = self.unquantized_bytes(precision)
        return {
            "embedding": params.embedding * kept,
            "lm_head": params.lm_head * kept,
            "attention": params.attention * per_weight,
            "mlp": params.mlp * per_weight,
            "norms": params.norms * kept,
        }

    def build_host_ram_bytes(self, spec: ModelSpec, precision: str) -> float:
        return spec.parameters.total * UNQUANTIZED_BYTES * self.build_ram_factor

    def block_sizes(self, precision: str) -> tuple[int, ...]:
        """Quantization block sizes this toolchain can use for ``precision``, preferred first;
        empty for a format without blocks. The planner picks the first that fits the model."""
        block = WEIGHT_FORMATS[precision].block_size
        return () if block is None else (block,)

    def requirements(self) -> tuple[Requirement, ...]:
        return self.needs

    def known_issues(self, target: TargetProfile, precision: str) -> list[str]:
        """Combinations that build but are known to misbehave with the pinned tools (warnings)."""
        return []

    def unsupported(self, target: TargetProfile, precision: str) -> list[str]:
        """Combinations the toolchain cannot run on the target (plan problems), with the fix."""
        return []

    def runs_on_gpu(self, target: TargetProfile) -> bool:
        """Whether this backend's engines for ``target`` run on its GPU (else on its CPU cores):
        the plan says so and the manifest demands the GPU at deploy only where they do."""
        return target.gpu is not None

    def model_problems(self, spec: ModelSpec) -> list[str]:
        """What about the model the toolchain cannot build (plan problems), with the fix."""
        return []

    def tool_versions(self) -> dict[str, str]:
        versions = {}
        for requirement in self.needs:
            version = requirement.version()
            if version is not None:
                versions[requirement.distribution or requirement.name] = version
        return versions

    def stages(self, plan: Plan) -> list[Stage]:
        raise EdgepackError(
            f"building with the {self.name} backend is not available in this edgepack release; "
            "`edgepack plan` covers it",
            hint="the ort backend builds today: --backend ort on a CPU target",
        )

    def runtime_stage(self, plan: Plan, build: RuntimeBuild) -> Stage:
        """The stage that builds the bundle's C++ runtime in ``build.mode``."""
        raise ToolMissingError(
            f"the {self.name} runtime cannot be compiled here: it needs the backend's SDK",
            hint="build with --runtime none; `edgepack runtime render` writes its sources",
        )

    def engine_tool(self, target: TargetProfile) -> ToolSpec | None:
        """The program an engine builder runs for this backend (--builder); None where the
        engine is built by edgepack's own stages on this machine."""
        return None

    def device_engine_stage(self, plan: Plan, host: str) -> Stage:
        """``build --host DEVICE``: the engine stage run on the device itself."""
        raise BadInputError(
            f"--host builds the engine on the device; the {self.name} backend builds it here",
            hint="drop --host (deploy with `edgepack deploy --host`)",
        )

    def device_checks(
        self, connector: Connector, facts: DeviceFacts, target: TargetProfile | None
    ) -> list[DeviceCheck]:
        """What the device has and lacks to build and run this backend's engines there (for
        ``doctor --host``), each missing piece with how to get it; ``target`` is the device's
        profile where known. Backends whose engines are built elsewhere check nothing there."""
        return []

    def engine_loader(self, engine_dir: Path) -> EngineLoader:
        """How ``edgepack bench`` opens the engine on this machine; refuses where it cannot run."""
        raise BadInputError(
            f"this bundle's backend is {self.name}; its engine does not run on this machine",
            hint="deploy it to its target and use `edgepack bench --remote`",
        )

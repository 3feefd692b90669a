"""Run a plan's stages through the content-addressed cache, timing each and reporting progress.

A stage's key covers the edgepack version, the backend and its tool versions, the stage's own
config, the hashes of its inputs (the model's files, or the keys of the stages before it) and the
target profile. Change any of these and the stage runs again; change none and it is reused.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgepack import __version__
from edgepack.backends import BACKENDS, Stage, StageContext
from edgepack.bundle import ENGINE_DIR, PROMPTS_FILE, Manifest, write_bundle
from edgepack.cache import HASH_INDEX_FILE, CacheEntry, FileHashIndex, StageCache, content_key
from edgepack.errors import BadInputError, ToolMissingError
from edgepack.models import ModelSource
from edgepack.plan import Plan
from edgepack.resources import data_dir

if TYPE_CHECKING:
    from edgepack.builders.job import EngineBuilder
    from edgepack.device_wheels import DeviceWheels
    from edgepack.runtime.spec import RuntimeBuild

MODEL_INPUT = "model"
STAGE_BUNDLE_FOLDERS = {"runtime": "runtime", "wheels": "wheels"}
"""Stages whose output goes into a bundle folder of its own; the last other stage's is engine/."""


@dataclass(frozen=True)
class StageRun:
    name: str
    key: str
    cache_hit: bool
    wall_s: float
    """Wall time of the build that produced the output (the original one on a cache hit)."""
    output_dir: Path
    repeat_wall_s: list[float] = field(default_factory=list)
    """Wall times of --repeat rebuilds, without the cache."""
    config: dict[str, Any] = field(default_factory=dict)
    """The stage's settings (part of its key); the manifest's recipe keeps them."""

    def record(self) -> dict[str, Any]:
        """What the manifest keeps: no cache state or local paths, so the same inputs give the
        same bundle id whether a stage ran or came from the cache. A stage that writes
        ``<stage>.json`` (its own record: checks, parsed tool logs) has it kept as ``details``."""
        data: dict[str, Any] = {"name": self.name, "key": self.key, "wall_s": self.wall_s}
        if self.repeat_wall_s:
            data["repeat"] = spread(self.repeat_wall_s)
        details = self.output_dir / f"{self.name}.json"
        if details.is_file():
            data["details"] = json.loads(details.read_text(encoding="utf-8"))
        return data


def spread(samples: list[float]) -> dict[str, float | int]:
    return {
        "n": len(samples),
        "min": min(samples),
        "median": statistics.median(samples),
        "max": max(samples),
    }


@dataclass
class PipelineEvents:
    """Callbacks through which the CLI shows progress; the library never prints."""

    stage_started: Callable[[str, str], None] = lambda name, description: None
    stage_finished: Callable[[StageRun], None] = lambda run: None
    log: Callable[[str], None] = lambda line: None


def check_requirements(stages: list[Stage]) -> None:
    missing = [r for stage in stages for r in stage.requirements if not r.available()]
    if missing:
        names = ", ".join(sorted({r.name for r in missing}))
        hints = "; ".join(sorted({r.install_hint for r in missing}))
        raise ToolMissingError(f"the build needs {names}, which is not installed", hint=hints)


def stage_key(plan: Plan, stage: Stage, input_hashes: dict[str, str]) -> str:
    backend = BACKENDS[plan.backend]
    parts: dict[str, object] = {
        "edgepack": __version__,
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        "backend": plan.backend,
        "tools": backend.tool_versions(),
        "stage": stage.name,
        "config": dict(stage.config),
        "inputs": {name: input_hashes[name] for name in stage.inputs},
    }
    if not stage.recipe_independent:
        parts["target"] = plan.target.content_hash()
        parts["recipe"] = {
            "precision": plan.precision,
            "kv_cache_dtype": plan.kv_cache_dtype,
            "limits": asdict(plan.limits),
        }
    return content_key(parts)


def plan_stages(
    plan: Plan,
    runtime: RuntimeBuild | None = None,
    wheels: DeviceWheels | None = None,
    until: str | None = None,
    engine_host: str | None = None,
) -> list[Stage]:
    """The backend's stages, then the C++ runtime's and the device wheels' when asked for;
    with ``until``, the backend's stages up to and including that one; with ``engine_host``,
    the engine built on that device after them."""
    stages = BACKENDS[plan.backend].stages(plan)
    if engine_host is not None:
        stages.append(BACKENDS[plan.backend].device_engine_stage(plan, engine_host))
    if until is not None:
        return _until(stages, until, plan.backend)
    if runtime is not None and runtime.mode != "none":
        stages.append(BACKENDS[plan.backend].runtime_stage(plan, runtime))
    if wheels is not None and wheels.pythons:
        from edgepack.device_wheels import wheels_stage

        stages.append(wheels_stage(plan, wheels))
    return stages


def _until(stages: list[Stage], until: str, backend: str) -> list[Stage]:
    names = [stage.name for stage in stages]
    if until not in names:
        raise BadInputError(
            f"--until {until}: the {backend} build has no {until!r} stage",
            hint=f"its stages: {', '.join(names)}",
        )
    return stages[: names.index(until) + 1]


def run_pipeline(
    plan: Plan,
    model_dir: Path,
    model_hash: str,
    cache: StageCache,
    *,
    force: bool = False,
    repeat: int = 0,
    events: PipelineEvents | None = None,
    runtime: RuntimeBuild | None = None,
    wheels: DeviceWheels | None = None,
    until: str | None = None,
    builder: EngineBuilder | None = None,
    engine_host: str | None = None,
) -> list[StageRun]:
    """Run (or reuse) every stage of the plan's backend in order (up to ``until``)."""
    plan.require_valid()
    events = events or PipelineEvents()
    stages = plan_stages(plan, runtime, wheels, until, engine_host)
    check_requirements(stages)
    input_hashes = {MODEL_INPUT: model_hash}
    input_dirs = {MODEL_INPUT: model_dir}
    runs = []
    for stage in stages:
        key = stage_key(plan, stage, input_hashes)
        events.stage_started(stage.name, stage.description)
        entry, hit = _produce(cache, key, stage, plan, input_dirs, events, force, builder)
        repeats = [_rebuild(cache, stage, plan, input_dirs, events, builder) for _ in range(repeat)]
        run = StageRun(
            stage.name, key, hit, entry.wall_s, entry.output_dir, repeats, dict(stage.config)
        )
        events.stage_finished(run)
        runs.append(run)
        input_hashes[stage.name] = key
        input_dirs[stage.name] = entry.output_dir
    return runs


def _builder(
    stage: Stage,
    plan: Plan,
    input_dirs: dict[str, Path],
    events: PipelineEvents,
    engine_builder: EngineBuilder | None = None,
) -> Callable[[Path], None]:
    def build(output_dir: Path) -> None:
        inputs = {name: input_dirs[name] for name in stage.inputs}
        context = StageContext(plan, inputs, output_dir, events.log, engine_builder)
        stage.run(context)

    return build


def _produce(
    cache: StageCache,
    key: str,
    stage: Stage,
    plan: Plan,
    input_dirs: dict[str, Path],
    events: PipelineEvents,
    force: bool,
    builder: EngineBuilder | None = None,
) -> tuple[CacheEntry, bool]:
    existing = None if force else cache.lookup(key)
    if existing is not None:
        return existing, True
    metadata = {"stage": stage.name, "backend": plan.backend, "config": dict(stage.config)}
    build = _builder(stage, plan, input_dirs, events, builder)
    entry = cache.produce(key, build, metadata, force=force)
    return entry, False


def _rebuild(
    cache: StageCache,
    stage: Stage,
    plan: Plan,
    input_dirs: dict[str, Path],
    events: PipelineEvents,
    builder: EngineBuilder | None = None,
) -> float:
    return cache.run_uncached(_builder(stage, plan, input_dirs, events, builder))


@dataclass(frozen=True)
class BuildResult:
    manifest: Manifest
    bundle_dir: Path
    stages: list[StageRun]

    @property
    def all_cached(self) -> bool:
        return all(run.cache_hit for run in self.stages)


def build_bundle(
    plan: Plan,
    source: ModelSource,
    destination: Path,
    cache: StageCache,
    *,
    force: bool = False,
    repeat: int = 0,
    events: PipelineEvents | None = None,
    runtime: RuntimeBuild | None = None,
    wheels: DeviceWheels | None = None,
    until: str | None = None,
    builder: EngineBuilder | None = None,
    engine_host: str | None = None,
) -> BuildResult:
    """Run the pipeline and seal its output into a bundle at ``destination``."""
    events = events or PipelineEvents()
    hashes = FileHashIndex(cache.root / HASH_INDEX_FILE)
    model_hash = hashes.tree_hash(source.directory)
    runs = run_pipeline(
        plan,
        source.directory,
        model_hash,
        cache,
        force=force,
        repeat=repeat,
        events=events,
        runtime=runtime,
        wheels=wheels,
        until=until,
        builder=builder,
        engine_host=engine_host,
    )
    backend = BACKENDS[plan.backend]
    manifest = Manifest(
        edgepack_version=__version__,
        model={
            "reference": source.reference,
            "name": source.spec.name,
            "directory": str(source.directory),
            "hash": model_hash,
            "architecture": source.spec.architecture,
            "parameters": source.spec.parameters.total,
        },
        recipe={
            "backend": plan.backend,
            "precision": plan.precision,
            "kv_cache_dtype": plan.kv_cache_dtype,
            "limits": asdict(plan.limits),
            "calibration": _calibration(runs),
            "group_size": plan.group_size,
            "stage_config": {run.name: run.config for run in runs},
        },
        target=manifest_target(plan),
        tools={
            "edgepack": __version__,
            "python": sys.version.split()[0],
            **backend.tool_versions(),
            **_engine_tool(plan, runs),
        },
        plan=plan.summary(),
        stages=[run.record() for run in runs],
    )
    contents = {**bundle_folders(runs), PROMPTS_FILE: default_prompts_file()}
    sealed = write_bundle(destination, manifest, contents, hashes, progress=events.log)
    hashes.save()
    return BuildResult(sealed, destination.resolve(), runs)


def manifest_target(plan: Plan) -> dict[str, Any]:
    """The manifest's target: what deploy checks against the device. A CPU engine on a GPU
    target (ort on a Jetson) records no GPU, so deploy demands none."""
    target, gpu = plan.target, plan.target.gpu if plan.on_gpu else None
    return {
        "name": target.name,
        "hash": target.content_hash(),
        "arch": target.arch,
        "sm": gpu.sm if gpu else f"CPU ({target.arch})",
        "cuda_arch": gpu.cuda_arch if gpu else None,
        "runs_on": plan.runs_on,
    }


def _calibration(runs: list[StageRun]) -> Any:
    """The calibration set of the stage that quantized (its name, format and sha256)."""
    return next((run.config["calibration"] for run in runs if run.config.get("calibration")), None)


def _engine_tool(plan: Plan, runs: list[StageRun]) -> dict[str, str]:
    """The engine tool's version and where it ran, for a plan built through a builder."""
    tool = BACKENDS[plan.backend].engine_tool(plan.target)
    if tool is None or plan.engine_tool_version is None:
        return {}
    if not any(run.name == "engine" for run in runs):
        return {}
    return {tool.program: plan.engine_tool_version, "engine_builder": str(plan.builder)}


def bundle_folders(runs: list[StageRun]) -> dict[str, Path]:
    """engine/ from the last stage that builds the engine, plus each stage's own folder."""
    engine = [run for run in runs if run.name not in STAGE_BUNDLE_FOLDERS][-1]
    folders = {ENGINE_DIR: engine.output_dir}
    for run in runs:
        if run.name in STAGE_BUNDLE_FOLDERS:
            folders[STAGE_BUNDLE_FOLDERS[run.name]] = run.output_dir
    return folders


def default_prompts_file() -> Path:
    return data_dir("prompts") / "default.json"

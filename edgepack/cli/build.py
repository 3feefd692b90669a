"""``edgepack build``: plan, run the stages through the cache, and seal a bundle."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from edgepack.cli.options import (
    AllowKvOption,
    BackendOption,
    BuilderOption,
    CacheDirOption,
    GroupSizeOption,
    JsonOption,
    KvDtypeOption,
    MaxBatchOption,
    MaxInputOption,
    MaxSeqOption,
    ModelOption,
    PrecisionOption,
    TargetOption,
    TargetsDirOption,
    VerboseOption,
)
from edgepack.cli.output import console, human_bytes, print_json
from edgepack.cli.plan import (
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_INPUT,
    DEFAULT_MAX_SEQ,
    PlanOptions,
    build_plan,
)

if TYPE_CHECKING:
    from rich.progress import TaskID

    from edgepack.builders.job import EngineBuilder
    from edgepack.pipeline import BuildResult, PipelineEvents, StageRun
    from edgepack.plan import Plan
    from edgepack.runtime.spec import RuntimeBuild


def build(
    target: TargetOption,
    model: ModelOption,
    precision: PrecisionOption,
    backend: BackendOption = None,
    kv_cache_dtype: KvDtypeOption = None,
    max_batch_size: MaxBatchOption = DEFAULT_MAX_BATCH,
    max_input_len: MaxInputOption = DEFAULT_MAX_INPUT,
    max_seq_len: MaxSeqOption = DEFAULT_MAX_SEQ,
    allow_kv_quantization: AllowKvOption = False,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="Bundle directory \\[default: bundles/MODEL-TARGET-…]."
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Rebuild every stage, ignore the cache.")
    ] = False,
    repeat: Annotated[
        int,
        typer.Option(
            "--repeat",
            min=0,
            help="Also rebuild each stage N times without the cache and report min/median/max "
            "(build times are I/O-bound and noisy).",
        ),
    ] = 0,
    runtime: Annotated[
        str | None,
        typer.Option(
            "--runtime",
            help="Build the C++ runtime into the bundle: none, native, cross or container; "
            "device (edgellm) ships its sources, compiled on the device at deploy against its "
            "Edge-LLM \\[default: device for edgellm; else native when this host has the "
            "target's architecture, else cross].",
            show_default=False,
        ),
    ] = None,
    device_python: Annotated[
        list[str] | None,
        typer.Option(
            "--device-python",
            metavar="X.Y",
            help="Carry wheels for the device's Python runner (CPython version, repeatable, "
            "e.g. 3.12): deploy installs them into <root>/venv with no network on the device.",
            show_default=False,
        ),
    ] = None,
    wheelhouse: Annotated[
        Path | None,
        typer.Option(
            "--wheelhouse",
            help="Take the device wheels from this folder instead of PyPI (offline builds).",
            exists=True,
            file_okay=False,
        ),
    ] = None,
    builder: BuilderOption = None,
    group_size: GroupSizeOption = None,
    until: Annotated[
        str | None,
        typer.Option(
            "--until",
            metavar="STAGE",
            help="Stop after this stage (checkpoint for trtllm, export for edgellm: the host "
            "half) and seal what it made as the bundle.",
            show_default=False,
        ),
    ] = None,
    calib_dataset: Annotated[
        Path | None,
        typer.Option(
            "--calib-dataset",
            help="Calibrate the quantizers on this file (a prompt-set JSON or one text per line) "
            "\\[default: the bundle's prompt set]; its sha256 goes into the manifest.",
            show_default=False,
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    calib_size: Annotated[
        int | None,
        typer.Option(
            "--calib-size",
            min=1,
            help="Calibrate on at most this many windows of 64 tokens \\[default: all].",
            show_default=False,
        ),
    ] = None,
    host: Annotated[
        str | None,
        typer.Option(
            "--host",
            metavar="[USER@]HOST",
            help="The same as --builder ssh:HOST: build the engine there (edgellm: on the "
            "device itself; it stays there, the bundle records it).",
            show_default=False,
        ),
    ] = None,
    cache_dir: CacheDirOption = None,
    targets_dir: TargetsDirOption = None,
    verbose: VerboseOption = False,
    json_output: JsonOption = False,
) -> None:
    """Build a bundle: quantize/export/engine stages (cached by content) + manifest lockfile.

    A second identical build reuses every stage. The bundle is written atomically: a failed build
    leaves the previous bundle (if any) untouched.
    """
    from edgepack.backends import BACKENDS
    from edgepack.builders.choice import engine_host, resolve_builder
    from edgepack.bundle import remember_latest
    from edgepack.cache import StageCache, default_cache_root
    from edgepack.device_wheels import DeviceWheels, check_device_pythons
    from edgepack.models import resolve_model_source
    from edgepack.pipeline import build_bundle
    from edgepack.plan import Limits

    _check_output(output)
    plan = build_plan(
        target,
        model,
        precision,
        backend,
        kv_cache_dtype,
        Limits(max_batch_size, max_input_len, max_seq_len),
        allow_kv_quantization,
        targets_dir,
        PlanOptions(
            builder=resolve_builder(builder, host),
            group_size=group_size,
            needs_engine=until in (None, "engine"),
            calib_dataset=str(calib_dataset) if calib_dataset else None,
            calib_samples=calib_size,
        ),
    )
    plan.require_valid()
    cache_root = cache_dir or default_cache_root()
    pythons = check_device_pythons(device_python or [], plan.backend)
    wheels = DeviceWheels(pythons, wheelhouse, cache_root)
    plan, engine_builder = _engine_builder(plan, cache_root, until)
    runtime_build = runtime_choice(runtime, plan, cache_root)
    quiet = json_output
    with _Progress(quiet=quiet, verbose=verbose) as progress:
        source = resolve_model_source(model, cache_root, progress=progress.note)
        destination = output or Path("bundles") / (
            f"{plan.model.name}-{plan.target.name}-{plan.backend}-{plan.precision}"
        )
        result = build_bundle(
            plan,
            source,
            destination,
            StageCache(cache_root),
            force=force,
            repeat=repeat,
            events=progress.events(),
            runtime=runtime_build,
            wheels=wheels,
            until=until,
            builder=engine_builder,
            engine_host=engine_host(plan.builder)
            if BACKENDS[plan.backend].engine_on_device
            else None,
        )
    remember_latest(cache_root, result.bundle_dir)
    if json_output:
        print_json(_result_data(result))
    else:
        _print_result(result)


def _check_output(output: Path | None) -> None:
    from edgepack.errors import BadInputError

    if output is not None and output.exists() and not output.is_dir():
        raise BadInputError(
            f"--output {output} is a file, not a bundle directory",
            hint="give a directory for the bundle (made if missing)",
        )


def _engine_builder(
    plan: Plan, cache_root: Path, until: str | None
) -> tuple[Plan, EngineBuilder | None]:
    """The plan's engine builder, its tool probed where it will run (before any stage works);
    the plan then carries the tool's version (part of the engine stage's key)."""
    import dataclasses

    from edgepack.backends import BACKENDS
    from edgepack.builders import open_builder, require_tool

    tool = BACKENDS[plan.backend].engine_tool(plan.target)
    if tool is None or plan.builder is None or until not in (None, "engine"):
        return plan, None
    builder = open_builder(plan.builder, cache_root / "logs", image=tool.image)
    probe = require_tool(builder, tool)
    return dataclasses.replace(plan, engine_tool_version=probe.version), builder


def runtime_choice(value: str | None, plan: Plan, cache_root: Path) -> RuntimeBuild:
    from edgepack.errors import BadInputError, did_you_mean
    from edgepack.runtime.spec import COMPILED_ON_DEVICE, RUNTIME_MODES, RuntimeBuild, default_mode

    if value is None:
        return RuntimeBuild(default_mode(plan.target, plan.backend), cache_root=cache_root)
    if (value == "device") != (plan.backend in COMPILED_ON_DEVICE) and value in RUNTIME_MODES[1:]:
        where = "on the device at deploy" if plan.backend in COMPILED_ON_DEVICE else "here"
        raise BadInputError(
            f"--runtime {value}: the {plan.backend} runtime is compiled {where}",
            hint="--runtime device (or none)" if plan.backend in COMPILED_ON_DEVICE
            else "--runtime native, cross or container (or none)",
        )  # fmt: skip
    for mode in RUNTIME_MODES:
        if mode == value:
            if mode == "container":
                from edgepack.container import api_client

                api_client()  # an engine answers now, not after the model conversion
            return RuntimeBuild(mode, cache_root=cache_root)
    raise BadInputError(
        f"unknown --runtime {value!r}{did_you_mean(value, RUNTIME_MODES)}",
        hint="choose one of " + ", ".join(RUNTIME_MODES),
    )


def _result_data(result: BuildResult) -> dict[str, object]:
    from edgepack.bundle import bundle_summary

    return {
        "bundle_dir": str(result.bundle_dir),
        **bundle_summary(result.manifest),
        "all_cached": result.all_cached,
        "stages": [
            {**run.record(), "cache_hit": run.cache_hit, "output_dir": str(run.output_dir)}
            for run in result.stages
        ],
    }


def _print_result(result: BuildResult) -> None:
    from rich.table import Table

    from edgepack.bundle import bundle_summary

    table = Table(title="Stages", header_style="bold")
    for column in ("stage", "cache", "build wall time", "repeats (min / median / max)"):
        table.add_column(column)
    for run in result.stages:
        table.add_row(
            run.name, "hit" if run.cache_hit else "built", f"{run.wall_s:.1f} s", _repeat_cell(run)
        )
    console.print(table)
    summary = bundle_summary(result.manifest)
    console.print(
        f"bundle [bold]{result.bundle_dir}[/] id {result.manifest.short_id}: "
        f"engine {human_bytes(float(summary['engine_bytes']))}, {summary['files']} files"
    )
    if result.all_cached:
        console.print("[green]every stage came from the cache[/] (use --force to rebuild)")


def _repeat_cell(run: StageRun) -> str:
    from edgepack.pipeline import spread

    if not run.repeat_wall_s:
        return "-"
    stats = spread(run.repeat_wall_s)
    return f"{stats['min']:.1f} / {stats['median']:.1f} / {stats['max']:.1f} s (n={stats['n']})"


class _Progress:
    """Spinners with elapsed time for each stage; tool output only with -v."""

    def __init__(self, quiet: bool, verbose: bool) -> None:
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.verbose = verbose
        self.quiet = quiet
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=console,
            disable=quiet,
            # Third-party progress bars write to stderr; with --json, stdout must hold only JSON.
            redirect_stdout=False,
            redirect_stderr=False,
            transient=False,
        )
        self.task: TaskID | None = None

    def __enter__(self) -> _Progress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._finish_task()
        self.progress.__exit__(None, None, None)

    def note(self, message: str) -> None:
        self._finish_task()
        self.task = self.progress.add_task(message, total=None)

    def log(self, line: str) -> None:
        if self.verbose and not self.quiet:
            self.progress.console.print(line, markup=False, highlight=False)

    def _finish_task(self) -> None:
        if self.task is not None:
            self.progress.update(self.task, total=1, completed=1)
            self.task = None

    def events(self) -> PipelineEvents:
        from edgepack.pipeline import PipelineEvents

        return PipelineEvents(
            stage_started=lambda name, description: self.note(f"{name}: {description}"),
            stage_finished=lambda run: self._finish_task(),
            log=self.log,
        )

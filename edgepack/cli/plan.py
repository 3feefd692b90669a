"""``edgepack plan``: validate target × model × precision × backend and size it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from edgepack.cli.options import (
    AllowKvOption,
    BackendOption,
    BuilderOption,
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
)
from edgepack.cli.output import console, human_bytes, print_json
from edgepack.errors import ExitCode

if TYPE_CHECKING:
    from rich.table import Table

    from edgepack.plan import Limits, Plan

# Defaults are repeated from edgepack.plan.Limits so that `--help` does not import the planner;
# tests/unit/test_cli.py checks that they agree.
DEFAULT_MAX_BATCH, DEFAULT_MAX_INPUT, DEFAULT_MAX_SEQ = 4, 1024, 2048


def plan(
    target: TargetOption,
    model: ModelOption,
    precision: PrecisionOption,
    backend: BackendOption = None,
    kv_cache_dtype: KvDtypeOption = None,
    max_batch_size: MaxBatchOption = DEFAULT_MAX_BATCH,
    max_input_len: MaxInputOption = DEFAULT_MAX_INPUT,
    max_seq_len: MaxSeqOption = DEFAULT_MAX_SEQ,
    allow_kv_quantization: AllowKvOption = False,
    builder: BuilderOption = None,
    group_size: GroupSizeOption = None,
    targets_dir: TargetsDirOption = None,
    json_output: JsonOption = False,
) -> None:
    """Check a build before doing it: every problem at once, memory fit and decode roofline.

    Exit status: 0 valid plan, 3 invalid plan (problems listed with fixes), 2 unknown names.
    """
    from edgepack.plan import Limits

    result = build_plan(
        target,
        model,
        precision,
        backend,
        kv_cache_dtype,
        Limits(max_batch_size, max_input_len, max_seq_len),
        allow_kv_quantization,
        targets_dir,
        PlanOptions(builder=builder, group_size=group_size),
    )
    if json_output:
        print_json(result.summary())
    else:
        print_plan(result)
    if not result.valid:
        raise typer.Exit(ExitCode.INVALID_PLAN)


@dataclass(frozen=True)
class PlanOptions:
    """The plan's options beyond target, model, precision and limits (plan and build)."""

    builder: str | None = None
    group_size: int | None = None
    needs_engine: bool = True
    calib_dataset: str | None = None
    calib_samples: int | None = None


def build_plan(
    target: str,
    model: str,
    precision: str,
    backend: str | None,
    kv_cache_dtype: str | None,
    limits: Limits,
    allow_kv_quantization: bool,
    targets_dir: list[Path] | None,
    options: PlanOptions | None = None,
) -> Plan:
    """Resolve the names of a command line into a plan (shared by plan and build)."""
    from edgepack.models import resolve_spec
    from edgepack.plan import PlanRequest, make_plan
    from edgepack.targets import TargetRegistry

    profile = TargetRegistry.default(targets_dir or []).get(target)
    request = PlanRequest(
        target=profile,
        model=resolve_spec(model),
        precision=precision,
        backend=backend,
        kv_cache_dtype=kv_cache_dtype,
        limits=limits,
        allow_kv_quantization=allow_kv_quantization,
        **vars(options or PlanOptions()),
    )
    return make_plan(request)


def print_plan(plan: Plan) -> None:
    from rich.table import Table

    target, spec, memory = plan.target, plan.model, plan.memory
    console.print(
        f"[bold]{spec.name}[/] ({spec.parameters.total / 1e9:.2f} B params) → "
        f"[bold]{target.name}[/] ({target.sm_label}) with [bold]{plan.backend}[/], "
        f"weights {plan.precision}, KV cache {plan.kv_cache_dtype}; runs on {plan.runs_on}"
    )
    sizes = Table(title="Memory", show_header=True, header_style="bold")
    sizes.add_column("item")
    sizes.add_column("size", justify="right")
    for part, size in memory.weights_by_part.items():
        sizes.add_row(f"weights: {part}", human_bytes(size))
    sizes.add_row("[bold]weights total[/]", f"[bold]{human_bytes(memory.weight_bytes)}[/]")
    sizes.add_row("KV cache per token", human_bytes(memory.kv_bytes_per_token))
    limits = plan.limits
    sizes.add_row(
        f"KV cache ({limits.max_batch_size} × {limits.max_seq_len} tokens)",
        human_bytes(memory.kv_cache_bytes),
    )
    sizes.add_row("activations (estimate)", human_bytes(memory.activation_bytes))
    sizes.add_row("runtime overhead (estimate)", human_bytes(memory.runtime_overhead_bytes))
    verdict = "[green]fits[/]" if memory.fits else "[red]does not fit[/]"
    sizes.add_row(
        "[bold]total[/]",
        f"[bold]{human_bytes(memory.total_bytes)}[/] of "
        f"{human_bytes(memory.budget_bytes)} {verdict}",
    )
    sizes.add_row(
        f"host RAM to build ({target.build.engine_location})",
        human_bytes(memory.build_host_ram_bytes),
    )
    console.print(sizes)
    console.print(_roofline_table(plan))
    if plan.builder:
        console.print(f"engine builder: {plan.builder}", highlight=False)
    for problem in plan.problems:
        console.print(f"[bold red]problem:[/] {problem}", highlight=False)
    for warning in plan.warnings:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    console.print("[green]plan is valid[/]" if plan.valid else "[bold red]plan is invalid[/]")


def _roofline_table(plan: Plan) -> Table:
    from rich.table import Table

    table = Table(
        title=f"Decode roofline ({plan.target.memory.bandwidth_gbps:g} GB/s, "
        f"{human_bytes(plan.weight_bytes_read_per_step)} read per step)",
        header_style="bold",
    )
    for column in ("batch", "context", "ceiling tok/s (all sequences)"):
        table.add_column(column, justify="right")
    for point in plan.roofline:
        table.add_row(str(point.batch), str(point.context_tokens), f"{point.tokens_per_s:.1f}")
    return table

"""``edgepack runtime``: the C++ runtime's CMake project, rendered for a target without building."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgepack.cli.options import (
    BackendOption,
    JsonOption,
    MaxBatchOption,
    MaxInputOption,
    MaxSeqOption,
    ModelOption,
    PrecisionOption,
    TargetOption,
    TargetsDirOption,
)
from edgepack.cli.output import console, print_json
from edgepack.cli.plan import DEFAULT_MAX_BATCH, DEFAULT_MAX_INPUT, DEFAULT_MAX_SEQ, build_plan

app = typer.Typer(help="The generated C++ runtime (built into bundles by `edgepack build`).")


@app.command("render")
def render(
    target: TargetOption,
    model: ModelOption,
    precision: PrecisionOption,
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory for the project.")],
    backend: BackendOption = None,
    max_batch_size: MaxBatchOption = DEFAULT_MAX_BATCH,
    max_input_len: MaxInputOption = DEFAULT_MAX_INPUT,
    max_seq_len: MaxSeqOption = DEFAULT_MAX_SEQ,
    sysroot: Annotated[
        str | None, typer.Option("--sysroot", help="Target sysroot for the toolchain file.")
    ] = None,
    targets_dir: TargetsDirOption = None,
    json_output: JsonOption = False,
) -> None:
    """Write the runtime's CMake project (toolchain file from the target profile) to --output.

    Build it where the backend's SDK is installed, always with DIR/toolchain.cmake.
    """
    from edgepack.plan import Limits
    from edgepack.runtime.render import render_project
    from edgepack.runtime.spec import RuntimeSpec
    from edgepack.userfiles import output_directory

    plan = build_plan(
        target, model, precision, backend, None,
        Limits(max_batch_size, max_input_len, max_seq_len), False, targets_dir,
    )  # fmt: skip
    plan.require_valid()
    output_directory(output, "--output")
    written = render_project(RuntimeSpec.from_plan(plan, sysroot=sysroot), output)
    if json_output:
        print_json({"output": str(output.resolve()), "files": [str(p) for p in written]})
    else:
        console.print(f"rendered the {plan.backend} runtime for {plan.target.name} into {output}")

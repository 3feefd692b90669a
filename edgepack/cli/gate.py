"""``edgepack gate``: judge a saved run result again, with other thresholds or another reference."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgepack.cli.options import (
    CacheDirOption,
    GateConfigOption,
    JsonOption,
    ReferenceModelHelp,
)
from edgepack.cli.output import console, print_json


def gate(
    result_file: Annotated[Path, typer.Argument(help="A run result JSON (from edgepack bench).")],
    gate_config: GateConfigOption = None,
    reference_model: Annotated[
        str | None,
        typer.Option(
            "--reference-model",
            help=f"Judge against this source model {ReferenceModelHelp} instead of the run's "
            "bundle's.",
        ),
    ] = None,
    prompts: Annotated[
        Path | None,
        typer.Option("--prompts", help="The prompt set the run answered \\[default: its own]."),
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json-out", help="Also write the re-judged result here.")
    ] = None,
    cache_dir: CacheDirOption = None,
    json_output: JsonOption = False,
) -> None:
    """Re-judge a saved run's answers with the quality gate; exit 9 when it fails.

    The reference is the run's bundle's source model (or --reference-model), computed once and
    cached; the result file itself is left as it is unless --json-out names where to write the
    re-judged one.
    """
    from edgepack.bench.gating import enforce, regate
    from edgepack.bench.result import RunResult
    from edgepack.cache import default_cache_root
    from edgepack.cli.bench import print_verdict
    from edgepack.quality.thresholds import GateConfig

    result = RunResult.load_file(result_file)
    judged = regate(
        result,
        cache_dir or default_cache_root(),
        GateConfig.load(gate_config),
        reference_model,
        prompts,
    )
    if json_out is not None:
        judged.save(json_out)
    if json_output:
        print_json(judged.quality.model_dump(mode="json") if judged.quality else None)
    else:
        print_verdict(judged, every_check=True)
        if json_out is not None:
            console.print(f"re-judged result written to [bold]{json_out}[/]")
    enforce(judged.model_copy(update={"gate_enforced": True}))

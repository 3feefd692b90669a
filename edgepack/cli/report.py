"""``edgepack report``: compare runs and bundles in the study's table; check against a baseline."""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from edgepack.cli.output import console, err_console

if TYPE_CHECKING:
    from edgepack.report import Report


class ReportFormat(str, Enum):
    md = "md"
    html = "html"
    json = "json"


def report(
    runs: Annotated[
        list[Path] | None,
        typer.Argument(help="Run results (runs/*.json); the first is the reference for deltas."),
    ] = None,
    bundle: Annotated[
        list[Path] | None,
        typer.Option(
            "--bundle",
            help="A bundle directory: a build-only column, or the bundle of a run whose recorded "
            "path is not on this machine; repeatable.",
        ),
    ] = None,
    baseline: Annotated[
        Path | None,
        typer.Option(
            "--baseline",
            help="Run result to compare against; exit 10 when a run is significantly slower "
            "beyond --tolerance or its quality verdict is worse.",
        ),
    ] = None,
    tolerance: Annotated[
        float,
        typer.Option(
            "--tolerance",
            min=0.0,
            help="Slowdown of decode tok/s in % that --baseline tolerates: a run regresses only "
            "when the 95 % interval of its slowdown lies wholly beyond it (and the slowdown is "
            "significant).",
        ),
    ] = 2.0,  # significance.DEFAULT_TOLERANCE, not imported here so that --help stays fast
    format_: Annotated[ReportFormat, typer.Option("--format", "-f", help="Output format.")] = (
        ReportFormat.md
    ),
    plots: Annotated[
        Path | None, typer.Option("--plots", help="Write PNG plots into this directory.")
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write the report to this file (default: stdout)."),
    ] = None,
) -> None:
    """Compare runs side by side: build, artifacts, runtime, roofline, quality, with deltas.

    Exit status: 0 done, 10 a regression against --baseline (the rule is printed), 2 bad input
    (including too few runs to test a regression).
    """
    from edgepack import report as library

    _check_paths(runs or [], plots, output)
    search = [Path("bundles")]  # where `edgepack build` writes bundles by default
    entries = library.load_entries(runs or [], bundle or [], baseline, search)
    result = library.build_report(entries, check_baseline=baseline is not None, tolerance=tolerance)
    images = _images(result, plots, format_)
    plot_files = _write_plots(images, plots, output) if plots else {}
    text = _render(result, format_, images, plot_files)
    if output is None:
        print(text, end="")
    else:
        _write_text(output, text)
        err_console.print(f"report written to [bold]{output}[/]", highlight=False)
        for line in library.check_lines(result):
            console.print(line, highlight=False, markup=False, soft_wrap=True)
    library.enforce(result.checks)


def _check_paths(runs: list[Path], plots: Path | None, output: Path | None) -> None:
    """The slips to catch before any work: a bundle given where a run goes, an output that
    cannot be written."""
    from edgepack.errors import BadInputError
    from edgepack.userfiles import output_directory

    for run in runs:
        if run.is_dir():
            raise BadInputError(
                f"{run} is a directory, not a run result: for a bundle, use --bundle {run}",
                hint="report's arguments are run results (runs/*.json, from edgepack bench)",
            )
    if plots is not None:
        output_directory(plots, "--plots")
    if output is not None and output.is_dir():
        raise BadInputError(f"--output {output} is a directory, not a file",
                            hint=f"give a file name, e.g. {output}/report.md")  # fmt: skip


def _images(result: Report, plots: Path | None, format_: ReportFormat) -> dict[str, bytes]:
    """Plots for --plots and for HTML; HTML without --plots does without them if it must."""
    from edgepack.errors import ToolMissingError
    from edgepack.report import render_plots

    if plots is None and format_ is not ReportFormat.html:
        return {}
    try:
        return render_plots(result)
    except ToolMissingError as error:
        if plots is not None:
            raise
        err_console.print(f"note: the HTML report has no plots: {error} ({error.hint})")
        return {}


def _write_plots(images: dict[str, bytes], directory: Path, output: Path | None) -> dict[str, str]:
    """Write the PNGs; return their paths as the report should cite them (relative to it)."""
    directory.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, png in images.items():
        path = directory / name
        path.write_bytes(png)
        base = output.parent if output else Path.cwd()
        written[name] = os.path.relpath(path.resolve(), base.resolve())
    return written


def _write_text(path: Path, text: str) -> None:
    from edgepack.userfiles import write_user_text

    write_user_text(path, text, "--output")


def _render(
    result: Report, format_: ReportFormat, images: dict[str, bytes], plot_files: dict[str, str]
) -> str:
    from edgepack import report as library

    if format_ is ReportFormat.html:
        return library.render_html(result, images)
    if format_ is ReportFormat.json:
        return library.render_json(result, plot_files)
    return library.render_markdown(result, plot_files)

"""``edgepack bundle``: inspect and verify bundles."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgepack.cli.options import JsonOption
from edgepack.cli.output import console, print_json

app = typer.Typer(help="Inspect and verify bundles.", no_args_is_help=True)

BundleArgument = Annotated[Path, typer.Argument(help="Bundle directory.")]


@app.command("verify")
def verify(bundle_dir: BundleArgument, json_output: JsonOption = False) -> None:
    """Recheck every file of a bundle against its manifest (size and sha256) and its id."""
    from edgepack.bundle import bundle_summary, verify_bundle

    manifest = verify_bundle(bundle_dir)
    if json_output:
        print_json({"ok": True, **bundle_summary(manifest)})
    else:
        console.print(
            f"[green]ok[/] {bundle_dir}: {len(manifest.files)} files match manifest "
            f"{manifest.short_id}"
        )


@app.command("show")
def show(bundle_dir: BundleArgument, json_output: JsonOption = False) -> None:
    """Print a bundle's manifest (the lockfile)."""
    from edgepack.bundle import read_manifest

    manifest = read_manifest(bundle_dir)
    if json_output:
        print_json(manifest.model_dump(mode="json"))
        return
    console.print_json(manifest.model_dump_json(exclude={"files", "plan"}))

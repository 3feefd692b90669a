"""``edgepack doctor``: what every backend needs, here and on a host, and how to get what is
missing."""

from __future__ import annotations

from typing import Annotated

import typer

from edgepack.cli.options import JsonOption, TargetsDirOption
from edgepack.cli.output import console, print_json


def doctor(
    host: Annotated[
        str | None,
        typer.Option("--host", help="Also check this host or device (\\[user@]host\\[:ROOT])."),
    ] = None,
    target: Annotated[
        str, typer.Option("--target", "-t", help="Whose toolchain versions to check.")
    ] = "ada-sm89",
    targets_dir: TargetsDirOption = None,
    json_output: JsonOption = False,
) -> None:
    """For every backend: what is installed here (and on --host): versions, GPU and SM, container
    images, and the missing pieces with how to get them."""
    from edgepack.doctor import host_findings, local_findings
    from edgepack.remote.hosts import DEFAULT_ROOT, parse_host
    from edgepack.targets import TargetRegistry

    profile = TargetRegistry.default(targets_dir or []).get(target)
    findings = local_findings(profile)
    if host:
        from edgepack.remote.connect import open_connector

        spec = parse_host(host)
        with open_connector(spec) as connector:
            findings += host_findings(connector, spec.root or DEFAULT_ROOT, profile)
    if json_output:
        print_json([finding.as_dict() for finding in findings])
        return
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"edgepack doctor (toolchains of {profile.name})", header_style="bold")
    for column in ("where", "backend", "component", "status", "found", "how to get it"):
        table.add_column(column)
    for f in findings:
        status = "[green]ok[/]" if f.found else "[red]missing[/]"
        table.add_row(f.where, f.backend, escape(f.component), status, escape(f.detail),
                      escape(f.fix))  # fmt: skip
    console.print(table)

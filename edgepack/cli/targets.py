"""``edgepack targets``: list, show and validate target profiles."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from edgepack.cli.options import JsonOption, TargetsDirOption
from edgepack.cli.output import console, print_json

if TYPE_CHECKING:
    from edgepack.targets import TargetProfile

app = typer.Typer(
    help="Target profiles: the hardware facts everything else derives from.", no_args_is_help=True
)


@app.command("list")
def list_targets(targets_dir: TargetsDirOption = None, json_output: JsonOption = False) -> None:
    """List every known target profile (built-in and from --targets-dir)."""
    from rich.table import Table

    from edgepack.targets import TargetRegistry

    profiles = TargetRegistry.default(targets_dir or []).all()
    if json_output:
        print_json([_row(profile) for profile in profiles])
        return
    table = Table(header_style="bold")
    table.add_column("name", no_wrap=True)
    for column in (
        "arch",
        "SM",
        "memory",
        "bandwidth",
        "power",
        "precisions",
        "backends (default first)",
    ):
        table.add_column(column)
    for profile in profiles:
        row = _row(profile)
        table.add_row(
            row["name"],
            row["arch"],
            row["sm"],
            row["memory"],
            row["bandwidth"],
            row["power"],
            ", ".join(row["precisions"]),
            ", ".join(row["backends"]),
        )
    console.print(table)


def _row(profile: TargetProfile) -> dict[str, Any]:
    backends = [profile.backends.default] + [
        b for b in profile.backends.allowed if b != profile.backends.default
    ]
    return {
        "name": profile.name,
        "description": profile.description,
        "arch": profile.arch,
        "sm": profile.sm_label,
        "memory": f"{profile.memory.size_gb:g} GB {profile.memory.kind}",
        "bandwidth": f"{profile.memory.bandwidth_gbps:g} GB/s",
        "power": f"{profile.power.min_w:g}–{profile.power.max_w:g} W",
        "precisions": profile.precisions.weights,
        "backends": backends,
    }


@app.command("show")
def show(
    name: Annotated[str, typer.Argument(help="Target name.")],
    targets_dir: TargetsDirOption = None,
    json_output: JsonOption = False,
) -> None:
    """Print one profile with every fact and the values derived from it (CUDA arch, SM)."""
    from edgepack.targets import TargetRegistry

    registry = TargetRegistry.default(targets_dir or [])
    profile = registry.get(name)
    data = profile.model_dump(mode="json")
    derived = {
        "sm": profile.sm_label,
        "profile_hash": profile.content_hash(),
        "file": str(registry.path_of(name)),
    }
    if profile.gpu:
        derived["cuda_arch"] = profile.gpu.cuda_arch
    if json_output:
        print_json({**data, "derived": derived})
        return
    console.print(f"[bold]{profile.name}[/]: {profile.description}")
    for section, values in {**data, "derived": derived}.items():
        if isinstance(values, dict):
            console.print(f"[bold]{section}[/]")
            for key, value in values.items():
                console.print(f"  {key} = {value}", highlight=False)
        elif section not in ("name", "description"):
            console.print(f"{section} = {values}", highlight=False)


@app.command("validate")
def validate(
    files: Annotated[list[Path], typer.Argument(help="Profile files to check.")],
) -> None:
    """Check profile files strictly: unknown keys, wrong types, precisions the GPU cannot run."""
    from edgepack.targets import load_profile

    for file in files:
        profile = load_profile(file)
        console.print(f"[green]ok[/] {file}: {profile.name} ({profile.sm_label})")


@app.command("detect")
def detect(
    host: Annotated[
        str, typer.Argument(help="Device: ssh alias, \\[user@]host, ssh://… or local.")
    ],
    root: Annotated[
        str, typer.Option("--root", help="Deploy root (for free disk).")
    ] = "~/edgepack",
    targets_dir: TargetsDirOption = None,
    json_output: JsonOption = False,
) -> None:
    """Probe a device in one round trip and name the target profile its facts match."""
    from edgepack.errors import BadInputError
    from edgepack.remote.connect import open_connector
    from edgepack.remote.detect import detect_profiles
    from edgepack.remote.facts import gather_facts
    from edgepack.remote.hosts import parse_host
    from edgepack.targets import TargetRegistry

    spec = parse_host(host)
    with open_connector(spec) as connector:
        facts = gather_facts(connector, spec.root or root)
    matches = detect_profiles(facts, TargetRegistry.default(targets_dir or []))
    if json_output:
        print_json(
            {
                "target": matches[0].profile.name if matches else None,
                "matches": [
                    {"name": m.profile.name, "score": m.score, "reasons": m.reasons}
                    for m in matches
                ],
                "facts": facts.model_dump(mode="json"),
            }
        )
    else:
        for key, value in facts.model_dump(mode="json", exclude_none=True).items():
            console.print(f"  {key} = {value}", highlight=False)
        for match in matches:
            console.print(f"[bold]{match.profile.name}[/]: {'; '.join(match.reasons)}")
    if not matches:
        gpu = facts.gpu.name if facts.gpu else facts.device_model or "no GPU"
        raise BadInputError(
            f"no target profile matches {facts.host} ({facts.arch}, {gpu})",
            hint="add a profile with a [detect] section (--targets-dir DIR)",
        )

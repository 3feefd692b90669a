"""Host specifications: ``local[:ROOT]``, ``[user@]host[:ROOT]`` or ``ssh://[user@]host[:port][/ROOT]``.

The ROOT part overrides the deploy root for that one host, so an inventory can mix layouts.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, replace
from pathlib import Path

from edgepack.errors import BadInputError

LOCAL = "local"
DEFAULT_ROOT = "~/edgepack"


@dataclass(frozen=True)
class HostSpec:
    kind: str
    """"local" or "ssh"."""
    host: str
    """The name as given (an ~/.ssh/config alias or an address); "local" for the local connector."""
    user: str | None = None
    port: int | None = None
    root: str | None = None
    compress: bool | None = None
    """SSH compression (zlib); None leaves it to ~/.ssh/config's ``Compression`` (off unset)."""

    @property
    def label(self) -> str:
        if self.kind == LOCAL or self.port is None:
            return self.host
        return f"{self.host}:{self.port}"


def with_compression(specs: list[HostSpec], compress: bool | None) -> list[HostSpec]:
    """``specs`` with ``--compress``/``--no-compress`` applied; None leaves each as it is."""
    if compress is None:
        return specs
    return [replace(spec, compress=compress) for spec in specs]


def parse_host(text: str) -> HostSpec:
    text = text.strip()
    if not text:
        raise BadInputError("empty host name", hint="pass --host NAME (an ssh alias or address)")
    if text == LOCAL or text.startswith(LOCAL + ":"):
        root = text[len(LOCAL) + 1 :] or None
        return HostSpec(LOCAL, LOCAL, root=root)
    if text.startswith("ssh://"):
        return _parse_url(text)
    user, _, rest = text.rpartition("@")
    host, _, root = rest.partition(":")
    return _checked(text, HostSpec("ssh", host, user=user or None, root=root or None))


def _parse_url(text: str) -> HostSpec:
    try:
        url = urllib.parse.urlsplit(text)
        port = url.port
    except ValueError as exc:
        raise BadInputError(f"host {text!r}: {exc}") from exc
    spec = HostSpec("ssh", url.hostname or "", user=url.username, port=port, root=url.path or None)
    return _checked(text, spec)


def _checked(text: str, spec: HostSpec) -> HostSpec:
    """A host name and user are one word of printable characters, not an option."""
    if not spec.host:
        raise BadInputError(f"host {text!r} has no host name")
    for part in (spec.host, spec.user or ""):
        if part.startswith("-") or any(c.isspace() or not c.isprintable() for c in part):
            raise BadInputError(
                f"host {text!r}: {part!r} is not a host or user name",
                hint="names have no spaces or control characters and do not start with '-'",
            )
    return spec


def read_inventory(path: Path) -> list[HostSpec]:
    """One host per line; blank lines and ``#`` comments are ignored."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise BadInputError(f"cannot read inventory {path}: {exc.strerror}") from exc
    hosts = [parse_host(line.split("#", 1)[0]) for line in lines if line.split("#", 1)[0].strip()]
    if not hosts:
        raise BadInputError(f"inventory {path} lists no hosts", hint="one host per line")
    return hosts


def resolve_hosts(hosts: list[str], inventory: Path | None) -> list[HostSpec]:
    specs = [parse_host(h) for h in hosts] + (read_inventory(inventory) if inventory else [])
    if not specs:
        hint = "pass --host HOST (repeatable) or --inventory FILE"
        raise BadInputError("no host given", hint=hint)
    labels = [s.label + (s.root or "") for s in specs]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise BadInputError(f"host listed twice: {', '.join(duplicates)}")
    return specs

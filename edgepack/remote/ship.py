"""A local directory shipped to a host and files fetched back, both checked by sha256.

Shipping uses the deploy machinery (:func:`edgepack.remote.sync.upload_release`): the directory
becomes ``<root>/releases/<content id>`` there, files already present are kept, a partly sent
file is resumed after its prefix hash matches, every file is verified on the host before the
directory is renamed into place. The same content is never sent twice.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from pathlib import Path

from edgepack import __version__
from edgepack.bundle import FileRecord, Manifest
from edgepack.cache import sha256_file
from edgepack.errors import RemoteError
from edgepack.remote.connector import Connector, shell
from edgepack.remote.sync import SilentProgress, upload_release
from edgepack.remote.sync_plan import DeployProgress, LocalBundle

# $1: a root as given (~ and relative paths allowed); prints it absolute.
RESOLVE_SCRIPT = """root=$1
case "$root" in "~") root=$HOME ;; "~/"*) root=$HOME/${root#"~/"} ;; esac
case "$root" in /*) ;; *) root=$(pwd)/$root ;; esac
printf '%s\\n' "$root\""""

# $1: a directory; prints "sha256  size  path" for every file under it.
LIST_SCRIPT = """cd "$1" || exit 3
find . -type f | sed 's|^\\./||' | sort | while IFS= read -r f; do
  printf '%s  %s  %s\\n' "$(sha256sum -- "$f" | cut -d' ' -f1)" "$(stat -c %s -- "$f")" "$f"
done"""


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Shipped:
    remote_dir: str
    bytes_sent: int
    files: int


def resolve_root(connector: Connector, root: str) -> str:
    return connector.run(shell(RESOLVE_SCRIPT, root)).stdout.strip()


def local_records(directory: Path) -> list[FileRecord]:
    return [
        FileRecord(
            path=path.relative_to(directory).as_posix(),
            size=path.stat().st_size,
            sha256=sha256_file(path),
            executable=bool(path.stat().st_mode & 0o111),
        )
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    ]


def ship_directory(
    connector: Connector,
    directory: Path,
    root: str,
    label: str,
    progress: DeployProgress | None = None,
) -> Shipped:
    """Make ``directory``'s files present under ``root`` (absolute) on the host, verified."""
    records = local_records(directory)
    if not records:
        raise RemoteError(f"nothing to ship: {directory} has no files")
    manifest = Manifest(
        edgepack_version=__version__,
        model={"name": label},
        recipe={"shipped": label},
        target={},
        tools={},
        plan={},
        stages=[],
        files=records,
    )
    manifest = manifest.model_copy(update={"bundle_id": manifest.content_id()})
    bundle = LocalBundle(directory, manifest, [(r.path, r.size, r.sha256) for r in records])
    remote_dir, sent = upload_release(connector, bundle, root, progress or SilentProgress())
    return Shipped(remote_dir, sent, len(records))


def list_remote(connector: Connector, directory: str) -> list[RemoteFile]:
    """Every file under ``directory`` on the host with its size and sha256, computed there."""
    result = connector.run(shell(LIST_SCRIPT, directory), check=False, timeout=None)
    if result.status == 3:
        raise RemoteError(f"{connector.label}: {directory} does not exist")
    if result.status != 0:
        raise RemoteError(f"{connector.label}: listing {directory} failed: {result.error_line()}")
    files = []
    for line in result.stdout.splitlines():
        digest, size, path = line.split("  ", 2)
        files.append(RemoteFile(path, int(size), digest))
    return files


def fetch_verified(
    connector: Connector, directory: str, files: list[RemoteFile], destination: Path
) -> None:
    """Download ``files`` of ``directory`` into ``destination``; each must hash as it did there."""
    bad = []
    for file in files:
        local = destination / file.path
        local.parent.mkdir(parents=True, exist_ok=True)
        connector.get(posixpath.join(directory, file.path), local)
        if local.stat().st_size != file.size or sha256_file(local) != file.sha256:
            bad.append(file.path)
            local.unlink()
    if bad:
        raise RemoteError(
            f"{connector.label}: {', '.join(bad)} differ here from their sha256 there after the "
            "download; the bad copies were removed",
            hint="rerun: the outputs stay on the build host until they arrive whole",
        )

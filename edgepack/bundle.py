"""The bundle: a directory with the engine, tokenizer, prompts and a lockfile manifest.

``manifest.json`` records everything needed to reproduce or distrust the bundle: the model source
and its hash, the recipe, every tool version, the target profile hash, the plan, per-stage wall
times, and every file with its size and sha256. The bundle id is the hash of that content, so the
same inputs give the same id. A bundle is written to a temporary sibling and renamed into place
with its manifest, so no half-written directory ever carries one.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import shutil
import stat
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edgepack.cache import (
    FileHashIndex,
    content_key,
    copy_hashed,
    fsync_directory,
    fsync_tree,
    replace_directory,
    sha256_file,
    write_durably,
)
from edgepack.errors import BundleError

MANIFEST = "manifest.json"
ENGINE_DIR = "engine"
PROMPTS_FILE = "prompts.json"
SCHEMA_VERSION = 1
ID_EXCLUDED_FIELDS = {"bundle_id", "created_at"}


def path_problem(path: str) -> str | None:
    """Why ``path`` is not a normalized relative POSIX path inside the bundle (None: it is).

    The one rule for every path a manifest names: the pydantic model, ``bundle verify``, deploy
    and the device all rely on it (the C++ self-test mirrors it)."""
    if not path:
        return "an empty path"
    if path.startswith("/"):
        return f"{path!r} is absolute"
    if any(ord(char) < 0x20 or char in "\\\x7f" for char in path):
        return f"{path!r} holds a backslash or a control character (NUL, newline)"
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return f"{path!r} has an empty, '.' or '..' component"
    return None


def paths_problems(paths: Iterable[str]) -> list[str]:
    """Every path's problem, then duplicates and a file that is another's directory."""
    listed = list(paths)
    problems = [problem for path in listed if (problem := path_problem(path))]
    seen: set[str] = set()
    for path in listed:
        if path in seen:
            problems.append(f"{path!r} is listed twice")
        seen.add(path)
    if MANIFEST in seen:
        problems.append(f"{MANIFEST!r} is the manifest itself, not a payload file")
    directories = {"/".join(p.split("/")[:i]) for p in seen for i in range(1, p.count("/") + 1)}
    problems += [f"{path!r} is a file and a directory" for path in sorted(seen & directories)]
    return problems


def _checked_path(path: str) -> str:
    problem = path_problem(path)
    if problem:
        raise ValueError(f"unsafe path: {problem}")
    return path


class FileRecord(BaseModel):
    path: str
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    executable: bool = False
    """Deploy sets the execute bits on the device (SFTP uploads do not carry modes)."""

    _path = field_validator("path")(_checked_path)


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    bundle_id: str = ""
    created_at: str = ""
    edgepack_version: str
    model: dict[str, Any]
    recipe: dict[str, Any]
    target: dict[str, Any]
    tools: dict[str, str]
    plan: dict[str, Any]
    stages: list[dict[str, Any]]
    engine_dir: str = ENGINE_DIR
    prompts_file: str = PROMPTS_FILE
    files: list[FileRecord] = []

    _dirs = field_validator("engine_dir", "prompts_file")(_checked_path)

    @model_validator(mode="after")
    def _paths_are_distinct(self) -> Manifest:
        problems = paths_problems(record.path for record in self.files)
        if problems:
            raise ValueError("unsafe paths: " + "; ".join(problems))
        return self

    def content_id(self) -> str:
        return content_key(self.model_dump(mode="json", exclude=ID_EXCLUDED_FIELDS))

    @property
    def short_id(self) -> str:
        return self.bundle_id[:16]

    def file_record(self, path: str) -> FileRecord:
        for record in self.files:
            if record.path == path:
                return record
        raise BundleError(f"bundle manifest lists no file {path!r}")


def read_manifest(bundle_dir: Path) -> Manifest:
    path = bundle_dir / MANIFEST
    if not bundle_dir.exists():
        raise BundleError(
            f"bundle directory {bundle_dir} does not exist",
            hint="`edgepack build` writes bundles (under bundles/ unless -o names another place)",
        )
    if not bundle_dir.is_dir():
        raise BundleError(
            f"{bundle_dir} is a file, not a bundle directory",
            hint="give the directory `edgepack build` wrote (it holds manifest.json)",
        )
    if not path.is_file():
        raise BundleError(
            f"{bundle_dir} is not a bundle: it has no {MANIFEST}",
            hint="`edgepack build` writes bundles; a directory without a manifest is incomplete",
        )
    try:
        return Manifest.model_validate_json(path.read_text(encoding="utf-8"))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise BundleError(
            f"{path} is not a valid manifest: {where}: {first['msg']}",
            hint="a bundle's files are named by normalized relative paths; rebuild it with "
            "`edgepack build` and take bundles only from people you trust",
        ) from exc


def check_manifest_paths(manifest: Manifest) -> None:
    """Refuse a manifest whose paths leave the bundle (one built without the model's checks)."""
    problems = paths_problems(record.path for record in manifest.files)
    problems += [p for p in map(path_problem, (manifest.engine_dir, manifest.prompts_file)) if p]
    if problems:
        raise BundleError(
            "bundle manifest names unsafe paths: " + "; ".join(problems),
            hint="refusing it; rebuild the bundle with `edgepack build`",
        )


def verify_bundle(bundle_dir: Path, hashes: FileHashIndex | None = None) -> Manifest:
    """Recheck every file against the manifest; raise BundleError naming each mismatch.

    With ``hashes``, a file whose size, mtime, ctime and inode are those it was hashed with is
    not read again."""
    manifest = read_manifest(bundle_dir)
    problems = []
    if manifest.content_id() != manifest.bundle_id:
        problems.append("manifest content does not match its bundle id (the manifest was edited)")
    listed = {record.path for record in manifest.files}
    for record in manifest.files:
        problems += _file_problems(bundle_dir, record, hashes)
    for file in _payload_files(bundle_dir):
        if file not in listed:
            kind = _entry_kind(bundle_dir, file)
            problems.append(f"{file}: not in the manifest" + (f" ({kind})" if kind else ""))
    if problems:
        raise BundleError(
            f"bundle {bundle_dir} fails verification: " + "; ".join(problems),
            hint="rebuild it with `edgepack build` (the cache makes that quick)",
        )
    return manifest


def _file_problems(bundle_dir: Path, record: FileRecord, hashes: FileHashIndex | None) -> list[str]:
    path = bundle_dir / record.path
    kind = _entry_kind(bundle_dir, record.path)
    if kind is not None:
        return [f"{record.path}: {kind}"]
    size = path.stat().st_size
    if size != record.size:
        return [f"{record.path}: size {size} != {record.size}"]
    digest = hashes.sha256(path) if hashes else sha256_file(path)
    if digest != record.sha256:
        return [f"{record.path}: sha256 differs"]
    return []


def _entry_kind(bundle_dir: Path, relative: str) -> str | None:
    """None for a regular file reached through real directories; else what it is instead."""
    current = bundle_dir
    parts = relative.split("/")
    for index, part in enumerate(parts):
        current = current / part
        try:
            mode = current.lstat().st_mode
        except FileNotFoundError:
            return "missing"
        if stat.S_ISLNK(mode):
            return "a symlink (a bundle holds regular files only)"
        last = index == len(parts) - 1
        if last and not stat.S_ISREG(mode):
            return "not a regular file (a directory, FIFO, socket or device)"
        if not last and not stat.S_ISDIR(mode):
            return "missing"
    return None


def _payload_files(bundle_dir: Path) -> list[str]:
    """Every entry under the bundle but the manifest; symlinks are listed, never followed."""
    found = []
    for directory, subdirectories, files in os.walk(bundle_dir):
        base = Path(directory)
        links = [name for name in subdirectories if (base / name).is_symlink()]
        for name in [*files, *links]:
            relative = (base / name).relative_to(bundle_dir).as_posix()
            if relative != MANIFEST:
                found.append(relative)
    return sorted(found)


def write_bundle(
    destination: Path,
    manifest: Manifest,
    contents: dict[str, Path],
    hashes: FileHashIndex,
    progress: Callable[[str], None] = lambda message: None,
) -> Manifest:
    """Copy ``contents`` (bundle-relative name → file or directory) and seal it with a manifest.

    Where ``destination`` already holds this very bundle (the same id, every file as listed,
    nothing else) it is kept as it is: a warm rebuild copies and syncs nothing."""
    destination = destination.resolve()
    pairs = [pair for name, source in contents.items() for pair in _source_files(source, name)]
    records = sorted((_record(file, relative, hashes) for file, relative in pairs),
                     key=lambda r: r.path)  # fmt: skip
    sealed = manifest.model_copy(update={"files": records})
    sealed = sealed.model_copy(
        update={
            "bundle_id": sealed.content_id(),
            "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        }
    )
    current = _current_bundle(destination, sealed.bundle_id, hashes)
    if current is not None:
        progress("the bundle is already current")
        return current
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = destination.parent / f".{destination.name}.partial-{uuid.uuid4().hex[:8]}"
    digests = {record.path: record.sha256 for record in records}
    try:
        for file, relative in pairs:
            progress(f"copying {relative}")
            _copy_file(file, staging / relative, digests[relative])
        (staging / MANIFEST).write_text(sealed.model_dump_json(indent=2), encoding="utf-8")
        fsync_tree(staging)  # the bundle's bytes are on disk before its name is
        replace_directory(staging, destination)
        fsync_directory(destination.parent)
        # The copies were hashed as they were written: a deploy of this bundle reads none again.
        for record in records:
            hashes.remember(destination / record.path, record.sha256)
        return sealed
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _source_files(source: Path, name: str) -> list[tuple[Path, str]]:
    """(file, bundle-relative path) of every file ``source`` puts into the bundle as ``name``."""
    if not source.is_dir():
        return [(source, name)]
    files = (file for file in sorted(source.rglob("*")) if file.is_file())
    return [(file, f"{name}/{file.relative_to(source).as_posix()}") for file in files]


def _record(file: Path, relative: str, hashes: FileHashIndex) -> FileRecord:
    status = file.stat()
    return FileRecord(path=relative, size=status.st_size, sha256=hashes.sha256(file),
                      executable=bool(status.st_mode & 0o111))  # fmt: skip


def _copy_file(file: Path, copied: Path, sha256: str) -> None:
    """Copy ``file``, hashing the bytes written: they must be the ones its record was made of."""
    copied.parent.mkdir(parents=True, exist_ok=True)
    if copy_hashed(file, copied) != sha256:
        raise BundleError(f"{file} changed while the bundle was being written",
                          hint="run the build again once nothing else writes to it")  # fmt: skip
    shutil.copymode(file, copied)  # the runtime binary stays executable


def _current_bundle(destination: Path, bundle_id: str, hashes: FileHashIndex) -> Manifest | None:
    """The manifest at ``destination`` if it is ``bundle_id``'s and its files are intact (checked
    through the hash index: a file whose stat moved is read again), else None."""
    try:
        existing = read_manifest(destination)
    except BundleError:
        return None
    if existing.bundle_id != bundle_id or existing.content_id() != bundle_id:
        return None
    if _payload_files(destination) != [record.path for record in existing.files]:
        return None
    intact = all(
        _entry_kind(destination, r.path) is None
        and _record(destination / r.path, r.path, hashes) == r
        for r in existing.files
    )
    return existing if intact else None


def bundle_summary(manifest: Manifest) -> dict[str, Any]:
    engine_bytes = sum(
        r.size for r in manifest.files if r.path.startswith(manifest.engine_dir + "/")
    )
    return {
        "bundle_id": manifest.bundle_id,
        "model": manifest.model.get("name"),
        "target": manifest.target.get("name"),
        "backend": manifest.recipe.get("backend"),
        "precision": manifest.recipe.get("precision"),
        "engine_bytes": engine_bytes,
        "files": len(manifest.files),
    }


LATEST_POINTER = "state/latest-bundle"


def remember_latest(cache_root: Path, bundle_dir: Path) -> None:
    """Record the newest bundle, which deploy and bench use when --bundle is not given."""
    pointer, target = cache_root / LATEST_POINTER, str(bundle_dir.resolve())
    with contextlib.suppress(OSError):
        if pointer.read_text(encoding="utf-8") == target:
            return  # already so: no write and no fsync
    write_durably(pointer, target.encode())


def latest_bundle(cache_root: Path) -> Path:
    pointer = cache_root / LATEST_POINTER
    if not pointer.is_file():
        raise BundleError(
            "no bundle has been built yet", hint="run `edgepack build` or pass --bundle DIR"
        )
    return Path(pointer.read_text(encoding="utf-8").strip())

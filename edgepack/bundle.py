"""The bundle: a directory with the engine, tokenizer, prompts and a lockfile manifest.

``manifest.json`` records everything needed to reproduce or distrust the bundle: the model source
and its hash, the recipe, every tool version, the target profile hash, the plan, per-stage wall
times, and every file with its size and sha256. The bundle id is the hash of that content, so the
same inputs give the same id. A bundle is written to a temporary sibling and renamed into place
with its manifest, so no half-written directory ever carries one.
"""

from __future__ import annotations

import datetime
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from edgepack.cache import FileHashIndex, content_key, sha256_file
from edgepack.errors import BundleError

MANIFEST = "manifest.json"
ENGINE_DIR = "engine"
PROMPTS_FILE = "prompts.json"
SCHEMA_VERSION = 1
ID_EXCLUDED_FIELDS = {"bundle_id", "created_at"}


class FileRecord(BaseModel):
    path: str
    size: int
    sha256: str
    executable: bool = False
    """Deploy sets the execute bits on the device (SFTP uploads do not carry modes)."""


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
    if not path.is_file():
        raise BundleError(
            f"{bundle_dir} is not a bundle: it has no {MANIFEST}",
            hint="`edgepack build` writes bundles; a directory without a manifest is incomplete",
        )
    try:
        return Manifest.model_validate_json(path.read_text(encoding="utf-8"))
    except ValidationError as exc:
        raise BundleError(f"{path} is not a valid manifest: {exc.errors()[0]['msg']}") from exc


def verify_bundle(bundle_dir: Path) -> Manifest:
    """Recheck every file against the manifest; raise BundleError naming each mismatch."""
    manifest = read_manifest(bundle_dir)
    problems = []
    if manifest.content_id() != manifest.bundle_id:
        problems.append("manifest content does not match its bundle id (the manifest was edited)")
    listed = {record.path for record in manifest.files}
    for record in manifest.files:
        problems += _file_problems(bundle_dir, record)
    for file in _payload_files(bundle_dir):
        if file not in listed:
            problems.append(f"{file}: not in the manifest")
    if problems:
        raise BundleError(
            f"bundle {bundle_dir} fails verification: " + "; ".join(problems),
            hint="rebuild it with `edgepack build` (the cache makes that quick)",
        )
    return manifest


def _file_problems(bundle_dir: Path, record: FileRecord) -> list[str]:
    path = bundle_dir / record.path
    if not path.is_file():
        return [f"{record.path}: missing"]
    size = path.stat().st_size
    if size != record.size:
        return [f"{record.path}: size {size} != {record.size}"]
    if sha256_file(path) != record.sha256:
        return [f"{record.path}: sha256 differs"]
    return []


def _payload_files(bundle_dir: Path) -> list[str]:
    return sorted(
        str(path.relative_to(bundle_dir))
        for path in bundle_dir.rglob("*")
        if path.is_file() and path.name != MANIFEST
    )


def write_bundle(
    destination: Path,
    manifest: Manifest,
    contents: dict[str, Path],
    hashes: FileHashIndex,
    progress: Callable[[str], None] = lambda message: None,
) -> Manifest:
    """Copy ``contents`` (bundle-relative name → file or directory) and seal it with a manifest."""
    destination = destination.resolve()
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = destination.parent / f".{destination.name}.partial-{uuid.uuid4().hex[:8]}"
    try:
        records = []
        for name, source in contents.items():
            progress(f"copying {name}")
            records += _copy_item(source, staging / name, name, hashes)
        sealed = manifest.model_copy(update={"files": sorted(records, key=lambda r: r.path)})
        sealed = sealed.model_copy(
            update={
                "bundle_id": sealed.content_id(),
                "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            }
        )
        (staging / MANIFEST).write_text(sealed.model_dump_json(indent=2), encoding="utf-8")
        _replace_directory(staging, destination)
        return sealed
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _copy_item(source: Path, target: Path, name: str, hashes: FileHashIndex) -> list[FileRecord]:
    if source.is_dir():
        pairs = [
            (
                file,
                target / file.relative_to(source),
                f"{name}/{file.relative_to(source).as_posix()}",
            )
            for file in sorted(source.rglob("*"))
            if file.is_file()
        ]
    else:
        pairs = [(source, target, name)]
    records = []
    for file, copied, relative in pairs:
        copied.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(file, copied)
        shutil.copymode(file, copied)  # the runtime binary stays executable
        status = copied.stat()
        records.append(
            FileRecord(
                path=relative,
                size=status.st_size,
                sha256=hashes.sha256(file),
                executable=bool(status.st_mode & 0o111),
            )
        )
    return records


def _replace_directory(staging: Path, destination: Path) -> None:
    old = None
    if destination.exists():
        old = destination.parent / f".{destination.name}.old-{uuid.uuid4().hex[:8]}"
        destination.rename(old)
    staging.rename(destination)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


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
    pointer = cache_root / LATEST_POINTER
    pointer.parent.mkdir(parents=True, exist_ok=True)
    temporary = pointer.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_text(str(bundle_dir.resolve()), encoding="utf-8")
    temporary.replace(pointer)


def latest_bundle(cache_root: Path) -> Path:
    pointer = cache_root / LATEST_POINTER
    if not pointer.is_file():
        raise BundleError(
            "no bundle has been built yet", hint="run `edgepack build` or pass --bundle DIR"
        )
    return Path(pointer.read_text(encoding="utf-8").strip())

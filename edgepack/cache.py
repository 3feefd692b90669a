"""The content-addressed stage cache.

An entry is a directory named by the hash of everything that affects a stage's output. It is built
in a private temporary directory and renamed into place only when complete, under a per-key lock,
so a failed or interrupted stage never leaves anything that looks like an entry.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

CACHE_DIR_ENV = "EDGEPACK_CACHE_DIR"
ENTRY_FILE = "entry.json"
OUTPUT_DIR = "output"
STALE_TEMP_SECONDS = 24 * 3600


def default_cache_root() -> Path:
    configured = os.environ.get(CACHE_DIR_ENV)
    if configured:
        return Path(configured).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "edgepack"


def content_key(parts: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of ``parts``: equal inputs, equal key, on any machine."""
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class CacheEntry:
    key: str
    path: Path
    metadata: dict[str, Any]

    @property
    def output_dir(self) -> Path:
        return self.path / OUTPUT_DIR

    @property
    def wall_s(self) -> float:
        return float(self.metadata["wall_s"])


class StageCache:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.entries = root / "stages"
        self.temp = root / "tmp"
        self.locks = root / "locks"

    def lookup(self, key: str) -> CacheEntry | None:
        path = self.entries / key
        entry_file = path / ENTRY_FILE
        if not entry_file.is_file():
            return None
        return CacheEntry(key, path, json.loads(entry_file.read_text()))

    def produce(
        self,
        key: str,
        build: Callable[[Path], None],
        metadata: Mapping[str, Any],
        force: bool = False,
    ) -> CacheEntry:
        """Return the entry for ``key``, running ``build(output_dir)`` if there is none.

        With ``force`` the stage runs again and its output replaces the old entry.
        """
        self.locks.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.locks / f"{key}.lock")):
            existing = self.lookup(key)
            if existing is not None and not force:
                return existing
            with self._private_dir(key) as workdir:
                started = time.perf_counter()
                build(workdir / OUTPUT_DIR)
                entry = {
                    **metadata,
                    "key": key,
                    "wall_s": time.perf_counter() - started,
                    "created": time.time(),
                }
                (workdir / ENTRY_FILE).write_text(json.dumps(entry, indent=2, default=str))
                self._install(workdir, self.entries / key)
            found = self.lookup(key)
            assert found is not None  # just installed under the lock
            return found

    def run_uncached(self, build: Callable[[Path], None]) -> float:
        """Run a build in a throw-away directory and return its wall time (for --repeat)."""
        with self._private_dir("repeat") as workdir:
            started = time.perf_counter()
            build(workdir / OUTPUT_DIR)
            return time.perf_counter() - started

    @contextlib.contextmanager
    def _private_dir(self, key: str) -> Iterator[Path]:
        self.temp.mkdir(parents=True, exist_ok=True)
        self._remove_stale_temporaries()
        workdir = self.temp / f"{key}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        (workdir / OUTPUT_DIR).mkdir(parents=True)
        try:
            yield workdir
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def _install(self, workdir: Path, destination: Path) -> None:
        destination.parent.mkdir(parents=True, exist_ok=True)
        if destination.exists():
            doomed = self.temp / f"replaced.{destination.name}.{uuid.uuid4().hex[:8]}"
            destination.rename(doomed)
            shutil.rmtree(doomed, ignore_errors=True)
        workdir.rename(destination)

    def _remove_stale_temporaries(self) -> None:
        """Temporaries of processes that died long ago (a kill -9 skips their cleanup)."""
        cutoff = time.time() - STALE_TEMP_SECONDS
        for leftover in self.temp.iterdir():
            with contextlib.suppress(OSError):
                if leftover.stat().st_mtime < cutoff:
                    shutil.rmtree(leftover, ignore_errors=True)


class FileHashIndex:
    """sha256 of files, remembered by (path, size, mtime) so unchanged files are not re-read."""

    def __init__(self, index_file: Path) -> None:
        self.index_file = index_file
        self._entries: dict[str, dict[str, Any]] = {}
        if index_file.is_file():
            with contextlib.suppress(ValueError):
                self._entries = json.loads(index_file.read_text())
        self._dirty = False

    def sha256(self, path: Path) -> str:
        stat = path.stat()
        resolved = str(path.resolve())
        known = self._entries.get(resolved)
        if known and known["size"] == stat.st_size and known["mtime_ns"] == stat.st_mtime_ns:
            return str(known["sha256"])
        digest = sha256_file(path)
        self._entries[resolved] = {
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
            "sha256": digest,
        }
        self._dirty = True
        return digest

    def save(self) -> None:
        if not self._dirty:
            return
        self.index_file.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.index_file.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps(self._entries))
        temporary.replace(self.index_file)
        self._dirty = False

    def tree_hash(self, directory: Path) -> str:
        """One hash over every file's relative path and content hash."""
        listing = {
            str(file.relative_to(directory)): self.sha256(file)
            for file in sorted(directory.rglob("*"))
            if file.is_file() and not file.name.startswith(".edgepack")
        }
        return content_key(listing)


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()

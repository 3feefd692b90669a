"""The content-addressed stage cache.

An entry is a directory named by the hash of everything that affects a stage's output. It is built
in a private temporary directory and renamed into place only when complete, under a per-key lock,
so a failed or interrupted stage never leaves anything that looks like an entry.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
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

CACHE_DIR_ENV = "EDGEPACK_CACHE_DIR"
ENTRY_FILE = "entry.json"
OUTPUT_DIR = "output"
STALE_TEMP_SECONDS = 24 * 3600
HASH_INDEX_FILE = "file-hashes.json"
"""The cache root's :class:`FileHashIndex`."""


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
        from filelock import FileLock  # not needed by commands that only read the cache (deploy)

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
        fsync_tree(workdir)
        replace_directory(workdir, destination)
        fsync_directory(destination.parent)

    def _remove_stale_temporaries(self) -> None:
        """Temporaries of processes that died long ago (a kill -9 skips their cleanup)."""
        cutoff = time.time() - STALE_TEMP_SECONDS
        for leftover in self.temp.iterdir():
            with contextlib.suppress(OSError):
                if leftover.stat().st_mtime < cutoff:
                    shutil.rmtree(leftover, ignore_errors=True)


class FileHashIndex:
    """sha256 of files, remembered by what ``stat`` says of them: unchanged files are not re-read.

    An entry holds for a path while its size, mtime, ctime and inode are what they were when it was
    hashed: a rewrite that restores the size and mtime (``touch -d``, a copy keeping times) still
    moves the ctime, and a file replaced by rename has a new inode.
    """

    def __init__(self, index_file: Path) -> None:
        self.index_file = index_file
        self._entries: dict[str, dict[str, Any]] = {}
        if index_file.is_file():
            with contextlib.suppress(ValueError):
                self._entries = json.loads(index_file.read_text())
        self._dirty = False

    @staticmethod
    def fingerprint(stat: os.stat_result) -> dict[str, int]:
        return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                "ctime_ns": stat.st_ctime_ns, "inode": stat.st_ino}  # fmt: skip

    def sha256(self, path: Path) -> str:
        resolved = os.path.realpath(path)
        fingerprint = self.fingerprint(Path(resolved).stat())
        known = self._entries.get(resolved)
        if known and all(known.get(field) == value for field, value in fingerprint.items()):
            return str(known["sha256"])
        digest = sha256_file(path)
        self._entries[resolved] = {**fingerprint, "sha256": digest}
        self._dirty = True
        return digest

    def remember(self, path: Path, sha256: str) -> None:
        """Record ``sha256`` as the content of ``path`` as it stands now (its writer hashed it)."""
        resolved = os.path.realpath(path)
        self._entries[resolved] = {**self.fingerprint(Path(resolved).stat()), "sha256": sha256}
        self._dirty = True

    def save(self) -> None:
        if not self._dirty:
            return
        write_durably(self.index_file, json.dumps(self._entries).encode())
        self._dirty = False

    def tree_hash(self, directory: Path) -> str:
        """One hash over every file's relative path and content hash."""
        listing = {
            str(file.relative_to(directory)): self.sha256(file)
            for file in sorted(directory.rglob("*"))
            if file.is_file() and not file.name.startswith(".edgepack")
        }
        return content_key(listing)


HASH_CHUNK_BYTES = 1 << 20


def sha256_file(path: Path, chunk_size: int = HASH_CHUNK_BYTES) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_range(path: Path, start: int, length: int) -> str:
    """sha256 of ``length`` bytes of ``path`` from ``start`` (fewer where the file ends first)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        handle.seek(start)
        remaining = length
        while remaining > 0 and (chunk := handle.read(min(remaining, HASH_CHUNK_BYTES))):
            digest.update(chunk)
            remaining -= len(chunk)
    return digest.hexdigest()


def copy_hashed(source: Path, target: Path) -> str:
    """Copy ``source`` to ``target``; the sha256 of the bytes written."""
    digest = hashlib.sha256()
    with source.open("rb") as reading, target.open("wb") as writing:
        while chunk := reading.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
            writing.write(chunk)
    return digest.hexdigest()


# --- durable writes: what a power loss cannot tear ---------------------------------------------

RENAME_EXCHANGE = 2
"""renameat2(2) flag: swap two paths atomically (Linux 3.15+, glibc 2.28+)."""
AT_FDCWD = -100


def fsync_path(path: Path) -> None:
    """Flush one file's or directory's data and metadata to the disk."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0)
    descriptor = os.open(path, flags)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def fsync_directory(directory: Path) -> None:
    """The directory's entries (a rename into it) are on the disk."""
    fsync_path(directory)


def fsync_tree(root: Path) -> None:
    """Every regular file and directory under ``root`` (``root`` included), files first."""
    directories: list[Path] = []
    for parent, _, files in os.walk(root):
        for name in files:
            file = Path(parent) / name
            if file.is_file() and not file.is_symlink():
                fsync_path(file)
        directories.append(Path(parent))
    for directory in reversed(directories):
        fsync_path(directory)


def write_durably(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: written to a sibling, flushed, renamed, directory flushed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with temporary.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        temporary.replace(path)
    finally:
        temporary.unlink(missing_ok=True)
    fsync_directory(path.parent)


def _exchange(first: Path, second: Path) -> bool:
    """Swap two existing paths in one step; False where the kernel or libc cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = (
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    )
    status = renameat2(AT_FDCWD, os.fsencode(first), AT_FDCWD, os.fsencode(second), RENAME_EXCHANGE)
    if status == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(first))


def replace_directory(staging: Path, destination: Path) -> None:
    """Put ``staging`` at ``destination`` in one step: an existing ``destination`` is swapped out
    atomically (renameat2 RENAME_EXCHANGE) and removed, so no reader ever finds it missing or
    half-written. Where the exchange is unavailable, two renames leave a short window without
    one."""
    if not destination.exists():
        staging.rename(destination)
        return
    if _exchange(staging, destination):
        shutil.rmtree(staging, ignore_errors=True)  # now holds the old content
        return
    old = destination.parent / f".{destination.name}.old-{uuid.uuid4().hex[:8]}"
    destination.rename(old)
    staging.rename(destination)
    shutil.rmtree(old, ignore_errors=True)

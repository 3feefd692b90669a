"""Downloaded wheels are pinned by their sha256: trust on first download, verified ever after.

The first download of a set of requirements (for one platform and Python) records every file it
fetched, with its sha256, in a lock under the cache, in pip's requirements format
(``name==version --hash=sha256:…``). Every later download of that set is
``pip download --require-hashes --no-deps -r LOCK``: pip itself refuses a file whose hash differs,
so a wheel changed upstream (or in a --wheelhouse) never reaches a bundle. The lock travels in the
bundle too (``wheels/requirements.lock``), and every wheel and library is a bundle file whose
sha256 the manifest records.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from edgepack.cache import content_key, write_durably
from edgepack.errors import ToolFailedError
from edgepack.process import run_tool

LOCKS_DIR = "locks"
LOCK_NAME = "requirements.lock"
HASH_MISMATCH = "DO NOT MATCH THE HASHES"


def lock_path(cache_root: Path, kind: str, parts: Mapping[str, object]) -> Path:
    """The lock of one download set: ``<cache>/locks/<kind>-<key>.lock``."""
    return cache_root / LOCKS_DIR / f"{kind}-{content_key(parts)[:20]}.lock"


def wheel_requirement(wheel: Path) -> tuple[str, str]:
    """``(name==version, sha256)`` of a wheel file (PEP 427 file name)."""
    name, version = wheel.name.split("-")[:2]
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    return f"{re.sub(r'[-_.]+', '-', name).lower()}=={version}", digest


def lock_text(wheels: Sequence[Path]) -> str:
    hashes: dict[str, list[str]] = {}
    for wheel in sorted(wheels):
        requirement, digest = wheel_requirement(wheel)
        hashes.setdefault(requirement, []).append(digest)
    lines = [
        " ".join([requirement, *(f"--hash=sha256:{d}" for d in sorted(digests))])
        for requirement, digests in sorted(hashes.items())
    ]
    return "\n".join(lines) + "\n"


def locked_download(
    pip_download: Sequence[str],
    requirements: Sequence[str],
    destination: Path,
    lock: Path,
    log: Callable[[str], None],
    install_hint: str,
) -> list[Path]:
    """Download into ``destination`` with ``pip_download`` (``pip download`` and its options, no
    requirements): verified against ``lock`` when it exists, else recording it. Returns the
    wheels fetched."""
    destination.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=destination, prefix=".download-") as scratch:
        fetched = Path(scratch)
        command = [*pip_download, "--dest", str(fetched)]
        if lock.is_file():
            _verified(command, lock, log, install_hint)
        else:
            run_tool([*command, *requirements], install_hint=install_hint, log=log)
            write_durably(lock, lock_text(sorted(fetched.glob("*.whl"))).encode())
        wheels = []
        for wheel in sorted(fetched.glob("*.whl")):
            target = destination / wheel.name
            shutil.move(str(wheel), target)
            wheels.append(target)
    return wheels


def read_lock(lock: Path) -> dict[str, set[str]]:
    """requirement → the sha256 digests the lock allows for it."""
    allowed: dict[str, set[str]] = {}
    for line in lock.read_text(encoding="utf-8").splitlines():
        requirement, *options = line.split()
        allowed[requirement] = {o.removeprefix("--hash=sha256:") for o in options}
    return allowed


def check_against_lock(wheels: Sequence[Path], lock: Path) -> None:
    """Refuse a wheel (say, one cached earlier) whose sha256 is not the one ``lock`` records."""
    if not lock.is_file():
        return
    allowed = read_lock(lock)
    for wheel in wheels:
        requirement, digest = wheel_requirement(wheel)
        if requirement in allowed and digest not in allowed[requirement]:
            raise ToolFailedError(
                f"{wheel} differs from the {requirement} recorded in {lock} (sha256 {digest}); "
                "refusing it",
                hint="delete the file to fetch it again; if the change is expected, check it, "
                "then delete the lock to trust the new file",
            )


def _verified(command: list[str], lock: Path, log: Callable[[str], None], hint: str) -> None:
    try:
        run_tool([*command, "--require-hashes", "--no-deps", "-r", str(lock)],
                 install_hint=hint, log=log)  # fmt: skip
    except ToolFailedError as error:
        output = error.detail or error.message  # pip's whole output
        if HASH_MISMATCH not in output:
            raise
        raise ToolFailedError(
            "a downloaded wheel differs from the one recorded when it was first fetched "
            f"(sha256 mismatch against {lock}); refusing it: " + _mismatch_lines(output),
            hint="if the change is expected (a re-uploaded release), check it, then delete the "
            "lock to trust the new file",
        ) from error


def _mismatch_lines(message: str) -> str:
    lines = [line.strip() for line in message.splitlines()]
    found = [line for line in lines if line.startswith(("Expected", "Got")) or ".whl" in line]
    return "; ".join(found[:6]) or "see the log"

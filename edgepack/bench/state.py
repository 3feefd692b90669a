"""Where runners keep what they learn on a machine (TensorRT-RTX's runtime cache of JIT-compiled
kernels, anything else): a per-machine state directory, never the release or the bundle, which
must stay exactly what was verified (a file written there fails `bundle verify` and makes the next
deploy "repair" the release).

``$EDGEPACK_STATE_DIR`` when set (the remote bench points it at ``<deploy root>/state``), else
``<cache>/state``. Each runner's state is keyed by what it depends on: the engine's sha256 as the
bundle's manifest records it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from edgepack.cache import default_cache_root

STATE_DIR_ENV = "EDGEPACK_STATE_DIR"
MANIFEST = "manifest.json"


def state_root() -> Path:
    configured = os.environ.get(STATE_DIR_ENV)
    return Path(configured).expanduser() if configured else default_cache_root() / "state"


def engine_identity(engine_file: Path) -> str:
    """The engine's sha256 from the manifest of the bundle it sits in, else one of its path."""
    for parent in engine_file.parents:
        manifest = parent / MANIFEST
        if manifest.is_file():
            relative = engine_file.relative_to(parent).as_posix()
            try:
                records = json.loads(manifest.read_text(encoding="utf-8"))["files"]
            except (ValueError, KeyError, OSError):
                break
            for record in records:
                if record.get("path") == relative:
                    return str(record["sha256"])
            break
    return hashlib.sha256(str(engine_file.resolve()).encode()).hexdigest()


def runner_state_file(runner: str, engine_file: Path, name: str) -> Path:
    """``<state>/<runner>/<engine identity>/<name>``, its directory made."""
    directory = state_root() / runner / engine_identity(engine_file)[:32]
    directory.mkdir(parents=True, exist_ok=True)
    return directory / name

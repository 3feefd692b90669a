"""One isolated Python environment per toolchain and version: a tool's pins never fight edgepack's.

TensorRT Edge-LLM's ``[export]`` extra pins torch, transformers, onnx and numpy to exact versions
that differ from edgepack's own (and from the user's). A toolchain's programs therefore run from a
virtual environment of their own: created on first use from the pinned requirements (with ``uv``:
33 s for Edge-LLM's 1.85 GB here, against 170 s with pip), reused after, and recorded — its key,
pins and the versions actually installed — so a bundle's manifest says exactly what made it.

An environment lives under ``$EDGEPACK_TOOLENV_DIR`` or ``<cache>/toolenvs/<name>-<version>-<key>``
and counts as present only once its record is written (last, under a lock): an interrupted creation
is removed and redone. It is made in place because a venv cannot be moved (its scripts name their
interpreter by absolute path).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from edgepack.cache import content_key, default_cache_root
from edgepack.errors import ToolMissingError
from edgepack.process import OFFLINE_HUB, run_tool

TOOLENV_DIR_ENV = "EDGEPACK_TOOLENV_DIR"
RECORD_FILE = "edgepack-toolenv.json"
UV_HINT = "pip install uv (edgepack creates tool environments with it)"
# pip's index settings, passed on to uv where the user has not configured uv itself (uv does not
# read pip's configuration).
PIP_TO_UV = (
    ("PIP_INDEX_URL", "UV_INDEX_URL", "--index-url"),
    ("PIP_EXTRA_INDEX_URL", "UV_EXTRA_INDEX_URL", "--extra-index-url"),
    ("PIP_FIND_LINKS", "UV_FIND_LINKS", "--find-links"),
)


@dataclass(frozen=True)
class ToolEnvSpec:
    """What an environment is made of: every requirement pinned."""

    name: str
    version: str
    requirements: tuple[str, ...]
    python: str = f"{sys.version_info.major}.{sys.version_info.minor}"

    @property
    def key(self) -> str:
        return content_key(
            {
                "name": self.name,
                "version": self.version,
                "python": self.python,
                "requirements": sorted(self.requirements),
                "platform": sys.platform,
            }
        )[:16]

    @property
    def folder_name(self) -> str:
        return f"{self.name}-{self.version}-{self.key}"


@dataclass(frozen=True)
class ToolEnv:
    spec: ToolEnvSpec
    path: Path
    record: dict[str, Any]

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    def program(self, name: str) -> Path:
        return self.path / "bin" / name

    def manifest_record(self) -> dict[str, Any]:
        """What a bundle keeps: the pins, what was installed, and how long creation took."""
        keep = (
            "name",
            "version",
            "key",
            "python",
            "requirements",
            "installed",
            "size_bytes",
            "created_s",
            "installer",
        )
        return {name: self.record[name] for name in keep if name in self.record}


def toolenv_root(cache_root: Path | None = None) -> Path:
    configured = os.environ.get(TOOLENV_DIR_ENV)
    if configured:
        return Path(configured).expanduser()
    return (cache_root or default_cache_root()) / "toolenvs"


def find_uv() -> str:
    """The ``uv`` binary of the ``uv`` Python package, else one on PATH."""
    with contextlib.suppress(ImportError, FileNotFoundError):
        import uv

        return str(uv.find_uv_bin())
    found = shutil.which("uv")
    if found is None:
        raise ToolMissingError("uv is not installed", hint=UV_HINT)
    return found


def ensure_toolenv(
    spec: ToolEnvSpec, root: Path | None = None, log: Callable[[str], None] = lambda _: None
) -> ToolEnv:
    """The environment for ``spec``: the existing one, or a new one made now."""
    base = root or toolenv_root()
    path = base / spec.folder_name
    base.mkdir(parents=True, exist_ok=True)
    with FileLock(str(base / f"{spec.folder_name}.lock")):
        existing = read_toolenv(spec, path)
        if existing is not None:
            return existing
        shutil.rmtree(path, ignore_errors=True)  # an interrupted creation
        try:
            record = _create(spec, path, base, log)
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)
            raise
        (path / RECORD_FILE).write_text(json.dumps(record, indent=2), encoding="utf-8")
        return ToolEnv(spec, path, record)


def read_toolenv(spec: ToolEnvSpec, path: Path) -> ToolEnv | None:
    record_file = path / RECORD_FILE
    if not record_file.is_file():
        return None
    with contextlib.suppress(ValueError):
        record = json.loads(record_file.read_text(encoding="utf-8"))
        if record.get("key") == spec.key:
            return ToolEnv(spec, path, record)
    return None


def _create(
    spec: ToolEnvSpec, path: Path, base: Path, log: Callable[[str], None]
) -> dict[str, Any]:
    uv = find_uv()
    env = _uv_environment(base)
    started = time.perf_counter()
    log(f"creating the {spec.name} {spec.version} tool environment in {path} (once)")
    run_tool(
        [uv, "venv", "--quiet", "--python", sys.executable, str(path)],
        install_hint=UV_HINT,
        log=log,
        env=env,
    )
    python = str(path / "bin" / "python")
    requirements = path / "requirements.txt"
    requirements.write_text("\n".join(spec.requirements) + "\n", encoding="utf-8")
    install = [uv, "pip", "install", "--python", python, "--requirement", str(requirements)]
    run_tool([*install, *_index_arguments()], install_hint=UV_HINT, log=log, env=env)
    created_s = time.perf_counter() - started
    return {
        "name": spec.name,
        "version": spec.version,
        "key": spec.key,
        "python": spec.python,
        "requirements": list(spec.requirements),
        "installed": _installed(uv, python, env),
        "size_bytes": _tree_size(path),
        "created_s": round(created_s, 1),
        "installer": "uv",
        "created": time.time(),
    }


def _uv_environment(base: Path) -> dict[str, str]:
    """uv's download cache beside the environments (same filesystem: it hard-links from it)."""
    env = {"UV_NO_PROGRESS": "1"}
    if "UV_CACHE_DIR" not in os.environ:
        env["UV_CACHE_DIR"] = str(base / "uv-cache")
    return env


def _index_arguments() -> list[str]:
    arguments: list[str] = []
    for pip_name, uv_name, flag in PIP_TO_UV:
        value = os.environ.get(pip_name)
        if value and uv_name not in os.environ:
            for item in value.split():
                arguments += [flag, item]
    return arguments


def _installed(uv: str, python: str, env: dict[str, str]) -> dict[str, str]:
    output = run_tool(
        [uv, "pip", "list", "--python", python, "--format", "json"],
        install_hint=UV_HINT,
        log=lambda _: None,
        env=env,
    )
    start = output.find("[")
    listing = json.loads(output[start:]) if start >= 0 else []
    return {item["name"]: item["version"] for item in listing}


def _tree_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def tool_variables(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The variables a tool runs with: offline Hugging Face, nothing of edgepack's or the user's
    Python path leaking into the environment."""
    return {
        **OFFLINE_HUB,
        "PYTHONNOUSERSITE": "1",
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": "",
        **(extra or {}),
    }

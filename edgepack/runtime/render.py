"""Render a runtime's CMake project: its templates for one backend plus the hand-written C++ of
``cpp_runtime/`` (``CMakeLists.txt``, ``toolchain.cmake``, ``src/``)."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from edgepack.errors import BadInputError
from edgepack.resources import data_dir
from edgepack.runtime.spec import RENDERED_BACKENDS, RuntimeSpec

if TYPE_CHECKING:
    import jinja2


def c_string_literal(text: str) -> str:
    """A C++ string literal holding ``text`` (the one filter the templates use)."""
    return json.dumps(text, ensure_ascii=True)


def template_environment() -> jinja2.Environment:
    import jinja2

    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(data_dir("templates"))),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    environment.filters["c_string"] = c_string_literal
    return environment


def project_templates(backend: str) -> dict[str, str]:
    """Rendered file (relative to the project) → template name, for one backend."""
    if backend not in RENDERED_BACKENDS:
        raise BadInputError(
            f"no C++ runtime templates for backend {backend!r}",
            hint=f"runtimes exist for {', '.join(RENDERED_BACKENDS)}",
        )
    root = data_dir("templates")
    files = {}
    for folder in ("common", backend):
        for path in sorted((root / folder).rglob("*.j2")):
            files[path.relative_to(root / folder).with_suffix("").as_posix()] = path.relative_to(
                root
            ).as_posix()
    return files


def render_files(spec: RuntimeSpec) -> dict[str, str]:
    """The rendered text of each generated file of the project."""
    environment = template_environment()
    variables = asdict(spec)
    return {
        name: environment.get_template(template).render(variables)
        for name, template in project_templates(spec.backend).items()
    }


def render_project(spec: RuntimeSpec, destination: Path) -> list[Path]:
    """Write the CMake project of ``spec`` to ``destination``: rendered files + cpp_runtime/."""
    written = []
    for name, text in render_files(spec).items():
        path = destination / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    shared = destination / "cpp_runtime"
    for folder in ("include", "src", "tests"):
        shutil.copytree(data_dir("cpp_runtime") / folder, shared / folder, dirs_exist_ok=True)
    return written


def sources_hash(backend: str) -> str:
    """Hash of the templates and hand-written C++ a backend's runtime is made of (a cache key)."""
    digest = hashlib.sha256()
    templates = data_dir("templates")
    shared = data_dir("cpp_runtime")
    files = [templates / name for name in project_templates(backend).values()]
    files += sorted((templates / "partials").rglob("*.j2"))
    files += sorted(path for path in shared.rglob("*") if path.is_file())
    for path in files:
        digest.update(path.as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()

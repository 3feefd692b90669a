"""The C++ runtime: rendered from ``templates/`` for a backend and a target, built for the target.

:class:`RuntimeSpec` is the codegen model: every template variable is one of its fields and all of
them come from the plan and the target profile, so no SM, CUDA version or compiler triple is
written anywhere else. A rendered project is a small CMake project (``CMakeLists.txt``,
``toolchain.cmake``, ``src/``) plus the hand-written C++ of ``cpp_runtime/``.

Builds run CMake with the generated toolchain file: ``native`` on this host, ``cross`` with the
target triple's cross compiler (Debian's ``g++-aarch64-linux-gnu``), ``container`` in the cross
image of the top-level Dockerfile. The target's ONNX Runtime libraries come from the pip wheels of
the target's architecture.
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import sys
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from edgepack.errors import BadInputError, ToolMissingError
from edgepack.process import run_tool
from edgepack.resources import data_dir

if TYPE_CHECKING:
    import jinja2

    from edgepack.backends.base import Stage
    from edgepack.plan import Limits, Plan
    from edgepack.targets import TargetProfile

RuntimeMode = Literal["none", "native", "cross", "container"]
RUNTIME_MODES: tuple[RuntimeMode, ...] = ("none", "native", "cross", "container")
RENDERED_BACKENDS = ("ort", "edgellm", "trtllm")
SELF_TEST_PROMPT = "What is the capital of France?"
SELF_TEST_TOKENS = 16
BUILD_INFO = "build-info.json"
SOURCE_DIR = "src"
BINARY = "bin/edgepack-runtime"
WHEEL_PLATFORM = "manylinux_2_28"
"""The manylinux tag of the onnxruntime(-genai) Linux wheels for x86_64 and aarch64."""
BUILD_JOBS = "2"


@dataclass(frozen=True)
class RuntimeSpec:
    """The codegen model: what the templates may use, and nothing else."""

    backend: str
    target_name: str
    arch: str
    compiler_triple: str
    cmake_system_processor: str
    sm: str | None
    cuda_arch: str | None
    compute_capability: int | None
    cuda_version: str | None
    tensorrt_version: str | None
    embedded_target: str | None
    sysroot: str | None
    model_name: str
    precision: str
    kv_cache_dtype: str
    max_batch_size: int
    max_input_len: int
    max_seq_len: int
    self_test_prompt: str = SELF_TEST_PROMPT
    self_test_tokens: int = SELF_TEST_TOKENS

    @classmethod
    def for_target(
        cls,
        target: TargetProfile,
        *,
        backend: str,
        model_name: str,
        precision: str,
        kv_cache_dtype: str,
        limits: Limits,
        sysroot: str | None = None,
    ) -> RuntimeSpec:
        gpu, toolchain = target.gpu, target.toolchain
        return cls(
            backend=backend,
            target_name=target.name,
            arch=target.arch,
            compiler_triple=toolchain.compiler_triple,
            cmake_system_processor=toolchain.cmake_system_processor,
            sm=gpu.sm if gpu else None,
            cuda_arch=gpu.cuda_arch if gpu else None,
            compute_capability=int(gpu.compute_capability.replace(".", "")) if gpu else None,
            cuda_version=toolchain.cuda,
            tensorrt_version=toolchain.tensorrt,
            embedded_target=toolchain.embedded_target,
            sysroot=sysroot,
            model_name=model_name,
            precision=precision,
            kv_cache_dtype=kv_cache_dtype,
            max_batch_size=limits.max_batch_size,
            max_input_len=limits.max_input_len,
            max_seq_len=limits.max_seq_len,
        )

    @classmethod
    def from_plan(cls, plan: Plan, sysroot: str | None = None) -> RuntimeSpec:
        return cls.for_target(
            plan.target,
            backend=plan.backend,
            model_name=plan.model.name,
            precision=plan.precision,
            kv_cache_dtype=plan.kv_cache_dtype,
            limits=plan.limits,
            sysroot=sysroot,
        )


@dataclass(frozen=True)
class RuntimeBuild:
    """How the runtime stage builds: the mode, and a sysroot for targets that need one."""

    mode: RuntimeMode
    sysroot: str | None = None
    cache_root: Path | None = None
    """Where downloaded wheels and extracted libraries are kept; default: the edgepack cache."""


def host_arch() -> str:
    machine = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)


COMPILABLE_HERE = ("ort",)
"""Backends whose runtime compiles on a host without their SDK (the others only render)."""


def default_mode(target: TargetProfile, backend: str = "ort") -> RuntimeMode:
    """Native where this host has the target's architecture, else a cross build; none for a
    backend whose runtime needs an SDK this host cannot have (``edgepack runtime render``)."""
    if backend not in COMPILABLE_HERE:
        return "none"
    return "native" if target.arch == host_arch() else "cross"


# ---- rendering ---------------------------------------------------------------------------------


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


# ---- building ----------------------------------------------------------------------------------


def _compiler_hint(triple: str) -> str:
    return f"apt-get install g++-{triple.replace('_', '-')} (Debian/Ubuntu)"


LIBRARY_HEADERS = {"nlohmann/json.hpp": "nlohmann-json3-dev", "CLI/CLI.hpp": "libcli11-dev"}
"""The header-only libraries of the runtime → their Debian package; architecture-independent, so
a cross build takes them from this host (the CMake project links in only their folders)."""
HEADER_ROOT = Path("/usr/include")


def check_library_headers(sysroot: str | None, root: Path = HEADER_ROOT) -> None:
    """Raise when a library header is neither under ``root`` nor in the sysroot's /usr/include."""
    roots = [root] + ([Path(sysroot) / "usr" / "include"] if sysroot else [])
    for header, package in LIBRARY_HEADERS.items():
        if not any((folder / header).is_file() for folder in roots):
            raise ToolMissingError(
                f"{header} is missing: the C++ runtime needs the Debian package {package}",
                hint=f"apt-get install {package}",
            )


def check_build_tools(spec: RuntimeSpec, mode: RuntimeMode) -> None:
    """Raise before any work when this host cannot build ``spec`` in ``mode``."""
    if mode == "native" and spec.arch != host_arch():
        raise BadInputError(
            f"a native build on this {host_arch()} host cannot produce a {spec.arch} runtime "
            f"for {spec.target_name}",
            hint="use --runtime cross (or container)",
        )
    if mode in ("native", "cross"):
        for program, hint in (
            ("cmake", "apt-get install cmake"),
            (f"{spec.compiler_triple}-g++", _compiler_hint(spec.compiler_triple)),
        ):
            if shutil.which(program) is None:
                raise ToolMissingError(f"{program} is not installed", hint=hint)
        check_library_headers(spec.sysroot)


def build_runtime(
    spec: RuntimeSpec,
    mode: RuntimeMode,
    output_dir: Path,
    *,
    cache_root: Path,
    log: Callable[[str], None] = lambda line: None,
) -> dict[str, Any]:
    """Render, configure, compile and install the runtime into ``output_dir``.

    ``output_dir`` gets ``bin/``, ``lib/``, the rendered sources in ``src/`` and the build info.
    """
    if spec.backend != "ort":
        raise ToolMissingError(
            f"the {spec.backend} runtime compiles only where its SDK is installed",
            hint="`edgepack runtime render` writes its CMake project to build on such a machine",
        )
    check_build_tools(spec, mode)
    libraries = ort_libraries(spec.arch, cache_root, log)
    source = output_dir / SOURCE_DIR
    render_project(spec, source)
    scratch = output_dir.parent / f"{output_dir.name}.cmake-build"
    started = _now()
    try:
        if mode == "container":
            from edgepack.container import build_in_container

            build_in_container(source, libraries, output_dir, log=log)
        else:
            cmake_build(source, scratch, libraries, output_dir, log=log)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    info = _build_info(spec, mode, output_dir, _now() - started)
    (output_dir / BUILD_INFO).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info


def cmake_commands(
    source: Path, build: Path, libraries: Path, prefix: Path, *, ninja: bool
) -> list[list[str]]:
    """Configure, build and install with the project's own toolchain file."""
    generator = ["-G", "Ninja"] if ninja else []
    return [
        [
            "cmake",
            "-S",
            str(source),
            "-B",
            str(build),
            *generator,
            f"-DCMAKE_TOOLCHAIN_FILE={source / 'toolchain.cmake'}",
            f"-DEDGEPACK_ORT_LIB_DIR={libraries}",
            "-DCMAKE_BUILD_TYPE=Release",
        ],
        ["cmake", "--build", str(build), "--parallel", BUILD_JOBS],
        ["cmake", "--install", str(build), "--prefix", str(prefix)],
    ]


def cmake_build(
    source: Path, build: Path, libraries: Path, prefix: Path, log: Callable[[str], None]
) -> None:
    ninja = shutil.which("ninja") is not None
    for command in cmake_commands(source, build, libraries, prefix, ninja=ninja):
        run_tool(command, install_hint="apt-get install cmake g++", log=log)


def _now() -> float:
    import time

    return time.perf_counter()


def _build_info(
    spec: RuntimeSpec, mode: RuntimeMode, output_dir: Path, wall_s: float
) -> dict[str, Any]:
    binary = output_dir / BINARY
    return {
        "backend": spec.backend,
        "target": spec.target_name,
        "arch": spec.arch,
        "mode": mode,
        "compiler": spec.compiler_triple + "-g++",
        "wall_s": round(wall_s, 3),
        "binary": BINARY,
        "binary_bytes": binary.stat().st_size,
        "libraries": sorted(path.name for path in (output_dir / "lib").iterdir()),
    }


# ---- the target's ONNX Runtime libraries ---------------------------------------------------------

ORT_LIBRARIES = {
    "onnxruntime-genai": ("onnxruntime_genai/libonnxruntime-genai.so", "libonnxruntime-genai.so"),
    "onnxruntime": ("onnxruntime/capi/libonnxruntime.so.", "libonnxruntime.so.1"),
}
"""Distribution → (path prefix of the library inside its wheel, the name the runtime loads)."""


def ort_versions() -> dict[str, str]:
    import importlib.metadata

    versions = {}
    for distribution in ORT_LIBRARIES:
        try:
            versions[distribution] = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError as error:
            raise ToolMissingError(
                f"{distribution} is not installed; its version picks the target's libraries",
                hint="pip install 'edgepack[ort]'",
            ) from error
    return versions


def ort_libraries(arch: str, cache_root: Path, log: Callable[[str], None]) -> Path:
    """A directory with the ``arch`` builds of libonnxruntime-genai.so and libonnxruntime.so.1,
    the versions installed here, taken from their wheels (downloaded once, cached)."""
    versions = ort_versions()
    tag = "-".join(f"{name}-{version}" for name, version in versions.items())
    directory = cache_root / "runtime-libs" / f"{tag}-{arch}"
    if all((directory / name).is_file() for _, name in ORT_LIBRARIES.values()):
        return directory
    partial = directory.with_name(directory.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    if arch == host_arch():
        for member_prefix, name in ORT_LIBRARIES.values():
            shutil.copyfile(installed_file(member_prefix), partial / name)
    else:
        wheels = download_wheels(versions, arch, cache_root / "wheels", log)
        for distribution, (member_prefix, name) in ORT_LIBRARIES.items():
            extract_member(wheels[distribution], member_prefix, partial / name)
    shutil.rmtree(directory, ignore_errors=True)
    partial.rename(directory)
    return directory


def installed_file(member_prefix: str) -> Path:
    """The installed file (of this host's architecture) at ``member_prefix``* in site-packages."""
    import importlib.util

    package, _, rest = member_prefix.partition("/")
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ToolMissingError(f"{package} is not installed", hint="pip install 'edgepack[ort]'")
    site = Path(spec.origin).parent.parent
    matches = sorted(site.glob(member_prefix + "*"))
    if not matches:
        raise ToolMissingError(f"the installed {package} has no {rest}*", hint="reinstall it")
    return matches[0]


def wheel_platform(arch: str) -> str:
    return f"{WHEEL_PLATFORM}_{arch}"


def download_wheels(
    versions: dict[str, str], arch: str, directory: Path, log: Callable[[str], None]
) -> dict[str, Path]:
    """The wheels of ``versions`` for Linux on ``arch`` (CPython of this interpreter)."""
    directory.mkdir(parents=True, exist_ok=True)
    missing = [
        f"{name}=={version}"
        for name, version in versions.items()
        if _find_wheel(directory, name, version, arch) is None
    ]
    if missing:
        python = f"{sys.version_info.major}.{sys.version_info.minor}"
        # fmt: off
        command = [
            sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--no-deps",
            "--platform", wheel_platform(arch), "--python-version", python,
            "--dest", str(directory), *missing,
        ]
        # fmt: on
        run_tool(
            command,
            install_hint="pip comes with Python; the wheels need network access to PyPI once",
            log=log,
        )
    wheels = {}
    for name, version in versions.items():
        wheel = _find_wheel(directory, name, version, arch)
        if wheel is None:
            raise ToolMissingError(
                f"pip downloaded no {arch} wheel of {name}=={version}",
                hint=f"check that PyPI has a {wheel_platform(arch)} wheel of that version",
            )
        wheels[name] = wheel
    return wheels


def _find_wheel(directory: Path, name: str, version: str, arch: str) -> Path | None:
    stem = f"{name.replace('-', '_')}-{version}-"
    matches = sorted(p for p in directory.glob(f"{stem}*.whl") if p.name.endswith(f"_{arch}.whl"))
    return matches[-1] if matches else None


def extract_member(wheel: Path, member_prefix: str, destination: Path) -> None:
    """Copy the one file of ``wheel`` whose path starts with ``member_prefix``."""
    with zipfile.ZipFile(wheel) as archive:
        members = [name for name in archive.namelist() if name.startswith(member_prefix)]
        if len(members) != 1:
            raise BadInputError(
                f"{wheel.name} holds {len(members)} files matching {member_prefix}*, expected 1"
            )
        with archive.open(members[0]) as source, destination.open("wb") as target:
            shutil.copyfileobj(source, target)


# ---- the pipeline stage --------------------------------------------------------------------------


def runtime_stage(plan: Plan, build: RuntimeBuild) -> Stage:
    """The backend's runtime stage (only ort compiles on this kind of host)."""
    if plan.backend not in COMPILABLE_HERE:
        raise ToolMissingError(
            f"the {plan.backend} runtime cannot be compiled here: it needs the backend's SDK",
            hint="build with --runtime none; `edgepack runtime render` writes its sources",
        )
    from edgepack.backends.ort import runtime_stage as ort_runtime_stage

    return ort_runtime_stage(plan, build)

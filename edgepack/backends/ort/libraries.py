"""The target's ONNX Runtime libraries for the C++ runtime: ``libonnxruntime-genai.so`` and
``libonnxruntime.so.1`` of the versions installed here, taken from the pip wheels of the target's
architecture (downloaded once, cached)."""

from __future__ import annotations

import shutil
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

from edgepack.errors import BadInputError, ToolMissingError
from edgepack.runtime.spec import host_arch
from edgepack.wheel_lock import check_against_lock, lock_path, locked_download

WHEEL_PLATFORM = "manylinux_2_28"
"""The manylinux tag of the onnxruntime(-genai) Linux wheels for x86_64 and aarch64."""

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
        wheels = download_wheels(versions, arch, cache_root / "wheels", log, cache_root)
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
    versions: dict[str, str],
    arch: str,
    directory: Path,
    log: Callable[[str], None],
    cache_root: Path,
) -> dict[str, Path]:
    """The wheels of ``versions`` for Linux on ``arch`` (CPython of this interpreter), their
    hashes locked at first download and checked ever after (wheel_lock)."""
    directory.mkdir(parents=True, exist_ok=True)
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    lock = lock_path(cache_root, "ort-libraries", {"versions": versions, "arch": arch,
                                                    "python": python})  # fmt: skip
    missing = [
        f"{name}=={version}"
        for name, version in versions.items()
        if _find_wheel(directory, name, version, arch) is None
    ]
    if missing:
        # fmt: off
        command = [
            sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--no-deps",
            "--platform", wheel_platform(arch), "--python-version", python,
        ]
        # fmt: on
        wanted = [f"{name}=={version}" for name, version in versions.items()]
        hint = "pip comes with Python; the wheels need network access to PyPI once"
        locked_download(command, wanted, directory, lock, log, hint)
    wheels = {}
    for name, version in versions.items():
        wheel = _find_wheel(directory, name, version, arch)
        if wheel is None:
            raise ToolMissingError(
                f"pip downloaded no {arch} wheel of {name}=={version}",
                hint=f"check that PyPI has a {wheel_platform(arch)} wheel of that version",
            )
        wheels[name] = wheel
    check_against_lock(list(wheels.values()), lock)
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

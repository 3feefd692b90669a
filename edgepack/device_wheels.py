"""Wheels a bundle carries so a device with no internet can run the Python bench runner.

``edgepack build --device-python 3.12`` adds a ``wheels`` stage: pip downloads, for the target's
architecture and each named CPython version, binary wheels of what the device-side runner imports
(edgepack's own dependencies, onnxruntime-genai, onnxruntime, numpy), pinned to the versions
installed here so the device runs what the build was checked with. edgepack itself travels as a
wheel written from this installation. Deploy installs them into ``<root>/venv`` without network.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata as metadata
import re
import shutil
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from edgepack import __version__
from edgepack.backends.base import Requirement, Stage, StageContext
from edgepack.cache import default_cache_root
from edgepack.errors import BadInputError, ToolFailedError
from edgepack.plan import Plan
from edgepack.process import python_module_command
from edgepack.resources import PACKAGED_FOLDERS, data_dir
from edgepack.wheel_lock import lock_path, locked_download

WHEELS_STAGE: Final = "wheels"
PYTHON_VERSION = re.compile(r"^3\.(\d{1,2})$")
MANYLINUX_TAGS = ("manylinux_2_28", "manylinux_2_17", "manylinux2014")
"""glibc 2.28 or older: Ubuntu 20.04 (JetPack 5) and every later Jetson or workstation image."""
RUNNER_DISTRIBUTIONS = ("onnxruntime-genai", "onnxruntime", "numpy")
"""What the ort runner imports on the device, beyond edgepack's own dependencies."""
BACKENDS_WITH_PYTHON_RUNNER = ("ort",)
PIP = Requirement("python", "pip", "python -m ensurepip", "pip")
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
"""Fixed timestamps: the same installation gives the same edgepack wheel, hence the same bundle."""


@dataclass(frozen=True)
class DeviceWheels:
    """What ``--device-python`` and ``--wheelhouse`` asked for."""

    pythons: list[str]
    wheelhouse: Path | None = None
    cache_root: Path | None = None
    """Where the download locks live (wheel_lock); the default cache when not given."""


def check_device_pythons(versions: list[str], backend: str) -> list[str]:
    """Validated, sorted, deduplicated ``3.X`` versions (empty: the bundle carries no wheels)."""
    if versions and backend not in BACKENDS_WITH_PYTHON_RUNNER:
        raise BadInputError(
            f"--device-python is for backends whose device runner is Python "
            f"({', '.join(BACKENDS_WITH_PYTHON_RUNNER)}), not {backend}",
            hint="drop --device-python; the C++ runtime (--runtime) needs no Python on the device",
        )
    bad = [v for v in versions if not PYTHON_VERSION.match(v)]
    if bad:
        raise BadInputError(
            f"--device-python {bad[0]!r} is not a CPython version like 3.12",
            hint="give the device's `python3 --version`, major.minor only",
        )
    return sorted(set(versions), key=lambda v: int(v.split(".")[1]))


def pinned_requirements() -> list[str]:
    """edgepack's runtime dependencies and the runner's, at the versions installed here.

    Their own dependencies are left to pip; the lockfile records every wheel with its sha256.
    """
    wanted = [r for r in metadata.requires("edgepack") or [] if "extra ==" not in r]
    wanted += list(RUNNER_DISTRIBUTIONS)
    pins = {}
    for requirement in wanted:
        name, _, marker = requirement.partition(";")
        name = re.split(r"[\s<>=!~\[(]", name.strip(), maxsplit=1)[0]
        try:
            pin = f"{name}=={metadata.version(name)}"
        except metadata.PackageNotFoundError:
            pin = name  # e.g. tomli, which only Python < 3.11 needs
        pins[name] = pin + (f"; {marker.strip()}" if marker else "")
    return [pins[name] for name in sorted(pins)]


def platform_tags(arch: str) -> list[str]:
    return [f"{tag}_{arch}" for tag in MANYLINUX_TAGS]


def wheels_stage(plan: Plan, wanted: DeviceWheels) -> Stage:
    pythons, wheelhouse = wanted.pythons, wanted.wheelhouse
    cache_root = wanted.cache_root or default_cache_root()
    requirements = pinned_requirements()
    return Stage(
        name=WHEELS_STAGE,
        description=f"device wheels (CPython {', '.join(pythons)}, {plan.target.arch})",
        config={
            "pythons": pythons,
            "platforms": platform_tags(plan.target.arch),
            "requirements": requirements,
            "edgepack": package_hash(),
            "wheelhouse": str(wheelhouse) if wheelhouse else None,
        },
        inputs=(),
        run=lambda context: download_wheels(context, pythons, requirements, wheelhouse, cache_root),
        requirements=(PIP,),
    )


def download_wheels(
    context: StageContext,
    pythons: list[str],
    requirements: list[str],
    wheelhouse: Path | None,
    cache_root: Path,
) -> None:
    """pip downloads the wheels; the first time their hashes are locked, later they are checked
    (a wheel that changed upstream or in the wheelhouse is refused)."""
    arch = context.plan.target.arch
    source = ["--no-index", "--find-links", str(wheelhouse)] if wheelhouse else []
    for python in pythons:
        platforms = [arg for tag in platform_tags(arch) for arg in ("--platform", tag)]
        command = [
            *python_module_command("pip"), "download", "--quiet", "--disable-pip-version-check",
            "--only-binary=:all:", "--implementation", "cp", "--python-version", python,
            *platforms, *source,
        ]  # fmt: skip
        parts = {"python": python, "arch": arch, "requirements": requirements}
        lock = lock_path(cache_root, "device-wheels", parts)
        try:
            locked_download(command, requirements, context.output_dir, lock, context.log,
                            PIP.install_hint)  # fmt: skip
            shutil.copyfile(lock, context.output_dir / f"requirements-{python}.lock")
        except ToolFailedError as error:
            if "differs from the one recorded" in error.message:
                raise
            raise ToolFailedError(
                f"no complete set of wheels for CPython {python} on {arch}: {error.message}",
                hint="check that every package has a wheel for that Python (onnxruntime-genai "
                "has none for 3.10); offline, pass --wheelhouse DIR",
            ) from error
    write_edgepack_wheel(context.output_dir)


def _package_files() -> Iterator[tuple[str, Path]]:
    """(path inside the wheel, file) for the package and its data folders."""
    package = Path(__file__).parent
    for path in sorted(package.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            yield f"edgepack/{path.relative_to(package).as_posix()}", path
    if not (package / "_data").is_dir():  # a source checkout: data lives in top-level folders
        for kind in PACKAGED_FOLDERS:
            folder = data_dir(kind)
            for path in sorted(folder.rglob("*")):
                if path.is_file() and "__pycache__" not in path.parts:
                    yield f"edgepack/_data/{kind}/{path.relative_to(folder).as_posix()}", path


def package_hash() -> str:
    digest = hashlib.sha256()
    for name, path in _package_files():
        digest.update(name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def write_edgepack_wheel(directory: Path) -> Path:
    """A py3-none-any wheel of this edgepack installation (source checkouts included)."""
    dist_info = f"edgepack-{__version__}.dist-info"
    wheel = directory / f"edgepack-{__version__}-py3-none-any.whl"
    entries = [(name, path.read_bytes()) for name, path in _package_files()]
    metadata_text = f"Metadata-Version: 2.1\nName: edgepack\nVersion: {__version__}\n"
    wheel_text = "Wheel-Version: 1.0\nGenerator: edgepack\nRoot-Is-Purelib: true\n"
    entries += [
        (f"{dist_info}/METADATA", metadata_text.encode()),
        (f"{dist_info}/WHEEL", wheel_text.encode()),
    ]
    record = [f"{name},sha256={_record_digest(data)},{len(data)}" for name, data in entries]
    entries.append((f"{dist_info}/RECORD", "\n".join([*record, f"{dist_info}/RECORD,,"]).encode()))
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    return wheel


def _record_digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()

"""Device wheels: choosing them for a device, edgepack's own wheel, the offline venv install."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path

import pytest

from edgepack.bundle import FileRecord, Manifest, write_bundle
from edgepack.cache import FileHashIndex
from edgepack.device_wheels import check_device_pythons, pinned_requirements, write_edgepack_wheel
from edgepack.errors import BadInputError, ExitCode, RemoteError
from edgepack.remote.connector import CommandResult, LocalConnector
from edgepack.remote.device_env import (
    WheelFile,
    choose_wheels,
    glibc_problems,
    venv_problems,
)
from edgepack.remote.facts import DeviceFacts, gather_facts
from edgepack.remote.switch import rollback
from edgepack.targets import TargetRegistry
from tests.unit.local_deploy import local_deploy

# Names as pip downloaded them for CPython 3.11 and 3.12 on x86_64.
CARRIED = [
    "wheels/numpy-2.4.6-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
    "wheels/numpy-2.4.6-cp312-cp312-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
    "wheels/onnxruntime_genai-0.18.0-cp311-cp311-manylinux_2_28_x86_64.whl",
    "wheels/protobuf-7.36.2-cp310-abi3-manylinux2014_x86_64.whl",
    "wheels/psutil-7.2.2-cp36-abi3-manylinux2010_x86_64.manylinux_2_12_x86_64.manylinux_2_28_x86_64.whl",
    "wheels/shellingham-1.5.4-py2.py3-none-any.whl",
    "wheels/typing_extensions-4.16.0-py3-none-any.whl",
]
HERE = f"{sys.version_info.major}.{sys.version_info.minor}"


def chosen(minor: int, arch: str) -> list[str]:
    wheels = [WheelFile.parse(path) for path in CARRIED]
    return [Path(w.path).name.split("-")[0] for w in choose_wheels(wheels, minor, arch)]


def test_each_distribution_gets_the_wheel_of_the_devices_python_and_arch() -> None:
    names = {"numpy", "onnxruntime_genai", "protobuf", "psutil", "shellingham", "typing_extensions"}
    assert set(chosen(11, "x86_64")) == names
    # 3.12: genai has no 3.12 wheel in this set (it belongs to another Python's download)
    assert set(chosen(12, "x86_64")) == names - {"onnxruntime_genai"}
    twelve = choose_wheels([WheelFile.parse(p) for p in CARRIED], 12, "x86_64")
    assert any("cp312-cp312" in w.path for w in twelve)
    # abi3 needs a Python at least as new as its tag; pure wheels fit everything
    assert set(chosen(9, "x86_64")) == {"psutil", "shellingham", "typing_extensions"}
    assert set(chosen(11, "aarch64")) == {"shellingham", "typing_extensions"}


def test_a_wheel_needs_the_oldest_glibc_of_its_tags() -> None:
    wheels = [WheelFile.parse(path) for path in CARRIED]
    needs = {w.path.split("/")[1].split("-")[0]: w.glibc_needed("x86_64") for w in wheels}
    assert needs["numpy"] == (2, 27)  # manylinux_2_27 and manylinux_2_28: either will do
    assert needs["onnxruntime_genai"] == (2, 28)
    assert needs["protobuf"] == (2, 17)  # manylinux2014
    assert needs["psutil"] == (2, 12)  # manylinux2010
    assert needs["shellingham"] is None  # pure
    assert WheelFile.parse("x-1-cp311-cp311-linux_x86_64.whl").glibc_needed("x86_64") is None
    older = {Path(w.path).name.split("-")[0] for w in choose_wheels(wheels, 11, "x86_64", (2, 27))}
    assert set(chosen(11, "x86_64")) - older == {"onnxruntime_genai"}


def test_wheels_for_a_newer_glibc_than_the_devices_are_named() -> None:
    manifest = _manifest(["3.11"]).model_copy(
        update={"files": [FileRecord(path=path, size=1, sha256="0" * 64) for path in CARRIED]}
    )
    facts = _facts("3.11.2").model_copy(update={"glibc": "2.27"})
    assert glibc_problems(manifest, facts) == [
        "the bundle's onnxruntime-genai wheel needs glibc 2.28, the device has 2.27"
    ]
    assert glibc_problems(manifest, facts.model_copy(update={"glibc": "2.28"})) == []
    assert glibc_problems(manifest, facts.model_copy(update={"glibc": None})) == []


def test_wheel_names_are_parsed_with_their_tags() -> None:
    wheel = WheelFile.parse("wheels/Foo.Bar-1.0-1-cp311-abi3-linux_aarch64.whl")
    assert (wheel.distribution, wheel.pythons, wheel.abis, wheel.platforms) == (
        "foo-bar",
        ("cp311",),
        ("abi3",),
        ("linux_aarch64",),
    )


def _facts(python_version: str | None, root: str = "/srv/ep") -> DeviceFacts:
    return DeviceFacts(
        host="dev", root=root, free_bytes=1 << 30, arch="x86_64", python_version=python_version
    )


def _manifest(pythons: list[str]) -> Manifest:
    recipe = {"backend": "ort", "stage_config": {"wheels": {"pythons": pythons}}}
    return Manifest(
        edgepack_version="test", model={}, recipe=recipe, target={}, tools={}, plan={}, stages=[]
    )


def test_a_device_python_the_bundle_has_no_wheels_for_is_named() -> None:
    assert venv_problems(_manifest(["3.11", "3.12"]), _facts("3.12.3")) == []
    assert venv_problems(_manifest([]), _facts(None)) == []
    (other,) = venv_problems(_manifest(["3.11", "3.12"]), _facts("3.10.12"))
    assert (
        other == "the bundle carries wheels for CPython 3.11, 3.12, the device runs Python 3.10.12"
    )
    (none,) = venv_problems(_manifest(["3.12"]), _facts(None))
    assert "the device has no working python3" in none


def test_device_python_versions_are_checked() -> None:
    assert check_device_pythons(["3.12", "3.9", "3.12"], "ort") == ["3.9", "3.12"]
    with pytest.raises(BadInputError, match="'3' is not a CPython version"):
        check_device_pythons(["3"], "ort")
    with pytest.raises(BadInputError, match="not trtrtx") as refused:
        check_device_pythons(["3.12"], "trtrtx")
    assert refused.value.exit_code == ExitCode.BAD_INPUT


def test_requirements_are_pinned_to_what_is_installed_here() -> None:
    pins = pinned_requirements()
    assert f"onnxruntime-genai=={importlib.metadata.version('onnxruntime-genai')}" in pins
    assert f"pydantic=={importlib.metadata.version('pydantic')}" in pins
    assert "tomli; python_version < '3.11'" in pins  # keeps its marker: pip applies it per Python


def test_edgepack_wheel_is_reproducible_and_carries_the_data(tmp_path: Path) -> None:
    first = write_edgepack_wheel(_mkdir(tmp_path / "a"))
    second = write_edgepack_wheel(_mkdir(tmp_path / "b"))
    assert (
        hashlib.sha256(first.read_bytes()).digest() == hashlib.sha256(second.read_bytes()).digest()
    )
    names = zipfile.ZipFile(first).namelist()
    assert "edgepack/cli/main.py" in names
    assert "edgepack/_data/targets/ada-sm89.toml" in names
    assert "edgepack/_data/prompts/default.json" in names
    assert not any("__pycache__" in name for name in names)


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _pure_wheel(directory: Path, name: str) -> None:
    """A minimal pure-Python wheel holding one module."""
    dist_info = f"{name}-1.0.dist-info"
    with zipfile.ZipFile(directory / f"{name}-1.0-py3-none-any.whl", "w") as archive:
        archive.writestr(f"{name}/__init__.py", f"NAME = {name!r}\n")
        archive.writestr(f"{dist_info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\n")
        archive.writestr(f"{dist_info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\n")


def _wheel_bundle(
    tmp_path: Path,
    pythons: list[str],
    broken_wheel: bool = False,
    future_glibc: bool = False,
    extra_wheel: str | None = None,
) -> Path:
    """A sealed bundle whose wheels/ holds edgepack's own wheel (and one that is no zip, one for a
    glibc from the future, or a pure one named ``extra_wheel``)."""
    wheels = write_edgepack_wheel(_mkdir(tmp_path / "wheel-src")).parent
    if extra_wheel:
        _pure_wheel(wheels, extra_wheel)
    if broken_wheel:
        (wheels / "broken-1.0-py3-none-any.whl").write_bytes(b"not a zip")
    for python in pythons if future_glibc else []:
        tag = "cp" + python.replace(".", "")
        name = f"futurelib-1.0-{tag}-{tag}-manylinux_2_99_{os.uname().machine}.whl"
        (wheels / name).write_bytes(b"never unpacked")
    engine = _mkdir(tmp_path / "engine-src")
    (engine / "model.onnx").write_bytes(b"engine")
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({"prompts": [{"id": "p1", "text": "Hello"}]}))
    manifest = _manifest(pythons).model_copy(
        update={"target": {"name": "host-x86_64-cpu", "arch": os.uname().machine}}
    )
    contents = {"engine": engine, "prompts.json": prompts, "wheels": wheels}
    bundle = tmp_path / "bundle"
    write_bundle(bundle, manifest, contents, FileHashIndex(tmp_path / "hashes.json"))
    return bundle


class _Counting(LocalConnector):
    count = 0

    def execute(
        self, argv: Sequence[str], stdin: bytes | None, timeout: float | None
    ) -> CommandResult:
        self.count += 1
        return super().execute(argv, stdin, timeout)


def test_deploy_installs_the_wheels_into_a_venv_offline_and_reuses_it(
    tmp_path: Path, registry: TargetRegistry
) -> None:
    python = gather_facts(LocalConnector(), str(tmp_path)).python_version or ""
    bundle = _wheel_bundle(tmp_path, [".".join(python.split(".")[:2])])
    root = tmp_path / "device"
    report = local_deploy(bundle, root, registry)
    assert report.venv is not None
    assert (report.venv.status, report.venv.wheels) == ("created", 1)
    venv_python = root / "venv" / "bin" / "python"
    probe = "import edgepack.resources as r; print(r.data_dir('targets'))"
    alone = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # as on a device
    found = subprocess.run(
        [str(venv_python), "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True,
        env=alone,
    ).stdout.strip()  # fmt: skip
    assert found.startswith(str(root / "venv" / "lib")), found  # not this checkout's edgepack
    assert found.endswith("site-packages/edgepack/_data/targets")
    again = local_deploy(bundle, root, registry)
    assert again.venv is not None
    assert (again.status, again.venv.status) == ("no change", "reused")
    assert len(list((root / "venvs").iterdir())) == 1


def test_a_device_python_without_wheels_is_refused_before_any_byte(
    tmp_path: Path, registry: TargetRegistry
) -> None:
    bundle = _wheel_bundle(tmp_path, ["3.99"])
    root = tmp_path / "device"
    with pytest.raises(RemoteError, match=r"wheels for CPython 3\.99") as refused:
        local_deploy(bundle, root, registry)
    assert "--device-python" in (refused.value.hint or "")
    assert not root.exists()
    report = local_deploy(bundle, root, registry, venv=False)  # the engine alone still deploys
    assert report.venv is None and (root / "current" / "engine" / "model.onnx").is_file()


def test_wheels_for_a_newer_glibc_are_refused_before_any_byte(
    tmp_path: Path, registry: TargetRegistry
) -> None:
    facts = gather_facts(LocalConnector(), str(tmp_path))
    assert facts.glibc and facts.glibc.startswith("2.")  # getconf GNU_LIBC_VERSION, for real
    minor = ".".join((facts.python_version or "").split(".")[:2])
    bundle = _wheel_bundle(tmp_path, [minor], future_glibc=True)
    root = tmp_path / "device"
    with pytest.raises(RemoteError) as refused:
        local_deploy(bundle, root, registry)
    assert (
        f"futurelib wheel needs glibc 2.99, the device has {facts.glibc}" in refused.value.message
    )
    assert "--no-venv" in (refused.value.hint or "")
    assert not root.exists()


def test_a_failed_install_leaves_current_where_it_was(
    tmp_path: Path, registry: TargetRegistry
) -> None:
    python = gather_facts(LocalConnector(), str(tmp_path)).python_version or ""
    minor = ".".join(python.split(".")[:2])
    root = tmp_path / "device"
    first = local_deploy(_wheel_bundle(tmp_path / "one", [minor]), root, registry)
    linked = (root / "venv").readlink()
    broken = _wheel_bundle(tmp_path / "two", [minor], broken_wheel=True)
    with pytest.raises(RemoteError, match="installing the bundle's wheels") as failed:
        local_deploy(broken, root, registry)
    assert "`current` was not switched" in failed.value.message
    assert (root / "current").readlink() == Path(f"releases/{first.release}")
    assert (root / "venv").readlink() == linked
    assert [p.name for p in (root / "venvs").iterdir()] == [linked.name]  # no .partial


def test_rollback_switches_the_venv_with_its_release_and_cleanup_keeps_what_releases_use(
    tmp_path: Path, registry: TargetRegistry
) -> None:
    python = gather_facts(LocalConnector(), str(tmp_path)).python_version or ""
    minor = ".".join(python.split(".")[:2])
    root = tmp_path / "device"
    reports = {}
    for name in ("alpha", "beta"):
        bundle = _wheel_bundle(_mkdir(tmp_path / name), [minor], extra_wheel=name)
        reports[name] = local_deploy(bundle, root, registry)
    venv_of = {
        name: str((root / "releases" / f"{r.release}.venv").readlink()).removeprefix("../")
        for name, r in reports.items()
    }
    assert venv_of["alpha"] != venv_of["beta"]
    assert str((root / "venv").readlink()) == venv_of["beta"]
    with LocalConnector() as device:
        assert rollback(device, str(root)) == (reports["beta"].release, reports["alpha"].release)
    assert str((root / "current").readlink()) == f"releases/{reports['alpha'].release}"
    assert str((root / "venv").readlink()) == venv_of["alpha"]  # switched together
    probe = [str(root / "venv" / "bin" / "python"), "-c", "import alpha; print(alpha.NAME)"]
    assert subprocess.run(probe, capture_output=True, text=True).stdout.strip() == "alpha"

    gamma = _wheel_bundle(_mkdir(tmp_path / "gamma"), [minor], extra_wheel="gamma")
    third = local_deploy(gamma, root, registry, keep=1)
    # beta is neither current (gamma) nor previous (alpha): it goes, and its venv with it.
    assert reports["beta"].release in third.pruned
    kept = sorted(p.name for p in (root / "venvs").iterdir())
    gamma_venv = str((root / "venv").readlink()).removeprefix("venvs/")
    assert kept == sorted([venv_of["alpha"].removeprefix("venvs/"), gamma_venv])


def test_a_current_release_with_its_venv_in_place_is_one_round_trip_and_a_wrong_link_is_not(
    tmp_path: Path, registry: TargetRegistry
) -> None:
    python = gather_facts(LocalConnector(), str(tmp_path)).python_version or ""
    bundle = _wheel_bundle(tmp_path, [".".join(python.split(".")[:2])])
    root = tmp_path / "device"
    local_deploy(bundle, root, registry)
    (root / ".fingerprints" / (root / "current").readlink().name).unlink(missing_ok=True)
    slow = local_deploy(bundle, root, registry)  # the whole deploy: records the files' sha256s
    fast_device = _Counting()
    fast = local_deploy(bundle, root, registry, device=fast_device)
    assert fast_device.count == 1
    assert fast.venv == slow.venv and fast.venv is not None and fast.venv.status == "reused"
    assert {**fast.as_dict(), "seconds": 0} == {**slow.as_dict(), "seconds": 0}

    linked = (root / "venv").readlink()
    (root / "venv").unlink()
    (root / "venv").symlink_to("venvs/elsewhere")
    repaired_device = _Counting()
    repaired = local_deploy(bundle, root, registry, device=repaired_device)
    assert repaired_device.count > 1 and repaired.status == "no change"
    assert (root / "venv").readlink() == linked  # put back as the deploy leaves it

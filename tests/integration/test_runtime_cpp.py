"""The C++ every runtime shares, tested on its own (cpp_runtime/tests): SHA-256 against the FIPS
180-2 / NIST CAVP examples, the layout of the --json records, prompt files and the option
conventions. Built by the rendered CMake project and run by ctest, natively and, cross-built for
aarch64, under qemu-user through CMAKE_CROSSCOMPILING_EMULATOR (REFERENCE.md §10)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from edgepack.backends.ort.libraries import ort_libraries
from edgepack.plan import Limits
from edgepack.runtime.render import render_project
from edgepack.runtime.spec import RuntimeSpec
from edgepack.targets import TargetRegistry
from tests.conftest import require_demo_stack
from tests.integration.arm64_device import QEMU_STATIC

pytestmark = pytest.mark.integration

TESTS = "edgepack-runtime-tests"
QEMU_LD_PREFIX = Path("/usr/aarch64-linux-gnu")
EM_AARCH64 = 183


def spec(target: str) -> RuntimeSpec:
    return RuntimeSpec.for_target(
        TargetRegistry.default().get(target),
        backend="ort", model_name="smollm2-135m", precision="int4", kv_cache_dtype="fp32",
        limits=Limits(),
    )  # fmt: skip


def run(command: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=600, check=False
    )


def configure(
    target: str, work: Path, cache: Path, *options: str
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """Render the runtime's project for ``target`` and configure it with its toolchain file."""
    require_demo_stack()  # the target's ONNX Runtime libraries follow the installed versions
    the_spec = spec(target)
    for program in ("cmake", f"{the_spec.compiler_triple}-g++"):
        if shutil.which(program) is None:
            pytest.skip(f"{program} is not installed")
    source, build = work / "project", work / "build"
    render_project(the_spec, source)
    libraries = ort_libraries(the_spec.arch, cache, lambda line: None)
    done = run([
        "cmake", "-S", str(source), "-B", str(build),
        f"-DCMAKE_TOOLCHAIN_FILE={source / 'toolchain.cmake'}",
        f"-DEDGEPACK_ORT_LIB_DIR={libraries}", "-DCMAKE_EXPORT_COMPILE_COMMANDS=ON", *options,
    ])  # fmt: skip
    return build, done


def build_and_test(build: Path) -> subprocess.CompletedProcess[str]:
    built = run(["cmake", "--build", str(build), "--target", TESTS, "--parallel", "2"])
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    return run(["ctest", "--verbose"], cwd=build)


def elf_machine(binary: Path) -> int:
    header = binary.read_bytes()[:20]
    assert header[:4] == b"\x7fELF", f"{binary} is not an ELF file"
    return int.from_bytes(header[18:20], "little")


def test_runtime_tests_pass_natively(session_cache: Path, tmp_path: Path) -> None:
    build, configured = configure("host-x86_64-cpu", tmp_path, session_cache)
    assert configured.returncode == 0, configured.stderr[-3000:]
    tested = build_and_test(build)
    assert tested.returncode == 0, tested.stdout[-3000:]
    assert "all runtime tests passed" in tested.stdout


def test_runtime_tests_pass_under_qemu(session_cache: Path, tmp_path: Path) -> None:
    if not QEMU_STATIC.is_file() or not QEMU_LD_PREFIX.is_dir():
        pytest.skip("apt-get install qemu-user-static g++-aarch64-linux-gnu")
    emulator = f"-DCMAKE_CROSSCOMPILING_EMULATOR={QEMU_STATIC};-L;{QEMU_LD_PREFIX}"
    build, configured = configure("generic-aarch64-cpu", tmp_path, session_cache, emulator)
    assert configured.returncode == 0, configured.stderr[-3000:]
    tested = build_and_test(build)
    assert elf_machine(build / TESTS) == EM_AARCH64
    assert tested.returncode == 0, tested.stdout[-3000:]
    assert "all runtime tests passed" in tested.stdout


def test_a_cross_build_adds_no_host_directory(session_cache: Path, tmp_path: Path) -> None:
    """The aarch64 compile commands name no host include directory (one there would be searched
    before the cross compiler's own glibc and libstdc++ headers), only the build tree's links to
    the two libraries' folders; the link names no host library directory."""
    build, configured = configure("generic-aarch64-cpu", tmp_path, session_cache)
    assert configured.returncode == 0, configured.stderr[-3000:]
    commands = json.loads((build / "compile_commands.json").read_text(encoding="utf-8"))
    assert commands and all("aarch64-linux-gnu-g++" in entry["command"] for entry in commands)
    assert not [entry["command"] for entry in commands if "/usr/include" in entry["command"]]
    link = (build / "CMakeFiles" / "edgepack-runtime.dir" / "link.txt").read_text(encoding="utf-8")
    assert "aarch64-linux-gnu-g++" in link and "/usr/lib" not in link and "x86_64" not in link
    headers = build / "library-headers"
    assert sorted(path.name for path in headers.iterdir()) == ["CLI", "nlohmann"]
    assert (headers / "nlohmann" / "json.hpp").is_file() and (headers / "CLI" / "CLI.hpp").is_file()


def test_a_missing_library_header_stops_the_configure(session_cache: Path, tmp_path: Path) -> None:
    empty = tmp_path / "no-headers"
    empty.mkdir()
    _, configured = configure(
        "host-x86_64-cpu", tmp_path, session_cache, f"-DEDGEPACK_CLI_CLI_hpp_ROOT={empty}"
    )
    assert configured.returncode != 0
    assert "CLI/CLI.hpp is missing: apt-get install libcli11-dev" in configured.stderr

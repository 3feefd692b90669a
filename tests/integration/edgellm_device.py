"""A fixture Jetson AGX Orin on the aarch64 test device: Edge-LLM's C++ tools, tegrastats and
nvidia-smi as FIXTURE programs (tests/fixtures/edgellm/device/, aarch64 shell scripts replaying
the recorded formats), and the files a JetPack 6.2 board carries that the facts probe reads
(/etc/nv_tegra_release, the CUDA version file, TensorRT's dpkg entry).

What the C++ runtime compiles against on the device is FIXTURE too (tests/fixtures/edgellm/sdk/):
Edge-LLM's runtime header and library, CUDA's runtime header, library and ``nvcc --version``. The
two libraries are cross-compiled here once (aarch64-linux-gnu-g++); the runtime itself is compiled
on the device by its own g++ and CMake."""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.integration.arm64_device import DeviceRoot

FIXTURES = Path(__file__).parents[1] / "fixtures"
EDGELLM_HOME = Path("opt/TensorRT-Edge-LLM")
TOOLS_DIR = EDGELLM_HOME / "build" / "examples" / "llm"
PLUGIN = EDGELLM_HOME / "build" / "libNvInfer_edgellm_plugin.so"
STATE = Path("etc/edgepack-test")
SDK = FIXTURES / "edgellm" / "sdk"
CUDA = Path("usr/local/cuda")
CROSS_CXX = "aarch64-linux-gnu-g++"
L4T_RELEASE = "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64\n"
TENSORRT_DPKG = """
Package: libnvinfer-bin
Status: install ok installed
Architecture: arm64
Version: {version}
Description: TensorRT binaries (FIXTURE entry: the version a JetPack board reports)
"""


class FixtureJetson:
    """The fixture board inside a device root; tests change its state between commands."""

    def __init__(self, root: DeviceRoot) -> None:
        self.root = root.path

    def install(
        self, edgellm_version: str = "0.11.0", tensorrt: str = "10.3.0.30-1+cuda12.5"
    ) -> None:
        device = FIXTURES / "edgellm" / "device"
        tools = self.root / TOOLS_DIR
        tools.mkdir(parents=True, exist_ok=True)
        for name in ("llm_build", "llm_inference", "llm_bench"):
            shutil.copy2(device / name, tools / name)
        for name in ("tegrastats", "nvidia-smi"):
            shutil.copy2(device / name, self.root / "usr" / "bin" / name)
        self.set_version(edgellm_version)
        (self.root / PLUGIN).write_bytes(b"FIXTURE plugin library\n")
        state = self.root / STATE
        state.mkdir(parents=True, exist_ok=True)
        recorded = FIXTURES / "edgellm"
        shutil.copy2(recorded / "llm_inference-profile.json", state / "profile.json")
        for mode in ("decode", "prefill"):
            shutil.copy2(recorded / f"llm_bench-{mode}.txt", state / f"llm_bench-{mode}.txt")
        shutil.copy2(FIXTURES / "telemetry" / "tegrastats-orin.log", state / "tegrastats.log")
        (self.root / "etc" / "nv_tegra_release").write_text(L4T_RELEASE)
        cuda = self.root / CUDA
        cuda.mkdir(parents=True, exist_ok=True)
        (cuda / "version.json").write_text(json.dumps({"cuda": {"version": "12.6.68"}}))
        self.set_tensorrt(tensorrt)
        self.install_sdk()

    def install_sdk(self, embedded_target: str = "jetson-orin") -> None:
        """Edge-LLM's runtime header and library (its build/ configured for
        ``embedded_target``) and CUDA's runtime, where the device's compiler finds them."""
        libraries = fixture_libraries()
        home = self.root / EDGELLM_HOME
        shutil.copytree(SDK / "cpp", home / "cpp", dirs_exist_ok=True)
        shutil.copy2(libraries / "libedgellmRuntime.so", home / "build" / "libedgellmRuntime.so")
        (home / "build" / "CMakeCache.txt").write_text(
            "# FIXTURE: the entry of Edge-LLM's own CMake cache the runtime's configure reads\n"
            f"EMBEDDED_TARGET:STRING={embedded_target}\n"
        )
        cuda = self.root / CUDA
        shutil.copytree(SDK / "cuda" / "include", cuda / "include", dirs_exist_ok=True)
        (cuda / "bin").mkdir(parents=True, exist_ok=True)
        shutil.copy2(SDK / "cuda" / "bin" / "nvcc", cuda / "bin" / "nvcc")
        (cuda / "lib64").mkdir(parents=True, exist_ok=True)
        shutil.copy2(libraries / "libcudart.so", cuda / "lib64" / "libcudart.so")

    def answer_prompts(self, answers: Mapping[str, tuple[str, Sequence[int]]]) -> None:
        """What the fixture Edge-LLM library answers each prompt: its text and token ids."""
        chosen: dict[str, Any] = {
            prompt: {"text": text, "ids": list(ids)} for prompt, (text, ids) in answers.items()
        }
        (self.root / STATE / "runtime-answers.json").write_text(json.dumps(chosen))

    def set_version(self, version: str) -> None:
        package = self.root / EDGELLM_HOME / "tensorrt_edgellm"
        package.mkdir(parents=True, exist_ok=True)
        (package / "_version.py").write_text(f'__version__ = "{version}"\n')

    def set_tensorrt(self, version: str) -> None:
        (self.root / STATE / "trt_version").write_text(version.split("-")[0].rsplit(".", 1)[0])
        status = self.root / "var" / "lib" / "dpkg" / "status"
        text = status.read_text()
        start = text.find("\nPackage: libnvinfer-bin\n")
        if start >= 0:
            end = text.find("\n\n", start + 1)
            text = text[:start] + (text[end:] if end >= 0 else "\n")
        status.write_text(text.rstrip("\n") + "\n" + TENSORRT_DPKG.format(version=version))

    def answer_with(self, answers: Sequence[str]) -> None:
        responses = [
            {"batch_idx": 0, "finish_reason": "stop", "output_text": text, "request_idx": index}
            for index, text in enumerate(answers)
        ]
        (self.root / STATE / "responses.json").write_text(json.dumps(responses))

    def out_of_memory(self, on: bool) -> None:
        marker = self.root / STATE / "llm_build-oom"
        if on:
            marker.write_text("")
        else:
            marker.unlink(missing_ok=True)

    def remove_plugin(self) -> None:
        (self.root / PLUGIN).unlink()

    def uninstall(self) -> None:
        shutil.rmtree(self.root / EDGELLM_HOME)


@functools.cache
def fixture_libraries() -> Path:
    """The two FIXTURE libraries, cross-compiled once per session."""
    if shutil.which(CROSS_CXX) is None:
        pytest.skip(f"{CROSS_CXX} is needed to build the fixture Edge-LLM library")
    out = Path(tempfile.mkdtemp(prefix="edgellm-fixture-sdk-"))
    flags = ["-std=c++17", "-O1", "-shared", "-fPIC", f"-I{SDK / 'cuda' / 'include'}"]
    commands = (
        [CROSS_CXX, *flags, str(SDK / "src" / "cudart.cpp"), "-o", str(out / "libcudart.so")],
        [CROSS_CXX, *flags, f"-I{SDK / 'cpp'}", str(SDK / "src" / "llmInferenceRuntime.cpp"),
         f"-L{out}", "-lcudart", "-o", str(out / "libedgellmRuntime.so")],
    )  # fmt: skip
    for command in commands:
        subprocess.run(command, check=True, capture_output=True, timeout=300)
    return out

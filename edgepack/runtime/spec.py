"""The codegen model of the C++ runtime and how it is built.

:class:`RuntimeSpec` is the codegen model: every template variable is one of its fields and all of
them come from the plan and the target profile, so no SM, CUDA version or compiler triple is
written anywhere else.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from edgepack.plan import Limits, Plan
    from edgepack.targets import TargetProfile

RuntimeMode = Literal["none", "native", "cross", "container", "device"]
RUNTIME_MODES: tuple[RuntimeMode, ...] = ("none", "native", "cross", "container", "device")
RENDERED_BACKENDS = ("ort", "edgellm", "trtllm")
SELF_TEST_PROMPT = "What is the capital of France?"
SELF_TEST_TOKENS = 16
BUILD_INFO = "build-info.json"
SOURCE_DIR = "src"
BINARY = "bin/edgepack-runtime"
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
COMPILED_ON_DEVICE = ("edgellm",)
"""Backends whose runtime ships as sources in the bundle and compiles on the device at deploy,
against the SDK built there (``device`` mode)."""


def default_mode(target: TargetProfile, backend: str = "ort") -> RuntimeMode:
    """Native where this host has the target's architecture, else a cross build; none for a
    backend whose runtime needs an SDK this host cannot have (``edgepack runtime render``);
    ``device`` for one compiled on the device at deploy."""
    if backend in COMPILED_ON_DEVICE:
        return "device"
    if backend not in COMPILABLE_HERE:
        return "none"
    return "native" if target.arch == host_arch() else "cross"

"""``edgepack doctor``: for every backend, what is installed here (and on a host or device), what
is missing and how to get it. Read-only: it runs version queries, never installs."""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from edgepack.backends import BACKENDS
from edgepack.errors import EdgepackError

if TYPE_CHECKING:
    from edgepack.remote.connector import Connector
    from edgepack.remote.facts import DeviceFacts
    from edgepack.targets import TargetProfile

NVIDIA_STACK = (
    ("TensorRT", "tensorrt", "pip install tensorrt (or NVIDIA's apt repository: libnvinfer-bin)"),
    ("TensorRT-LLM", "tensorrt_llm", "pip install tensorrt_llm==1.2.1 (Linux x86_64 with CUDA), "
     "or the image nvcr.io/nvidia/tensorrt-llm/release:1.2.1"),
)  # fmt: skip
GPU_QUERY = ("nvidia-smi", "--query-gpu=name,compute_cap,driver_version", "--format=csv,noheader")


@dataclass(frozen=True)
class Finding:
    where: str
    backend: str
    component: str
    found: bool
    detail: str = ""
    fix: str = ""

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _distribution(name: str | None) -> str | None:
    if name is None:
        return None
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def local_findings(target: TargetProfile) -> list[Finding]:
    """This machine: every backend's requirements and engine tool, the GPU, the NVIDIA stack."""
    findings = [_local_gpu()]
    for label, distribution, fix in NVIDIA_STACK:
        version = _distribution(distribution)
        detail = version or "not installed"
        findings.append(Finding("here", "trtllm", label, version is not None, detail, fix))
    for backend in BACKENDS.values():
        for requirement in backend.requirements():
            ok = requirement.available()
            version = requirement.version() or ("installed" if ok else "not installed")
            fix = "" if ok else requirement.install_hint
            findings.append(Finding("here", backend.name, requirement.name, ok, version, fix))
        tool = backend.engine_tool(target)
        if tool is not None:
            findings += _engine_tool_here(backend.name, tool)
    return findings


def _local_gpu() -> Finding:
    if shutil.which("nvidia-smi") is None:
        return Finding("here", "all", "NVIDIA GPU", False, "no nvidia-smi: no NVIDIA driver here",
                       "engines are built where the GPU is: --builder ssh:HOST")  # fmt: skip
    try:
        done = subprocess.run(list(GPU_QUERY), capture_output=True, text=True, timeout=30)
        line = done.stdout.strip().splitlines()[0] if done.stdout.strip() else done.stderr.strip()
    except (OSError, subprocess.TimeoutExpired) as error:
        line = str(error)
    return Finding("here", "all", "NVIDIA GPU", bool(line), line)


def _engine_tool_here(backend: str, tool: object) -> list[Finding]:
    from edgepack.builders.choice import container_has_image
    from edgepack.builders.job import ToolSpec

    assert isinstance(tool, ToolSpec)
    program = shutil.which(tool.program)
    findings = [
        Finding("here", backend, tool.program, program is not None,
                program or "not installed", "" if program else tool.install_hint),
    ]  # fmt: skip
    if tool.image:
        has = container_has_image(tool.image)
        detail = "present" if has else "absent (or no Docker/Podman engine answers)"
        fix = "" if has else f"docker pull {tool.image}"
        findings.append(Finding("here", backend, f"image {tool.image}", has, detail, fix))
    return findings


def host_findings(connector: Connector, root: str, target: TargetProfile) -> list[Finding]:
    """A host or device: its facts (GPU, SM, CUDA, TensorRT, packages) and each engine tool."""
    from edgepack.builders.ssh import probe_over
    from edgepack.remote.facts import gather_facts

    facts = gather_facts(connector, root)
    where = connector.label
    findings = _host_stack(where, facts)
    for backend in BACKENDS.values():
        profile = device_profile(backend.name, target, facts)
        for check in backend.device_checks(connector, facts, profile):
            findings.append(Finding(where, backend.name, check.component, check.found,
                                    check.detail, check.fix))  # fmt: skip
        tool = backend.engine_tool(target)
        if tool is None:
            continue
        try:
            probe = probe_over(connector, tool)
        except EdgepackError as error:
            findings.append(Finding(where, backend.name, tool.program, False, error.message))
            continue
        problem = tool.check(probe)
        ok = probe.present and problem is None
        detail = f"TensorRT-LLM {probe.version}" if probe.version else "not installed"
        findings.append(Finding(where, backend.name, tool.program, ok, detail,
                                problem or ("" if ok else tool.install_hint)))  # fmt: skip
    return findings


def device_profile(backend: str, target: TargetProfile, facts: DeviceFacts) -> TargetProfile | None:
    """The profile a backend's device checks compare with: the best profile the device's facts
    match (GPU or board model) that allows the backend, else ``--target`` where it allows it."""
    from edgepack.remote.detect import detect_profiles
    from edgepack.targets import TargetRegistry

    for match in detect_profiles(facts, TargetRegistry.default()):
        if match.score >= 10 and backend in match.profile.backends.allowed:
            return match.profile
    return target if backend in target.backends.allowed else None


def _host_stack(where: str, facts: DeviceFacts) -> list[Finding]:
    gpu = facts.gpu
    findings = [
        Finding(where, "all", "NVIDIA GPU", gpu is not None,
                f"{gpu.name}, SM{(gpu.compute_capability or '?').replace('.', '')}, driver "
                f"{gpu.driver}" if gpu else "none reported"),
        Finding(where, "all", "CUDA", bool(facts.cuda or facts.cuda_driver),
                facts.cuda or facts.cuda_driver or "none"),
    ]  # fmt: skip
    for label, distribution, fix in NVIDIA_STACK:
        version = facts.packages.get(distribution)
        if label == "TensorRT":
            version = facts.tensorrt or version
        findings.append(Finding(where, "trtllm", label, version is not None,
                                version or "not installed", "" if version else fix))  # fmt: skip
    return findings

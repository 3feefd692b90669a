"""Which target profile a device is, and whether a bundle may go to it, from profile data only.

Profiles say how they are recognised (``[detect]``: GPU name or device-tree model substrings,
memory bounds) and what they are (arch, compute capability, TensorRT/L4T versions); nothing here
names a device.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from edgepack.bundle import Manifest
from edgepack.errors import BadInputError
from edgepack.remote.facts import DeviceFacts
from edgepack.targets import TargetProfile, TargetRegistry

ARCH_ALIASES = {"arm64": "aarch64", "amd64": "x86_64"}
# Engines of these backends are TensorRT plans: valid only for the TensorRT (and on Jetson, L4T)
# release of the target profile. ONNX (ort) and TensorRT-RTX engines carry no such binding.
VERSION_BOUND_BACKENDS = frozenset({"trtllm", "edgellm"})


def normalized_arch(arch: str) -> str:
    return ARCH_ALIASES.get(arch, arch)


@dataclass
class ProfileMatch:
    profile: TargetProfile
    score: int = 0
    reasons: list[str] = field(default_factory=list)


def _contains(needles: Sequence[str], haystack: str | None) -> str | None:
    if not haystack:
        return None
    return next((n for n in needles if n.lower() in haystack.lower()), None)


def _match(profile: TargetProfile, facts: DeviceFacts) -> ProfileMatch | None:
    if profile.arch != normalized_arch(facts.arch):
        return None
    match = ProfileMatch(profile, reasons=[f"arch {profile.arch}"])
    rules = profile.detect
    if rules.gpu_name_contains or rules.device_model_contains:
        gpu = _contains(rules.gpu_name_contains, facts.gpu.name if facts.gpu else None)
        model = _contains(rules.device_model_contains, facts.device_model)
        if not gpu and not model:
            return None
        match.score += 10
        match.reasons.append(f"GPU name has {gpu!r}" if gpu else f"device model has {model!r}")
    elif facts.gpu or facts.device_model:
        match.reasons.append("generic profile (the device has a GPU no profile claims)")
    memory = facts.memory_gb
    if memory is not None:
        if rules.min_memory_gb is not None and memory < rules.min_memory_gb:
            return None
        if rules.max_memory_gb is not None and memory > rules.max_memory_gb:
            return None
        if rules.min_memory_gb is not None or rules.max_memory_gb is not None:
            match.score += 1
            match.reasons.append(f"memory {memory:.1f} GB in range")
    capability = facts.gpu.compute_capability if facts.gpu else None
    if profile.gpu and capability:
        if capability != profile.gpu.compute_capability:
            return None
        match.score += 5
        match.reasons.append(f"compute capability {capability}")
    return match


def detect_profiles(facts: DeviceFacts, registry: TargetRegistry) -> list[ProfileMatch]:
    """Every profile the facts fit, best first."""
    matches = [m for p in registry.all() if (m := _match(p, facts)) is not None]
    return sorted(matches, key=lambda m: (-m.score, m.profile.name))


def device_compute_capability(facts: DeviceFacts, registry: TargetRegistry) -> str | None:
    """nvidia-smi's answer, else the detected profile's (a Jetson without nvidia-smi)."""
    if facts.gpu and facts.gpu.compute_capability:
        return facts.gpu.compute_capability
    for match in detect_profiles(facts, registry):
        if match.score >= 10 and match.profile.gpu:
            return match.profile.gpu.compute_capability
    return None


def compatibility_problems(
    manifest: Manifest, facts: DeviceFacts, registry: TargetRegistry
) -> list[str]:
    """Why this bundle cannot run on this device; each problem names both sides."""
    target = manifest.target
    name = target.get("name", "?")
    device = f"device {facts.host}"
    problems = []
    arch = target.get("arch")
    if arch and arch != normalized_arch(facts.arch):
        problems.append(f"bundle is for {arch} (target {name}) but {device} is {facts.arch}")
    cuda_arch = target.get("cuda_arch")
    if cuda_arch:
        problems += _gpu_problems(str(cuda_arch), name, facts, registry)
    if manifest.recipe.get("backend") in VERSION_BOUND_BACKENDS:
        problems += _toolchain_problems(name, facts, registry)
    return problems


def _gpu_problems(
    cuda_arch: str, name: str, facts: DeviceFacts, registry: TargetRegistry
) -> list[str]:
    wanted = "SM" + cuda_arch.rstrip("a")
    capability = device_compute_capability(facts, registry)
    if capability is None:
        return [
            f"bundle needs an NVIDIA GPU ({wanted}, target {name}) but device {facts.host} "
            "reports none (no nvidia-smi, no known Jetson model)"
        ]
    found = "SM" + capability.replace(".", "")
    if found != wanted:
        gpu = facts.gpu.name if facts.gpu else facts.device_model
        return [
            f"bundle is built for {wanted} (target {name}) but device {facts.host} is {found} "
            f"({gpu})"
        ]
    return []


def _toolchain_problems(name: str, facts: DeviceFacts, registry: TargetRegistry) -> list[str]:
    try:
        toolchain = registry.get(name).toolchain
    except BadInputError:
        return [f"bundle target {name} is not a known profile; cannot check its TensorRT version"]
    problems = []
    # TensorRT from the distribution's packages, or pip's (as TensorRT-LLM installs it)
    tensorrt = facts.tensorrt or facts.packages.get("tensorrt")
    install = (
        "flash the JetPack that has it" if toolchain.jetpack else "install the version it names"
    )
    rebuild = f"{install}, or build the bundle for a profile of the device's"
    if toolchain.tensorrt and not same_release(toolchain.tensorrt, tensorrt):
        problems.append(
            f"bundle needs TensorRT {toolchain.tensorrt} (target {name}) but device "
            f"{facts.host} has {tensorrt or 'none'} ({rebuild} TensorRT)"
        )
    if toolchain.cuda and facts.cuda and not same_release(toolchain.cuda, facts.cuda):
        problems.append(
            f"bundle needs CUDA {toolchain.cuda} (target {name}) but device {facts.host} has "
            f"CUDA {facts.cuda} ({rebuild} CUDA)"
        )
    if toolchain.l4t and facts.device_model and not same_release(toolchain.l4t, facts.l4t):
        problems.append(
            f"bundle needs L4T {toolchain.l4t} (JetPack {toolchain.jetpack}, target {name}) but "
            f"device {facts.host} runs L4T {facts.l4t or 'unknown'} ({rebuild} JetPack)"
        )
    return problems


def same_release(wanted: str, found: str | None) -> bool:
    """``10.3`` matches ``10.3.0.30-1+cuda12.5``: compare the components the profile gives."""
    if not found:
        return False
    parts = wanted.split(".")
    return found.split("-")[0].split(".")[: len(parts)] == parts

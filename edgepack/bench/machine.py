"""Facts about the machine a benchmark ran on, so a number can be traced to its hardware."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from pathlib import Path
from typing import Any

LIBRARIES = ("onnxruntime", "onnxruntime-genai", "numpy", "torch", "transformers")


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware"):
                return value.strip()
    return platform.processor() or platform.machine()


def memory_total_bytes() -> int | None:
    meminfo = Path("/proc/meminfo")
    if not meminfo.is_file():
        return None
    for line in meminfo.read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return None


def library_versions(names: tuple[str, ...] = LIBRARIES) -> dict[str, str]:
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def engine_threads() -> int:
    """Threads every CPU engine runs with: one per physical core this process may use, which is
    ONNX Runtime's own default for its intra-op pool. llama-cpp-python's default is half the
    logical CPUs, which halved llama.cpp's speed on a 2-core machine (61.6 against 113 tok/s), so
    baselines are given this number explicitly."""
    usable = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    cores = set()
    for cpu in usable:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            package = (topology / "physical_package_id").read_text().strip()
            core = (topology / "core_id").read_text().strip()
        except OSError:
            return len(usable)
        cores.add((package, core))
    return len(cores) or len(usable) or os.cpu_count() or 1


def machine_facts() -> dict[str, Any]:
    return {
        "hostname": platform.node(),
        "arch": platform.machine(),
        "cpu_model": cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_bytes": memory_total_bytes(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "python_prefix": sys.prefix,
        "libraries": library_versions(),
    }

"""Which NVIDIA GPUs this machine has, and whether an engine built for an SM runs on one.

Engines of the TensorRT family run only on the compute capability they were built for; nothing is
measured where no such GPU is present (the bench refuses, the report says "no supported GPU").
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from edgepack.errors import ToolMissingError


@dataclass(frozen=True)
class Gpu:
    name: str
    compute_capability: str

    @property
    def sm(self) -> str:
        return "SM" + self.compute_capability.replace(".", "")


def visible_gpus() -> list[Gpu]:
    """NVIDIA GPUs that nvidia-smi reports; none where there is no driver."""
    program = shutil.which("nvidia-smi")
    if program is None:
        return []
    query = [program, "--query-gpu=name,compute_cap", "--format=csv,noheader"]
    try:
        text = subprocess.run(query, capture_output=True, text=True, check=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return parse_gpu_list(text)


def parse_gpu_list(text: str) -> list[Gpu]:
    gpus = []
    for line in text.splitlines():
        name, _, capability = line.rpartition(",")
        if name.strip() and capability.strip():
            gpus.append(Gpu(name.strip(), capability.strip()))
    return gpus


def supported_gpu(engine_sm: str, gpus: Sequence[Gpu]) -> Gpu | None:
    """The first of ``gpus`` an engine built for ``engine_sm`` runs on."""
    return next((gpu for gpu in gpus if gpu.sm == engine_sm), None)


def describe_gpus(gpus: Sequence[Gpu]) -> str:
    return ", ".join(f"{gpu.name} ({gpu.sm})" for gpu in gpus) or "no NVIDIA GPU"


def require_supported_gpu(engine_sm: str, gpus: Sequence[Gpu] | None = None) -> Gpu:
    """The GPU the engine runs on, or a plain refusal: nothing is measured without one."""
    found = visible_gpus() if gpus is None else list(gpus)
    matching = supported_gpu(engine_sm, found)
    if matching is not None:
        return matching
    raise ToolMissingError(
        f"no supported GPU: this TensorRT-RTX engine runs only on {engine_sm} and this machine "
        f"has {describe_gpus(found)}; nothing was run and no numbers were recorded",
        hint=f"deploy the bundle to an RTX workstation with an {engine_sm} GPU and bench it there",
    )

"""``trtllm-build`` as an engine builder sees it: where it comes from and which one is usable.

edgepack's trtllm backend is pinned to the TensorRT-LLM 1.2.x engine line: the TensorRT engine
path (``trtllm-build``) was frozen there and removed after 1.3.0rc20 (REFERENCE.md §5). The
version is read from the line ``import tensorrt_llm`` prints (``[TensorRT-LLM] TensorRT-LLM
version: X``), which ``trtllm-build --help`` shows first.
"""

from __future__ import annotations

import re

from edgepack.builders.job import ToolProbe, ToolSpec

PROGRAM = "trtllm-build"
PINNED_LINE = "1.2."
LAST_WITH_BUILD = "1.3.0rc20"
IMAGE = "nvcr.io/nvidia/tensorrt-llm/release:{version}"
VERSION_LINE = re.compile(r"TensorRT-LLM version: (\S+)")


def parse_version(output: str) -> str | None:
    found = VERSION_LINE.search(output)
    return found.group(1) if found else None


def check(probe: ToolProbe) -> str | None:
    if not probe.present:
        if probe.version is None:
            return None
        return (
            f"TensorRT-LLM {probe.version} on {probe.where} has no {PROGRAM}: its TensorRT "
            f"engine path was removed after {LAST_WITH_BUILD} (newer releases run PyTorch only), "
            "and edgepack's trtllm backend builds TensorRT engines; install the 1.2.x line"
        )
    if probe.version is None:
        return f"{PROGRAM} on {probe.where} did not print its version ('TensorRT-LLM version:')"
    if not probe.version.startswith(PINNED_LINE):
        return (
            f"{PROGRAM} on {probe.where} is TensorRT-LLM {probe.version}; edgepack's trtllm "
            f"backend is pinned to the {PINNED_LINE}x engine line"
        )
    return None


def trtllm_build_tool(version: str) -> ToolSpec:
    """The tool for a target whose profile names TensorRT-LLM ``version``."""
    return ToolSpec(
        program=PROGRAM,
        label=f"TensorRT-LLM {version}",
        install_hint=f"pip install tensorrt_llm=={version} (Linux x86_64 with CUDA), or use "
        f"the image {IMAGE.format(version=version)}",
        image=IMAGE.format(version=version),
        probe_argv=(PROGRAM, "--help"),
        absent_probe_argv=("python3", "-c", "import tensorrt_llm"),
        parse_version=parse_version,
        check=check,
        gpus=True,
    )

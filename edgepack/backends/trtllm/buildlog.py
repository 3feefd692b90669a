"""Reading ``trtllm-build``'s log (written against TensorRT-LLM 1.2.x, REFERENCE.md §12).

A successful build must show TensorRT's engine generation time, its peak CPU/GPU allocator
memory and TensorRT-LLM's total build time; a log without them is not one this parser knows,
and that is an error, not a guess. A failed build is explained in one line: out of GPU memory
(TensorRT's "Error Code 2: OutOfMemory"), killed (the host ran out of memory), or the first
error TensorRT or TensorRT-LLM logged.
"""

from __future__ import annotations

import re
from typing import Any

from edgepack.builders.job import last_line
from edgepack.errors import ToolFailedError

WRITTEN_AGAINST = "TensorRT-LLM 1.2.x"
GENERATION = re.compile(r"Engine generation completed in ([0-9.]+) seconds")
PEAK = re.compile(
    r"\[MemUsageStats\] Peak memory usage of TRT CPU/GPU memory allocators: "
    r"CPU (\d+) MiB, GPU (\d+) MiB"
)
TOTAL = re.compile(r"Total time of building all engines: (\d+):(\d\d):(\d\d)")
SERIALIZED = re.compile(r"Engine serialized\. Total time: (\d+):(\d\d):(\d\d)")
PLUGIN = re.compile(r"\[TRT-LLM\] \[I\] Set (\w+) to (.+)\.$", re.MULTILINE)
VERSION = re.compile(r"TensorRT-LLM version: (\S+)")
OOM = re.compile(r"Error Code 2: OutOfMemory \(([^)]*)\)")
GPU_REQUEST = re.compile(r"Requested amount of GPU memory \((\d+) bytes\) could not be allocated")
ERROR = re.compile(r"\[(?:TRT|TRT-LLM)\] \[E\] (.+)")
KILLED = (137, -9)


def _seconds(match: re.Match[str]) -> int:
    hours, minutes, seconds = (int(part) for part in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def parse_build_log(text: str, log_path: str) -> dict[str, Any]:
    generation, peak = GENERATION.findall(text), PEAK.findall(text)
    total = TOTAL.search(text)
    missing = [
        name
        for name, found in (
            ("'Engine generation completed in'", generation),
            ("'[MemUsageStats] Peak memory usage'", peak),
            ("'Total time of building all engines'", total),
        )
        if not found
    ]
    if missing:
        raise ToolFailedError(
            f"trtllm-build's log has no {', '.join(missing)} line: it is not the format this "
            f"parser was written against ({WRITTEN_AGAINST}); nothing was guessed",
            hint=f"the whole log: {log_path}",
        )
    assert total is not None
    serialized = SERIALIZED.search(text)
    version = VERSION.search(text)
    return {
        "parser": WRITTEN_AGAINST,
        "tensorrt_llm": version.group(1) if version else None,
        "engine_generation_s": sum(float(value) for value in generation),
        "peak_cpu_mib": max(int(cpu) for cpu, _ in peak),
        "peak_gpu_mib": max(int(gpu) for _, gpu in peak),
        "total_build_s": _seconds(total),
        "serialize_s": _seconds(serialized) if serialized else None,
        "plugins": {name: value for name, value in PLUGIN.findall(text)},
    }


def explain_failure(text: str) -> str:
    """The one line that says why a failed trtllm-build failed."""
    oom, request = OOM.search(text), GPU_REQUEST.search(text)
    detail = None
    if oom is not None:
        detail = oom.group(1)
    elif request is not None:
        detail = f"{int(request.group(1)) / 2**30:.1f} GiB requested"
    if detail is not None:
        return (
            f"the build host ran out of GPU memory (TensorRT: {detail}); lower --max-batch-size "
            "or --max-seq-len, or build on a GPU with more memory"
        )
    errors = ERROR.findall(text)
    if errors:
        return str(errors[0]).strip()
    return last_line(text)


def explain_status(status: int, text: str) -> str:
    if status in KILLED:
        return "trtllm-build was killed (the build host probably ran out of memory)"
    return explain_failure(text)

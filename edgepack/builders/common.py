"""What every builder shares: placing the argument vector, naming logs, explaining failures."""

from __future__ import annotations

import posixpath
import time
import uuid
from collections.abc import Mapping
from pathlib import Path

from edgepack.builders.job import Arg, BuildJob, InputPath, OutputFile, OutputPath, last_line
from edgepack.cache import sha256_file
from edgepack.errors import BadInputError, ToolFailedError


def place_argv(argv: tuple[Arg, ...], inputs: Mapping[str, str], output: str) -> list[str]:
    """The argument vector with each placeholder replaced by its path where the tool runs."""
    placed = []
    for arg in argv:
        if isinstance(arg, InputPath):
            if arg.name not in inputs:
                raise BadInputError(f"the build job names an unknown input {arg.name!r}")
            placed.append(_join(inputs[arg.name], arg.relative))
        elif isinstance(arg, OutputPath):
            placed.append(_join(output, arg.relative))
        else:
            placed.append(arg)
    return placed


def _join(base: str, relative: str) -> str:
    return posixpath.join(base, relative) if relative else base


def new_log_path(logs_dir: Path, job: BuildJob) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return logs_dir / f"{job.label}-{stamp}-{uuid.uuid4().hex[:6]}.log"


def raise_failure(job: BuildJob, where: str, status: int, log_path: Path) -> None:
    """One line that says why (the job's own reading of the log), and where the whole log is."""
    text = log_path.read_text(encoding="utf-8", errors="replace")
    reason = job.explain_failure(text) if job.explain_failure else last_line(text)
    raise ToolFailedError(
        f"{job.tool.program} failed on {where} (exit status {status}): {reason}",
        hint=f"the whole log: {log_path}",
    )


def local_outputs(directory: Path) -> list[OutputFile]:
    return [
        OutputFile(path.relative_to(directory).as_posix(), path.stat().st_size, sha256_file(path))
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    ]

"""The one way edgepack runs an external tool.

It finds the program first (a missing tool is a ToolMissingError with an install hint, not a
FileNotFoundError), echoes the command line, streams output when verbose, keeps the tail of the
output, and turns a non-zero exit into a ToolFailedError that shows that tail.
"""

from __future__ import annotations

import collections
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from edgepack.errors import ToolFailedError, ToolMissingError

TAIL_LINES = 25


def python_module_command(module: str) -> list[str]:
    """Run a Python module with the interpreter edgepack itself runs on."""
    return [sys.executable, "-m", module]


def run_tool(
    command: Sequence[str],
    *,
    install_hint: str,
    log: Callable[[str], None] = lambda line: None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> str:
    """Run ``command``; return its combined output. Every output line goes to ``log``."""
    program = command[0]
    if shutil.which(program) is None:
        raise ToolMissingError(f"{program} is not installed or not on PATH", hint=install_hint)
    log("$ " + shlex.join(command))
    merged_env = {**os.environ, **(env or {})}
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    output: list[str] = []
    with subprocess.Popen(
        list(command),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        env=merged_env,
        cwd=cwd,
    ) as process:
        assert process.stdout is not None  # guaranteed by stdout=PIPE
        for line in process.stdout:
            line = line.rstrip("\n")
            tail.append(line)
            output.append(line)
            log(line)
        status = process.wait()
    if status != 0:
        name = Path(program).name if program != sys.executable else shlex.join(command[:3])
        raise ToolFailedError(
            f"{name} failed with exit status {status}; last output:\n" + "\n".join(tail),
            hint="rerun with -v to see the whole output",
        )
    return "\n".join(output)


def run_logged(
    command: Sequence[str],
    log_path: Path,
    *,
    log: Callable[[str], None] = lambda line: None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> int:
    """Run ``command`` with its whole output written to ``log_path`` (and each line to ``log``);
    return its exit status. The caller explains a failure from the log."""
    log("$ " + shlex.join(command))
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with (
        log_path.open("w", encoding="utf-8") as kept,
        subprocess.Popen(
            list(command),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            env={**os.environ, **(env or {})},
            cwd=cwd,
        ) as process,
    ):
        assert process.stdout is not None  # guaranteed by stdout=PIPE
        for line in process.stdout:
            kept.write(line)
            log(line.rstrip("\n"))
        return process.wait()

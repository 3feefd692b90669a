"""The one way edgepack runs an external tool.

It finds the program first (a missing tool is a ToolMissingError with an install hint, not a
FileNotFoundError), echoes the command line, streams output when verbose, keeps the whole output
in a log file in the cache, and turns a non-zero exit into one line: the tool, the likely cause,
the fix and the log's path (``--debug`` prints the log itself). A child process of edgepack's own
that failed with an EdgepackError reports it in one record line and its exit status; the parent
raises the same kind of error, so that the command exits as the child would have.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from edgepack.cache import default_cache_root
from edgepack.errors import EdgepackError, ToolFailedError, ToolMissingError, error_for_exit_code

OFFLINE_HUB: Mapping[str, str] = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
"""The variables that keep a tool off the Hugging Face Hub: every model it reads is local."""
ERROR_RECORD = "edgepack-error: "
"""The line a worker prints for an EdgepackError: this prefix, then a JSON object."""
REASON_CHARS = 300
KILLED = (-9, 137)
"""SIGKILL as Popen and as a shell report it: most often the kernel's out-of-memory killer."""
ERROR_LINE = re.compile(r"\berror:|CMake Error|^E: ", re.IGNORECASE)
"""A line that reports an error: gcc's and clang's "error:", "fatal error:", CMake's "CMake Error",
Python's "ERROR:", apt's "E: "."""
SUMMARY = re.compile(r"\S*make(\[\d+\])?: \*\*\*|ninja: build stopped")
"""The closing lines of a failed make or ninja build, which only repeat that it failed."""
OOM_FIX = "it ran out of memory: close other programs, or run it on a machine with more memory"
TRACEBACK_FIX = (
    "the tool itself failed: check that the installed version is the one edgepack pins "
    "(`edgepack doctor`) and that it supports this model"
)
KNOWN_CAUSES: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"No module named '?([\w.]+)"),
        "a Python module it needs is missing: install {0} into the Python that runs it",
    ),
    (
        re.compile(r"No space left on device|Disk quota exceeded"),
        "the disk is full: free space, or point $EDGEPACK_CACHE_DIR at a larger disk",
    ),
    (re.compile(r"MemoryError|[Oo]ut of memory|Cannot allocate memory|OutOfMemory"), OOM_FIX),
    (
        re.compile(r"Permission denied"),
        "it was refused access to a file: check the permissions of the paths it names",
    ),
)


def python_module_command(module: str) -> list[str]:
    """Run a Python module with the interpreter edgepack itself runs on."""
    return [sys.executable, "-m", module]


def tool_name(command: Sequence[str]) -> str:
    """How a message names the tool: the program, or ``python -m MODULE`` for a module."""
    if command[0] == sys.executable and len(command) > 2 and command[1] == "-m":
        return command[2]
    return Path(command[0]).name


def run_tool(
    command: Sequence[str],
    *,
    install_hint: str,
    log: Callable[[str], None] = lambda line: None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    log_dir: Path | None = None,
) -> str:
    """Run ``command``; return its combined output. Every output line goes to ``log``; on a
    failure the whole output stays in a log file under ``log_dir`` (default: the cache's logs)."""
    program = command[0]
    if shutil.which(program) is None:
        raise ToolMissingError(f"{program} is not installed or not on PATH", hint=install_hint)
    name = tool_name(command)
    log_path = new_log_path(log_dir or default_cache_root() / "logs", name)
    status = run_logged(command, log_path, log=log, env=env, cwd=cwd)
    if status != 0:
        raise tool_failure(name, status, log_path)
    text = log_path.read_text(encoding="utf-8", errors="replace")
    log_path.unlink()
    return text[len(_echo(command)) + 1 :].removesuffix("\n")  # without the command line


def _echo(command: Sequence[str]) -> str:
    return "$ " + shlex.join(command)


def new_log_path(log_dir: Path, name: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    safe = re.sub(r"[^\w.-]+", "-", name)
    return log_dir / f"{safe}-{stamp}-{uuid.uuid4().hex[:6]}.log"


def tool_failure(name: str, status: int, log_path: Path) -> EdgepackError:
    """The one-line error of a tool that exited with ``status``, its whole output in ``log_path``:
    a worker's own error record where there is one, else the tool, the likely cause and the fix."""
    text = log_path.read_text(encoding="utf-8", errors="replace")
    where = f"the whole log: {log_path}"
    record = worker_record(text)
    if record is not None:
        message, hint = record
        error = error_for_exit_code(status, message, f"{hint}; {where}" if hint else where)
    else:
        reason, fix = explain_output(status, text)
        error = ToolFailedError(
            f"{name} failed (exit status {status}): {reason}", f"{fix}; {where}"
        )
    error.detail = text
    return error


def explain_output(status: int, text: str) -> tuple[str, str]:
    """(the line that says why, the likely fix) of a failed tool's output."""
    reason = failure_line(text)
    for pattern, fix in KNOWN_CAUSES:
        found = pattern.search(text)
        if found is not None:
            return reason, fix.format(*found.groups())
    if status in KILLED:
        return "it was killed", "most likely " + OOM_FIX
    if "Traceback (most recent call last)" in text:
        return reason, TRACEBACK_FIX
    return reason, "rerun with --debug to see its whole output here"


def failure_line(text: str) -> str:
    """The line of a failed tool's output that says why: a Python traceback's exception line, else
    the first error a compiler, CMake or a tool printed (not make's closing summary), else the last
    line; shortened."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith(("$ ", ERROR_RECORD))]
    exceptions = [line for line in lines if line.split(":", 1)[0].endswith(("Error", "Exception"))]
    errors = [line for line in lines if ERROR_LINE.search(line) and not SUMMARY.match(line)]
    if "Traceback (most recent call last)" in text and exceptions:
        reason = exceptions[-1]
    else:
        reason = (errors[:1] or exceptions[-1:] or lines[-1:] or ["no output"])[0]
    return reason if len(reason) <= REASON_CHARS else reason[: REASON_CHARS - 1] + "…"


def error_record(error: EdgepackError) -> str:
    """The line a worker prints for ``error`` (it also exits with the error's exit code)."""
    fields = {"exit_code": error.exit_code, "message": error.message, "hint": error.hint}
    return ERROR_RECORD + json.dumps(fields)


def worker_record(text: str) -> tuple[str, str | None] | None:
    """(message, hint) of the last error record in a worker's output, if it printed one."""
    for line in reversed(text.splitlines()):
        if line.startswith(ERROR_RECORD):
            try:
                fields = json.loads(line[len(ERROR_RECORD) :])
                return str(fields["message"]), fields.get("hint")
            except (ValueError, KeyError, TypeError):
                return None
    return None


def _stream(
    command: Sequence[str],
    on_line: Callable[[str], None],
    env: Mapping[str, str] | None,
    cwd: Path | None,
) -> int:
    """Run ``command`` with stderr merged into stdout, each line to ``on_line``; its status."""
    with subprocess.Popen(
        list(command),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        env={**os.environ, **(env or {})},
        cwd=cwd,
    ) as process:
        assert process.stdout is not None  # guaranteed by stdout=PIPE
        for line in process.stdout:
            on_line(line.rstrip("\n"))
        return process.wait()


def run_logged(
    command: Sequence[str],
    log_path: Path,
    *,
    log: Callable[[str], None] = lambda line: None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> int:
    """Run ``command`` with its whole output written to ``log_path`` (and each line to ``log``);
    return its exit status. The caller explains a failure from the log (``tool_failure``)."""
    echoed = _echo(command)
    log(echoed)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w", encoding="utf-8") as kept:
        kept.write(echoed + "\n")

        def keep(line: str) -> None:
            kept.write(line + "\n")
            log(line)

        return _stream(command, keep, env, cwd)

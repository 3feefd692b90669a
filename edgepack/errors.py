"""One exception hierarchy for everything a user can get wrong or the world can break.

Every error carries an exit code and, where there is one, a hint that says how to fix it. Library
code raises these; only ``edgepack.cli.main`` turns them into a message and an exit status.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable

DEBUG_ENV = "EDGEPACK_DEBUG"
_debug_flag = [False]
"""--debug of the current invocation (set by the CLI's global options, reset by every run)."""


def set_debug(enabled: bool) -> None:
    _debug_flag[0] = enabled


def debugging() -> bool:
    """Whether tracebacks are wanted: --debug or EDGEPACK_DEBUG=1."""
    return _debug_flag[0] or os.environ.get(DEBUG_ENV, "") not in ("", "0")


class ExitCode:
    """Exit codes of the ``edgepack`` command. Each failure kind has its own."""

    OK = 0
    FAILURE = 1
    BAD_INPUT = 2
    INVALID_PLAN = 3
    INVALID_PROFILE = 4
    TOOL_MISSING = 5
    TOOL_FAILED = 6
    BUNDLE_INVALID = 7
    REMOTE = 8
    QUALITY_GATE = 9
    REGRESSION = 10
    DEVICE_FULL = 11
    DEVICE_DENIED = 12
    DEVICE_PROGRAM_MISSING = 13
    INTERRUPTED = 130


class EdgepackError(Exception):
    """Base of every error edgepack reports to its user."""

    exit_code: int = ExitCode.FAILURE

    def __init__(self, message: str, hint: str | None = None, *, detail: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.detail = detail
        """The whole story behind the one line (a tool's log, every validation problem): shown
        with --debug only."""

    def __str__(self) -> str:
        return self.message


class BadInputError(EdgepackError):
    """An argument names something that does not exist or cannot be read."""

    exit_code = ExitCode.BAD_INPUT


class ProfileError(EdgepackError):
    """A target profile file is malformed."""

    exit_code = ExitCode.INVALID_PROFILE


class InvalidPlanError(EdgepackError):
    """The plan has problems; all of them are listed, each with its fix."""

    exit_code = ExitCode.INVALID_PLAN

    def __init__(self, problems: list[str]) -> None:
        count = len(problems)
        noun = "problem" if count == 1 else "problems"
        super().__init__(f"the plan has {count} {noun}: " + "; ".join(problems))
        self.problems = problems


class ToolMissingError(EdgepackError):
    """A tool or Python package a stage needs is not installed."""

    exit_code = ExitCode.TOOL_MISSING


class ToolFailedError(EdgepackError):
    """An external tool ran and failed."""

    exit_code = ExitCode.TOOL_FAILED


class BundleError(EdgepackError):
    """A bundle is missing, incomplete, or its files do not match its manifest."""

    exit_code = ExitCode.BUNDLE_INVALID


class RemoteError(EdgepackError):
    """A device could not be reached or refused an operation."""

    exit_code = ExitCode.REMOTE


class DeviceFullError(RemoteError):
    """The device's disk (or quota) ran out while writing."""

    exit_code = ExitCode.DEVICE_FULL


class DevicePermissionError(RemoteError):
    """The device refused a write or a removal (EACCES, EPERM, a read-only file system)."""

    exit_code = ExitCode.DEVICE_DENIED


class DeviceProgramMissingError(RemoteError):
    """A program a remote command needs is not installed on the device (exit status 127)."""

    exit_code = ExitCode.DEVICE_PROGRAM_MISSING


class InterruptError(EdgepackError):
    """Ctrl-C or SIGTERM: the work stopped where it was, nothing half-done was made current."""

    exit_code = ExitCode.INTERRUPTED


class QualityGateError(EdgepackError):
    """An engine's outputs failed the quality gate."""

    exit_code = ExitCode.QUALITY_GATE


class RegressionError(EdgepackError):
    """A run is slower than its baseline beyond their noise, or its quality verdict is worse."""

    exit_code = ExitCode.REGRESSION


def error_for_exit_code(code: int, message: str, hint: str | None = None) -> EdgepackError:
    """The error a child process reported by its exit status (and its message), so that the
    parent exits as the child would have; an unknown status is a failed tool."""
    kinds = {cls.exit_code: cls for cls in _subclasses(EdgepackError) if cls.__module__ == __name__}
    cls = kinds.get(code, ToolFailedError) if code != ExitCode.FAILURE else ToolFailedError
    if cls is InvalidPlanError:  # its own constructor words a list of problems
        plan_error = InvalidPlanError.__new__(InvalidPlanError)
        EdgepackError.__init__(plan_error, message, hint)
        plan_error.problems = [message]
        return plan_error
    return cls(message, hint)


def _subclasses(cls: type[EdgepackError]) -> list[type[EdgepackError]]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return ' (did you mean "x"?)' for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""

"""What a benchmark needs, checked before it starts: a missing program or Python package is one
line with the command that installs it (exit 5, as edgepack's own "tool missing"); an edgepack
error on the way is its one line and its exit code, not a traceback."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from collections.abc import Callable, Iterable

from edgepack.errors import EdgepackError, ExitCode

INSTALL = {
    "ip": "apt-get install iproute2",
    "tc": "apt-get install iproute2",
    "nft": "apt-get install nftables",
    "rsync": "apt-get install rsync",
    "scp": "apt-get install openssh-client",
    "ssh": "apt-get install openssh-client",
    "ssh-keygen": "apt-get install openssh-client",
    "/usr/sbin/sshd": "apt-get install openssh-server",
}
"""How each program a benchmark runs is installed (Debian and Ubuntu package names)."""


def fail(message: str, code: int) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)


def missing_programs(programs: Iterable[str]) -> list[str]:
    return [name for name in programs if shutil.which(name) is None]


def require_programs(programs: Iterable[str]) -> None:
    """Exit with one line per missing program, each naming the command that installs it."""
    missing = missing_programs(programs)
    for name in missing:
        print(f"error: {name} is not installed; install it: {INSTALL[name]}", file=sys.stderr)
    if missing:
        raise SystemExit(ExitCode.TOOL_MISSING)


def require_module(module: str, install: str) -> None:
    if importlib.util.find_spec(module) is None:
        fail(f"the Python package {module} is not installed; install it: {install}",
             ExitCode.TOOL_MISSING)  # fmt: skip


def require_root(why: str) -> None:
    if os.geteuid() != 0:
        fail(f"this benchmark must run as root ({why}); run it with sudo", ExitCode.FAILURE)


def run_main(main: Callable[[], None]) -> None:
    """Run ``main``; edgepack's own errors end it with their one line and exit code."""
    try:
        main()
    except EdgepackError as error:
        hint = f" (hint: {error.hint})" if error.hint else ""
        fail(error.message + hint, error.exit_code)
    except KeyboardInterrupt:
        fail("interrupted", ExitCode.INTERRUPTED)

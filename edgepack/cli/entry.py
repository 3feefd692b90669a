"""The ``edgepack`` program: contacts the devices an ``edgepack deploy --host H`` names before
the command line's libraries are imported, then runs the command line.

A no-change deploy should take a fraction of a second, and most of it is the SSH handshake and
the device's login shell starting; begun here, they overlap the ~0.2 s of start-up that follows.
This reading of the arguments is a guess made early, not the parse: ``deploy`` uses these
connections only when its own parse names the same hosts and timeout, and closes them otherwise.

The program ends without the interpreter's teardown, which frees every object of every module
one by one: 60-130 ms after a deploy's imports (typer, pydantic, rich, paramiko), measured on
this project's 2-core VM, a quarter of a no-change deploy.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
from dataclasses import dataclass
from typing import NoReturn

DEFAULT_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class DeployGuess:
    hosts: list[str]
    timeout: float = DEFAULT_TIMEOUT_S
    compress: bool | None = None


def deploy_hosts(argv: list[str]) -> DeployGuess | None:
    """The ``--host`` values, ``--timeout`` and ``--compress`` of a ``deploy`` command line;
    None for any other command, for ``--help``, for ``--inventory`` (read during the parse) or
    on anything unclear."""
    if not argv or argv[0] != "deploy":
        return None
    hosts: list[str] = []
    timeout = DEFAULT_TIMEOUT_S
    compress: bool | None = None
    args = iter(argv[1:])
    for arg in args:
        name, equals, value = arg.partition("=")
        if name in ("--help", "--inventory", "-i", "--"):
            return None
        if name in ("--compress", "--no-compress"):
            compress = name == "--compress"
            continue
        if name not in ("--host", "-H", "--timeout"):
            continue
        if not equals:
            value = next(args, "")
        if name == "--timeout":
            try:
                timeout = float(value)
            except ValueError:
                return None
        else:
            hosts.append(value)
    return DeployGuess(hosts, timeout, compress) if hosts else None


def prefetch_connections(argv: list[str]) -> None:
    found = deploy_hosts(argv)
    if found is None:
        return
    from edgepack.errors import EdgepackError
    from edgepack.remote.connect import prefetch
    from edgepack.remote.hosts import parse_host, with_compression

    try:
        specs = [parse_host(host) for host in found.hosts]
    except EdgepackError:  # the parse says so, in its own words
        return
    prefetch(with_compression(specs, found.compress), found.timeout)


def exit_now(code: int) -> NoReturn:
    """Exit with ``code`` as soon as what exiting must do is done: the ``atexit`` handlers (the
    temporary directories' clean-up among them) and the flush of stdout and stderr. A thread
    that is not a daemon still runs: then the ordinary exit, which waits for it."""
    main_thread = threading.main_thread()
    if any(not t.daemon for t in threading.enumerate() if t is not main_thread):
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        # a reader that went away, a stream already closed
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


def main() -> None:
    prefetch_connections(sys.argv[1:])
    from edgepack.cli.main import run

    exit_now(run())

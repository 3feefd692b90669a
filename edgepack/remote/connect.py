"""Open the connector a host spec names: this machine's filesystem (``local:DIR``) or SSH."""

from __future__ import annotations

import threading

from edgepack.remote.connector import Connector, LocalConnector
from edgepack.remote.hosts import LOCAL, HostSpec


def open_connector(spec: HostSpec, io_timeout: float = 30.0) -> Connector:
    if spec.kind == LOCAL:
        return LocalConnector()
    from edgepack.remote.ssh import SshConnector

    return SshConnector(spec, io_timeout=io_timeout)


class EarlyConnections:
    """Connections opened in the background while the caller gets ready (imports, reading the
    bundle): a no-change deploy is a fraction of a second, and the SSH handshake and the device's
    login shell starting are most of it. ``take`` hands a host's connector over (or raises what
    connecting raised); leaving the ``with`` block closes those never taken, and those still
    connecting as they arrive.
    """

    def __init__(self, specs: list[HostSpec], io_timeout: float = 30.0) -> None:
        if any(spec.kind != LOCAL for spec in specs):
            # Imported here, not in the threads, so that each thread imports one thing at a time
            # (the import system's per-module locks can deadlock across threads otherwise).
            from edgepack.remote.paramiko_loader import load_paramiko
            from edgepack.remote.ssh import SshConnector  # noqa: F401

            load_paramiko()
        self._io_timeout = io_timeout
        self.opened_for = (tuple(dict.fromkeys(specs)), io_timeout)
        self._lock = threading.Lock()
        self._closed = False
        self._results: dict[HostSpec, Connector | BaseException] = {}
        self._threads = {
            spec: threading.Thread(target=self._open, args=(spec,), daemon=True)
            for spec in dict.fromkeys(specs)
        }
        for thread in self._threads.values():
            thread.start()

    def _open(self, spec: HostSpec) -> None:
        try:
            result: Connector | BaseException = open_connector(spec, self._io_timeout)
        except BaseException as error:  # handed to whoever takes this host
            result = error
        with self._lock:
            if not self._closed:
                self._results[spec] = result
                return
        if isinstance(result, Connector):
            result.close()

    def take(self, spec: HostSpec, io_timeout: float = 30.0) -> Connector:
        """The connector opened for ``spec`` (once); a host not asked for early is opened now."""
        thread = self._threads.pop(spec, None)
        if thread is None:
            return open_connector(spec, io_timeout)
        thread.join()
        with self._lock:
            if self._closed:
                raise RuntimeError("taken from early connections already closed")
            result = self._results.pop(spec)
        if isinstance(result, BaseException):
            raise result
        return result

    def close(self) -> None:
        with self._lock:
            self._closed = True
            left, self._results = self._results, {}
        for result in left.values():
            if isinstance(result, Connector):
                result.close()

    def __enter__(self) -> EarlyConnections:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


_prefetched: list[EarlyConnections] = []
"""Connections the entry point opened before the command line was parsed (at most one set)."""


def prefetch(specs: list[HostSpec], io_timeout: float) -> None:
    _prefetched.append(EarlyConnections(specs, io_timeout))


def early_connections(specs: list[HostSpec], io_timeout: float) -> EarlyConnections:
    """The connections prefetched for exactly ``specs`` and ``io_timeout``, else new ones."""
    found = _prefetched.pop() if _prefetched else None
    if found is not None and found.opened_for == (tuple(dict.fromkeys(specs)), io_timeout):
        return found
    if found is not None:
        found.close()
    return EarlyConnections(specs, io_timeout)

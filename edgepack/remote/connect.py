"""Open the connector a host spec names: this machine's filesystem (``local:DIR``) or SSH."""

from __future__ import annotations

from edgepack.remote.connector import Connector, LocalConnector
from edgepack.remote.hosts import LOCAL, HostSpec


def open_connector(spec: HostSpec, io_timeout: float = 30.0) -> Connector:
    if spec.kind == LOCAL:
        return LocalConnector()
    from edgepack.remote.ssh import SshConnector

    return SshConnector(spec, io_timeout=io_timeout)

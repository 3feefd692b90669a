"""The stand-in GPU host: a network-namespace sshd whose ``trtllm-build``, ``trtllm-bench``,
``nvidia-smi`` and TensorRT-LLM Python package are FIXTURES (tests/fixtures/trtllm/, whose
README names the source of every format they replay); everything else there (the shell, sha256sum,
the deploy machinery's commands, the runtime's compiler) is this machine's own.

The test decides what the fixtures do through the host's ``state.json``: the TensorRT-LLM
version they report, ``mode`` ("ok", or "oom" for a build that runs out of GPU memory), and the
answers the fixture runtime gives.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.integration.conftest import NetnsDevice, SshServer

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "trtllm"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class GpuHost:
    alias: str
    directory: Path
    server: SshServer
    device: NetnsDevice

    @property
    def state_file(self) -> Path:
        return self.directory / "state.json"

    def set_state(self, **values: Any) -> None:
        state = json.loads(self.state_file.read_text()) if self.state_file.is_file() else {}
        self.state_file.write_text(json.dumps(state | values))

    def remove_program(self, name: str) -> None:
        (self.directory / "bin" / name).unlink()

    @property
    def root(self) -> Path:
        return self.directory / "edgepack-root"


def start_gpu_host(
    tmp_path: Path,
    sshd_factory: Callable[..., SshServer],
    netns_factory: Callable[[], NetnsDevice],
    alias: str = "gpu",
) -> GpuHost:
    directory = tmp_path / f"gpu-host-{alias}"
    shutil.copytree(FIXTURES, directory)
    for program in (directory / "bin").iterdir():
        program.chmod(0o755)
    device = netns_factory()
    setenv = (
        f"SetEnv PATH={directory / 'bin'}:{SYSTEM_PATH} PYTHONPATH={directory / 'python'} "
        f"EDGEPACK_FIXTURE_STATE={directory / 'state.json'}"
    )
    server = sshd_factory(
        alias, address=device.device_address, port=2222, netns=device.name, extra_config=(setenv,)
    )
    host = GpuHost(alias, directory, server, device)
    host.set_state(version="1.2.1", mode="ok")
    host.root.mkdir(parents=True, exist_ok=True)
    return host

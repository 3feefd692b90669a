"""The fault trials under load: eight namespace devices deployed at once with one powered off
mid-way, and a 4 GB bundle deployed over a real sshd with edgepack's peak RSS measured."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from edgepack.bundle import Manifest, write_bundle
from edgepack.cache import FileHashIndex
from edgepack.remote.ssh import SSH_CONFIG_ENV
from tests.integration.conftest import (
    NetnsDevice,
    SshServer,
    make_bundle,
    make_client_side,
    make_netns_device,
    start_sshd,
)
from tests.integration.fault_devices import (
    PLAIN_SHELL,
    REPOSITORY,
    DeployRun,
    check_device,
    partial_size,
)

MB = 1_000_000
FLEET = 8
BIG_BUNDLE_BYTES = 4 * 10**9
RSS_LIMIT_MB = 200
BLOCK = 16 << 20


def _deploy(config: Path, cache: Path, *args: str) -> DeployRun:
    environment = {**os.environ, SSH_CONFIG_ENV: str(config), "PYTHONPATH": str(REPOSITORY),
                   "EDGEPACK_CACHE_DIR": str(cache)}  # fmt: skip
    environment.pop("SSH_AUTH_SOCK", None)
    argv = [sys.executable, "-m", "edgepack", "deploy", "--json", "--timeout", "10", *args]
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment
    )
    return DeployRun(process, time.monotonic())


def fleet_with_one_killed(work: Path, victim: int) -> dict[str, Any]:
    """Eight devices at once; device ``victim`` loses power a third of the way into its upload."""
    client = make_client_side(work / "client")
    devices: list[NetnsDevice] = []
    servers: list[SshServer] = []
    try:
        for index in range(FLEET):
            device = make_netns_device()
            devices.append(device)
            servers.append(start_sshd(client, work / f"sshd{index}", f"d{index}",
                                      device.device_address, 2222, device.name,
                                      extra_config=PLAIN_SHELL))  # fmt: skip
            device.limit_rate("20mbit")
        size = 4 * MB
        bundle = make_bundle(work / "bundle", {"model.onnx.data": os.urandom(size)})
        roots = [work / f"root{index}" for index in range(FLEET)]
        hosts = [arg for i, root in enumerate(roots) for arg in ("--host", f"d{i}:{root}")]

        def power_off_mid_way() -> None:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if partial_size(roots[victim], "engine/model.onnx.data") >= size // 3:
                    devices[victim].power_off()
                    return
                time.sleep(0.01)

        watcher = threading.Thread(target=power_off_mid_way, daemon=True)
        watcher.start()
        run = _deploy(client.config, work / "cache", *hosts, "--bundle", str(bundle)).wait()
        outcomes = json.loads(run.stdout) if run.stdout.strip().startswith("[") else []
        finished = [check_device(root).complete for i, root in enumerate(roots) if i != victim]
        failed = [o["host"] for o in outcomes if not o.get("ok")]
        ok = (
            run.code == 8
            and len(outcomes) == FLEET
            and failed == [f"d{victim}"]
            and all(finished)
            and check_device(roots[victim]).current is None
        )
        return {
            "devices": FLEET,
            "killed": f"d{victim}",
            "exit": run.code,
            "finished": sum(finished),
            "failed_hosts": failed,
            "victim_error": next((o.get("error") for o in outcomes if not o.get("ok")), None),
            "seconds": round(run.ended - run.started, 1),
            "ok": ok,
        }
    finally:
        for server in servers:
            server.stop()
        for device in devices:
            device.destroy()


def _big_source(directory: Path, total: int) -> Path:
    """``total`` bytes of random content quickly: a random 16 MiB block, each copy's first bytes
    made unique so no two blocks are equal."""
    directory.mkdir(parents=True)
    block = bytearray(os.urandom(BLOCK))
    per_file = total // 4
    for number in range(4):
        with (directory / f"shard{number}.bin").open("wb") as handle:
            written = 0
            while written < per_file:
                block[:16] = (number * 10**9 + written).to_bytes(16, "little")
                count = min(BLOCK, per_file - written)
                handle.write(block[:count])
                written += count
    return directory


def big_bundle_rss(work: Path) -> dict[str, Any]:
    """A 4 GB bundle to a loopback sshd; peak RSS of the edgepack process (wait4's ru_maxrss)."""
    free = shutil.disk_usage(work.parent if not work.exists() else work).free
    if free < 3.5 * BIG_BUNDLE_BYTES:
        return {"skipped": f"needs {3.5 * BIG_BUNDLE_BYTES / 1e9:.0f} GB free, {free / 1e9:.0f}"}
    work.mkdir(parents=True)
    client = make_client_side(work / "client")
    server = start_sshd(client, work / "sshd", "big", extra_config=PLAIN_SHELL)
    try:
        source = _big_source(work / "source", BIG_BUNDLE_BYTES)
        bundle = work / "bundle"
        manifest = Manifest(
            edgepack_version="trial", model={"name": "big"}, recipe={"backend": "ort"},
            target={"name": "host-x86_64-cpu", "arch": os.uname().machine, "cuda_arch": None},
            tools={}, plan={}, stages=[],
        )  # fmt: skip
        prompts = work / "prompts.json"
        prompts.write_text(json.dumps({"prompts": [{"id": "p1", "text": "Hello"}]}))
        write_bundle(bundle, manifest, {"engine": source, "prompts.json": prompts},
                     FileHashIndex(work / "hashes.json"))  # fmt: skip
        shutil.rmtree(source)
        root = work / "device-root"
        run = _deploy(client.config, work / "cache", "--host", f"big:{root}", "--bundle",
                      str(bundle)).wait(timeout=1800)  # fmt: skip
        outcome = json.loads(run.stdout)[0] if run.stdout.strip().startswith("[") else {}
        rss_mb = run.peak_rss_kb / 1024
        complete = check_device(root).complete
        return {
            "bytes": outcome.get("bytes_total"),
            "exit": run.code,
            "peak_rss_mb": round(rss_mb, 1),
            "seconds": round(run.ended - run.started, 1),
            "complete": complete,
            "ok": run.code == 0 and complete and rss_mb < RSS_LIMIT_MB,
        }
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


def run_load_trials(work: Path, seed: int) -> dict[str, Any]:
    work.mkdir(parents=True)
    fleet = fleet_with_one_killed(work / "fleet", victim=seed % FLEET)
    print(f"fleet: {fleet}", flush=True)
    big = big_bundle_rss(work / "big")
    print(f"4 GB bundle: {big}", flush=True)
    return {"fleet": fleet, "big_bundle": big, "ok": fleet["ok"] and big.get("ok", False)}


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    print(run_load_trials(Path(sys.argv[1]), 11))

"""edgepack deploy vs `scp -r` vs `rsync -a` on the same shaped link; write JSON and a table.

    sudo python -m benchmarks run [--quick] deploy_vs_scp_rsync

The device is a network namespace running its own sshd, joined to this host by a veth pair whose
host end is shaped with `tc tbf` (the integration tier's fixtures, imported). Its account's home
is a fresh copy of /etc/skel, as a new device user's is: the shell sshd starts for each command
reads that home's dotfiles, and this host's own (a pyenv set-up, ~0.1 s per command) would add
a cost no device has to every tool's every connection. Each tool copies the
bundle three times: first copy, the same again (no change), and a copy with one file changed;
then each makes one first copy compressed (`deploy --compress`, `scp -C`, `rsync -z`).
edgepack and rsync also re-deploy a bundle whose 100 MB engine file (20 MB with --quick) has one
byte changed, over a first copy made on the device's file system directly (rsync's own count of
its bytes from `--stats` beside the veth's). edgepack also has a transfer cut (nftables drop) at
half the payload and then restarted (not with --quick). The bundle is the demo int4 bundle (built,
cached, first). Bytes are what the host sent on the veth (`tx_bytes`: TCP/IP and SSH framing
included); `ideal_s` is the payload at the link rate: the roofline of each copy. Needs root,
`ip netns`, tc, nft, sshd, scp and rsync. Nothing is asserted.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import demo_bundle
from benchmarks.needs import fail, require_programs, require_root
from benchmarks.report import Row
from edgepack.bundle import MANIFEST, Manifest, verify_bundle, write_bundle
from edgepack.cache import HASH_INDEX_FILE, FileHashIndex, default_cache_root
from edgepack.errors import ExitCode
from edgepack.remote.ssh import SSH_CONFIG_ENV
from tests.integration.ssh_netns import (
    NetnsDevice,
    SshClientSide,
    make_client_side,
    make_netns_device,
    start_sshd,
)

NAME = "deploy_vs_scp_rsync"
ALIAS = "bench-device"
CHANGED_FILE = "engine/genai_config.json"
BIG_FILE = "engine/model.onnx.data"
MB = 1_000_000
SKELETON_HOME = "/etc/skel"


@dataclass
class Link:
    """The shaped device and how to reach it."""

    device: NetnsDevice
    client: SshClientSide
    rate_bps: float
    work: Path

    def measure(self, label: str, command: list[str], payload: int) -> dict[str, Any]:
        print("$", " ".join(command), flush=True)
        sent, received = self.device.sent_bytes(), self.device.received_bytes()
        started = time.monotonic()
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        seconds = time.monotonic() - started
        row = {
            "scenario": label,
            "seconds": round(seconds, 2),
            "wire_bytes_sent": self.device.sent_bytes() - sent,
            "wire_bytes_received": self.device.received_bytes() - received,
            "payload_bytes": payload,
            "ideal_s": round(payload * 8 / self.rate_bps, 2),
            "ok": done.returncode == 0,
        }
        if done.returncode != 0:
            row["error"] = (done.stderr.strip().splitlines() or ["?"])[-1]
        if "--stats" in command:
            row |= rsync_stats(done.stdout)
        if command[1:4] == ["-m", "edgepack", "deploy"] and done.stdout.strip().startswith("["):
            report = json.loads(done.stdout)[0]
            row["edgepack_bytes_sent"] = report.get("bytes_sent")
            row["status"] = report.get("status")
            row["error"] = report.get("error") or row.get("error")
        return row


@contextlib.contextmanager
def shaped_device(rate: str, work: Path) -> Iterator[Link]:
    client = make_client_side(work / "client")
    os.environ[SSH_CONFIG_ENV] = str(client.config)
    home = work / "device-home"
    shutil.copytree(SKELETON_HOME, home)
    device = make_netns_device()
    server = None
    try:
        device.limit_rate(rate)
        server = start_sshd(client, work / "sshd", ALIAS, device.device_address, 22, device.name,
                            extra_config=(f"SetEnv HOME={home}",))  # fmt: skip
        yield Link(device, client, rate_to_bps(rate), work)
    finally:
        if server is not None:
            server.stop()
        device.destroy()


def rate_to_bps(rate: str) -> float:
    units = {"kbit": 1e3, "mbit": 1e6, "gbit": 1e9}
    for unit, scale in units.items():
        if rate.lower().endswith(unit):
            return float(rate[: -len(unit)]) * scale
    return float(rate)


def changed_copy(bundle: Path, work: Path, nth: int = 1) -> Path:
    """The bundle with one file changed (``nth`` newlines appended: each copy differs from the
    others), sealed again (the same directory name, elsewhere)."""
    source = work / f"changed-src-{nth}"
    shutil.copytree(bundle, source)
    with (source / CHANGED_FILE).open("a", encoding="utf-8") as changed:
        changed.write("\n" * nth)
    contents = {p.name: p for p in sorted(source.iterdir()) if p.name != MANIFEST}
    target = work / f"changed-{nth}" / bundle.name
    _sealed_as_a_build_would(target, verify_bundle(bundle), contents)
    return target


def _sealed_as_a_build_would(target: Path, manifest: Manifest, contents: dict[str, Path]) -> None:
    """``write_bundle`` into ``target``, its hashes recorded where ``edgepack deploy`` looks (the
    default cache's index), as ``edgepack build`` records them."""
    hashes = FileHashIndex(default_cache_root() / HASH_INDEX_FILE)
    write_bundle(target, manifest, contents, hashes)
    hashes.save()


def rsync_stats(output: str) -> dict[str, int]:
    """rsync's own count of what it sent and received (``--stats``)."""
    found = {}
    for key in ("sent", "received"):
        match = re.search(rf"Total bytes {key}: ([\d,.]+)", output)
        if match:
            found[f"rsync_bytes_{key}"] = int(re.sub(r"[,.]", "", match.group(1)))
    return found


def big_file_bundles(bundle: Path, work: Path, size: int) -> tuple[Path, Path]:
    """Two bundles of a ``size``-byte engine file (random) and the demo's prompts, the second with
    one byte in the middle of the file changed; the same directory name in two places."""
    data = bytearray(random.Random(16).randbytes(size))
    made = []
    for name in ("big-old", "big-new"):
        source = work / f"{name}-src"
        (source / "engine").mkdir(parents=True)
        (source / BIG_FILE).write_bytes(data)
        contents = {"engine": source / "engine", "prompts.json": bundle / "prompts.json"}
        manifest = verify_bundle(bundle).model_copy(update={"files": []})
        target = work / name / bundle.name
        _sealed_as_a_build_would(target, manifest, contents)
        made.append(target)
        data[size // 2] ^= 0x01
    # The first copy is an hour older: rsync skips a file of the same size and mtime unread.
    hour_ago = time.time() - 3600
    os.utime(made[0] / BIG_FILE, (hour_ago, hour_ago))
    return made[0], made[1]


def one_byte_changed(link: Link, bundle: Path, size: int) -> list[dict[str, Any]]:
    """edgepack and rsync re-deploying the bundle with one byte of a big file changed; the first
    copy is made directly on the device's file system (shared with this host), not timed."""
    old, new = big_file_bundles(bundle, link.work, size)
    label = f"one byte changed in a {size // MB} MB engine file"
    rows = []
    for tool in ("edgepack", "rsync -a"):
        root = Path(f"/root/edgepack-bench-delta-{tool.split()[0]}-{os.getpid()}")
        if tool == "edgepack":
            local = ["--host", "local", "--root", str(root), "--bundle", str(old)]
            subprocess.run([sys.executable, "-m", "edgepack", "deploy", *local], check=True,
                           capture_output=True)  # fmt: skip
            command = edgepack_deploy(link, new, str(root))
        else:
            shutil.copytree(old, root / old.name, copy_function=shutil.copy2)
            command = rsync_copy(link, new, str(root))
            command.insert(1, "--stats")
        rows.append({"tool": tool, **link.measure(label, command, 1)})
        shutil.rmtree(root, ignore_errors=True)
    return rows


def edgepack_deploy(link: Link, bundle: Path, root: str, *extra: str) -> list[str]:
    args = ["deploy", "--json", "--host", ALIAS, "--root", root, "--bundle", str(bundle)]
    return [sys.executable, "-m", "edgepack", *args, *extra]


def ssh_options(link: Link) -> list[str]:
    return [
        "-F",
        str(link.client.config),
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=accept-new",
    ]


def ssh_command(link: Link) -> list[str]:
    return ["ssh", *ssh_options(link)]


def scp_copy(link: Link, bundle: Path, root: str) -> list[str]:
    return ["scp", "-q", "-r", *ssh_options(link), str(bundle), f"{ALIAS}:{root}/"]


def rsync_copy(link: Link, bundle: Path, root: str) -> list[str]:
    remote_shell = " ".join(ssh_command(link))
    return ["rsync", "-a", "-e", remote_shell, f"{bundle}/", f"{ALIAS}:{root}/{bundle.name}/"]


def edgepack_compressed(link: Link, bundle: Path, root: str) -> list[str]:
    return edgepack_deploy(link, bundle, root, "--compress")


def scp_compressed(link: Link, bundle: Path, root: str) -> list[str]:
    command = scp_copy(link, bundle, root)
    return [command[0], "-C", *command[1:]]


def rsync_compressed(link: Link, bundle: Path, root: str) -> list[str]:
    command = rsync_copy(link, bundle, root)
    return [command[0], "-az", *command[2:]]


Tool = Callable[[Link, Path, str], list[str]]
TOOLS: dict[str, Tool] = {"edgepack": edgepack_deploy, "scp -r": scp_copy, "rsync -a": rsync_copy}
COMPRESSED: dict[str, Tool] = {
    "edgepack --compress": edgepack_compressed, "scp -C -r": scp_compressed,
    "rsync -az": rsync_compressed,
}  # fmt: skip
"""Each tool with SSH's (or rsync's own) zlib compression: first copies only."""
LINK_PROGRAMS = ("ip", "tc", "ssh", "ssh-keygen", "/usr/sbin/sshd")
"""What the shaped link and the device's sshd need, whichever tools are compared."""


def check_needs(tools: list[str], resume: bool) -> None:
    """Refuse to start, in one line each, where a program it needs is missing."""
    unknown = [tool for tool in tools if tool not in TOOLS]
    if unknown:
        fail(f"unknown --tools {unknown[0]!r}; choose from {', '.join(TOOLS)}", ExitCode.BAD_INPUT)
    programs = [*LINK_PROGRAMS, *(tool.split()[0] for tool in tools if tool != "edgepack")]
    require_programs([*programs, *(["nft"] if resume else [])])
    require_root("it makes a network namespace and shapes its link")


def three_copies(
    link: Link, tool: str, bundle: Path, changed: list[Path], repeats: int
) -> list[dict[str, Any]]:
    """First copy; the same again, ``repeats`` times; then each of ``changed`` in turn (each one
    file away from the one before). scp, which sends everything each time, does each once."""
    root = f"/root/edgepack-bench-{tool.split()[0]}-{os.getpid()}"
    subprocess.run([*ssh_command(link), ALIAS, "mkdir", "-p", root], check=True)
    make = TOOLS[tool]
    size, changed_bytes = payload_bytes(bundle), changed_file_bytes(changed[0])
    once = tool.startswith("scp")
    rows = [link.measure("first copy", make(link, bundle, root), size)]
    rows += [link.measure("no change", make(link, bundle, root), 0)
             for _ in range(1 if once else repeats)]  # fmt: skip
    rows += [link.measure("one file changed", make(link, copy, root), changed_bytes)
             for copy in (changed[:1] if once else changed)]  # fmt: skip
    subprocess.run([*ssh_command(link), ALIAS, "rm", "-rf", root], check=True)
    return [{"tool": tool, **row} for row in rows]


def compressed_first_copies(link: Link, bundle: Path) -> list[dict[str, Any]]:
    rows = []
    for tool, make in COMPRESSED.items():
        root = f"/root/edgepack-bench-z-{tool.split()[0]}-{os.getpid()}"
        subprocess.run([*ssh_command(link), ALIAS, "mkdir", "-p", root], check=True)
        rows.append({"tool": tool, **link.measure("first copy", make(link, bundle, root),
                                                  payload_bytes(bundle))})  # fmt: skip
        subprocess.run([*ssh_command(link), ALIAS, "rm", "-rf", root], check=True)
    return rows


def payload_bytes(bundle: Path) -> int:
    return sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())


def changed_file_bytes(bundle: Path) -> int:
    """What must move for the changed bundle: the changed file and the new manifest."""
    return (bundle / CHANGED_FILE).stat().st_size + (bundle / MANIFEST).stat().st_size


def cut_and_resume(link: Link, bundle: Path) -> list[dict[str, Any]]:
    """Cut the link once half the payload is on the device, then deploy again."""
    root = Path(f"/root/edgepack-bench-resume-{os.getpid()}")
    size = payload_bytes(bundle)
    watcher = threading.Thread(target=_cut_at, args=(link.device, root, size // 2), daemon=True)
    watcher.start()
    cut = link.measure("cut at half", edgepack_deploy(link, bundle, str(root), "--timeout", "5"), 0)
    watcher.join()
    link.device.heal()
    on_device = _partial_bytes(root)
    command = edgepack_deploy(link, bundle, str(root))
    resumed = link.measure("restart after the cut", command, size - on_device)
    resumed["bytes_on_device_before"] = on_device
    shutil.rmtree(root, ignore_errors=True)
    return [{"tool": "edgepack", **cut}, {"tool": "edgepack", **resumed}]


def _partial_bytes(root: Path) -> int:
    """The namespace shares this machine's file system: the device's files are readable here."""
    releases = root / "releases"
    if not releases.is_dir():
        return 0
    return sum(p.stat().st_size for p in releases.rglob("*") if p.is_file())


def _cut_at(device: NetnsDevice, root: Path, threshold: int) -> None:
    deadline = time.monotonic() + 600
    while _partial_bytes(root) < threshold and time.monotonic() < deadline:
        time.sleep(0.05)
    device.cut()


def params(quick: bool) -> dict[str, Any]:
    big = (20 if quick else 100) * MB
    rates = ["20mbit"] if quick else ["20mbit", "100mbit"]
    return {"rates": rates, "tools": list(TOOLS), "resume": not quick, "big_file_bytes": big,
            "repeats": 2 if quick else 5, "compressed": not quick}  # fmt: skip


def measure(params: dict[str, Any], workdir: Path) -> dict[str, Any]:
    check_needs(params["tools"], params["resume"])
    bundle = demo_bundle(workdir).resolve()
    verify_bundle(bundle)
    runs = [_at_rate(rate, params, bundle) for rate in params["rates"]]
    return {"bundle": str(bundle), "runs": runs}


def _at_rate(rate: str, params: dict[str, Any], bundle: Path) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as temporary, shaped_device(rate, Path(temporary)) as link:
        changed = [changed_copy(bundle, link.work, n) for n in range(1, params["repeats"] + 1)]
        for tool in params["tools"]:
            rows += three_copies(link, tool, bundle, changed, params["repeats"])
        if "rsync -a" in params["tools"] and "edgepack" in params["tools"]:
            rows += one_byte_changed(link, bundle, params.get("big_file_bytes", 100 * MB))
        if params.get("compressed", False):
            rows += compressed_first_copies(link, bundle)
        if params["resume"]:
            rows += cut_and_resume(link, bundle)
    return {"rate": rate, "rows": rows}


def rows(result: dict[str, Any]) -> list[Row]:
    """Wall seconds per tool and scenario at each rate (one sample per repeat); edgepack's against
    scp's and rsync's, the link rate's time for the bytes that must move as the roofline."""
    data = result["data"]
    runs = data.get("runs") or [{"rate": data["rate"], "rows": data["rows"]}]
    return [row for run in runs for row in _rate_rows(run["rate"], run["rows"])]


def _rate_rows(rate: str, measured: list[dict[str, Any]]) -> list[Row]:
    table = f"Deploy: {rate} tbf-shaped link to a namespace device"
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in measured:
        grouped.setdefault((row["tool"], row["scenario"]), []).append(row)
    found = []
    for (tool, scenario), group in grouped.items():
        peers = [f"{other}: {scenario}, {rate}" for other, seen in grouped
                 if seen == scenario and not other.startswith("edgepack")]  # fmt: skip
        ok = [r for r in group if r["ok"] or scenario == "cut at half"]
        failed = next((r.get("error") for r in group if r not in ok), None)
        compared = tuple(peers) if tool.startswith("edgepack") else ()
        note = f"failed: {failed}" if failed else ""
        found.append(Row(table, f"{tool}: {scenario}, {rate}", "s",
                         tuple(r["seconds"] for r in ok), compared, group[0]["ideal_s"] or None,
                         higher_is_better=False, note=note))  # fmt: skip
    return found + _wire_rows(table, rate, measured)


def _wire_rows(table: str, rate: str, measured: list[dict[str, Any]]) -> list[Row]:
    """For the one-byte change: the bytes both ways on the veth, and rsync's own count."""
    found = []
    for row in measured:
        if not row["scenario"].startswith("one byte changed") or not row["ok"]:
            continue
        wire = (row["wire_bytes_sent"] + row["wire_bytes_received"]) / 1000
        label = f"{row['tool']}: {row['scenario']}, on the wire, {rate}"
        rsync = f"rsync -a: {row['scenario']}, on the wire, {rate}"
        peers = (rsync,) if row["tool"] == "edgepack" else ()
        found.append(Row(table, label, "kB", (wire,), peers, higher_is_better=False))
        if "rsync_bytes_sent" in row:
            own = (row["rsync_bytes_sent"] + row["rsync_bytes_received"]) / 1000
            label = f"rsync -a: {row['scenario']}, its --stats, {rate}"
            found.append(Row(table, label, "kB", (own,), higher_is_better=False))
    return found

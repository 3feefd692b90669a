"""docs/RELIABILITY.md, written by the fault trials from what they measured."""

from __future__ import annotations

import datetime
import os
import platform
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.integration.fault_trials import Results, Trial

FAULT_TEXT = {
    "link_cut": "nftables drops every packet to and from the device (WiFi gone), healed after "
    "edgepack gave up (--timeout 10)",
    "sigkill": "edgepack SIGKILLed (no clean-up runs; its device lock goes stale)",
    "sshd_restart": "every process of the device's sshd killed (listener and sessions), "
    "sshd started again",
    "disk_full": "another writer takes every free byte of the device's file system (a 30 MiB "
    "tmpfs holding the deploy root) while the upload runs",
    "power_loss": "the device's processes killed and its disk (an ext4 image, loop-mounted with "
    "commit=1) copied without a sync, so unsynced writes are lost; the device boots from the copy",
    "ctrl_c": "SIGINT to the edgepack process",
}


def _exits(trials: list[Trial]) -> str:
    counts = Counter("none" if t.first_exit is None else str(t.first_exit) for t in trials)
    return ", ".join(f"{code}×{count}" for code, count in sorted(counts.items()))


def _scenario_row(name: str, trials: list[Trial]) -> str:
    fired = sum(t.fired for t in trials)
    corrupt = sum(not t.current_complete for t in trials)
    partial = sum(t.partial_selected for t in trials)
    reruns = sum(t.rerun_exit == 0 and t.rerun_complete for t in trials)
    missing = sum(t.missing for t in trials)
    resent = sum(max(t.resent, 0) for t in trials)
    worst = max((t.resent / t.missing for t in trials if t.missing), default=0.0)
    wire = sum(t.wire_bytes for t in trials)
    return (
        f"| {name} | {len(trials)} | {fired} | {_exits(trials)} | {corrupt} | {partial} | "
        f"{reruns}/{len(trials)} | {missing / 1e6:.2f} | {resent / 1e6:.2f} | {worst:.3f} | "
        f"{wire / 1e6:.2f} | {sum(t.ok for t in trials)}/{len(trials)} |"
    )


def _durability(trials: list[Trial]) -> str:
    after = [t for t in trials if t.durable_success is not None]
    kept = sum(bool(t.durable_success) for t in after)
    return f"{kept} of {len(after)}"


def _spread(values: list[float]) -> str:
    values = sorted(values)
    if not values:
        return "none measured"
    return f"median {values[len(values) // 2]:.2f} s, max {values[-1]:.2f} s over {len(values)}"


def _stops(trials: list[Trial]) -> str:
    interrupted = [t for t in trials if t.first_exit == 130]
    return (
        f"the upload stopped (the device's partial files last grew) "
        f"{_spread([t.stop_s for t in interrupted if t.stop_s is not None])} after the signal; "
        f"the process had exited {_spread([t.exit_s for t in interrupted if t.exit_s is not None])}"
        " after it"
    )


def _load(load: dict[str, Any]) -> list[str]:
    if not load:
        return ["Not run in this profile (`--full` runs them)."]
    fleet, big = load["fleet"], load["big_bundle"]
    lines = [
        f"- **{fleet['devices']} devices at once, {fleet['killed']} powered off a third of the way "
        f"into its upload:** exit {fleet['exit']}, {fleet['finished']} of {fleet['devices'] - 1} "
        f"others finished with a verified `current`, failure reported for "
        f'{", ".join(fleet["failed_hosts"]) or "no host"} ("{fleet["victim_error"]}"), '
        f"{fleet['seconds']} s; {'ok' if fleet['ok'] else 'FAILED'}.",
    ]
    if "skipped" in big:
        lines.append(f"- **4 GB bundle:** skipped: {big['skipped']}.")
    else:
        lines.append(
            f"- **4 GB bundle** ({(big['bytes'] or 0) / 1e9:.2f} GB) over a loopback sshd: "
            f"exit {big['exit']}, peak RSS of the edgepack process **{big['peak_rss_mb']} MB** "
            f"(limit 200 MB, from wait4's ru_maxrss), {big['seconds']} s, release verified: "
            f"{big['complete']}; {'ok' if big['ok'] else 'FAILED'}."
        )
    return lines


def render(results: Results) -> str:
    by_scenario: dict[str, list[Trial]] = {}
    for trial in results.trials:
        by_scenario.setdefault(trial.scenario, []).append(trial)
    total = len(results.trials)
    corrupt = sum(not t.current_complete for t in results.trials)
    failed = [t for t in results.trials if not t.ok]
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Reliability: deploy under faults",
        "",
        "Written by `python -m tests.integration.fault_trials --full` (seed "
        f"{results.seed}, {now}, {platform.node() or 'this host'}, Linux {os.uname().release}). "
        "Do not edit by hand: rerun the command.",
        "",
        f"**{total} trials, {corrupt} with a corrupt `current`, {len(failed)} failed.**",
        "",
        "Each trial deploys a bundle of "
        f"{results.total / 1e6:.2f} MB (a 6 MB and a 1 MB file of new content, a 0.3 MB file "
        "the device already holds in its current release, the manifest) with a real "
        "`edgepack deploy` process to a real sshd in a network namespace behind a 40 Mbit/s tbf "
        f"link (a clean deploy takes {results.clean_s:.2f} s). The fault comes at a seeded random "
        "moment: a byte offset of the big file's upload, a time within the whole deploy "
        "(verification, the sync, the renames and the switch included), or, for power loss, up "
        "to 2.5 s after the deploy reported success. Then, reading the device's disk directly:",
        "",
        "- `current` must point to a complete release that verifies against its manifest "
        "(sizes and sha256 of every file), never to a partial one (`previous` neither);",
        "- after a power loss that came once the deploy had reported success, `current` must be "
        "the new release (the success was durable);",
        "- a rerun must complete, switch to the new release, and send no more than the bytes "
        "the device was missing (counted from its disk: whole files any release holds, the "
        "verified prefix of a partial file) plus 5 %.",
        "",
        "| scenario | trials | faults fired | first run's exit codes | corrupt current | "
        "partial selected | reruns complete | missing MB | resent MB | worst resent/missing | "
        "wire MB (rerun) | ok |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        *(_scenario_row(name, trials) for name, trials in by_scenario.items()),
        "",
        "Exit codes: 0 done before the fault, 8 connection lost, 11 device disk full, 130 "
        "interrupted, -9 killed. *wire MB* is what this host sent over the veth during the "
        "rerun (SSH framing and TCP included).",
        "",
        "## Faults",
        "",
        *(f"- **{name}**: {text}." for name, text in FAULT_TEXT.items()),
        "",
        f"Power loss after a reported success: the new release was current after the reboot in "
        f"{_durability(by_scenario.get('power_loss', []))} trials. Ctrl-C (exit 130): "
        f"{_stops(by_scenario.get('ctrl_c', []))}.",
        "",
        "## Load",
        "",
        *_load(results.load),
        "",
        "## How power loss is simulated, and its limits",
        "",
        "The deploy root is an ext4 file system in an image file, loop-mounted with `commit=1`. "
        "At the fault every process of the device is killed, then the image is copied while "
        "still mounted, without a sync: what the file system had only in its page cache (data "
        "and metadata not yet written to the block device) is not in the copy. The device then "
        "mounts the copy (the journal is replayed) and sshd starts on it. With `commit=1` the "
        "journal makes renames and the `current` link durable within a second while file data "
        "waits for writeback (30 s by default), which is the window in which a deploy that does "
        "not fsync selects a release whose files are empty or short. Not simulated: a disk that "
        "lies about its write cache or reorders writes past a flush (the loop device honours "
        "flushes), torn sectors; device-mapper's dm-flakey is not available in this kernel.",
        "",
    ]
    if failed:
        lines += ["## Failed trials", ""]
        lines += [
            f"- {t.scenario} #{t.index} ({t.trigger}): {t.problem or 'see the table'}"
            for t in failed
        ]
        lines.append("")
    return "\n".join(lines)


def write_report(results: Results, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(results), encoding="utf-8")

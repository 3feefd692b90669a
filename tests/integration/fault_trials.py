"""Fault trials: real `edgepack deploy` processes against a real sshd in a network namespace, with
a fault injected at a seeded random moment, then a check of the device and a rerun.

Scenarios: the link cut (nftables drop), edgepack SIGKILLed, the device's sshd restarted, the
device's disk filling (a size-limited tmpfs that another writer fills), power loss (a loop-mounted
ext4 image copied without a sync: unsynced writes are lost), Ctrl-C. After every trial:

- ``current`` points to a complete release that verifies against its manifest (never a partial);
- after a power loss that came once the deploy had reported success, ``current`` is the new one;
- a rerun completes and resends no more than the bytes missing on the device plus 5 %.

    python -m tests.integration.fault_trials --full     # >= 100 trials, writes docs/RELIABILITY.md
    python -m tests.integration.fault_trials --trials 2 # a few per scenario

The short profile runs in the normal test command (tests/integration/test_fault_trials.py).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.integration.conftest import make_bundle, missing_netns, missing_sshd, nft_available
from tests.integration.fault_devices import (
    REPOSITORY,
    DeployRun,
    Device,
    Root,
    bundle_files,
    check_device,
    copy_tree,
    deploy_now,
    fill_disk,
    make_image,
    missing_bytes,
    mount_image,
    mount_tmpfs,
    partial_size,
    reboot_from,
    remove_tree,
    shared_mounts,
    snapshot_after_power_loss,
    start_deploy,
)

MB = 1_000_000
BIG = "engine/model.onnx.data"
SCENARIOS = ("link_cut", "sigkill", "sshd_restart", "disk_full", "power_loss", "ctrl_c")
RESEND_SLACK = 0.05
STOP_LIMIT_S = 1.0
"""Ctrl-C: from the signal to the last byte the device's partial files grew by."""
EXPECTED_EXITS = {
    "link_cut": {8},
    "sigkill": {-9},
    "sshd_restart": {8},
    "disk_full": {11},
    "power_loss": {-9},
    "ctrl_c": {130},
}
"""How the first run ends when the fault came before it finished (0: it had finished)."""
REPORT = REPOSITORY / "docs" / "RELIABILITY.md"


@dataclass
class Trial:
    scenario: str
    index: int
    trigger: str
    """Where the fault came: "at byte N of the big file", "N.NN s in", "N.NN s after success"."""
    fired: bool
    first_exit: int | None
    first_error: str
    stop_s: float | None
    """Ctrl-C: seconds from the signal until the upload stopped (the partial files' last growth)."""
    exit_s: float | None
    current_after_fault: str | None
    current_complete: bool
    partial_selected: bool
    durable_success: bool | None
    """Power loss after the deploy had reported success: was the new release current after?"""
    missing: int
    resent: int
    wire_bytes: int
    rerun_exit: int | None
    rerun_complete: bool
    problem: str = ""

    @property
    def resend_ok(self) -> bool:
        return self.resent <= self.missing * (1 + RESEND_SLACK)

    @property
    def exit_ok(self) -> bool:
        """The first run ended the way its fault should end it: each error told apart."""
        expected = EXPECTED_EXITS[self.scenario] | {0}
        stopped_in_time = self.stop_s is None or self.first_exit == 0 or self.stop_s < STOP_LIMIT_S
        return self.first_exit in expected and stopped_in_time

    @property
    def ok(self) -> bool:
        return (
            self.exit_ok
            and self.current_complete
            and not self.partial_selected
            and self.durable_success is not False
            and self.rerun_exit == 0
            and self.rerun_complete
            and self.resend_ok
        )


@dataclass
class Bundles:
    old: Path
    new: Path
    new_release: str
    total: int


def make_bundles(directory: Path, rng: random.Random) -> Bundles:
    """The release on the device before each trial, and the one each trial deploys: a big and a
    medium file of new content, a tokenizer both share (hard-linked, not sent)."""
    shared = rng.randbytes(300_000)
    old = make_bundle(directory / "old", {"model.onnx.data": rng.randbytes(MB), "t.json": shared})
    files = {
        "model.onnx.data": rng.randbytes(6 * MB),
        "model.onnx": rng.randbytes(MB),
        "t.json": shared,
        "genai_config.json": b'{"model": {"type": "trial"}}',
    }
    new = make_bundle(directory / "new", files)
    release = json.loads((new / "manifest.json").read_text())["bundle_id"][:16]
    return Bundles(old, new, release, sum(size for _, size, _ in bundle_files(new)))


@dataclass
class Context:
    work: Path
    device: Device
    bundles: Bundles
    template: Path
    """A deploy root holding the old release as current (copied for each trial)."""
    clean_s: float
    """How long a clean deploy of the new bundle takes (the span time-based faults fall in)."""
    image_template: Path


def prepare(work: Path, rng: random.Random) -> Context:
    device = Device.make(work)
    try:
        return _prepare(work, rng, device)
    except BaseException:
        device.destroy()
        raise


def _prepare(work: Path, rng: random.Random, device: Device) -> Context:
    bundles = make_bundles(work / "bundles", rng)
    template = work / "template-root"
    _deploy_cleanly(device, template, bundles.old)
    clean_root = work / "clean-root"
    copy_tree_into(template, clean_root)
    clean = _deploy_cleanly(device, clean_root, bundles.new)
    remove_tree(clean_root)
    image = work / "template.img"
    make_image(image, 64)
    mounted = work / "template-mount"
    mount_image(image, mounted)
    try:
        copy_tree(template, mounted)
        os.sync()  # the template itself is on the disk before any trial starts
    finally:
        subprocess.run(["umount", str(mounted)], check=True)
    return Context(work, device, bundles, template, clean.ended - clean.started, image)


def _deploy_cleanly(device: Device, root: Path, bundle: Path) -> DeployRun:
    run = deploy_now(device, root, bundle)
    if run.code != 0:
        raise RuntimeError(f"a deploy without faults failed: {run.stdout[-1000:]} {run.stderr}")
    return run


def copy_tree_into(source: Path, target: Path) -> None:
    target.mkdir(parents=True)
    copy_tree(source, target)


def new_root(context: Context, scenario: str, index: int) -> Root:
    path = context.work / f"{scenario}-{index}" / "root"
    if scenario == "disk_full":
        # Room for the new release plus deploy's 16 MiB reserve, and nothing else.
        mount_tmpfs(path, 30)
        root = Root(path, "tmpfs", mounted=[path])
        copy_tree(context.template, path)
        return root
    if scenario == "power_loss":
        image = path.parent / "disk.img"
        path.parent.mkdir(parents=True, exist_ok=True)
        copy = ["cp", "--sparse=always", str(context.image_template), str(image)]
        subprocess.run(copy, check=True)
        mount_image(image, path)
        return Root(path, "ext4", image=image, mounted=[path])
    copy_tree_into(context.template, path)
    return Root(path, "dir")


# --- triggers -----------------------------------------------------------------------------------


@dataclass
class Trigger:
    kind: str
    """"bytes": when the big file's partial copy reaches ``at``; "time": ``at`` seconds in;
    "after": ``at`` seconds after the deploy reported success."""
    at: float

    def describe(self) -> str:
        if self.kind == "bytes":
            return f"at byte {int(self.at)} of {BIG}"
        if self.kind == "after":
            return f"{self.at:.2f} s after success"
        return f"{self.at:.2f} s in"


def choose_trigger(rng: random.Random, scenario: str, context: Context) -> Trigger:
    size = 6 * MB
    if scenario == "power_loss":
        if rng.random() < 0.4:
            return Trigger("after", rng.uniform(0.0, 2.5))
        return Trigger("time", rng.uniform(0.2, context.clean_s * 1.05))
    if scenario in ("sigkill", "ctrl_c") and rng.random() < 0.3:
        return Trigger("time", rng.uniform(0.2, context.clean_s * 1.05))
    return Trigger("bytes", rng.uniform(0.03, 0.97) * size)


def wait_for(trigger: Trigger, run: DeployRun, root: Path) -> bool:
    """Block until the trigger's moment; False when the deploy ended first."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if trigger.kind == "bytes" and partial_size(root, BIG) >= trigger.at:
            return True
        if trigger.kind == "time" and time.monotonic() - run.started >= trigger.at:
            return True
        if run.finished():
            if trigger.kind == "after" and run.code == 0:
                time.sleep(trigger.at)
                return True
            return False
        time.sleep(0.005)
    return False


# --- the faults ---------------------------------------------------------------------------------

Fault = Callable[[Context, Root, DeployRun], dict[str, Any]]


def fault_link_cut(context: Context, root: Root, run: DeployRun) -> dict[str, Any]:
    context.device.netns.cut()
    run.wait()
    context.device.netns.heal()
    return {}


def fault_sigkill(context: Context, root: Root, run: DeployRun) -> dict[str, Any]:
    run.signal(signal.SIGKILL)
    run.wait()
    return {}


def fault_sshd_restart(context: Context, root: Root, run: DeployRun) -> dict[str, Any]:
    context.device.restart_sshd()
    run.wait()
    return {}


def fault_disk_full(context: Context, root: Root, run: DeployRun) -> dict[str, Any]:
    filler = fill_disk(root.path)
    run.wait()
    filler.unlink()
    return {}


def fault_power_loss(context: Context, root: Root, run: DeployRun) -> dict[str, Any]:
    succeeded = run.finished() and run.code == 0
    crashed = snapshot_after_power_loss(root, context.device, run)
    run.wait()
    reboot_from(root, crashed)
    context.device.server.start()
    return {"succeeded_before": succeeded}


def fault_ctrl_c(context: Context, root: Root, run: DeployRun) -> dict[str, Any]:
    """SIGINT; then the device's partial files are watched: the moment they last grew is when
    the upload stopped (what a loaded machine takes to tear the process down is apart)."""
    sent = time.monotonic()
    run.signal(signal.SIGINT)
    sizes, last_growth = _partial_bytes(root.path), sent
    while not run.finished() or time.monotonic() < run.ended + 1.0:
        now = _partial_bytes(root.path)
        if now != sizes:
            sizes, last_growth = now, time.monotonic()
        if time.monotonic() - sent > 60:
            run.signal(signal.SIGKILL)
        time.sleep(0.01)
    run.wait()
    return {"stop_s": last_growth - sent, "exit_s": run.ended - sent}


def _partial_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in (root / "releases").glob("*.partial/**/*") if p.is_file())


FAULTS: dict[str, Fault] = {
    "link_cut": fault_link_cut,
    "sigkill": fault_sigkill,
    "sshd_restart": fault_sshd_restart,
    "disk_full": fault_disk_full,
    "power_loss": fault_power_loss,
    "ctrl_c": fault_ctrl_c,
}


def run_trial(context: Context, scenario: str, index: int, rng: random.Random) -> Trial:
    trigger = choose_trigger(rng, scenario, context)
    root = new_root(context, scenario, index)
    try:
        run = start_deploy(context.device, root.path, context.bundles.new)
        fired = wait_for(trigger, run, root.path)
        extra = FAULTS[scenario](context, root, run) if fired else {}
        if not fired:
            run.wait()
        return _check_and_rerun(context, scenario, index, trigger, fired, run, root, extra)
    finally:
        root.unmount()
        remove_tree(root.path.parent)


def _check_and_rerun(
    context: Context,
    scenario: str,
    index: int,
    trigger: Trigger,
    fired: bool,
    run: DeployRun,
    root: Root,
    extra: dict[str, Any],
) -> Trial:
    after = check_device(root.path)
    durable = None
    if extra.get("succeeded_before"):
        durable = after.current == f"releases/{context.bundles.new_release}"
    missing = missing_bytes(root.path, context.bundles.new)
    wire_before = context.device.netns.sent_bytes()
    rerun = deploy_now(context.device, root.path, context.bundles.new)
    wire = context.device.netns.sent_bytes() - wire_before
    final = check_device(root.path)
    new_current = final.current == f"releases/{context.bundles.new_release}"
    outcome = run.outcome
    return Trial(
        scenario=scenario,
        index=index,
        trigger=trigger.describe(),
        fired=fired,
        first_exit=run.code,
        first_error=str(outcome.get("error") or run.stderr.strip().splitlines()[-1:] or "")[:200],
        stop_s=extra.get("stop_s"),
        exit_s=extra.get("exit_s"),
        current_after_fault=after.current,
        current_complete=after.complete,
        partial_selected=after.partial_selected,
        durable_success=durable,
        missing=missing,
        resent=int(rerun.outcome.get("bytes_sent", -1)),
        wire_bytes=wire,
        rerun_exit=rerun.code,
        rerun_complete=final.complete and new_current,
        problem="; ".join(p for p in (after.problem, final.problem) if p)
        or ("" if rerun.code == 0 else rerun.stderr[-300:]),
    )


@dataclass
class Results:
    seed: int
    trials: list[Trial] = field(default_factory=list)
    load: dict[str, Any] = field(default_factory=dict)
    clean_s: float = 0.0
    total: int = 0


def run_trials(
    work: Path, per_scenario: int, seed: int, scenarios: tuple[str, ...] = SCENARIOS
) -> Results:
    with shared_mounts(work):
        return _run_trials(work, per_scenario, seed, scenarios)


def _run_trials(work: Path, per_scenario: int, seed: int, scenarios: tuple[str, ...]) -> Results:
    rng = random.Random(seed)
    context = prepare(work, rng)
    results = Results(seed, clean_s=context.clean_s, total=context.bundles.total)
    try:
        for index in range(per_scenario):
            for scenario in scenarios:
                trial = run_trial(context, scenario, index, rng)
                results.trials.append(trial)
                mark = "ok" if trial.ok else "FAILED"
                print(f"{scenario:13} #{index:<3} {trial.trigger:34} first exit "
                      f"{trial.first_exit}, missing {trial.missing}, resent {trial.resent}: {mark}"
                      + (f" ({trial.problem})" if trial.problem else ""), flush=True)  # fmt: skip
    finally:
        context.device.destroy()
    return results


def environment_problem() -> str | None:
    for problem in (missing_sshd(), missing_netns()):
        if problem:
            return problem
    if not nft_available():
        return "nft (nftables) is missing"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="17 trials per scenario and the load "
                        "trials; writes docs/RELIABILITY.md")  # fmt: skip
    parser.add_argument("--trials", type=int, default=2, help="trials per scenario")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--scenario", action="append", choices=SCENARIOS, help="only these")
    parser.add_argument("--report", type=Path, default=None, help="write the report here")
    args = parser.parse_args(argv)
    problem = environment_problem()
    if problem:
        print(f"fault trials need: {problem}", file=sys.stderr)
        return 2
    from tests.integration.fault_load import run_load_trials
    from tests.integration.fault_report import write_report

    per_scenario = 17 if args.full else args.trials
    with tempfile.TemporaryDirectory(prefix="edgepack-faults-") as scratch:
        scenarios = tuple(args.scenario or SCENARIOS)
        results = run_trials(Path(scratch), per_scenario, args.seed, scenarios)
        if args.full:
            results.load = run_load_trials(Path(scratch) / "load", args.seed)
    report = args.report or (REPORT if args.full else None)
    if report is not None:
        write_report(results, report)
        print(f"wrote {report}")
    failed = [t for t in results.trials if not t.ok]
    load_failed = results.load and not results.load.get("ok", False)
    print(f"{len(results.trials)} trials, {len(failed)} failed")
    return 1 if failed or load_failed else 0


def as_rows(results: Results) -> list[dict[str, Any]]:
    return [asdict(t) | {"ok": t.ok} for t in results.trials]


if __name__ == "__main__":
    sys.exit(main())

"""Which runner benches the deployed release when ``--runner`` is not given: one that can run there.

The Python runner where the device's Python (``--remote-python``, else ``<root>/venv``, else its
``python3``) imports onnxruntime-genai and edgepack; else the release's C++ runtime where it was
built for the device's architecture; else a refusal that names both fixes. The probes are read
first (:func:`probe_python`, :func:`probe_runtime`), the choice is made from them alone
(:func:`choose_runner`).
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from edgepack.bundle import MANIFEST, Manifest
from edgepack.errors import RemoteError
from edgepack.remote.connector import Connector, shell
from edgepack.remote.device_run import current_release_dir
from edgepack.remote.facts import DeviceFacts
from edgepack.remote.runtime_bench import RUNTIME_BINARY

VENV_PYTHON = "venv/bin/python"
PYTHON_NEEDS = {"onnxruntime_genai": "onnxruntime-genai", "edgepack.cli.main": "edgepack"}
"""Modules the Python runner imports on the device, with the distribution each comes from."""

# Imports each module named in argv (a real import: a wheel whose native library does not load
# counts as missing); prints the ones that failed. Python 2 and 3.
IMPORT_PROBE = """import sys
missing = []
for name in sys.argv[1:]:
    try:
        __import__(name)
    except Exception:
        missing.append(name)
print("missing=" + ",".join(missing))"""

# The probe under a time limit (a wedged interpreter costs seconds, not the bench); through a shell,
# so a Python that is not there is exit status 127 on every connector.
LIMITED = 'if command -v timeout >/dev/null 2>&1; then exec timeout 30 "$@"; fi; exec "$@"'

# $1 the runtime: exits 3 where it is missing (not being executable is the bench's to report).
RUNTIME_PROBE = '[ -f "$1" ] || exit 3'


@dataclass(frozen=True)
class PythonProbe:
    """The Python the runner would use on the device, and what it could not import."""

    python: str | None
    """None: the device has no Python at all."""
    missing: tuple[str, ...] = ()
    """Distributions it cannot import (``onnxruntime-genai``, ``edgepack``)."""

    @property
    def ready(self) -> bool:
        return self.python is not None and not self.missing

    def why_not(self) -> str:
        if self.python is None:
            return "the device has no Python"
        return f"{self.python} cannot import {' or '.join(self.missing)}"


@dataclass(frozen=True)
class RuntimeProbe:
    """The deployed release's C++ runtime, as the device has it."""

    present: bool
    built_for: str | None
    """The architecture of the bundle's target (the runtime's)."""
    target: str | None
    device_arch: str

    @property
    def fits(self) -> bool:
        return self.present and self.built_for == self.device_arch

    def why_not(self) -> str:
        if not self.present:
            return f"the deployed bundle has no C++ runtime ({RUNTIME_BINARY})"
        return (
            f"its C++ runtime is built for {self.built_for} ({self.target}) and the device is "
            f"{self.device_arch}"
        )


@dataclass(frozen=True)
class RunnerChoice:
    runner: str
    """``python`` or ``runtime``."""
    reason: str
    python: str | None = None
    """The device's Python the Python runner runs with."""

    def line(self, label: str) -> str:
        """What the bench prints: the runner and why, in one line."""
        shown = "edgepack's Python runner" if self.runner == "python" else "the C++ runtime"
        return f"bench on {label}: {shown} (--runner {self.runner}): {self.reason}"


def choose_runner(label: str, python: PythonProbe, runtime: RuntimeProbe) -> RunnerChoice:
    """The Python runner where its Python is ready, else a runtime that fits, else a refusal."""
    if python.ready:
        return RunnerChoice(
            "python", f"{python.python} imports onnxruntime-genai and edgepack", python.python
        )
    if runtime.fits:
        return RunnerChoice(
            "runtime",
            f"{python.why_not()}; the bundle's runtime is built for {runtime.device_arch}",
        )
    raise RemoteError(
        f"{label}: nothing can bench the deployed bundle there: {python.why_not()}, and "
        f"{runtime.why_not()}",
        hint="build with --device-python X.Y so deploy installs <root>/venv (or point "
        "--remote-python at a Python with onnxruntime-genai and edgepack), or build the bundle "
        f"for the device's target with its C++ runtime (`edgepack targets detect {label}` names "
        "it; --runtime native or cross) and deploy it",
    )


def python_candidate(connector: Connector, facts: DeviceFacts, explicit: str | None) -> str | None:
    """--remote-python, else the venv under the deploy root, else the device's python3."""
    if explicit:
        return explicit
    venv = posixpath.join(facts.root, VENV_PYTHON)
    if connector.run(["test", "-x", venv], check=False).status == 0:
        return venv
    return facts.python


def probe_python(connector: Connector, facts: DeviceFacts, explicit: str | None) -> PythonProbe:
    """Which of the runner's modules the candidate Python imports on the device."""
    python = python_candidate(connector, facts, explicit)
    if python is None:
        return PythonProbe(None)
    probe = shell(LIMITED, python, "-c", IMPORT_PROBE, *PYTHON_NEEDS)
    done = connector.run(probe, check=False, timeout=60)
    printed = [line for line in done.stdout.splitlines() if line.startswith("missing=")]
    if done.status != 0 or not printed:  # it did not run at all, or not to the end
        return PythonProbe(python, tuple(PYTHON_NEEDS.values()))
    failed = [name for name in printed[-1].removeprefix("missing=").split(",") if name]
    return PythonProbe(python, tuple(PYTHON_NEEDS.get(name, name) for name in failed))


def probe_runtime(connector: Connector, facts: DeviceFacts) -> RuntimeProbe:
    """Whether the current release has a runtime, and the architecture it was built for."""
    release = current_release_dir(connector, facts)
    data = connector.read_bytes(posixpath.join(release, MANIFEST))
    try:
        target = Manifest.model_validate_json(data or b"").target
    except ValueError:
        target = {}
    binary = posixpath.join(release, RUNTIME_BINARY)
    present = connector.run(shell(RUNTIME_PROBE, binary), check=False).status == 0
    name = target.get("name")
    arch = target.get("arch")
    return RuntimeProbe(
        present=present,
        built_for=None if arch is None else str(arch),
        target=None if name is None else str(name),
        device_arch=facts.arch,
    )


def pick_runner(connector: Connector, facts: DeviceFacts, explicit: str | None) -> RunnerChoice:
    """Probe the device, then choose (:func:`choose_runner`)."""
    python = probe_python(connector, facts, explicit)
    return choose_runner(connector.label, python, probe_runtime(connector, facts))

"""bench --remote without --runner: the runner that can run on the device, or both fixes."""

from __future__ import annotations

import json
import platform
import sys
import venv
from pathlib import Path

import pytest

from edgepack.errors import ExitCode, RemoteError
from edgepack.remote.connector import LocalConnector
from edgepack.remote.facts import gather_facts
from edgepack.remote.runner_pick import (
    PythonProbe,
    RuntimeProbe,
    choose_runner,
    pick_runner,
    probe_python,
    probe_runtime,
)
from tests.unit.test_runtime_bench import deploy_root, recorded

HERE = platform.machine()
OTHER = "x86_64" if HERE == "aarch64" else "aarch64"
READY = PythonProbe("/srv/edgepack/venv/bin/python")
PLAIN = PythonProbe("/usr/bin/python3", ("onnxruntime-genai", "edgepack"))
RUNTIME = RuntimeProbe(True, "aarch64", "generic-aarch64-cpu", "aarch64")


def test_the_python_runner_where_its_python_imports_what_it_needs() -> None:
    choice = choose_runner("dev", READY, RUNTIME)
    assert (choice.runner, choice.python) == ("python", "/srv/edgepack/venv/bin/python")
    assert choice.line("dev") == (
        "bench on dev: edgepack's Python runner (--runner python): "
        "/srv/edgepack/venv/bin/python imports onnxruntime-genai and edgepack"
    )


def test_the_cpp_runtime_where_the_python_lacks_onnxruntime_genai() -> None:
    choice = choose_runner("dev", PLAIN, RUNTIME)
    assert (choice.runner, choice.python) == ("runtime", None)
    assert choice.reason == (
        "/usr/bin/python3 cannot import onnxruntime-genai or edgepack; the bundle's runtime is "
        "built for aarch64"
    )
    assert choice.line("dev").startswith("bench on dev: the C++ runtime (--runner runtime): ")


def test_the_cpp_runtime_on_a_device_without_python() -> None:
    assert choose_runner("dev", PythonProbe(None), RUNTIME).runner == "runtime"


@pytest.mark.parametrize(
    ("python", "runtime", "why"),
    [
        (
            PLAIN,
            RuntimeProbe(False, "aarch64", "generic-aarch64-cpu", "aarch64"),
            "/usr/bin/python3 cannot import onnxruntime-genai or edgepack, and the deployed "
            "bundle has no C++ runtime (runtime/bin/edgepack-runtime)",
        ),
        (
            PythonProbe(None),
            RuntimeProbe(True, "x86_64", "host-x86_64-cpu", "aarch64"),
            "the device has no Python, and its C++ runtime is built for x86_64 "
            "(host-x86_64-cpu) and the device is aarch64",
        ),
    ],
)
def test_neither_is_refused_in_one_line_with_both_fixes(
    python: PythonProbe, runtime: RuntimeProbe, why: str
) -> None:
    with pytest.raises(RemoteError) as caught:
        choose_runner("dev", python, runtime)
    message, hint = str(caught.value), str(caught.value.hint)
    assert message == f"dev: nothing can bench the deployed bundle there: {why}"
    assert caught.value.exit_code == ExitCode.REMOTE
    assert "\n" not in message + hint
    assert "--device-python X.Y" in hint and "--remote-python" in hint  # the Python runner's fix
    assert "with its C++ runtime" in hint and "edgepack targets detect dev" in hint  # the runtime's


@pytest.fixture(scope="module")
def plain_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real Python without onnxruntime-genai: a venv without site packages."""
    directory = tmp_path_factory.mktemp("plain-python")
    venv.create(directory, with_pip=False)
    return str(directory / "bin" / "python")


def device_root(tmp_path: Path, arch: str = HERE, runtime: bool = True) -> Path:
    manifest = json.loads(recorded("recorded-manifest.json"))
    manifest["target"] |= {"name": f"generic-{arch}-cpu", "arch": arch}
    return deploy_root(tmp_path, json.dumps(manifest), runtime=runtime)


def test_the_probe_imports_for_real(tmp_path: Path, plain_python: str) -> None:
    device = LocalConnector("dev")
    facts = gather_facts(device, str(device_root(tmp_path)))
    assert probe_python(device, facts, sys.executable) == PythonProbe(sys.executable)
    assert "onnxruntime-genai" in probe_python(device, facts, plain_python).missing
    missing = probe_python(device, facts, str(tmp_path / "no-such-python")).missing
    assert missing == ("onnxruntime-genai", "edgepack")


def test_the_probe_prefers_the_deployed_venv(tmp_path: Path) -> None:
    root = device_root(tmp_path)
    (root / "venv" / "bin").mkdir(parents=True)
    python = root / "venv" / "bin" / "python"
    python.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')  # this one, with its packages
    python.chmod(0o755)
    device = LocalConnector("dev")
    probe = probe_python(device, gather_facts(device, str(root)), None)
    assert probe == PythonProbe(str(root / "venv" / "bin" / "python"))


def test_the_runtime_probe_reads_the_release(tmp_path: Path) -> None:
    device = LocalConnector("dev")
    facts = gather_facts(device, str(device_root(tmp_path / "a", OTHER)))
    assert probe_runtime(device, facts) == RuntimeProbe(True, OTHER, f"generic-{OTHER}-cpu", HERE)
    facts = gather_facts(device, str(device_root(tmp_path / "b", runtime=False)))
    assert not probe_runtime(device, facts).present


def test_a_device_whose_python_lacks_onnxruntime_genai_gets_the_runtime(
    tmp_path: Path, plain_python: str
) -> None:
    device = LocalConnector("dev")
    facts = gather_facts(device, str(device_root(tmp_path)))
    assert pick_runner(device, facts, plain_python).runner == "runtime"
    assert pick_runner(device, facts, sys.executable).runner == "python"
    facts = gather_facts(device, str(device_root(tmp_path / "other", OTHER)))
    with pytest.raises(RemoteError, match=f"its C.. runtime is built for {OTHER}"):
        pick_runner(device, facts, plain_python)

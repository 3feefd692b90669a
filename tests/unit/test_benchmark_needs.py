"""The benchmarks start without pytest, and a program or package they need that is missing is one
line with the command that installs it (exit 5), before any work and without a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.__main__ import BENCHMARKS
from benchmarks.deploy_vs_scp_rsync import check_needs
from benchmarks.needs import INSTALL, require_module
from edgepack.errors import ExitCode

REPO = Path(__file__).resolve().parents[2]
DEPLOY = [sys.executable, "-m", "benchmarks", "run", "deploy_vs_scp_rsync"]
NO_PYTEST = (
    "import importlib, runpy, sys; sys.modules['pytest'] = None; "
    "importlib.import_module('benchmarks.' + sys.argv[1]); "
    "sys.argv = ['benchmarks', 'run', '--help']; "
    "runpy.run_module('benchmarks', run_name='__main__')"
)


@pytest.mark.parametrize("name", BENCHMARKS)
def test_a_benchmark_starts_without_pytest(name: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", NO_PYTEST, name], capture_output=True, text=True, cwd=REPO
    )
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout


def _path_without(tmp_path: Path, missing: str) -> str:
    """A PATH holding stand-ins for every program the deploy benchmark checks but ``missing``."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for name in INSTALL:
        if name != missing and not name.startswith("/"):
            stand_in = folder / name
            stand_in.write_text("#!/bin/sh\nexit 0\n")
            stand_in.chmod(0o755)
    return str(folder)


@pytest.mark.parametrize(
    ("missing", "install"),
    [("rsync", "apt-get install rsync"), ("nft", "apt-get install nftables")],
)
def test_a_missing_program_is_one_line_with_its_install_command(
    tmp_path: Path, missing: str, install: str
) -> None:
    done = subprocess.run(
        DEPLOY, capture_output=True, text=True, cwd=REPO,
        env={"PATH": _path_without(tmp_path, missing)},
    )  # fmt: skip
    assert done.returncode == ExitCode.TOOL_MISSING, done.stderr
    lines = done.stderr.splitlines()
    if Path("/usr/sbin/sshd").is_file():  # the one program found by its absolute path
        assert lines == [f"error: {missing} is not installed; install it: {install}"]
    assert f"error: {missing} is not installed; install it: {install}" in lines
    assert "Traceback" not in done.stderr


def test_the_programs_of_tools_not_compared_are_not_demanded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", _path_without(tmp_path, "rsync"))
    try:
        check_needs(["edgepack"], resume=False)
    except SystemExit as stopped:  # not root: the root check, not a missing program
        assert stopped.code == ExitCode.FAILURE
    err = capsys.readouterr().err
    assert "rsync" not in err and "nft" not in err, err
    with pytest.raises(SystemExit) as stopped:
        check_needs(["edgepack", "rsync -a"], resume=False)
    assert stopped.value.code == ExitCode.TOOL_MISSING
    assert "rsync is not installed" in capsys.readouterr().err


def test_a_missing_python_package_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        require_module("edgepack_no_such_package", "pip install it")
    assert stopped.value.code == ExitCode.TOOL_MISSING
    err = capsys.readouterr().err
    assert err == (
        "error: the Python package edgepack_no_such_package is not installed; "
        "install it: pip install it\n"
    )

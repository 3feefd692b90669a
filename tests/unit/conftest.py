"""Shared fixtures of the unit tier: isolated environment, profile files, the CLI runner."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from edgepack.cli.main import DEBUG_ENV, run
from edgepack.resources import TARGETS_PATH_ENV, data_dir
from edgepack.targets import TargetRegistry

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No user profile dirs, no debug mode. setenv (not delenv), so that teardown restores both
    even when a test turns them on (``--debug`` writes EDGEPACK_DEBUG into os.environ)."""
    monkeypatch.setenv(TARGETS_PATH_ENV, "")
    monkeypatch.setenv(DEBUG_ENV, "0")


@pytest.fixture(scope="session")
def registry() -> TargetRegistry:
    """The built-in profiles only."""
    return TargetRegistry([data_dir("targets")])


@pytest.fixture
def profile_variant(tmp_path: Path) -> Callable[..., Path]:
    """Copy a built-in profile with text replacements into ``tmp_path/<directory>/<name>.toml``.

    ``profile_variant("ada-sm89", ("size_gb = 48", 'size_gb = "48"'))`` returns the new file's
    path. Each replaced text must be present, so an edit can never silently do nothing.
    """

    def write(
        base: str,
        *replacements: tuple[str, str],
        name: str | None = None,
        directory: str = "profiles",
    ) -> Path:
        text = (data_dir("targets") / f"{base}.toml").read_text(encoding="utf-8")
        for old, new in replacements:
            assert old in text, f"{old!r} is not in {base}.toml any more; update the test"
            text = text.replace(old, new, 1)
        folder = tmp_path / directory
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name or base}.toml"
        path.write_text(text, encoding="utf-8")
        return path

    return write


@dataclass(frozen=True)
class CliResult:
    code: int
    out: str
    err: str

    @property
    def flat_out(self) -> str:
        """stdout with rich's line wrapping undone, for substring checks."""
        return " ".join(self.out.split())

    @property
    def flat_err(self) -> str:
        return " ".join(self.err.split())


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """Run ``edgepack ARGS`` in-process through ``edgepack.cli.main.run``."""

    def invoke(*argv: str) -> CliResult:
        capsys.readouterr()
        code = run(list(argv))
        captured = capsys.readouterr()
        return CliResult(code, ANSI.sub("", captured.out), ANSI.sub("", captured.err))

    return invoke

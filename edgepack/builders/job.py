"""What a builder is asked to do and what it hands back: plain data, no heavy imports.

A :class:`BuildJob` names a tool (:class:`ToolSpec`), its argument vector with placeholders for
the paths that differ between builders (:class:`InputPath`, :class:`OutputPath`), the local input
directories, and whether the outputs come back. A builder returns a :class:`BuildOutcome`: the
full log (kept in a file), the output files with their size and sha256, and where it ran.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

BuilderKind = Literal["local", "container", "ssh"]
BUILDER_KINDS: tuple[BuilderKind, ...] = ("local", "container", "ssh")


@dataclass(frozen=True)
class InputPath:
    """The path, where the tool runs, of the input directory ``name`` (or a file inside it)."""

    name: str
    relative: str = ""


@dataclass(frozen=True)
class OutputPath:
    """The path, where the tool runs, of the output directory (or a file inside it)."""

    relative: str = ""


Arg = str | InputPath | OutputPath


@dataclass(frozen=True)
class ToolProbe:
    """What a builder found of the tool: present or not, and the probe's output."""

    where: str
    present: bool
    output: str = ""
    version: str | None = None


@dataclass(frozen=True)
class ToolSpec:
    """An engine-building program and how to tell a usable one from an unusable one."""

    program: str
    label: str
    """The toolchain as users know it ("TensorRT-LLM 1.2.x")."""
    install_hint: str
    """How to get it on this machine (``--builder local``)."""
    image: str | None = None
    """The container image that carries it (``--builder container``); None: no image."""
    probe_argv: tuple[str, ...] = ()
    """A quick command whose output names the version (run where the tool would run)."""
    absent_probe_argv: tuple[str, ...] = ()
    """Run where the program is missing: finds a toolchain that lacks it (a newer release)."""
    parse_version: Callable[[str], str | None] = lambda output: None
    check: Callable[[ToolProbe], str | None] = lambda probe: None
    """The problem with a probed tool (missing, wrong version), one line with the fix; or None."""
    gpus: bool = True
    """The tool needs the host's GPUs (passed through into a container)."""


@dataclass(frozen=True)
class BuildJob:
    tool: ToolSpec
    argv: tuple[Arg, ...]
    inputs: Mapping[str, Path]
    """Input name → local directory; shipped (ssh) or mounted read-only (container)."""
    fetch_outputs: bool = True
    """False: the outputs stay where they were built (a device that builds its own engine);
    their sha256 and size, computed there, come back."""
    env: Mapping[str, str] = field(default_factory=dict)
    explain_failure: Callable[[str], str] | None = None
    """The one line that says why a failed run failed, read from its whole log."""
    label: str = "build"


@dataclass(frozen=True)
class OutputFile:
    path: str
    """Relative to the output directory, POSIX."""
    size: int
    sha256: str


@dataclass(frozen=True)
class BuildOutcome:
    builder: str
    """``local``, ``container:IMAGE`` or ``ssh:HOST``."""
    log_path: Path
    """The tool's whole output, on this machine."""
    wall_s: float
    files: list[OutputFile]
    remote_dir: str | None = None
    """Where the outputs are on the build host (ssh); with ``fetch_outputs`` they are also here."""
    bytes_shipped: int = 0
    """Input bytes sent to the build host by this run (0 when they were already there)."""

    @property
    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def record(self) -> dict[str, object]:
        return {
            "builder": self.builder,
            "wall_s": self.wall_s,
            "remote_dir": self.remote_dir,
            "bytes_shipped": self.bytes_shipped,
            "files": [vars(f) for f in self.files],
        }


Log = Callable[[str], None]


class EngineBuilder(Protocol):
    """Where a tool runs: this machine, a container, or a host over SSH."""

    @property
    def name(self) -> str: ...

    def probe(self, tool: ToolSpec) -> ToolProbe: ...

    def run(self, job: BuildJob, output_dir: Path, log: Log) -> BuildOutcome: ...


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"

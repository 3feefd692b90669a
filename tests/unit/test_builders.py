"""The engine-builder mechanism on this machine: the option, the plan's refusal, a local run."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from edgepack.builders import (
    BuildJob,
    InputPath,
    OutputPath,
    ToolProbe,
    ToolSpec,
    open_builder,
    parse_builder,
    plan_builder,
    require_tool,
)
from edgepack.errors import BadInputError, ExitCode, ToolFailedError, ToolMissingError

TOOL = "edgepack-test-build-tool"


def _tool(**extra: object) -> ToolSpec:
    return ToolSpec(
        program=TOOL, label="Test toolchain 1.x", install_hint="pip install test-toolchain",
        image="registry.invalid/test-toolchain:1", probe_argv=(TOOL, "--version"),
        parse_version=lambda out: out.split("version ")[-1].strip() or None, **extra,  # type: ignore[arg-type]
    )  # fmt: skip


@pytest.fixture
def tool_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A real program on PATH: copies its input to the output, upper-cased; fails on demand."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    program = bin_dir / TOOL
    program.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = --version ]; then echo "test toolchain version 1.2.3"; exit 0; fi\n'
        'echo "reading $2"\n'
        'if grep -q explode "$2/in.txt"; then echo "ERROR: out of memory (Requested 9 GiB)"; '
        "echo 'a last line'; exit 3; fi\n"
        'mkdir -p "$4/sub" && tr a-z A-Z < "$2/in.txt" > "$4/sub/out.txt"\n'
    )
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return bin_dir


def test_the_option_names_three_kinds() -> None:
    assert str(parse_builder("local")) == "local"
    assert str(parse_builder("ssh:gpu-box:/data")) == "ssh:gpu-box:/data"
    for bad in ("ssh", "ssh:", "lokal", "container:x"):
        with pytest.raises(BadInputError):
            parse_builder(bad)


def test_no_reachable_builder_is_a_plan_problem_naming_all_three_ways(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/edgepack-test.sock")
    builder, problems = plan_builder(_tool(), None)
    assert builder is None and len(problems) == 1
    assert "--builder local: pip install test-toolchain" in problems[0]
    assert "--builder container: docker pull registry.invalid/test-toolchain:1" in problems[0]
    assert "--builder ssh:HOST" in problems[0]
    assert plan_builder(_tool(), "ssh:gpu-box") == ("ssh:gpu-box", [])
    _, local = plan_builder(_tool(), "local")
    assert local and TOOL in local[0]


def test_the_default_is_local_where_the_tool_runs_here(tool_on_path: Path) -> None:
    assert plan_builder(_tool(), None) == ("local", [])


def test_a_local_job_places_paths_and_records_outputs(tool_on_path: Path, tmp_path: Path) -> None:
    source = tmp_path / "ckpt"
    source.mkdir()
    (source / "in.txt").write_text("abc\n")
    builder = open_builder("local", tmp_path / "logs")
    probe = require_tool(builder, _tool())
    assert probe.present and probe.version == "1.2.3"
    job = BuildJob(_tool(), (TOOL, "--in", InputPath("ckpt"), "--out", OutputPath()),
                   {"ckpt": source}, label="test")  # fmt: skip
    outcome = builder.run(job, tmp_path / "out", lambda line: None)
    assert (tmp_path / "out" / "sub" / "out.txt").read_text() == "ABC\n"
    [record] = outcome.files
    assert record.path == "sub/out.txt" and record.size == 4
    assert "reading " + str(source) in outcome.log_text


def test_a_failed_job_is_one_line_from_its_own_reading_of_the_log(
    tool_on_path: Path, tmp_path: Path
) -> None:
    source = tmp_path / "ckpt"
    source.mkdir()
    (source / "in.txt").write_text("explode\n")
    job = BuildJob(
        _tool(), (TOOL, "--in", InputPath("ckpt"), "--out", OutputPath()), {"ckpt": source},
        explain_failure=lambda text: next(s for s in text.splitlines() if "ERROR" in s),
    )  # fmt: skip
    with pytest.raises(ToolFailedError) as failure:
        open_builder("local", tmp_path / "logs").run(job, tmp_path / "out", lambda line: None)
    error = failure.value
    assert error.exit_code == ExitCode.TOOL_FAILED and "\n" not in error.message
    assert error.message.endswith("ERROR: out of memory (Requested 9 GiB)")
    assert error.hint is not None
    log = Path(error.hint.split(": ", 1)[1])
    assert log.is_file() and "a last line" in log.read_text()


def test_a_tool_check_refuses_before_any_work(tool_on_path: Path, tmp_path: Path) -> None:
    def too_new(probe: ToolProbe) -> str | None:
        return f"version {probe.version} is not 1.x" if probe.version != "1.0" else None

    with pytest.raises(ToolMissingError) as failure:
        require_tool(open_builder("local", tmp_path), _tool(check=too_new))
    assert "version 1.2.3 is not 1.x" in failure.value.message

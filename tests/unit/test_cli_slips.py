"""Every slip gets a one-line answer: a table of bad invocations of every command (missing paths,
directories where files go and files where directories go, wrong JSON shapes, out-of-range
numbers, unknown names), each with its documented exit code, one ``error:`` line (and at most a
``hint:`` line) on stderr, and never "internal error" or a traceback."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from edgepack.cache import CACHE_DIR_ENV
from edgepack.errors import ExitCode
from tests.integration.conftest import make_bundle
from tests.unit.conftest import CliResult

BAD, BUNDLE, PROFILE = ExitCode.BAD_INPUT, ExitCode.BUNDLE_INVALID, ExitCode.INVALID_PROFILE
PLAN = ("plan", "-t", "host-x86_64-cpu", "-m", "qwen3-0.6b", "-p", "int4")
BUILD = ("build", "-t", "host-x86_64-cpu", "-m", "qwen3-0.6b", "-p", "int4")
RENDER = ("runtime", "render", "-t", "host-x86_64-cpu", "-m", "qwen3-0.6b", "-p", "int4")
WRONG_PROMPTS = {"name": "x", "prompts": [{"id": 1}]}

# (argv with {placeholders}, exit code, a text the error line holds)
SLIPS: list[tuple[tuple[str, ...], int, str]] = [
    # usage: unknown commands and options, out-of-range numbers, bad choices
    (("nonsense",), BAD, "No such command"),
    ((*PLAN, "--bogus"), BAD, "--bogus"),
    (("plan", "-m", "qwen3-8b"), BAD, "Missing option '--target'"),
    ((*PLAN, "--max-seq-len", "0"), BAD, "--max-seq-len"),
    ((*PLAN, "--max-batch-size", "-1"), BAD, "--max-batch-size"),
    ((*PLAN, "--max-input-len", "abc"), BAD, "--max-input-len"),
    ((*PLAN, "--group-size", "0"), BAD, "--group-size"),
    ((*BUILD, "--repeat", "-1"), BAD, "--repeat"),
    ((*BUILD, "--calib-size", "0"), BAD, "--calib-size"),
    (("report", "--tolerance", "-1", "{shape}"), BAD, "--tolerance"),
    (("bench", "--bundle", "{bundle}", "--runs", "0"), BAD, "--runs must be at least 1"),
    (("bench", "--bundle", "{bundle}", "--warmup", "-1"), BAD, "--warmup"),
    (("bench", "--bundle", "{bundle}", "--batch-size", "0"), BAD, "--batch-size"),
    (("bench", "--bundle", "{bundle}", "--max-new-tokens", "0"), BAD, "--max-new-tokens"),
    (
        ("deploy", "--timeout", "0", "--host", "local:{dir}", "--bundle", "{bundle}"),
        BAD,
        "--timeout",
    ),
    (("rollback", "--timeout", "-1", "--host", "local:{dir}"), BAD, "--timeout"),
    (("report", "--format", "pdf", "{shape}"), BAD, "--format"),
    # unknown names
    (("plan", "-t", "ada-sm8", "-m", "qwen3-8b", "-p", "fp8"), BAD, "unknown target 'ada-sm8'"),
    (("plan", "-t", "ada-sm89", "-m", "qwen3-8c", "-p", "fp8"), BAD, "unknown model 'qwen3-8c'"),
    (("plan", "-t", "ada-sm89", "-m", "qwen3-8b", "-p", "fp9"), BAD, "unknown precision"),
    ((*PLAN, "-b", "trt-llm"), BAD, "unknown backend 'trt-llm'"),
    ((*PLAN, "--kv-cache-dtype", "fp7"), BAD, "unknown KV-cache dtype"),
    ((*BUILD, "--runtime", "nope"), BAD, "--runtime 'nope'"),
    ((*BUILD, "--device-python", "3"), BAD, "--device-python '3'"),
    (("bench", "--engine", "nope"), BAD, "--engine nope"),
    (("bench", "--bundle", "{bundle}", "--runner", "nope"), BAD, "unknown --runner 'nope'"),
    (("rollback", "--to", "nope", "--host", "local:{dir}"), ExitCode.REMOTE, "release nope"),
    (("doctor", "-t", "nope"), BAD, "unknown target 'nope'"),
    (("targets", "show", "jetson-thorr"), BAD, "unknown target 'jetson-thorr'"),
    (("deploy", "--host", "ssh://h:99999/x", "--bundle", "{bundle}"), BAD, "Port out of range"),
    (("rollback", "--host", "ssh://["), BAD, "host 'ssh://['"),
    (("doctor", "--host", "ssh://["), BAD, "host 'ssh://['"),
    (("deploy", "--keep", "0", "--host", "local:{dir}", "--bundle", "{bundle}"), BAD, "--keep"),
    # paths that do not exist
    ((*PLAN, "--targets-dir", "{missing}"), BAD, "does not exist"),
    (("plan", "-t", "ada-sm89", "-m", "{missing}", "-p", "fp8"), BAD, "does not exist"),
    ((*BUILD, "--wheelhouse", "{missing}"), BAD, "does not exist"),
    ((*BUILD, "--calib-dataset", "{missing}"), BAD, "does not exist"),
    (("bundle", "verify", "{missing}"), BUNDLE, "bundle directory {missing} does not exist"),
    (("bundle", "show", "{missing}"), BUNDLE, "does not exist"),
    (("bench", "--bundle", "{missing}"), BUNDLE, "does not exist"),
    (("deploy", "--bundle", "{missing}", "--host", "local:{dir}"), BUNDLE, "does not exist"),
    (("deploy", "--inventory", "{missing}"), BAD, "cannot read inventory"),
    (("report", "{missing}"), BAD, "run result {missing} does not exist"),
    (("report", "--bundle", "{missing}"), BUNDLE, "does not exist"),
    (("gate", "{missing}"), BAD, "does not exist"),
    (("targets", "validate", "{missing}"), BAD, "does not exist"),
    (("bench", "--bundle", "{bundle}", "--prompts", "{missing}"), BAD, "does not exist"),
    (("bench", "--bundle", "{bundle}", "--gate-config", "{missing}"), BAD, "does not exist"),
    # a directory where a file goes
    (("report", "{bundle}"), BAD, "--bundle {bundle}"),
    (("report", "{dir}"), BAD, "--bundle {dir}"),
    (("report", "--baseline", "{dir}", "{shape}"), BAD, "is a directory"),
    (("report", "--bundle", "{bundle}", "-o", "{dir}"), BAD, "is a directory"),
    (("gate", "{dir}"), BAD, "is a directory"),
    (("targets", "validate", "{dir}"), BAD, "is a directory"),
    (("deploy", "--inventory", "{dir}"), BAD, "cannot read inventory"),
    (("rollback", "--inventory", "{dir}"), BAD, "cannot read inventory"),
    (("rollback", "--host", "local:{dir}"), ExitCode.REMOTE, "no previous release"),
    (("bench", "--bundle", "{bundle}", "--prompts", "{dir}"), BAD, "is a directory"),
    (("bench", "--bundle", "{bundle}", "--gate-config", "{dir}"), BAD, "is a directory"),
    (("bench", "--bundle", "{bundle}", "--json-out", "{dir}"), BAD, "is a directory"),
    ((*BUILD, "--calib-dataset", "{dir}"), BAD, "is a directory"),
    # a file where a directory goes
    (("bundle", "verify", "{file}"), BUNDLE, "is a file, not a bundle directory"),
    (("bench", "--bundle", "{file}"), BUNDLE, "is a file"),
    (("report", "--bundle", "{file}"), BUNDLE, "is a file"),
    ((*PLAN, "--targets-dir", "{file}"), BAD, "is a file"),
    (("targets", "list", "--targets-dir", "{file}"), BAD, "is a file"),
    ((*RENDER, "-o", "{file}"), BAD, "is a file"),
    ((*BUILD, "-o", "{file}"), BAD, "is a file"),
    (("report", "--bundle", "{bundle}", "--plots", "{file}"), BAD, "is a file"),
    # a directory that is not a bundle or a model, paths that cannot be written
    (("bundle", "verify", "{dir}"), BUNDLE, "no manifest.json"),
    (("plan", "-t", "ada-sm89", "-m", "{dir}", "-p", "fp8"), BAD, "no config.json"),
    ((*RENDER, "-o", "/proc/edgepack-x"), BAD, "/proc/edgepack-x"),
    (("report", "--bundle", "{bundle}", "-o", "/proc/edgepack-x/r.md"), BAD, "/proc/edgepack-x"),
    # files of the wrong shape
    (("report", "{shape}"), BAD, "not an edgepack run result: location: Field required (and 6"),
    (("report", "{list}"), BAD, "not an edgepack run result"),
    (("gate", "{shape}"), BAD, "not an edgepack run result"),
    (("gate", "{broken}"), BAD, "Invalid JSON"),
    (("gate", "{binary}"), BAD, "not a UTF-8 text file"),
    (("bench", "--bundle", "{bundle}", "--prompts", "{wrong_prompts}"), BAD, "not a prompt set"),
    (("bench", "--bundle", "{bundle}", "--gate-config", "{shape}"), BAD, "not a valid gate"),
    (("bench", "--bundle", "{bundle}", "--gate-config", "{wrong_gate}"), BAD, "not a valid gate"),
    (("targets", "validate", "{shape}"), PROFILE, "not valid TOML"),
    (("targets", "validate", "{binary}"), PROFILE, "not a UTF-8 text file"),
]


@pytest.fixture
def places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The paths the table names, in a working directory and cache of their own."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "cache"))
    (tmp_path / "dir").mkdir()
    files: dict[str, str | bytes] = {
        "file": "x\n",
        "shape": json.dumps({"a": 1}),
        "list": "[1, 2]",
        "broken": "not json\n",
        "binary": b"\xff\xfe\x00\x81",
        "wrong_prompts": json.dumps(WRONG_PROMPTS),
        "wrong_gate": "[thresholds.full]\nchrf_min = 'high'\n",
    }
    for name, content in files.items():
        path = tmp_path / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    bundle = make_bundle(tmp_path / "bundle", {"model.onnx": b"onnx"})
    names = {name: str(tmp_path / name) for name in files}
    return {**names, "dir": str(tmp_path / "dir"), "missing": str(tmp_path / "missing"),
            "bundle": str(bundle)}  # fmt: skip


ERROR = re.compile(r"^(\S+: )?error: ")
"""An error line; a command over a fleet names the host first ("dev: error: ...")."""


def _lines(result: CliResult) -> list[str]:
    return [line for line in result.err.splitlines() if line.strip()]


@pytest.mark.parametrize(("argv", "code", "says"), SLIPS, ids=[" ".join(s[0]) for s in SLIPS])
def test_a_slip_is_one_line_with_its_exit_code(
    cli, places: dict[str, str], argv: tuple[str, ...], code: int, says: str
) -> None:
    result = cli(*(arg.format(**places) for arg in argv))
    lines = _lines(result)
    assert "internal error" not in result.err and "Traceback" not in result.err, result.err
    assert result.code == code, result.err
    assert 1 <= len(lines) <= 2, result.err
    assert ERROR.match(lines[0]) and says.format(**places) in lines[0], result.err
    assert len(lines) == 1 or lines[1].lstrip().startswith("hint: "), result.err


def test_debug_shows_the_whole_validation_error(cli, places: dict[str, str]) -> None:
    quiet = cli("gate", places["shape"])
    loud = cli("--debug", "gate", places["shape"])
    assert quiet.code == loud.code == BAD
    assert "Field required" in loud.err and loud.err.count("Field required") >= 7
    assert quiet.err.count("Field required") == 1

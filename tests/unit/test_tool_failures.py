"""A failed tool is one line (the tool, the likely cause, the fix, the kept log's path), never its
traceback; a worker's own EdgepackError makes the parent exit with that error's exit code."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from edgepack.cli.main import _report
from edgepack.errors import (
    BadInputError,
    EdgepackError,
    ExitCode,
    QualityGateError,
    ToolFailedError,
    ToolMissingError,
    set_debug,
)
from edgepack.process import run_logged, run_tool, tool_failure

REPO = Path(__file__).resolve().parents[2]
BUILDER = "onnxruntime_genai/models/builder.py"


def _traceback_lines() -> list[str]:
    """The 27 lines a model builder's KeyError prints: 12 frames, a caret line, the exception."""
    lines = ["Traceback (most recent call last):"]
    for i in range(12):
        lines += [
            f'  File "{BUILDER}", line {100 + i}, in step{i}',
            f"    return step{i + 1}(config)",
        ]
    return [*lines, "           ^^^^^^^^^^^^^^^^^^^^^^^^^^", "KeyError: 'rope_theta'"]


def _deep_traceback_script() -> str:
    """Python that prints the model builder's traceback to stderr and exits 1."""
    return f"import sys\nprint('loading the model')\nsys.exit({chr(10).join(_traceback_lines())!r})"


def _python(script: str) -> list[str]:
    return [sys.executable, "-c", script]


def test_a_tool_traceback_is_one_line_and_the_log_keeps_all_of_it(tmp_path: Path) -> None:
    with pytest.raises(ToolFailedError) as failure:
        run_tool(_python(_deep_traceback_script()), install_hint="-", log_dir=tmp_path)
    error = failure.value
    assert error.exit_code == ExitCode.TOOL_FAILED
    assert "\n" not in error.message and "\n" not in (error.hint or "")
    name = Path(sys.executable).name
    assert error.message == f"{name} failed (exit status 1): KeyError: 'rope_theta'"
    assert "Traceback" not in error.message
    (log,) = tmp_path.glob("*.log")
    assert f"the whole log: {log}" in (error.hint or "")
    assert "edgepack doctor" in (error.hint or "")
    text = log.read_text(encoding="utf-8")
    assert len(_traceback_lines()) == 27
    assert text.splitlines()[-27:] == _traceback_lines()
    assert error.detail == text


def test_debug_prints_the_whole_log_under_the_traceback(tmp_path: Path, capsys) -> None:
    with pytest.raises(ToolFailedError) as failure:
        run_tool(_python(_deep_traceback_script()), install_hint="-", log_dir=tmp_path)
    for debug, shown in ((False, False), (True, True)):
        set_debug(debug)
        try:
            assert _report(failure.value) == ExitCode.TOOL_FAILED
        finally:
            set_debug(False)
        err = capsys.readouterr().err
        assert ("in step11" in err) is shown, err
        assert len([line for line in err.splitlines() if line.startswith("error: ")]) == 1


def test_a_successful_tool_leaves_no_log_and_returns_its_output(tmp_path: Path) -> None:
    output = run_tool(_python("print('a'); print('b')"), install_hint="-", log_dir=tmp_path)
    assert output == "a\nb"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("script", "cause"),
    [
        ("import sys; sys.exit('No module named onnx_ir')", "install onnx_ir"),
        ("import sys; print('OSError: [Errno 28] No space left on device'); sys.exit(2)", "disk"),
        ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", "out of memory"),
        ("import sys; print('the last word'); sys.exit(3)", "--debug"),
    ],
)
def test_the_hint_names_the_likely_cause(tmp_path: Path, script: str, cause: str) -> None:
    with pytest.raises(ToolFailedError) as failure:
        run_tool(_python(script), install_hint="-", log_dir=tmp_path)
    assert cause in (failure.value.hint or ""), failure.value.hint
    assert "\n" not in failure.value.message


def test_a_missing_tool_is_tool_missing(tmp_path: Path) -> None:
    with pytest.raises(ToolMissingError) as missing:
        run_tool(["edgepack-no-such-tool"], install_hint="apt-get install it", log_dir=tmp_path)
    assert missing.value.hint == "apt-get install it"


def _worker_raising(error: EdgepackError) -> str:
    """A stage worker (``child.worker_main``) whose job raises ``error``."""
    cls = type(error).__name__
    return (
        "import sys\n"
        "from edgepack.backends.child import worker_main\n"
        f"from edgepack.errors import {cls}\n"
        "def job(path):\n"
        f"    raise {cls}({error.message!r}, hint={error.hint!r})\n"
        "sys.exit(worker_main(['job.json'], 'w', job, str))\n"
    )


@pytest.mark.parametrize(
    "error",
    [
        QualityGateError("the int4 checkpoint's top-1 agreement is 0.41 < 0.9", hint="use int8"),
        BadInputError("the calibration set has 3 tokens", hint=None),
        ToolFailedError("TensorRT-RTX built no engine", hint="see the log"),
    ],
)
def test_a_worker_error_keeps_its_exit_code_in_the_parent(
    tmp_path: Path, error: EdgepackError
) -> None:
    command = _python(_worker_raising(error))
    env = {"PYTHONPATH": str(REPO)}
    with pytest.raises(EdgepackError) as raised:
        run_tool(command, install_hint="-", log_dir=tmp_path, env=env)
    assert type(raised.value) is type(error)
    assert raised.value.exit_code == error.exit_code
    assert raised.value.message == error.message
    (log,) = tmp_path.glob("*.log")
    assert (raised.value.hint or "").endswith(f"the whole log: {log}")
    if error.hint:
        assert (raised.value.hint or "").startswith(error.hint)
    # the same through run_logged + tool_failure, as the trtllm checkpoint stage runs its worker
    kept = tmp_path / "kept.log"
    status = run_logged(command, kept, env=env)
    assert status == error.exit_code
    again = tool_failure("the checkpoint stage", status, kept)
    assert type(again) is type(error) and again.message == error.message


COMPILER_OUTPUT = """[ 50%] Building CXX object CMakeFiles/runtime.dir/src/json.cpp.o
/src/json.cpp:120:2: error: #error edgepack-test: a broken source file
  120 | #error edgepack-test: a broken source file
      |  ^~~~~
gmake[2]: *** [CMakeFiles/runtime.dir/build.make:76: json.cpp.o] Error 1
gmake: *** [Makefile:136: all] Error 2"""


def test_a_compiler_failure_names_the_first_error_not_makes_summary(tmp_path: Path) -> None:
    script = f"import sys; print({COMPILER_OUTPUT!r}); sys.exit(2)"
    with pytest.raises(ToolFailedError) as failure:
        run_tool(_python(script), install_hint="-", log_dir=tmp_path)
    assert failure.value.message.endswith(
        "(exit status 2): /src/json.cpp:120:2: error: #error edgepack-test: a broken source file"
    )

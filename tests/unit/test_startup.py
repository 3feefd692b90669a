"""Starting the CLI imports no heavy library (checked in sys.modules, not by timing)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "onnxruntime", "onnxruntime_genai", "numpy", "tensorrt")


def _modules_after(code: str) -> set[str]:
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def test_import_loads_no_pydantic_and_no_heavy_library() -> None:
    modules = _modules_after("import edgepack.cli.main")
    assert "edgepack.cli.main" in modules
    for name in ("pydantic", "edgepack.targets", "edgepack.plan", "edgepack.models", *HEAVY):
        assert name not in modules, f"importing edgepack.cli.main imports {name}"


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        [
            "plan",
            "-t",
            "ada-sm89",
            "-m",
            "qwen2.5-7b-instruct",
            "-p",
            "fp8",
            "--json",
            "--builder",
            "ssh:gpu-box",
        ],
        ["targets", "list", "--json"],
    ],
)
def test_commands_load_no_heavy_library(argv) -> None:
    code = (
        "import contextlib, io\n"
        "from edgepack.cli.main import run\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    status = run({argv!r})\n"
        "assert status == 0, status"
    )
    modules = _modules_after(code)
    for name in HEAVY:
        assert name not in modules, f"edgepack {' '.join(argv)} imports {name}"


def test_a_backend_is_imported_when_first_looked_up() -> None:
    registry = _modules_after("import edgepack.backends")
    assert not {"edgepack.backends.ort", "edgepack.backends.trtllm"} & registry
    ort = _modules_after("from edgepack.backends import BACKENDS\nBACKENDS['ort']")
    assert "edgepack.backends.ort.backend" in ort
    assert not {"edgepack.backends.trtllm", "edgepack.backends.edgellm"} & ort
    every = _modules_after("from edgepack.backends import BACKENDS\nlist(BACKENDS.values())")
    assert {"edgepack.backends.trtllm", "edgepack.backends.trtrtx"} <= every


EXIT_SCRIPT = """
import atexit, sys, threading, time
from pathlib import Path
from edgepack.cli.entry import exit_now

marks = Path(sys.argv[1])
atexit.register(lambda: (marks / "atexit").write_text("ran"))


class Torn:
    def __del__(self):
        (marks / "teardown").write_text("the interpreter freed its objects")


kept = Torn()
def finish_late():
    time.sleep(0.3)
    (marks / "thread").write_text("done")


if sys.argv[2] == "thread":
    threading.Thread(target=finish_late).start()
sys.stdout.write("unflushed")
exit_now(3)
(marks / "after").write_text("not reached")
"""


@pytest.mark.parametrize("other_thread", [False, True])
def test_the_program_exits_without_the_interpreters_teardown(tmp_path, other_thread) -> None:
    """The exit code, stdout and the atexit handlers survive the fast exit; a thread that is not
    a daemon is waited for (and then the teardown happens as usual)."""
    argv = [sys.executable, "-c", EXIT_SCRIPT, str(tmp_path), "thread" if other_thread else "-"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert (done.returncode, done.stdout) == (3, "unflushed"), done.stderr
    marks = {path.name for path in tmp_path.iterdir()}
    assert marks == ({"atexit", "thread", "teardown"} if other_thread else {"atexit"})

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

"""What every benchmark shares: running edgepack, the demo bundle, and the result file.

A result file is ``benchmarks/results/<name>.json``: ``{"name", "machine", "versions", "threads",
"params", "data"}``. ``data`` is the benchmark's own record (raw samples in it); the report reads
it through the benchmark's ``rows()`` and nothing else.
"""

from __future__ import annotations

import compileall
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.needs import fail

RESULTS = Path(__file__).resolve().parent / "results"
EDGEPACK_SOURCE = Path(__file__).resolve().parent.parent / "edgepack"
DEMO_MODEL = "demo:smollm2-135m"
TARGET = "host-x86_64-cpu"


def compile_edgepack() -> None:
    """Write edgepack's bytecode, as pip does when it installs the wheel: each command timed then
    starts as a user's does. An editable install has none, and where PYTHONDONTWRITEBYTECODE is
    set (as on this project's VMs) every start would compile ~100 modules again (~0.1 s)."""
    compileall.compile_dir(EDGEPACK_SOURCE, quiet=1)


def edgepack(*args: str, echo: bool = True) -> subprocess.CompletedProcess[str]:
    """``python -m edgepack ARGS`` with this interpreter, its output captured."""
    command = [sys.executable, "-m", "edgepack", *args]
    if echo:
        print("$", " ".join(command), flush=True)
    return subprocess.run(command, capture_output=True, text=True, check=False)


def build_args(precision: str, bundle: Path, targets_dir: Path | None = None) -> list[str]:
    """The demo build of ``precision`` into ``bundle``, as ``edgepack`` arguments; a
    ``targets_dir`` holding its own TARGET profile (a recipe) replaces the built-in one."""
    found = ["--targets-dir", str(targets_dir)] if targets_dir else []
    return ["build", "--target", TARGET, "--precision", precision, "--model", DEMO_MODEL,
            "--output", str(bundle), "--json", *found]  # fmt: skip


def demo_bundle(workdir: Path, precision: str = "int4") -> Path:
    """The demo model built at ``precision`` (cached) under ``workdir``; exits on a failed build."""
    bundle = workdir / "bundles" / precision
    built = edgepack(*build_args(precision, bundle))
    if built.returncode != 0:
        fail(last_line(built.stderr).removeprefix("error: "), built.returncode)
    return bundle


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def timed_samples(action: Callable[[], object], count: int) -> list[tuple[float, float]]:
    """(wall seconds, CPU seconds of the child processes it waited for) of ``count`` calls: the
    CPU time says what the work costs where other load stretches the wall time."""
    samples = []
    for _ in range(count):
        before, started = _children_cpu(), time.perf_counter()
        action()
        samples.append((time.perf_counter() - started, _children_cpu() - before))
    return samples


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def envelope(name: str, params: dict[str, Any], data: Any) -> dict[str, Any]:
    """``data`` with the facts a reader needs to trust it: machine, versions, threads, params."""
    from edgepack import __version__
    from edgepack.bench.machine import engine_threads, machine_facts

    machine = machine_facts()
    versions = {"edgepack": __version__, "python": machine["python"], **machine["libraries"]}
    return {"name": name, "machine": machine, "versions": versions, "threads": engine_threads(),
            "load_average": os.getloadavg()[0], "params": params, "data": data}  # fmt: skip


def write_result(result: dict[str, Any], results: Path = RESULTS) -> Path:
    results.mkdir(parents=True, exist_ok=True)
    path = results / f"{result['name']}.json"
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return path


def read_results(results: Path = RESULTS) -> list[dict[str, Any]]:
    """Every result file in ``results``, in name order."""
    return [json.loads(path.read_text("utf-8")) for path in sorted(results.glob("*.json"))]

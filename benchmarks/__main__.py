"""``python -m benchmarks run [--quick] [NAME…]`` measures and regenerates docs/BENCHMARKS.md;
``python -m benchmarks report`` regenerates it from benchmarks/results/*.json without measuring."""

from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import replace
from pathlib import Path
from types import ModuleType

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import RESULTS, compile_edgepack, envelope, read_results, write_result
from benchmarks.needs import fail, run_main
from benchmarks.report import BENCHMARKS_MD, Row, machine_of, markdown
from edgepack.errors import ExitCode

BENCHMARKS = (
    "demo_precisions", "llamacpp_baseline", "ort_recipes", "bench_harness", "deploy_vs_scp_rsync",
    "warm_rebuild", "cold_stage", "scaling",
)  # fmt: skip
"""Each a module here with ``params(quick)``, ``measure(params, workdir)`` and ``rows(result)``,
and optionally ``section(result, page_dir)``: markdown lines of its own (a plot it writes under
``page_dir``, a table of other columns) after the tables; the page shows them in this order."""


def benchmark(name: str) -> ModuleType:
    return importlib.import_module(f"benchmarks.{name}")


def run_one(name: str, quick: bool, workdir: Path) -> None:
    module = benchmark(name)
    params = module.params(quick)
    print(f"== {name} {params}", flush=True)
    path = write_result(envelope(name, params, module.measure(params, workdir / name)))
    print(f"written to {path}", flush=True)


def run(names: list[str], quick: bool, workdir: Path) -> int:
    """Run ``names`` (all when empty); one whose needs are missing says so and the rest go on."""
    failed = 0
    compile_edgepack()
    for name in names or BENCHMARKS:
        try:
            run_one(name, quick, workdir)
        except SystemExit as stopped:  # a missing need: its one line is already printed
            if names or not isinstance(stopped.code, int):
                raise
            failed = failed or stopped.code
    report()
    return failed


def report(results: Path = RESULTS, out: Path = BENCHMARKS_MD) -> None:
    found = [r for r in read_results(results) if r.get("name") in BENCHMARKS]
    found.sort(key=lambda result: BENCHMARKS.index(result["name"]))
    rows: list[Row] = [replace(row, machine=machine_of(r)) for r in found
                       for row in benchmark(r["name"]).rows(r)]  # fmt: skip
    sections = [line for r in found if hasattr(benchmark(r["name"]), "section")
                for line in benchmark(r["name"]).section(r, out.parent)]  # fmt: skip
    out.write_text(markdown(found, rows, sections), encoding="utf-8")
    print(f"{out} regenerated from {len(found)} result files")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    measure = commands.add_parser("run", help="measure, write results/<name>.json, regenerate")
    measure.add_argument("names", nargs="*", metavar="NAME", help=", ".join(BENCHMARKS))
    measure.add_argument("--quick", action="store_true", help="fewer runs: a smoke test")
    measure.add_argument("--workdir", type=Path, default=Path("benchmark-work"))
    commands.add_parser("report", help="regenerate docs/BENCHMARKS.md from the results")
    args = parser.parse_args()
    unknown = [name for name in getattr(args, "names", []) if name not in BENCHMARKS]
    if unknown:
        choose = ", ".join(BENCHMARKS)
        fail(f"no benchmark {unknown[0]!r}; choose from {choose}", ExitCode.BAD_INPUT)
    if args.command == "report":
        report()
        return
    raise SystemExit(run(args.names, args.quick, args.workdir.resolve()))


if __name__ == "__main__":
    run_main(main)

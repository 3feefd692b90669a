"""Bench fp32, fp16 and int4 bundles of the demo model on this machine; write JSON and a table.

    python benchmarks/demo_precisions.py [--runs 5] [--out benchmarks/results]

Each precision is built with `edgepack build` (cached) and measured with `edgepack bench` (quality
gate included); a precision that fails to build or run gets a row saying why. Nothing is asserted:
the numbers are written to `demo_precisions.json` and `demo_precisions.md` for people to read.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

PRECISIONS = ("fp32", "fp16", "int4")
TARGET = "host-x86_64-cpu"


def edgepack(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "edgepack", *args]
    print("$", " ".join(command), flush=True)
    return subprocess.run(command, capture_output=True, text=True, check=False)


def measure(precision: str, workdir: Path, runs: int) -> dict[str, Any]:
    bundle = workdir / "bundles" / precision
    built = edgepack(
        "build",
        "--target",
        TARGET,
        "--precision",
        precision,
        "--model",
        "demo:smollm2-135m",
        "--output",
        str(bundle),
        "--json",
    )
    if built.returncode != 0:
        return {"precision": precision, "error": _last_line(built.stderr)}
    build = json.loads(built.stdout)
    run_file = workdir / "runs" / f"{precision}.json"
    benched = edgepack(
        "bench",
        "--bundle",
        str(bundle),
        "--runs",
        str(runs),
        "--warmup",
        "1",
        "--json-out",
        str(run_file),
    )
    row: dict[str, Any] = {
        "precision": precision,
        "engine_bytes": build["engine_bytes"],
        "bundle_id": build["bundle_id"],
        "plan": _plan(bundle),
    }
    if not run_file.is_file():
        return {**row, "error": _last_line(benched.stderr)}
    row["run"] = json.loads(run_file.read_text())
    return row


def _plan(bundle: Path) -> dict[str, Any]:
    manifest = json.loads((bundle / "manifest.json").read_text())
    plan: dict[str, Any] = manifest["plan"]
    return plan


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def _cell(spread: dict[str, Any] | None, fmt: str) -> str:
    if not spread:
        return "–"
    return (
        f"{fmt.format(spread['median'])} ({fmt.format(spread['min'])}–"
        f"{fmt.format(spread['max'])}, CV {spread['cv']:.1%})"
    )


def _roofline_percent(row: dict[str, Any]) -> str:
    bandwidth = row["plan"]["roofline"]["bandwidth_gbps"] * 1e9
    ceiling = bandwidth / row["plan"]["roofline"]["weight_bytes_read_per_step"]
    return f"{row['run']['metrics']['decode_tok_s']['median'] / ceiling:.0%}"


def table(rows: list[dict[str, Any]], machine: dict[str, Any]) -> str:
    header = (
        "| engine | size | first load (s) | warm load (s) | TTFT (s) | decode tok/s b1 | "
        "decode tok/s b3 (total) | % roofline b1 | quality |"
    )
    lines = [
        f"Machine: {machine.get('cpu_model')}, {machine.get('usable_cores')} cores, "
        f"{machine.get('libraries')}",
        "",
        header,
        "|" + "---|" * 9,
    ]
    for row in rows:
        if "run" not in row:
            lines.append(
                f"| ort {row['precision']} | "
                f"{row.get('engine_bytes', 0) / 1e6:.0f} MB | failed: {row['error']} |" + " |" * 6
            )
            continue
        run, metrics = row["run"], row["run"]["metrics"]
        verdict = run["quality"]
        quality = (
            "pass" if verdict["passed"] else "FAIL"
        ) + f", chrF {verdict['metrics']['chrf']:.0f}"
        lines.append(
            f"| ort {row['precision']} | {row['engine_bytes'] / 1e6:.0f} MB | "
            f"{run['load']['first_s']:.2f} | {_cell(run['load']['warm'], '{:.2f}')} | "
            f"{_cell(metrics['ttft_s'], '{:.3f}')} | {_cell(metrics['decode_tok_s'], '{:.1f}')} | "
            f"{_cell(metrics['decode_tok_s_batched'], '{:.1f}')} | {_roofline_percent(row)} | "
            f"{quality} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--workdir", type=Path, default=Path("benchmark-work"))
    args = parser.parse_args()
    rows = [measure(precision, args.workdir, args.runs) for precision in PRECISIONS]
    machine = next((row["run"]["machine"] for row in rows if "run" in row), {})
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "demo_precisions.json").write_text(json.dumps(rows, indent=2))
    rendered = table(rows, machine)
    (args.out / "demo_precisions.md").write_text(rendered)
    print(rendered)


if __name__ == "__main__":
    main()

"""fp32, fp16 and int4 bundles of the demo model benched on this machine (quality gate included).

    python -m benchmarks run [--quick] demo_precisions

Each precision is built with `edgepack build` (cached) and measured with `edgepack bench`; a
precision that fails to build or run gets a row saying why. Nothing is asserted.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.common import build_args, edgepack, last_line
from benchmarks.report import Row

TABLE = "Engines: decode on this machine's CPU"
LLAMA_CPP = "llama.cpp q4_1: decode tok/s b1"


def params(quick: bool) -> dict[str, Any]:
    return {
        "precisions": ["int4"] if quick else ["fp32", "fp16", "int4"],
        "runs": 2 if quick else 5,
    }


def measure(params: dict[str, Any], workdir: Path) -> list[dict[str, Any]]:
    return [measure_one(precision, workdir, params["runs"]) for precision in params["precisions"]]


def measure_one(
    precision: str, workdir: Path, runs: int, name: str = "", targets_dir: Path | None = None
) -> dict[str, Any]:
    """Build (cached) and bench one bundle, ``workdir/bundles/NAME`` (NAME: the precision)."""
    bundle = workdir / "bundles" / (name or precision)
    built = edgepack(*build_args(precision, bundle, targets_dir))
    if built.returncode != 0:
        return {"precision": precision, "error": last_line(built.stderr)}
    build = json.loads(built.stdout)
    run_file = workdir / "runs" / f"{name or precision}.json"
    run_file.unlink(missing_ok=True)  # a failed bench must not leave an earlier run's figures
    benched = edgepack("bench", "--bundle", str(bundle), "--runs", str(runs), "--warmup", "1",
                       "--json-out", str(run_file))  # fmt: skip
    manifest = json.loads((bundle / "manifest.json").read_text())
    row: dict[str, Any] = {"precision": precision, "engine_bytes": build["engine_bytes"],
                           "bundle_id": build["bundle_id"], "plan": manifest["plan"],
                           "bench_exit": benched.returncode}  # fmt: skip
    if not run_file.is_file():
        return {**row, "error": last_line(benched.stderr)}
    return {**row, "run": json.loads(run_file.read_text())}


def ceiling_tok_s(entry: dict[str, Any], batch: int = 1) -> float:
    """Decode's memory-bandwidth roofline: every step reads the weights once for ``batch``."""
    roofline = entry["plan"]["roofline"]
    return float(batch * roofline["bandwidth_gbps"] * 1e9 / roofline["weight_bytes_read_per_step"])


def rows(result: dict[str, Any]) -> list[Row]:
    found: list[Row] = []
    for entry in result["data"]:
        name = f"ort {entry['precision']}"
        if "run" not in entry:
            found.append(Row(TABLE, name, "", (), note=f"failed: {entry['error']}"))
            continue
        metrics = entry["run"]["metrics"]
        found.append(Row(TABLE, f"{name}: decode tok/s b1", "tok/s",
                         tuple(metrics["decode_tok_s"]["samples"]), (LLAMA_CPP,),
                         ceiling_tok_s(entry)))  # fmt: skip
        if metrics.get("decode_tok_s_batched"):
            batched = tuple(metrics["decode_tok_s_batched"]["samples"])
            batch = entry["run"]["settings"].get("batch_size", 1)
            found.append(Row(TABLE, f"{name}: decode tok/s b{batch} (total)", "tok/s", batched,
                             (LLAMA_CPP,), ceiling_tok_s(entry, batch)))  # fmt: skip
        found.append(Row(TABLE, f"{name}: TTFT", "s", tuple(metrics["ttft_s"]["samples"]),
                         higher_is_better=False))  # fmt: skip
    return found

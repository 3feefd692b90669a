"""The seed's table (REFERENCE.md §1) for an fp16 and an fp8 trtllm bundle: quantize/convert,
engine build and total time; checkpoint and engine size; engine load; generation time; tok/s
batched (the runtime's and trtllm-bench's); quality; with deltas."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgepack.report import Entry, build_report, render_markdown
from edgepack.report.format import format_cell
from tests.unit.test_report import _bundle, _run

SEED = {"fp16": (120.0, 166.0, 15e9, 33.2, 153.7), "fp8": (454.0, 236.0, 8.2e9, 18.0, 251.2)}


def _trtllm_entry(root: Path, precision: str) -> Entry:
    convert, build, checkpoint, load, tok_s = SEED[precision]
    stages: list[dict[str, Any]] = [
        {"name": "checkpoint", "key": "c", "wall_s": convert,
         "details": {"checkpoint_bytes": int(checkpoint)}},
        {"name": "engine", "key": "e", "wall_s": build, "details": {"build": {}}},
    ]  # fmt: skip
    recipe = {"backend": "trtllm", "precision": precision, "kv_cache_dtype": "fp16"}
    bundle = _bundle(root, precision, 2000, stages=stages, recipe=recipe,
                     target={"name": "ada-sm89"})  # fmt: skip
    run = _run(bundle, [50.0, 50.5, 49.5])
    run = run.model_copy(
        update={
            "load": run.load.model_copy(update={"first_s": load}),
            "raw": {"trtllm_bench": {"system_output_throughput_tok_s": tok_s}},
        }
    )
    return Entry.from_run(run, f"{precision}.json")


def test_the_seed_table_for_fp16_and_fp8_trtllm_bundles(tmp_path: Path) -> None:
    report = build_report([_trtllm_entry(tmp_path, "fp16"), _trtllm_entry(tmp_path, "fp8")])

    def cells(label: str) -> list[str]:
        row = report.row(label)
        return [format_cell(cell, row.unit) for cell in row.cells]

    assert cells("quantize/convert (s)") == ["120.0", "454.0"]
    assert cells("engine build (s)") == ["166.0", "236.0"]
    assert cells("build total (s)") == ["286.0", "690.0"]
    checkpoint = cells("checkpoint size")
    assert checkpoint[0].startswith("15.0") and checkpoint[1].startswith("8.2")
    assert cells("engine load, first (s)") == ["33.2", "18.0"]
    assert cells("throughput, trtllm-bench (tok/s)") == ["153.7", "251.2"]
    text = render_markdown(report)
    for label in ("generation, one batch 3 (s)", "decode tok/s, batch 3", "quality verdict"):
        assert label in text
    assert "| throughput, trtllm-bench (tok/s) | 153.7 | 251.2 | +97.5 (+63.4 %) |" in text

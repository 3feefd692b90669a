"""docs/BENCHMARKS.md is computed from the result files: its numbers are the JSON's samples'
n, median, min–max, CV, ratios to the peers' medians and roofline shares; --quick does less."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import pytest

from benchmarks.__main__ import BENCHMARKS, benchmark, report
from benchmarks.bench_harness import SERIES
from benchmarks.report import number

COMMITTED = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
MACHINE = {"cpu_model": "Test CPU", "usable_cores": 2, "python": "3.11.7", "libraries": {}}


def _result(name: str, data: Any) -> dict[str, Any]:
    return {"name": name, "machine": MACHINE, "versions": {"edgepack": "0.0"}, "threads": 2,
            "params": {}, "data": data}  # fmt: skip


def _engine(precision: str, decode: list[float], ttft: list[float]) -> dict[str, Any]:
    metrics = {"decode_tok_s": {"samples": decode}, "ttft_s": {"samples": ttft},
               "decode_tok_s_batched": None}  # fmt: skip
    plan = {"roofline": {"bandwidth_gbps": 10.0, "weight_bytes_read_per_step": 1e8}}
    return {"precision": precision, "plan": plan, "run": {"metrics": metrics, "settings": {}}}


def _llamacpp(decode: list[float]) -> dict[str, Any]:
    metrics = {"decode_tok_s": {"samples": decode}, "ttft_s": {"samples": [0.5]}}
    return {"run": {"metrics": metrics, "bundle": {"engine_bytes": 2e8}}, "bandwidth_gbps": 10.0}


def _page(tmp_path: Path, results: list[dict[str, Any]]) -> list[str]:
    folder = tmp_path / "results"
    folder.mkdir()
    for result in results:
        (folder / f"{result['name']}.json").write_text(json.dumps(result))
    out = tmp_path / "BENCHMARKS.md"
    report(folder, out)
    return out.read_text().splitlines()


def _row(lines: list[str], label: str) -> list[str]:
    (line,) = [line for line in lines if line.startswith(f"| {label} |")]
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_engine_rows_match_the_samples_and_the_peer(tmp_path: Path) -> None:
    lines = _page(tmp_path, [
        _result("demo_precisions", [_engine("int4", [40.0, 50.0, 60.0], [0.2, 0.3]),
                                    {"precision": "fp16", "error": "no fp16 on CPU"}]),
        _result("llamacpp_baseline", _llamacpp([80.0, 100.0, 120.0, 100.0])),
    ])  # fmt: skip
    # median 50, min–max 40–60, CV = stdev 10 / mean 50; 50/100 of llama.cpp; 50 / (10e9/1e8)
    assert _row(lines, "ort int4: decode tok/s b1") == [
        "ort int4: decode tok/s b1", "3", "50.0 tok/s", "40.0–60.0", "20.0%",
        "0.50× llama.cpp q4_1: decode tok/s b1", "50%",
    ]  # fmt: skip
    assert _row(lines, "ort int4: TTFT")[1:4] == ["2", "0.250 s", "0.200–0.300"]
    assert _row(lines, "llama.cpp q4_1: decode tok/s b1")[1:3] == ["4", "100 tok/s"]
    assert _row(lines, "llama.cpp q4_1: decode tok/s b1")[6] == "200%"  # 100 / (10e9 / 2e8)
    assert _row(lines, "ort fp16")[2] == "failed: no fp16 on CPU"


def test_no_ratio_to_a_peer_measured_on_another_machine(tmp_path: Path) -> None:
    elsewhere = {**_result("llamacpp_baseline", _llamacpp([100.0])),
                 "machine": {**MACHINE, "cpu_model": "Other CPU"}}  # fmt: skip
    lines = _page(tmp_path, [
        _result("demo_precisions", [_engine("int4", [50.0], [0.2])]), elsewhere,
    ])  # fmt: skip
    assert _row(lines, "ort int4: decode tok/s b1")[5] == (
        "– llama.cpp q4_1: decode tok/s b1 (measured on another machine)"
    )


def test_deploy_rows_compare_edgepack_with_scp_and_rsync_at_each_rate(tmp_path: Path) -> None:
    def copy(tool: str, scenario: str, seconds: float, ideal: float) -> dict[str, Any]:
        return {"tool": tool, "scenario": scenario, "seconds": seconds, "ideal_s": ideal,
                "ok": True}  # fmt: skip

    slow = [copy("edgepack", "first copy", 80.0, 72.0), copy("scp -r", "first copy", 64.0, 72.0),
            copy("rsync -a", "first copy", 100.0, 72.0), copy("edgepack", "no change", 2.0, 0.0),
            copy("edgepack", "no change", 1.0, 0.0), copy("edgepack", "no change", 3.0, 0.0),
            copy("rsync -a", "no change", 0.5, 0.0)]  # fmt: skip
    fast = [copy("edgepack", "first copy", 16.0, 14.4), copy("rsync -a", "first copy", 20.0, 14.4)]
    runs = [{"rate": "20mbit", "rows": slow}, {"rate": "100mbit", "rows": fast}]
    lines = _page(tmp_path, [_result("deploy_vs_scp_rsync", {"runs": runs})])
    assert _row(lines, "edgepack: first copy, 20mbit")[1:] == [
        "1", "80.0 s", "–", "–",
        "1.25× scp -r: first copy, 20mbit, 0.80× rsync -a: first copy, 20mbit", "90%",
    ]  # fmt: skip
    assert _row(lines, "edgepack: no change, 20mbit")[1:3] == ["3", "2.00 s"]  # the repeats
    assert _row(lines, "edgepack: no change, 20mbit")[5:] == [
        "4.00× rsync -a: no change, 20mbit",
        "–",
    ]
    assert _row(lines, "edgepack: first copy, 100mbit")[5] == "0.80× rsync -a: first copy, 100mbit"
    assert "## Deploy: 20mbit tbf-shaped link to a namespace device" in lines
    assert "## Deploy: 100mbit tbf-shaped link to a namespace device" in lines


def test_warm_rebuild_rows(tmp_path: Path) -> None:
    wall = {"edgepack build, all cached": [0.3, 0.5, 0.4], "python -c pass": [0.02, 0.02],
            "edgepack --version": [0.1, 0.1]}  # fmt: skip
    cpu = {label: [s / 2 for s in samples] for label, samples in wall.items()}
    lines = _page(tmp_path, [_result("warm_rebuild", {"wall_s": wall, "cpu_s": cpu})])
    assert _row(lines, "edgepack build, all cached")[1:6] == [
        "3", "0.400 s", "0.300–0.500", "25.0%", "20.00× python -c pass, 4.00× edgepack --version"
    ]  # fmt: skip
    assert _row(lines, "edgepack build, all cached (CPU time)")[1:3] == ["3", "0.200 s"]
    assert any("`warm_rebuild`: Test CPU, 2 cores, 2 threads" in line for line in lines)


def test_cold_stage_rows_compare_the_build_with_the_tool_by_hand(tmp_path: Path) -> None:
    wall = {"edgepack build --force --until engine": [43.0, 45.0, 44.0],
            "its engine stage alone": [40.0, 41.0, 40.5],
            "onnxruntime-genai builder by hand": [40.0, 39.0, 41.0]}  # fmt: skip
    cpu = {"edgepack build --force --until engine": [30.0],
           "onnxruntime-genai builder by hand": [25.0]}  # fmt: skip
    lines = _page(tmp_path, [_result("cold_stage", {"wall_s": wall, "cpu_s": cpu})])
    assert _row(lines, "edgepack build --force --until engine")[1:3] == ["3", "44.0 s"]
    assert _row(lines, "edgepack build --force --until engine")[5] == (
        "1.10× onnxruntime-genai builder by hand"
    )
    assert _row(lines, "its engine stage alone")[5] == "1.01× onnxruntime-genai builder by hand"
    assert _row(lines, "the rest of the command (build − stage, per run)")[1:4] == [
        "3", "3.50 s", "3.00–4.00"
    ]  # fmt: skip
    assert _row(lines, "edgepack build --force --until engine (CPU time)")[5] == (
        "1.20× onnxruntime-genai builder by hand (CPU time)"
    )


def test_the_cold_stage_peer_is_the_builder_with_the_stage_s_own_options(tmp_path: Path) -> None:
    from benchmarks.cold_stage import by_hand_command

    config = {"precision": "int4", "execution_provider": "cpu",
              "extra_options": {"block_size": "32", "accuracy_level": "4"}}  # fmt: skip
    command = by_hand_command(tmp_path / "hf", tmp_path / "out" / "engine", config)
    assert command[1:3] == ["-m", "onnxruntime_genai.models.builder"]
    assert command[command.index("-i") + 1] == str(tmp_path / "hf")
    assert command[command.index("-p") + 1] == "int4"
    assert command[command.index("--extra_options") + 1 :] == ["block_size=32", "accuracy_level=4"]


def test_bench_harness_rows_compare_bench_with_the_bare_loop(tmp_path: Path) -> None:
    samples = {"bench_1": [40.0, 50.0, 60.0], "bare_1": [100.0, 100.0], "bench_3": [90.0],
               "bench_eos_3": [30.0, 30.0], "bare_3": [120.0, 80.0, 100.0]}  # fmt: skip
    lines = _page(tmp_path, [_result("bench_harness", {"settings": {}, "samples": samples})])
    assert _row(lines, "edgepack bench: decode tok/s b1")[1:6] == [
        "3", "50.0 tok/s", "40.0–60.0", "20.0%", "0.50× bare loop: decode tok/s b1"
    ]  # fmt: skip
    assert _row(lines, "edgepack bench: decode tok/s b3 (total)")[5] == (
        "0.90× bare loop: decode tok/s b3 (total)"
    )
    assert _row(lines, "bench before #16, EOS-stopped batch: decode tok/s b3 (total)")[5] == (
        "0.30× bare loop: decode tok/s b3 (total)"
    )
    assert _row(lines, "bare loop: decode tok/s b3 (total)")[1:3] == ["3", "100 tok/s"]


def test_the_committed_bench_harness_rows_are_its_recorded_samples(tmp_path: Path) -> None:
    recorded = json.loads((COMMITTED / "bench_harness.json").read_text())
    samples = recorded["data"]["samples"]
    lines = _page(tmp_path, [recorded])
    assert set(samples) == set(SERIES)
    for series, (label, peer) in SERIES.items():
        median = statistics.median(samples[series])
        cells = _row(lines, label)
        assert cells[1:3] == [str(len(samples[series])), f"{number(median)} tok/s"]
        assert cells[3] == f"{number(min(samples[series]))}–{number(max(samples[series]))}"
        if peer:
            ratio = median / statistics.median(samples[peer])
            assert cells[5] == f"{ratio:.2f}× {SERIES[peer][0]}"


def test_the_committed_results_regenerate(tmp_path: Path) -> None:
    """Every committed result file is one the report reads."""
    out = tmp_path / "BENCHMARKS.md"
    report(COMMITTED, out)
    names = {path.stem for path in COMMITTED.glob("*.json")}
    assert names and names <= set(BENCHMARKS)
    assert all(f"`{name}`" in out.read_text() for name in names)


def _cost(value: Any) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    return float(len(value)) if isinstance(value, list) else 0.0


@pytest.mark.parametrize("name", BENCHMARKS)
def test_quick_parameters_are_smaller(name: str) -> None:
    module = benchmark(name)
    quick, full = module.params(True), module.params(False)
    assert quick.keys() == full.keys()
    assert all(_cost(quick[key]) <= _cost(full[key]) for key in full)
    assert any(_cost(quick[key]) < _cost(full[key]) for key in full)


def _recipe(name: str, decode: list[float], batched: list[float], passed: bool) -> dict[str, Any]:
    metrics = {"decode_tok_s": {"samples": decode}, "ttft_s": {"samples": [0.1]},
               "decode_tok_s_batched": {"samples": batched}}  # fmt: skip
    run = {"metrics": metrics, "settings": {"batch_size": 3}, "quality": {"passed": passed}}
    return {"recipe": name, "engine_bytes": 1.5e8, "run": run}


def test_recipe_rows_mark_the_default_and_compare_with_the_same_runs_llamacpp(
    tmp_path: Path,
) -> None:
    recipes = [_recipe("default", [110.0, 120.0], [200.0], True),
               _recipe("block 128, rtn", [90.0], [150.0], False),
               {"recipe": "block 64", "error": "builder failed"}]  # fmt: skip
    data = {"llamacpp": _llamacpp([80.0, 100.0]), "recipes": recipes}
    lines = _page(tmp_path, [_result("ort_recipes", data)])
    peer = "llama.cpp q4_1 (same run): decode tok/s b1"
    assert _row(lines, peer)[1:3] == ["2", "90.0 tok/s"]
    default = _row(lines, "default (the default): decode tok/s b1")
    assert default[1:3] == ["2", "115 tok/s"] and default[5] == f"1.28× {peer}"
    assert _row(lines, "default (the default): decode tok/s b3 (total)")[5] == f"2.22× {peer}"
    assert _row(lines, "default (the default): engine size")[2] == "150 MB"
    failed_gate = "block 128, rtn [quality gate FAILED]: decode tok/s b1"
    assert _row(lines, failed_gate)[5] == f"1.00× {peer}"
    assert _row(lines, "block 64")[2] == "failed: builder failed"

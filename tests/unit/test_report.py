"""Comparison reports: the table's rows, deltas, roofline, regression rule, formats and plots.

Run results are real RunResult objects; bundles are real, sealed with ``write_bundle`` from tiny
files, with the plan summary the planner writes for the demo model on the x86 host profile.
"""

from __future__ import annotations

import base64
import io
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edgepack.bench.gpus import Gpu
from edgepack.bench.result import BenchSettings, LoadTimes, Metrics, PromptOutput, RunResult
from edgepack.bench.stats import Spread
from edgepack.bundle import Manifest, bundle_summary, write_bundle
from edgepack.cache import FileHashIndex
from edgepack.errors import BadInputError, ExitCode, RegressionError
from edgepack.models import resolve_spec
from edgepack.plan import PlanRequest, make_plan
from edgepack.quality.verdict import Check, QualityVerdict
from edgepack.report import (
    Entry,
    Report,
    build_report,
    enforce,
    load_entries,
    render_html,
    render_json,
    render_markdown,
    render_plots,
)
from edgepack.report.cells import (
    NO_BUNDLE,
    NO_GATE_MARK,
    NO_SUPPORTED_GPU,
    NOT_APPLICABLE,
    NOT_MEASURED,
    Measure,
)
from edgepack.report.format import format_cell, format_delta, shown_cells
from edgepack.report.plots import QUALITY_PLOT, SPEED_PLOT
from edgepack.report.regression import REGRESSION_RULE
from edgepack.targets import TargetRegistry

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HAND_PLAN = {
    "roofline": {"bandwidth_gbps": 10.0, "weight_bytes_read_per_step": 1e8},
    "memory": {"kv_bytes_per_token": 1e5},
}
"""10 GB/s over 100 MB of weights: a ceiling of 100 tok/s before the KV cache."""


def _real_plan(
    precision: str, target: str = "host-x86_64-cpu", backend: str | None = None
) -> dict[str, Any]:
    request = PlanRequest(
        target=TargetRegistry.default().get(target),
        model=resolve_spec("smollm2-135m-instruct"),
        precision=precision,
        backend=backend,
    )
    return make_plan(request).summary()


def _bundle(
    root: Path,
    precision: str,
    engine_bytes: int,
    stages: list[dict[str, Any]] | None = None,
    plan: dict[str, Any] | None = None,
    checkpoint_bytes: int = 0,
    recipe: dict[str, Any] | None = None,
    target: dict[str, Any] | None = None,
) -> Path:
    source = root / f"src-{precision}"
    source.mkdir(parents=True)
    (source / "model.onnx.data").write_bytes(b"w" * engine_bytes)
    prompts = root / f"prompts-{precision}.json"
    prompts.write_text('{"prompts": []}', encoding="utf-8")
    contents = {"engine": source, "prompts.json": prompts}
    if checkpoint_bytes:
        checkpoint = root / f"ckpt-{precision}"
        checkpoint.mkdir()
        (checkpoint / "rank0.safetensors").write_bytes(b"c" * checkpoint_bytes)
        contents["checkpoint"] = checkpoint
    manifest = Manifest(
        edgepack_version="test",
        model={"name": "smollm2-135m-instruct", "hash": "h"},
        recipe=recipe or {"backend": "ort", "precision": precision, "kv_cache_dtype": "fp32"},
        target=target or {"name": "host-x86_64-cpu"},
        tools={"edgepack": "test", "onnxruntime-genai": "0.0-test"},
        plan=plan if plan is not None else _real_plan(precision),
        stages=stages if stages is not None else [{"name": "engine", "key": "k", "wall_s": 12.0}],
    )
    destination = root / f"bundle-{precision}"
    index = FileHashIndex(root / f"hashes-{precision}.json")
    write_bundle(destination, manifest, contents, index)
    return destination


def _verdict(passed: bool, metrics: dict[str, float] | None = None) -> QualityVerdict:
    check = Check(
        name="chrf", value=60.0 if passed else 5.0, limit=40.0, direction="min", passed=passed
    )
    return QualityVerdict(
        passed=passed,
        quality_class="4bit",
        checks=[check],
        metrics=metrics or {"chrf": check.value, "token_agreement": 0.9 if passed else 0.1},
        reference={"model_hash": "h", "provenance": "a Q4_1 GGUF dequantized to float32"},
    )


def _run(
    bundle: Path | dict[str, Any],
    decode: list[float],
    *,
    batched: list[float] | None = None,
    passed: bool | None = True,
    gate: bool = True,
) -> RunResult:
    if isinstance(bundle, Path):
        from edgepack.bundle import read_manifest

        summary = {"dir": str(bundle), **bundle_summary(read_manifest(bundle))}
    else:
        summary = bundle
    spread = Spread.of
    return RunResult(
        location="local",
        bundle=summary,
        machine={"cpu_model": "Test CPU", "usable_cores": 2, "hostname": "test"},
        settings=BenchSettings(
            runs=len(decode),
            warmup=1,
            batch_size=3,
            max_new_tokens=20,
            prompts_file="prompts.json",
            prompts_sha256="0" * 64,
        ),
        load=LoadTimes(first_s=2.0, first_page_cache="dropped", warm=spread([0.5, 0.6, 0.55])),
        metrics=Metrics(
            ttft_s=spread([0.1, 0.12, 0.11]),
            prefill_tok_s=spread([200.0, 210.0, 205.0]),
            decode_tok_s=spread(decode),
            decode_tok_s_batched=spread(batched or [3 * d for d in decode]),
            e2e_s=spread([1.0, 1.1, 1.05]),
            batched_e2e_s=spread([2.0, 2.2, 2.1]),
            peak_rss_bytes=300_000_000,
        ),
        outputs=[
            PromptOutput(
                id="p1", prompt="q", text="Paris.", prompt_tokens=10, new_tokens=20, token_ids=[1]
            )
        ],
        quality=None if passed is None else _verdict(passed),
        gate_enforced=gate,
    )


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Entry, Entry]:
    """fp32 then int4 of the demo model, as the study compared FP16 with FP8."""
    fp32 = _bundle(tmp_path, "fp32", 5000)
    int4 = _bundle(tmp_path, "int4", 1000)
    return (
        Entry.from_run(_run(fp32, [30.0, 30.5, 29.5]), "fp32.json"),
        Entry.from_run(_run(int4, [90.0, 91.0, 89.0]), "int4.json"),
    )


def _cells(report: Report, label: str) -> list[str]:
    row = report.row(label)
    return [format_cell(cell, row.unit) for cell in row.cells]


def test_table_has_the_studys_rows_with_one_column_per_run(pair: tuple[Entry, Entry]) -> None:
    report = build_report(pair)
    assert [column.label for column in report.columns] == ["ort fp32", "ort int4"]
    sections = [row.section for row in report.rows]
    assert sections.index("build") < sections.index("artifacts") < sections.index("runtime")
    for label in (
        "quantize/convert (s)",
        "engine build (s)",
        "build total (s)",
        "engine size",
        "engine load, first (s)",
        "engine load, warm (s)",
        "generation, one batch 3 (s)",
        "decode tok/s, batch 1",
        "decode tok/s, batch 3",
        "time to first token (s)",
        "quality verdict",
    ):
        assert len(report.row(label).cells) == 2
    assert _cells(report, "engine size") == ["5.00 kB", "1.00 kB"]
    assert _cells(report, "engine build (s)") == ["12.0", "12.0"]
    assert _cells(report, "quantize/convert (s)") == ["in engine build"] * 2
    assert _cells(report, "decode tok/s, batch 1") == ["30.0 (29.5–30.5)", "90.0 (89.0–91.0)"]
    assert _cells(report, "quality verdict") == ["pass (4bit)", "pass (4bit)"]
    assert _cells(report, "reference") == ["a Q4_1 GGUF dequantized to float32"] * 2
    assert _cells(report, "chrf") == ["60.0", "60.0"]


def test_deltas_are_absolute_and_percent_and_say_when_beyond_noise(
    pair: tuple[Entry, Entry],
) -> None:
    row = build_report(pair).row("decode tok/s, batch 1")
    change = row.deltas()[1]
    assert change is not None
    assert change.absolute == pytest.approx(60.0)
    assert change.percent == pytest.approx(200.0)
    assert change.noise == pytest.approx(2.0 + 1.0)
    assert change.beyond_noise is True
    assert format_delta(change, row.unit) == "+60.0 (+200.0 %)"
    size = build_report(pair).row("engine size")
    assert format_delta(size.deltas()[1], size.unit) == "-4.00 kB (-80.0 %)"


def test_a_difference_inside_both_spreads_is_marked_as_noise(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path, "int4", 1000)
    entries = [
        Entry.from_run(_run(bundle, [90.0, 95.0, 85.0]), "a.json"),
        Entry.from_run(_run(bundle, [91.0, 96.0, 86.0]), "b.json"),
    ]
    row = build_report(entries).row("decode tok/s, batch 1")
    change = row.deltas()[1]
    assert change is not None and change.beyond_noise is False
    assert format_delta(change, row.unit).startswith("≈ +1.00")


def test_build_rows_use_repeat_spreads_and_split_conversion_from_engine(tmp_path: Path) -> None:
    stages = [
        {"name": "quantize", "key": "q", "wall_s": 100.0, "repeat": _repeat(90, 120, 200)},
        {"name": "engine", "key": "e", "wall_s": 160.0, "repeat": _repeat(150, 166, 240)},
    ]
    report = build_report([Entry.from_bundle(_bundle(tmp_path, "int4", 10, stages=stages))])
    assert _cells(report, "quantize/convert (s)") == ["120.0 (90.0–200.0)"]
    assert _cells(report, "engine build (s)") == ["166.0 (150.0–240.0)"]
    assert _cells(report, "build total (s)") == ["286.0 (240.0–440.0)"]


def _repeat(low: float, median: float, high: float) -> dict[str, float]:
    return {"n": 3, "min": low, "median": median, "max": high}


def test_bundle_without_a_run_reports_build_and_says_not_measured(tmp_path: Path) -> None:
    report = build_report([Entry.from_bundle(_bundle(tmp_path, "fp16", 2000))])
    assert report.columns[0].label == "ort fp16 (build only)"
    assert _cells(report, "engine build (s)") == ["12.0"]
    assert _cells(report, "engine size") == ["2.00 kB"]
    assert _cells(report, "decode tok/s, batch 1") == [NOT_MEASURED]
    assert _cells(report, "quality verdict") == [NOT_MEASURED]
    assert _cells(report, "% of decode roofline, batch 1") == [NOT_MEASURED]


def test_run_whose_bundle_is_gone_keeps_its_recorded_engine_size(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path, "int4", 1000)
    run = _run(bundle, [90.0, 91.0, 89.0])
    run.bundle["dir"] = str(tmp_path / "deleted")
    report = build_report([Entry.from_run(run, "r.json")])
    assert _cells(report, "engine build (s)") == [NO_BUNDLE]
    assert _cells(report, "engine size") == ["1.00 kB"]
    assert any("no manifest of its bundle" in note for note in report.notes)


def test_a_device_run_finds_its_bundle_here_by_id(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path, "int4", 1000)
    run = _run(bundle, [90.0, 91.0, 89.0])
    run.bundle["dir"], run.location = "/opt/edgepack/releases/x", "jetson"
    run_file = tmp_path / "device.json"
    run.save(run_file)
    (alone,) = load_entries([run_file], [], None)
    assert alone.manifest is None and "on jetson" in alone.problem
    (matched,) = load_entries([run_file], [bundle], None)
    assert matched.manifest is not None and matched.run is not None
    (searched,) = load_entries([run_file], [], None, search=[tmp_path])
    assert searched.manifest is not None


def test_a_bundle_rebuilt_since_the_run_is_not_used(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path, "int4", 1000)
    run = _run(bundle, [90.0, 91.0, 89.0])
    run.bundle["bundle_id"] = "0" * 64
    entry = Entry.from_run(run, "r.json")
    assert entry.manifest is None and "rebuilt since the run" in entry.problem


def test_percent_of_roofline_uses_the_plans_bandwidth_and_bytes(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path, "int4", 1000, plan=HAND_PLAN)
    report = build_report([Entry.from_run(_run(bundle, [49.0, 50.0, 51.0]), "r.json")])
    # context = 10 prompt tokens + 20 / 2 generated = 20 tokens of 100 kB KV per sequence
    ceiling_1 = 10e9 / (1e8 + 1 * 20 * 1e5)
    ceiling_3 = 3 * 10e9 / (1e8 + 3 * 20 * 1e5)
    percent_1 = report.row("% of decode roofline, batch 1").cells[0]
    percent_3 = report.row("% of decode roofline, batch 3").cells[0]
    assert isinstance(percent_1, Measure) and isinstance(percent_3, Measure)
    assert percent_1.value == pytest.approx(100 * 50.0 / ceiling_1)
    assert percent_1.low == pytest.approx(100 * 49.0 / ceiling_1)
    assert percent_3.value == pytest.approx(100 * 150.0 / ceiling_3)
    assert _cells(report, "bandwidth") == ["10 GB/s (host-x86_64-cpu)"]


def test_roofline_note_names_the_target_bandwidth(pair: tuple[Entry, Entry]) -> None:
    notes = " ".join(build_report(pair).notes)
    assert "33.4 GB/s (target profile host-x86_64-cpu" in notes


def test_cross_engine_rows_and_a_note_when_precisions_differ(pair: tuple[Entry, Entry]) -> None:
    llamacpp = {"backend": "llamacpp", "precision": "Q4_1", "model": "smollm2-135m-instruct"}
    baseline = Entry.from_run(_run(llamacpp, [60.0, 61.0, 59.0]), "llamacpp.json")
    report = build_report([baseline, pair[1]])
    assert "cross-engine" in {row.section for row in report.rows}
    assert _cells(report, "decode speed vs first, batch 1") == ["1.00×", "1.50×"]
    assert any("different precisions" in note and "Q4_1" in note for note in report.notes)
    assert "cross-engine" not in {row.section for row in build_report(pair).rows}


def test_no_gate_runs_are_marked_in_every_format(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path, "int4", 1000)
    entries = [
        Entry.from_run(_run(bundle, [90.0, 91.0, 89.0]), "a.json"),
        Entry.from_run(_run(bundle, [90.0, 91.0, 89.0], passed=False, gate=False), "b.json"),
    ]
    report = build_report(entries)
    assert report.columns[1].label.endswith(NO_GATE_MARK)
    assert NO_GATE_MARK in render_markdown(report)
    assert NO_GATE_MARK in render_html(report)
    data = json.loads(render_json(report))
    assert data["columns"][1]["no_gate"] is True
    assert NO_GATE_MARK in data["columns"][1]["label"]
    assert _cells(report, "quality verdict")[1].startswith("FAIL (4bit): chrf 5")
    assert shown_cells(report.row("quality verdict"))[1].kind == "text bad"
    assert report.row("chrf").better == "higher"  # the gate's check has a minimum
    assert shown_cells(report.row("chrf"))[2].kind == "worse"


def _check(tmp_path: Path, base: list[float], run: list[float], passed: bool = True) -> Report:
    bundle = _bundle(tmp_path, "int4", 1000)
    entries = [
        Entry.from_run(_run(bundle, base), "base.json"),
        Entry.from_run(_run(bundle, run, passed=passed), "run.json"),
    ]
    return build_report(entries, check_baseline=True)


def test_a_slowdown_clear_at_three_runs_a_side_is_a_regression(tmp_path: Path) -> None:
    report = _check(tmp_path, [90.0, 91.0, 89.0], [80.0, 81.0, 79.0])
    (check,) = report.checks
    speed = check.speed
    assert (speed.baseline_n, speed.run_n) == (3, 3)
    assert speed.difference == pytest.approx(-10.0)
    assert speed.percent == pytest.approx(-100 / 9)
    assert speed.p_value == pytest.approx(1 / 20)  # 1 / C(6, 3): the least 3 against 3 can give
    assert speed.interval is not None
    low, high = speed.interval  # resampled medians are samples: 79/91 − 1 to 81/89 − 1
    assert -13.2 < low < high < -8.9
    assert check.speed_regressed and not check.quality_regressed
    with pytest.raises(RegressionError) as caught:
        enforce(report.checks)
    assert caught.value.exit_code == ExitCode.REGRESSION == 10
    assert "n=3 vs n=3; median -10.00 tok/s (-11.1 %), 95 % interval" in caught.value.message
    assert "Mann–Whitney p = 0.05: REGRESSED" in caught.value.message
    assert caught.value.hint == REGRESSION_RULE


def test_a_drop_the_runs_cannot_tell_from_noise_passes(tmp_path: Path) -> None:
    report = _check(tmp_path, [90.0, 93.0, 87.0], [87.0, 90.0, 84.0])
    (check,) = report.checks
    assert check.speed.difference == pytest.approx(-3.0)
    assert check.speed.p_value is not None and check.speed.p_value > 0.05
    assert not check.regressed
    assert "not significant (p > 0.05)" in check.speed_line()
    enforce(report.checks)


def test_a_worse_quality_verdict_is_a_regression_even_when_faster(tmp_path: Path) -> None:
    report = _check(tmp_path, [90.0, 91.0, 89.0], [120.0, 121.0, 119.0], passed=False)
    (check,) = report.checks
    assert check.quality_regressed and not check.speed_regressed
    with pytest.raises(RegressionError, match="quality verdict pass → fail: WORSE"):
        enforce(report.checks)


@pytest.mark.parametrize("runs", [1, 2])
def test_too_few_runs_to_test_are_said_and_never_pass(tmp_path: Path, runs: int) -> None:
    report = _check(tmp_path, [90.0, 91.0][:runs], [80.0, 81.0][:runs])
    assert report.checks[0].undetermined and not report.checks[0].regressed
    with pytest.raises(BadInputError) as caught:
        enforce(report.checks)
    assert caught.value.exit_code == ExitCode.BAD_INPUT
    assert f"too few runs to test: n={runs} (baseline), n={runs} (run)" in caught.value.message
    assert "rerun with --runs 5" in caught.value.message
    assert "too few runs to test" in render_markdown(report)


def test_markdown_prints_the_rule_and_the_numbers(tmp_path: Path) -> None:
    text = render_markdown(_check(tmp_path, [90.0, 91.0, 89.0], [80.0, 81.0, 79.0]))
    assert REGRESSION_RULE in text
    assert "90.00 (89.00–91.00, n=3) → 80.00 (79.00–81.00, n=3)" in text
    assert "| decode tok/s, batch 1 | 90.0 (89.0–91.0) | 80.0 (79.0–81.0) | -10.0 (-11.1 %) |" in (
        text
    )


def test_html_is_self_contained_with_embedded_plots(pair: tuple[Entry, Entry]) -> None:
    report = build_report(pair)
    page = render_html(report, render_plots(report))
    assert "http:" not in page and "https:" not in page and "url(" not in page
    assert "<link" not in page and "<script" not in page
    references = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert references and all(ref.startswith("data:image/png;base64,") for ref in references)
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 2
    assert all(base64.b64decode(image).startswith(PNG_SIGNATURE) for image in images)
    assert "<style>" in page and "ort int4" in page


HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def test_html_escapes_hostile_labels_names_and_notes(pair: tuple[Entry, Entry]) -> None:
    bundle = {"backend": "ort", "precision": "int4", "model": HOSTILE, "dir": f"/r/{HOSTILE}"}
    hostile = Entry.from_run(_run(bundle, [60.0, 61.0, 59.0]), "hostile.json")
    report = build_report([pair[0], hostile], check_baseline=True)
    assert any(HOSTILE in column.label for column in report.columns)
    assert any(HOSTILE in note for note in report.notes)
    page = render_html(report)
    assert "<script" not in page and "<img" not in page
    escaped = "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;"
    # two header cells, the model cell, two baseline-check lines, the note (label and path)
    assert page.count(escaped) == 7


def test_plots_are_pngs_that_show_data(pair: tuple[Entry, Entry]) -> None:
    from matplotlib.image import imread

    plots = render_plots(build_report(pair))
    assert set(plots) == {SPEED_PLOT, QUALITY_PLOT}
    for png in plots.values():
        assert png.startswith(PNG_SIGNATURE)
        pixels = imread(io.BytesIO(png), format="png")
        assert pixels.shape[0] > 100 and pixels.shape[1] > 100
        assert pixels.std() > 0.05  # not a blank canvas


def test_no_quality_metrics_means_no_quality_plot(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path, "int4", 1000)
    report = build_report([Entry.from_run(_run(bundle, [90.0, 91.0], passed=None), "r.json")])
    assert set(render_plots(report)) == {SPEED_PLOT}


def test_load_entries_puts_the_baseline_first_and_bundles_without_runs_last(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path, "int4", 1000)
    paths = []
    for name, decode in (("a", [90.0, 91.0]), ("b", [80.0, 81.0])):
        path = tmp_path / f"{name}.json"
        _run(bundle, decode).save(path)
        paths.append(path)
    unmeasured = _bundle(tmp_path, "fp16", 2000)
    entries = load_entries(paths, [bundle, unmeasured], baseline=paths[1])
    # the measured bundle is the runs' own, not a column of its own
    assert [e.source for e in entries] == [str(paths[1]), str(paths[0]), str(unmeasured)]
    with pytest.raises(BadInputError, match="nothing to report"):
        load_entries([], [], None)


@pytest.fixture
def run_files(tmp_path: Path) -> Callable[[list[float], list[float]], tuple[Path, Path]]:
    def write(base: list[float], other: list[float]) -> tuple[Path, Path]:
        first, second = tmp_path / "base.json", tmp_path / "other.json"
        _run(_bundle(tmp_path, "fp32", 5000), base).save(first)
        _run(_bundle(tmp_path, "int4", 1000), other).save(second)
        return first, second

    return write


def test_cli_writes_json_and_plots(
    cli: Callable[..., Any],
    run_files: Callable[[list[float], list[float]], tuple[Path, Path]],
    tmp_path: Path,
) -> None:
    base, other = run_files([30.0, 31.0, 29.0], [90.0, 91.0, 89.0])
    out = tmp_path / "out" / "report.json"
    result = cli(
        "report",
        str(base),
        str(other),
        "--format",
        "json",
        "-o",
        str(out),
        "--plots",
        str(tmp_path / "plots"),
    )
    assert result.code == 0, result.err
    data = json.loads(out.read_text(encoding="utf-8"))
    assert [c["label"] for c in data["columns"]] == ["ort fp32", "ort int4"]
    assert data["plots"][SPEED_PLOT] == f"../plots/{SPEED_PLOT}"
    assert (tmp_path / "plots" / SPEED_PLOT).read_bytes().startswith(PNG_SIGNATURE)


def test_cli_exits_10_on_a_regression_and_prints_the_rule(
    cli: Callable[..., Any],
    run_files: Callable[[list[float], list[float]], tuple[Path, Path]],
) -> None:
    base, other = run_files([90.0, 91.0, 89.0], [30.0, 31.0, 29.0])
    result = cli("report", str(other), "--baseline", str(base))
    assert result.code == ExitCode.REGRESSION
    assert "rule: decode tok/s (batch 1) regresses" in result.flat_out
    assert "REGRESSED" in result.flat_err


def test_columns_get_an_id_only_when_their_labels_collide(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path, "int4", 1000)
    first, second = _run(bundle, [90.0, 91.0]), _run(bundle, [92.0, 93.0])
    twins = build_report([Entry.from_run(first, "a"), Entry.from_run(second, "b")])
    assert [c.label for c in twins.columns] == [
        f"ort int4 #{first.run_id[:6]}",
        f"ort int4 #{second.run_id[:6]}",
    ]
    mixed = build_report([Entry.from_run(first, "a"), Entry.from_bundle(bundle)])
    assert [c.label for c in mixed.columns] == ["ort int4", "ort int4 (build only)"]


def test_only_real_differences_are_coloured(pair: tuple[Entry, Entry]) -> None:
    report = build_report(pair)
    kinds = {
        label: shown_cells(report.row(label))[2].kind
        for label in ("engine size", "decode tok/s, batch 1", "engine load, first (s)")
    }
    # exact sizes and a speed-up beyond noise are judged; a single load time is not
    assert kinds == {
        "engine size": "better",
        "decode tok/s, batch 1": "better",
        "engine load, first (s)": "",
    }


def test_a_build_only_column_gets_the_runs_batch_ceiling(
    pair: tuple[Entry, Entry], tmp_path: Path
) -> None:
    bundle = _bundle(tmp_path / "extra", "int4", 1000, plan=HAND_PLAN)
    report = build_report([*pair, Entry.from_bundle(bundle)])
    # no run: weights only, 3 × 10 GB/s / 100 MB
    assert _cells(report, "decode ceiling, batch 3 (tok/s)")[2] == "300.0"
    assert _cells(report, "% of decode roofline, batch 3")[2] == NOT_MEASURED


def test_the_check_notes_runs_from_different_machines(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path, "int4", 1000)
    other = _run(bundle, [90.0, 91.0, 89.0])
    other.machine["cpu_model"] = "Other CPU"
    entries = [Entry.from_run(_run(bundle, [90.0, 91.0, 89.0]), "a"), Entry.from_run(other, "b")]
    (check,) = build_report(entries, check_baseline=True).checks
    assert not check.regressed
    assert any("measured on Other CPU" in line for line, _ in check.lines())


def test_checkpoint_size_row_appears_when_a_bundle_carries_one(
    pair: tuple[Entry, Entry], tmp_path: Path
) -> None:
    assert "checkpoint size" not in {row.label for row in build_report(pair).rows}
    with_checkpoint = _bundle(tmp_path / "ckpt", "fp8", 1500, checkpoint_bytes=3000)
    report = build_report([pair[0], Entry.from_bundle(with_checkpoint)])
    assert _cells(report, "checkpoint size") == ["–", "3.00 kB"]
    assert report.row("bundle size").cells[1] == Measure(1500 + 3000 + len(b'{"prompts": []}'))


# --- TensorRT-RTX bundles: built here, runnable only on an RTX GPU ------------------------------

TRTRTX_STAGES = {
    "fp16": [("export", 40.0), ("quantize", 60.0), ("engine", 48.0)],
    "fp8": [("export", 40.0), ("quantize", 150.0), ("engine", 79.0)],
}
"""Stage times shaped like the demo model's real SM89 builds (REFERENCE.md §11)."""


def _trtrtx_bundle(root: Path, precision: str, engine_bytes: int) -> Path:
    """A bundle as the trtrtx backend writes it: SM89 engine, export/quantize/engine stages."""
    stages = [{"name": n, "key": n, "wall_s": s} for n, s in TRTRTX_STAGES[precision]]
    recipe = {
        "backend": "trtrtx",
        "precision": precision,
        "kv_cache_dtype": "fp16",
        "stage_config": {"engine": {"compute_capability": "SM89"}},
    }
    return _bundle(
        root,
        precision,
        engine_bytes,
        stages=stages,
        plan=_real_plan(precision, "ada-sm89", "trtrtx"),
        recipe=recipe,
        target={"name": "ada-sm89", "sm": "SM89"},
    )


@pytest.fixture
def trtrtx_pair(tmp_path: Path) -> list[Entry]:
    """fp16 and fp8 engines for the RTX 6000 Ada, as in the study, never run."""
    return [
        Entry.from_bundle(_trtrtx_bundle(tmp_path, "fp16", 37400)),
        Entry.from_bundle(_trtrtx_bundle(tmp_path, "fp8", 28800)),
    ]


RUNTIME_LABELS = (
    "engine load, first (s)",
    "engine load, warm (s)",
    "time to first token (s)",
    "generation, one prompt (s)",
    "generation, one batched (s)",
    "prefill tok/s",
    "decode tok/s, batch 1",
    "decode tok/s, batched",
    "peak RSS",
)


def test_trtrtx_bundles_show_build_and_size_rows_with_deltas(trtrtx_pair: list[Entry]) -> None:
    report = build_report(trtrtx_pair, gpus=[])
    assert [c.label for c in report.columns] == [
        "trtrtx fp16 (build only)",
        "trtrtx fp8 (build only)",
    ]
    # export and quantize are the conversion; the last stage builds the engine
    assert _cells(report, "quantize/convert (s)") == ["100.0", "190.0"]
    assert _cells(report, "engine build (s)") == ["48.0", "79.0"]
    assert _cells(report, "build total (s)") == ["148.0", "269.0"]
    assert _cells(report, "engine size") == ["37.4 kB", "28.8 kB"]
    for label, delta_text in (
        ("quantize/convert (s)", "+90.0 (+90.0 %)"),
        ("engine build (s)", "+31.0 (+64.6 %)"),
        ("build total (s)", "+121.0 (+81.8 %)"),
        ("engine size", "-8.60 kB (-23.0 %)"),
    ):
        row = report.row(label)
        assert format_delta(row.deltas()[1], row.unit) == delta_text
    with pytest.raises(KeyError):
        report.row("C++ runtime build (s)")  # no runtime stage, no row


def test_trtrtx_runtime_rows_say_no_supported_gpu_until_a_run_exists(
    trtrtx_pair: list[Entry],
) -> None:
    report = build_report(trtrtx_pair, gpus=[])
    for label in (*RUNTIME_LABELS, "machine", "measured", "quality verdict"):
        row = report.row(label)
        assert row.cells == (NO_SUPPORTED_GPU, NO_SUPPORTED_GPU), label
        assert row.deltas() == [None, None], label  # no number, no delta
    assert _cells(report, "% of decode roofline, batch 1") == [NO_SUPPORTED_GPU] * 2
    assert _cells(report, "% of decode roofline, batched") == [NO_SUPPORTED_GPU] * 2
    assert _cells(report, "decode ceiling, batch 1 (tok/s)")[0] != NO_SUPPORTED_GPU  # a plan figure
    assert [c.not_measured for c in report.columns] == [NO_SUPPORTED_GPU] * 2
    [why] = [n for n in report.notes if n.startswith("trtrtx fp8 (build only): not measured")]
    assert "runs only on an SM89 GPU and this machine has no NVIDIA GPU" in why


def test_a_gpu_that_cannot_run_the_engine_is_named(trtrtx_pair: list[Entry]) -> None:
    hopper = Gpu("NVIDIA H100 80GB HBM3", "9.0")
    report = build_report(trtrtx_pair, gpus=[hopper])
    assert _cells(report, "decode tok/s, batch 1") == [NO_SUPPORTED_GPU] * 2
    assert any("this machine has NVIDIA H100 80GB HBM3 (SM90)" in n for n in report.notes)


def test_with_a_supported_gpu_an_unmeasured_bundle_is_only_not_measured(
    trtrtx_pair: list[Entry],
) -> None:
    ada = Gpu("NVIDIA RTX 6000 Ada Generation", "8.9")
    report = build_report(trtrtx_pair, gpus=[ada])
    assert _cells(report, "decode tok/s, batch 1") == [NOT_MEASURED] * 2
    assert not any("no supported GPU" in note for note in report.notes)


def test_a_cpu_bundle_never_claims_a_missing_gpu(tmp_path: Path) -> None:
    report = build_report([Entry.from_bundle(_bundle(tmp_path, "fp32", 10))], gpus=[])
    assert _cells(report, "decode tok/s, batch 1") == [NOT_MEASURED]


def test_a_run_of_a_trtrtx_bundle_shows_its_numbers(tmp_path: Path) -> None:
    bundle = _trtrtx_bundle(tmp_path, "fp16", 37400)
    report = build_report([Entry.from_run(_run(bundle, [90.0, 91.0, 89.0]), "r.json")], gpus=[])
    assert _cells(report, "decode tok/s, batch 1") == ["90.0 (89.0–91.0)"]
    assert report.columns[0].not_measured is None


def test_markdown_html_and_json_keep_the_no_gpu_marking(trtrtx_pair: list[Entry]) -> None:
    report = build_report(trtrtx_pair, gpus=[])
    markdown = render_markdown(report)
    for label in ("time to first token (s)", "prefill tok/s", "decode tok/s, batch 1", "peak RSS"):
        assert f"| {label} | {NO_SUPPORTED_GPU} | {NO_SUPPORTED_GPU} |  |" in markdown
    assert "| engine build (s) | 48.0 | 79.0 | +31.0 (+64.6 %) |" in markdown
    assert f"<td>{NO_SUPPORTED_GPU}</td>" in render_html(report)
    data = json.loads(render_json(report))
    rows = {row["label"]: row for row in data["rows"]}
    for label in RUNTIME_LABELS:
        assert rows[label]["cells"] == [{"text": NO_SUPPORTED_GPU}] * 2, label
    assert rows["engine size"]["deltas"][1]["absolute"] == -8600
    assert rows["build total (s)"]["cells"][1]["value"] == 269.0
    assert [c["not_measured"] for c in data["columns"]] == [NO_SUPPORTED_GPU] * 2


def test_cli_report_on_two_trtrtx_bundles(
    cli: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import edgepack.bench.gpus as runner

    monkeypatch.setattr(runner, "visible_gpus", lambda: [])
    fp16, fp8 = _trtrtx_bundle(tmp_path, "fp16", 37400), _trtrtx_bundle(tmp_path, "fp8", 28800)
    result = cli("report", "--bundle", str(fp16), "--bundle", str(fp8))
    assert result.code == 0, result.err
    assert f"| decode tok/s, batch 1 | {NO_SUPPORTED_GPU} | {NO_SUPPORTED_GPU} |" in result.out
    assert "| engine size | 37.4 kB | 28.8 kB | -8.60 kB (-23.0 %) |" in result.out
    result = cli("report", "--bundle", str(fp16), "--bundle", str(fp8), "--format", "json")
    assert result.code == 0, result.err
    rows = {row["label"]: row for row in json.loads(result.out)["rows"]}
    assert rows["time to first token (s)"]["cells"] == [{"text": NO_SUPPORTED_GPU}] * 2


def test_the_cpp_runtime_stage_is_not_the_engine_build(tmp_path: Path) -> None:
    stages = [
        {"name": "engine", "key": "e", "wall_s": 12.0},
        {"name": "runtime", "key": "r", "wall_s": 30.0},
    ]
    report = build_report([Entry.from_bundle(_bundle(tmp_path, "int4", 10, stages=stages))])
    assert _cells(report, "engine build (s)") == ["12.0"]
    assert _cells(report, "C++ runtime build (s)") == ["30.0"]
    assert _cells(report, "build total (s)") == ["42.0"]


def test_stages_after_the_engine_get_rows_of_their_own(tmp_path: Path) -> None:
    stages = [
        {"name": "export", "key": "x", "wall_s": 5.0},
        {"name": "engine", "key": "e", "wall_s": 12.0},
        {"name": "wheels", "key": "w", "wall_s": 3.0},
    ]
    with_wheels = Entry.from_bundle(_bundle(tmp_path, "fp32", 10, stages=stages))
    report = build_report([with_wheels, Entry.from_bundle(_bundle(tmp_path, "int4", 10))])
    assert _cells(report, "quantize/convert (s)") == ["5.00", "in engine build"]
    assert _cells(report, "engine build (s)") == ["12.0", "12.0"]
    assert _cells(report, "device wheels (s)") == ["3.00", NOT_APPLICABLE]
    assert _cells(report, "build total (s)") == ["20.0", "12.0"]

"""The table's rows from the columns' runs and bundles: set-up, build, artifacts, runtime, engines.

Every figure is a median with its spread (min–max over the runs, or over the ``--repeat``
rebuilds for build times).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from edgepack.bench.result import RunResult
from edgepack.bench.stats import Spread
from edgepack.bundle import Manifest
from edgepack.report.cells import (
    NO_BUNDLE,
    NO_GATE_MARK,
    NOT_APPLICABLE,
    Better,
    Cell,
    Measure,
    Row,
    row,
    sum_measures,
    text_row,
)
from edgepack.report.entries import Entry, machine_text


def setup_rows(entries: Sequence[Entry]) -> list[Row]:
    facts = [("model", "model"), ("target", "target"), ("backend", "backend")]
    rows = [text_row("setup", label, [e.fact(key) for e in entries]) for label, key in facts]
    rows.append(text_row("setup", "precision / KV cache", [_precision_text(e) for e in entries]))
    rows.append(text_row("setup", "machine", [machine_text(e) for e in entries]))
    rows.append(text_row("setup", "measured", [_settings_text(e) for e in entries]))
    return rows


def _precision_text(entry: Entry) -> str:
    kv = entry.manifest.recipe.get("kv_cache_dtype") if entry.manifest else None
    return f"{entry.fact('precision')} / {kv or '?'}"


def _settings_text(entry: Entry) -> str:
    if entry.run is None:
        return entry.not_measured
    settings = entry.run.settings
    text = (
        f"{settings.runs} runs × {len(entry.run.outputs)} prompts × "
        f"{settings.max_new_tokens} tokens, batch {settings.batch_size}"
    )
    return text + ("" if entry.run.gate_enforced else f", {NO_GATE_MARK}")


def _stage_measure(stage: dict[str, Any]) -> Measure:
    repeat = stage.get("repeat")
    if repeat:
        return Measure(repeat["median"], repeat["min"], repeat["max"], None, repeat["n"])
    return Measure(float(stage["wall_s"]))


ENGINE_STAGE = "engine"
LATER_STAGES = {"runtime": "C++ runtime build (s)", "wheels": "device wheels (s)"}
"""Stages a build may add after the engine (the C++ runtime, wheels for the device): rows of
their own, counted in the total but neither conversion nor engine build."""


def _split_stages(
    stages: Sequence[dict[str, Any]],
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """(stages up to and with the one that builds the engine, the later stages by name). The
    engine stage is the last one named "engine", else the last that is not a known later one."""
    names = [str(stage["name"]) for stage in stages]
    candidates = [i for i, name in enumerate(names) if name == ENGINE_STAGE] or [
        i for i, name in enumerate(names) if name not in LATER_STAGES
    ]
    end = candidates[-1] + 1 if candidates else 0
    return list(stages[:end]), {names[i]: stages[i] for i in range(end, len(stages))}


def _later_stage_names(entries: Sequence[Entry]) -> list[str]:
    names: list[str] = []
    for entry in entries:
        stages = entry.manifest.stages if entry.manifest else []
        names += [name for name in _split_stages(stages)[1] if name not in names]
    return names


def _build_cells(entry: Entry, later: Sequence[str]) -> list[Cell]:
    """quantize/convert, engine build, each later stage, total. The stages before the engine's
    export, quantize or convert."""
    if entry.manifest is None or not entry.manifest.stages:
        return [NO_BUNDLE] * (3 + len(later))
    model, after = _split_stages(entry.manifest.stages)
    if not model:
        return [NO_BUNDLE] * (3 + len(later))
    measures = [_stage_measure(stage) for stage in model]
    before: Cell = sum_measures(measures[:-1]) if len(measures) > 1 else "in engine build"
    extra = [_stage_measure(after[name]) if name in after else None for name in later]
    total = sum_measures(measures + [m for m in extra if m is not None])
    return [before, measures[-1], *extra, total]


def build_rows(entries: Sequence[Entry]) -> list[Row]:
    later = _later_stage_names(entries)
    cells = [_build_cells(entry, later) for entry in entries]
    labels = [
        "quantize/convert (s)",
        "engine build (s)",
        *[LATER_STAGES.get(name, f"{name} stage (s)") for name in later],
        "build total (s)",
    ]
    return [
        row("build", label, "s", [column[index] for column in cells], "lower")
        for index, label in enumerate(labels)
    ]


def _files_bytes(manifest: Manifest | None, prefix: str) -> Cell:
    if manifest is None:
        return NO_BUNDLE
    return Measure(float(sum(r.size for r in manifest.files if r.path.startswith(prefix))))


def engine_bytes(entry: Entry) -> Cell:
    if entry.manifest is not None:
        return _files_bytes(entry.manifest, entry.manifest.engine_dir + "/")
    recorded = entry.summary.get("engine_bytes")
    return Measure(float(recorded)) if recorded is not None else NO_BUNDLE


def plan_value(entry: Entry, *keys: str) -> float | None:
    data: Any = entry.manifest.plan if entry.manifest else {}
    for key in keys:
        data = data.get(key) if isinstance(data, dict) else None
    return float(data) if isinstance(data, int | float) else None


CHECKPOINT_DIR = "checkpoint/"
"""Where a bundle keeps a quantized checkpoint besides its engine (NVIDIA toolchains)."""


def _has_checkpoint(entry: Entry) -> bool:
    files = entry.manifest.files if entry.manifest else []
    in_bundle = any(record.path.startswith(CHECKPOINT_DIR) for record in files)
    return in_bundle or _recorded_checkpoint_bytes(entry) is not None


def _recorded_checkpoint_bytes(entry: Entry) -> float | None:
    """A checkpoint stage's own record of its size (trtllm: the checkpoint stays in the cache,
    the bundle carries the engine)."""
    stages = entry.manifest.stages if entry.manifest else []
    sizes = [stage.get("details", {}).get("checkpoint_bytes") for stage in stages]
    known = [float(size) for size in sizes if isinstance(size, int | float)]
    return sum(known) if known else None


def _checkpoint_bytes(entry: Entry) -> Cell:
    if entry.manifest is None:
        return NO_BUNDLE
    if any(record.path.startswith(CHECKPOINT_DIR) for record in entry.manifest.files):
        return _files_bytes(entry.manifest, CHECKPOINT_DIR)
    recorded = _recorded_checkpoint_bytes(entry)
    return Measure(recorded) if recorded is not None else None


def _plan_bytes_read(entry: Entry) -> Cell:
    value = plan_value(entry, "roofline", "weight_bytes_read_per_step")
    return Measure(value) if value is not None else NO_BUNDLE


def artifact_rows(entries: Sequence[Entry]) -> list[Row]:
    """Sizes are exact: every difference between them is real."""
    figures: list[tuple[str, Callable[[Entry], Cell]]] = [
        ("checkpoint size", _checkpoint_bytes),
        ("engine size", engine_bytes),
        ("bundle size", lambda e: _files_bytes(e.manifest, "")),
        ("weights read per decode step (plan)", _plan_bytes_read),
    ]
    if not any(_has_checkpoint(e) for e in entries):
        figures = figures[1:]
    return [
        row("artifacts", label, "bytes", [figure(e) for e in entries], "lower", exact=True)
        for label, figure in figures
    ]


RunFigure = Callable[[RunResult], Cell]


def spread_cell(spread: Spread | None) -> Cell:
    return Measure.of(spread) if spread is not None else None


def common_batch(entries: Sequence[Entry]) -> int | None:
    """The batch size of the batched figures when every run used the same one."""
    sizes = {e.run.settings.batch_size for e in entries if e.run is not None}
    return sizes.pop() if len(sizes) == 1 else None


def batch_label(entries: Sequence[Entry]) -> str:
    size = common_batch(entries)
    return f"batch {size}" if size else "batched"


def _runtime_figures(batch: str) -> list[tuple[str, str, Better, RunFigure]]:
    return [
        ("engine load, first (s)", "s", "lower", lambda r: Measure(r.load.first_s)),
        ("engine load, warm (s)", "s", "lower", lambda r: Measure.of(r.load.warm)),
        ("time to first token (s)", "s", "lower", lambda r: Measure.of(r.metrics.ttft_s)),
        ("generation, one prompt (s)", "s", "lower", lambda r: Measure.of(r.metrics.e2e_s)),
        (
            f"generation, one {batch} (s)",
            "s",
            "lower",
            lambda r: spread_cell(r.metrics.batched_e2e_s),
        ),
        ("prefill tok/s", "tok/s", "higher", lambda r: Measure.of(r.metrics.prefill_tok_s)),
        ("decode tok/s, batch 1", "tok/s", "higher", lambda r: Measure.of(r.metrics.decode_tok_s)),
        (
            f"decode tok/s, {batch}",
            "tok/s",
            "higher",
            lambda r: spread_cell(r.metrics.decode_tok_s_batched),
        ),
        (BENCH_ROW, "tok/s", "higher", _bench_throughput),
        ("peak RSS", "bytes", "lower", lambda r: Measure(float(r.metrics.peak_rss_bytes))),
    ]


BENCH_ROW = "throughput, trtllm-bench (tok/s)"


def _bench_throughput(run: RunResult) -> Cell:
    """trtllm-bench's total output throughput at the bench's batch (trtllm bundles only)."""
    value = (run.raw.get("trtllm_bench") or {}).get("system_output_throughput_tok_s")
    return Measure(float(value)) if isinstance(value, int | float) else None


def runtime_rows(entries: Sequence[Entry]) -> list[Row]:
    rows = [
        row("runtime", label, unit, [_run_cell(e, figure) for e in entries], better)
        for label, unit, better, figure in _runtime_figures(batch_label(entries))
    ]
    # trtllm-bench's row only where a run has the figure (trtllm bundles)
    return [r for r in rows if r.label != BENCH_ROW or any(c is not None for c in r.cells)]


def _run_cell(entry: Entry, figure: RunFigure) -> Cell:
    return figure(entry.run) if entry.run is not None else entry.not_measured


def speed(entry: Entry, batched: bool) -> Cell:
    if entry.run is None:
        return entry.not_measured
    metrics = entry.run.metrics
    return spread_cell(metrics.decode_tok_s_batched if batched else metrics.decode_tok_s)


def _tools_text(entry: Entry) -> str:
    if entry.manifest is not None:
        tools = entry.manifest.tools
    else:
        tools = entry.run.machine.get("libraries", {}) if entry.run else {}
    shown = [
        f"{name} {version}" for name, version in tools.items() if name not in ("edgepack", "python")
    ]
    return f"{entry.fact('backend')}: {', '.join(shown) or 'versions not recorded'}"


def _ratio_cells(cells: Sequence[Cell]) -> list[Cell]:
    base = cells[0]
    if not isinstance(base, Measure) or not base.value:
        return [NOT_APPLICABLE for _ in cells]
    return [Measure(c.value / base.value) if isinstance(c, Measure) else c for c in cells]


def cross_engine_rows(entries: Sequence[Entry]) -> list[Row]:
    if len({e.fact("backend") for e in entries}) < 2:
        return []
    batch = batch_label(entries)
    rows = [text_row("cross-engine", "engine and tools", [_tools_text(e) for e in entries])]
    ratios: list[tuple[str, list[Cell], Better]] = [
        ("decode speed vs first, batch 1", [speed(e, batched=False) for e in entries], "higher"),
        (f"decode speed vs first, {batch}", [speed(e, batched=True) for e in entries], "higher"),
        ("engine size vs first", [engine_bytes(e) for e in entries], "lower"),
    ]
    for label, cells, better in ratios:
        rows.append(row("cross-engine", label, "x", _ratio_cells(cells), better, compare=False))
    return rows

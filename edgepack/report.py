"""Comparison reports: the original study's table for any set of runs and bundles.

A report has one column per run result (or per bundle that has no run yet) and rows in the shape
of the study that started this project: set-up, build pipeline, artifacts, runtime, decode
roofline, cross-engine comparison (when backends differ) and quality. Every figure is a median
with its spread (min–max over the runs, or over the ``--repeat`` rebuilds for build times); every
column after the first has a delta against the first, the baseline. A bundle without a run has
its build and artifact figures from its manifest and "not measured" in every runtime cell; where its
engine needs a GPU this machine lacks (a TensorRT-RTX engine and its compute capability), the cells
say "not measured: no supported GPU" and a note says which GPU it needs.

Noise rule. The spread of a figure is the range (max − min) of its samples. A difference between
two figures is *within noise* when it is no larger than the sum of their two ranges. With
``--baseline``, a run regresses when its decode tok/s at batch 1 lies below the baseline's by more
than that combined range, or when its quality verdict ranks lower (no verdict < fail < pass). A
figure measured once has no range: the check then cannot tell a regression from noise and says so.

Rendering: markdown, self-contained HTML (inline CSS, plots as base64 PNG) and JSON. Plots need
matplotlib, imported only when a plot is drawn.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from edgepack.bench.result import RunResult
from edgepack.bench.stats import Spread
from edgepack.bundle import Manifest, bundle_summary, read_manifest
from edgepack.errors import BadInputError, BundleError, RegressionError, ToolMissingError
from edgepack.quality.verdict import VERDICT_RANK

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from edgepack.bench.gpus import Gpu

REPORT_SCHEMA_VERSION = 1
NOT_MEASURED = "not measured"
NO_SUPPORTED_GPU = f"{NOT_MEASURED}: no supported GPU"
"""A build-only column whose engine runs only on a GPU this machine does not have."""
NO_BUNDLE = "bundle unavailable"
NOT_APPLICABLE = "–"
NO_GATE_MARK = "(--no-gate)"
REGRESSION_RULE = (
    "decode tok/s (batch 1) regresses when baseline median − run median > noise, where noise = "
    "(baseline max − min) + (run max − min) over their runs' samples; the quality verdict "
    "regresses when it ranks lower (no verdict < fail < pass)"
)
SPREAD_NOTE = (
    "Figures are medians; (a–b) is the min–max over the runs (build times: over the --repeat "
    "rebuilds; without --repeat a build time is one sample). Δ is against the first column; "
    "'≈' marks a difference within noise (no larger than the two figures' ranges added)."
)
QUALITY_PLOT_KEYS = ("chrf", "prefix_fraction", "token_agreement", "exact_match")
"""Preferred quality metrics for the quality-vs-speed plot, by substring of the metric name."""

Better = Literal["higher", "lower"]


# --- figures, cells and deltas ---------------------------------------------------------------


@dataclass(frozen=True)
class Measure:
    """One figure of one column: its median and, where it was repeated, its spread."""

    value: float
    low: float | None = None
    high: float | None = None
    cv: float | None = None
    n: int = 1

    @classmethod
    def of(cls, spread: Spread) -> Measure:
        return cls(spread.median, spread.min, spread.max, spread.cv, spread.n)

    @property
    def range(self) -> float | None:
        """max − min, or None for a figure measured once."""
        if self.n < 2 or self.low is None or self.high is None:
            return None
        return self.high - self.low

    def scaled(self, factor: float) -> Measure:
        low = None if self.low is None else self.low * factor
        high = None if self.high is None else self.high * factor
        return Measure(self.value * factor, low, high, self.cv, self.n)


Cell = Measure | str | None
"""A number with its spread, a text (a verdict, "not measured"), or None when not applicable."""


def combined_noise(first: Measure, second: Measure) -> float | None:
    """The noise rule: the two ranges added; None when either figure was measured once."""
    if first.range is None or second.range is None:
        return None
    return first.range + second.range


@dataclass(frozen=True)
class Delta:
    absolute: float
    percent: float | None
    noise: float | None

    @property
    def beyond_noise(self) -> bool | None:
        return None if self.noise is None else abs(self.absolute) > self.noise


def delta(base: Cell, other: Cell) -> Delta | None:
    if not isinstance(base, Measure) or not isinstance(other, Measure):
        return None
    difference = other.value - base.value
    percent = difference / base.value * 100 if base.value else None
    return Delta(difference, percent, combined_noise(base, other))


@dataclass(frozen=True)
class Row:
    section: str
    label: str
    unit: str
    """"s", "tok/s", "bytes", "%", "x", "" (a count) or "text"."""
    cells: tuple[Cell, ...]
    better: Better | None = None
    compare: bool = True
    """Whether a delta against the first column means something."""
    exact: bool = False
    """Figures without noise (sizes, plan values): any difference is real."""

    def deltas(self) -> list[Delta | None]:
        base = self.cells[0]
        return [None] + [delta(base, cell) if self.compare else None for cell in self.cells[1:]]


# --- what is compared: runs and bundles ------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One column: a run result with its bundle's manifest, or a bundle not yet measured."""

    source: str
    run: RunResult | None
    manifest: Manifest | None
    problem: str = ""
    """Why the manifest is missing, when it is."""
    not_measured: str = NOT_MEASURED
    """What a runtime figure of a column without a run says."""
    unmeasured_note: str = ""
    """Why it was not measured, for the notes, when the column says more than "not measured"."""

    @classmethod
    def from_run(
        cls, run: RunResult, source: str, known: dict[str, Manifest] | None = None
    ) -> Entry:
        """``known``: manifests by bundle id, for runs whose bundle lies elsewhere here (a run
        made on a device names the device's path)."""
        manifest, problem = _run_manifest(run, known or {})
        return cls(source, run, manifest, problem)

    @classmethod
    def from_bundle(cls, directory: Path) -> Entry:
        return cls(str(directory), None, read_manifest(directory))

    @property
    def summary(self) -> dict[str, Any]:
        if self.run is not None:
            return self.run.bundle
        return bundle_summary(self.manifest) if self.manifest else {}

    def fact(self, key: str) -> str:
        return str(self.summary.get(key) or "?")

    @property
    def no_gate(self) -> bool:
        return self.run is not None and not self.run.gate_enforced


def _run_manifest(run: RunResult, known: dict[str, Manifest]) -> tuple[Manifest | None, str]:
    """The manifest of the bundle the run measured: at its recorded path, else among ``known``."""
    directory, recorded = run.bundle.get("dir"), run.bundle.get("bundle_id")
    manifest = _manifest_at(Path(directory)) if directory else None
    if manifest is not None and recorded in (None, manifest.bundle_id):
        return manifest, ""
    if recorded in known:
        return known[recorded], ""
    if manifest is not None:
        return None, f"its bundle {directory} was rebuilt since the run (id {manifest.short_id})"
    where = f" on {run.location}" if run.location != "local" else ""
    return None, f"no manifest of its bundle {directory or '(none recorded)'}{where} is here"


def _manifest_at(directory: Path) -> Manifest | None:
    try:
        return read_manifest(directory)
    except BundleError:
        return None


def manifests_under(folders: Sequence[Path]) -> dict[str, Manifest]:
    """Every readable bundle manifest directly under ``folders``, by bundle id."""
    found = {}
    for folder in folders:
        children = sorted(folder.iterdir()) if folder.is_dir() else []
        for child in children:
            manifest = _manifest_at(child) if child.is_dir() else None
            if manifest is not None:
                found[manifest.bundle_id] = manifest
    return found


def load_entries(
    runs: Sequence[Path],
    bundles: Sequence[Path],
    baseline: Path | None,
    search: Sequence[Path] = (),
) -> list[Entry]:
    """Baseline first (when given), then the runs, then bundles that no run measured.

    A run finds its bundle's manifest at the path it recorded, else by bundle id among the
    ``--bundle`` directories and the bundles directly under ``search``.
    """
    run_paths = [baseline] if baseline else []
    run_paths += [path for path in runs if not baseline or path.resolve() != baseline.resolve()]
    given = [(directory, read_manifest(directory)) for directory in bundles]
    known = {**manifests_under(search), **{m.bundle_id: m for _, m in given}}
    entries = [Entry.from_run(RunResult.load_file(p), str(p), known) for p in run_paths]
    measured = {entry.manifest.bundle_id for entry in entries if entry.manifest}
    entries += [Entry(str(d), None, m) for d, m in given if m.bundle_id not in measured]
    if not entries:
        raise BadInputError(
            "nothing to report", hint="give run results (runs/*.json) and/or --bundle DIR"
        )
    return entries


GPU_ENGINE_BACKENDS = {"trtrtx": "TensorRT-RTX"}
"""Backends whose engines run only on a GPU of the compute capability they were built for."""


def gpu_engine_sm(manifest: Manifest | None) -> str | None:
    """The compute capability (``SM89``) a bundle's engine needs, for the backends that need one."""
    if manifest is None or manifest.recipe.get("backend") not in GPU_ENGINE_BACKENDS:
        return None
    engine = manifest.recipe.get("stage_config", {}).get("engine", {})
    sm = engine.get("compute_capability") or manifest.target.get("sm")
    return str(sm) if sm else None


def mark_unmeasured(entries: Sequence[Entry], gpus: Sequence[Gpu] | None = None) -> list[Entry]:
    """Columns without a run whose engine needs a GPU this machine lacks say so in every runtime
    cell ("not measured: no supported GPU"); the others say "not measured". ``gpus``: this
    machine's NVIDIA GPUs, asked of nvidia-smi when not given (and only when it matters)."""
    marked = []
    for entry in entries:
        sm = gpu_engine_sm(entry.manifest) if entry.run is None else None
        if sm is None:
            marked.append(entry)
            continue
        from edgepack.bench.gpus import describe_gpus, supported_gpu, visible_gpus

        gpus = visible_gpus() if gpus is None else gpus
        if supported_gpu(sm, gpus) is not None:
            marked.append(entry)  # it could run here: it simply was not
            continue
        tool = GPU_ENGINE_BACKENDS[str(entry.manifest.recipe["backend"])] if entry.manifest else ""
        why = (
            f"its {tool} engine runs only on an {sm} GPU and this machine has "
            f"{describe_gpus(gpus)}; its runtime, roofline-share and quality figures stay empty "
            f"until a run on an {sm} GPU is reported (bench the bundle there, then report the run)"
        )
        marked.append(replace(entry, not_measured=NO_SUPPORTED_GPU, unmeasured_note=why))
    return marked


def column_labels(entries: Sequence[Entry]) -> list[str]:
    """ "backend precision", with the model when models differ and an id when labels collide."""
    with_model = len({entry.fact("model") for entry in entries}) > 1
    full = [_base_label(entry, with_model) + _label_marks(entry) for entry in entries]
    return [
        _base_label(entry, with_model) + f" #{_short_id(entry)}" + _label_marks(entry)
        if full.count(label) > 1
        else label
        for label, entry in zip(full, entries, strict=True)
    ]


def _base_label(entry: Entry, with_model: bool) -> str:
    label = f"{entry.fact('backend')} {entry.fact('precision')}"
    return f"{entry.fact('model')} {label}" if with_model else label


def _short_id(entry: Entry) -> str:
    if entry.run is not None:
        return entry.run.run_id[:6]
    return entry.manifest.bundle_id[:6] if entry.manifest else "?"


def _label_marks(entry: Entry) -> str:
    if entry.run is None:
        return " (build only)"
    return f" {NO_GATE_MARK}" if entry.no_gate else ""


# --- rows --------------------------------------------------------------------------------------


def _row(
    section: str,
    label: str,
    unit: str,
    cells: Sequence[Cell],
    better: Better | None = None,
    compare: bool = True,
    exact: bool = False,
) -> Row:
    return Row(section, label, unit, tuple(cells), better, compare, exact)


def _text_row(section: str, label: str, cells: Sequence[str]) -> Row:
    return _row(section, label, "text", cells, compare=False)


def _setup_rows(entries: Sequence[Entry]) -> list[Row]:
    facts = [("model", "model"), ("target", "target"), ("backend", "backend")]
    rows = [_text_row("setup", label, [e.fact(key) for e in entries]) for label, key in facts]
    rows.append(_text_row("setup", "precision / KV cache", [_precision_text(e) for e in entries]))
    rows.append(_text_row("setup", "machine", [_machine_text(e) for e in entries]))
    rows.append(_text_row("setup", "measured", [_settings_text(e) for e in entries]))
    return rows


def _precision_text(entry: Entry) -> str:
    kv = entry.manifest.recipe.get("kv_cache_dtype") if entry.manifest else None
    return f"{entry.fact('precision')} / {kv or '?'}"


def _machine_text(entry: Entry) -> str:
    if entry.run is None:
        return entry.not_measured
    machine = entry.run.machine
    cores = machine.get("usable_cores") or machine.get("logical_cores")
    name = machine.get("cpu_model") or machine.get("hostname") or "?"
    return f"{name}, {cores} cores ({entry.run.location})" if cores else str(name)


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


def sum_measures(measures: Sequence[Measure]) -> Measure:
    """Medians added; the spread is the sum of the bounds, and only when every part has one."""
    value = sum(m.value for m in measures)
    if any(m.range is None for m in measures):
        return Measure(value)
    low = sum(m.low for m in measures if m.low is not None)
    high = sum(m.high for m in measures if m.high is not None)
    return Measure(value, low, high, None, min(m.n for m in measures))


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


def _build_rows(entries: Sequence[Entry]) -> list[Row]:
    later = _later_stage_names(entries)
    cells = [_build_cells(entry, later) for entry in entries]
    labels = [
        "quantize/convert (s)",
        "engine build (s)",
        *[LATER_STAGES.get(name, f"{name} stage (s)") for name in later],
        "build total (s)",
    ]
    return [
        _row("build", label, "s", [column[index] for column in cells], "lower")
        for index, label in enumerate(labels)
    ]


def _files_bytes(manifest: Manifest | None, prefix: str) -> Cell:
    if manifest is None:
        return NO_BUNDLE
    return Measure(float(sum(r.size for r in manifest.files if r.path.startswith(prefix))))


def _engine_bytes(entry: Entry) -> Cell:
    if entry.manifest is not None:
        return _files_bytes(entry.manifest, entry.manifest.engine_dir + "/")
    recorded = entry.summary.get("engine_bytes")
    return Measure(float(recorded)) if recorded is not None else NO_BUNDLE


def _plan_value(entry: Entry, *keys: str) -> float | None:
    data: Any = entry.manifest.plan if entry.manifest else {}
    for key in keys:
        data = data.get(key) if isinstance(data, dict) else None
    return float(data) if isinstance(data, int | float) else None


CHECKPOINT_DIR = "checkpoint/"
"""Where a bundle keeps a quantized checkpoint besides its engine (NVIDIA toolchains)."""


def _has_checkpoint(entry: Entry) -> bool:
    files = entry.manifest.files if entry.manifest else []
    return any(record.path.startswith(CHECKPOINT_DIR) for record in files)


def _checkpoint_bytes(entry: Entry) -> Cell:
    if entry.manifest is None:
        return NO_BUNDLE
    return _files_bytes(entry.manifest, CHECKPOINT_DIR) if _has_checkpoint(entry) else None


def _plan_bytes_read(entry: Entry) -> Cell:
    value = _plan_value(entry, "roofline", "weight_bytes_read_per_step")
    return Measure(value) if value is not None else NO_BUNDLE


def _artifact_rows(entries: Sequence[Entry]) -> list[Row]:
    """Sizes are exact: every difference between them is real."""
    figures: list[tuple[str, Callable[[Entry], Cell]]] = [
        ("checkpoint size", _checkpoint_bytes),
        ("engine size", _engine_bytes),
        ("bundle size", lambda e: _files_bytes(e.manifest, "")),
        ("weights read per decode step (plan)", _plan_bytes_read),
    ]
    if not any(_has_checkpoint(e) for e in entries):
        figures = figures[1:]
    return [
        _row("artifacts", label, "bytes", [figure(e) for e in entries], "lower", exact=True)
        for label, figure in figures
    ]


RunFigure = Callable[[RunResult], Cell]


def _spread_cell(spread: Spread | None) -> Cell:
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
            lambda r: _spread_cell(r.metrics.batched_e2e_s),
        ),
        ("prefill tok/s", "tok/s", "higher", lambda r: Measure.of(r.metrics.prefill_tok_s)),
        ("decode tok/s, batch 1", "tok/s", "higher", lambda r: Measure.of(r.metrics.decode_tok_s)),
        (
            f"decode tok/s, {batch}",
            "tok/s",
            "higher",
            lambda r: _spread_cell(r.metrics.decode_tok_s_batched),
        ),
        ("peak RSS", "bytes", "lower", lambda r: Measure(float(r.metrics.peak_rss_bytes))),
    ]


def _runtime_rows(entries: Sequence[Entry]) -> list[Row]:
    return [
        _row("runtime", label, unit, [_run_cell(e, figure) for e in entries], better)
        for label, unit, better, figure in _runtime_figures(batch_label(entries))
    ]


def _run_cell(entry: Entry, figure: RunFigure) -> Cell:
    return figure(entry.run) if entry.run is not None else entry.not_measured


# --- roofline ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Roofline:
    """The decode ceiling of REFERENCE.md §3 for one bundle on its target."""

    target: str
    bandwidth_gbps: float
    weight_bytes_per_step: float
    kv_bytes_per_token: float
    context_tokens: float
    """Mean context during decode: prompt plus half the generated tokens (0 without a run)."""

    def tokens_per_s(self, batch: int) -> float:
        step_bytes = (
            self.weight_bytes_per_step + batch * self.context_tokens * self.kv_bytes_per_token
        )
        return batch * self.bandwidth_gbps * 1e9 / step_bytes

    def describe(self) -> str:
        return (
            f"{self.bandwidth_gbps:g} GB/s (target profile {self.target}, from the bundle's plan) "
            f"÷ ({self.weight_bytes_per_step / 1e6:.1f} MB of weights + {self.context_tokens:.0f} "
            f"tokens × {self.kv_bytes_per_token / 1e3:.1f} kB of KV cache per sequence) per step"
        )


def roofline_of(entry: Entry) -> Roofline | None:
    bandwidth = _plan_value(entry, "roofline", "bandwidth_gbps")
    weights = _plan_value(entry, "roofline", "weight_bytes_read_per_step")
    if bandwidth is None or weights is None:
        return None
    kv = _plan_value(entry, "memory", "kv_bytes_per_token") or 0.0
    return Roofline(entry.fact("target"), bandwidth, weights, kv, _mean_context(entry.run))


def _mean_context(run: RunResult | None) -> float:
    if run is None or not run.outputs:
        return 0.0
    return statistics.fmean(o.prompt_tokens + o.new_tokens / 2 for o in run.outputs)


def _percent_of(speed: Cell, ceiling: Cell) -> Cell:
    """The speed as a share of the ceiling; without a speed, why there is none."""
    if not isinstance(speed, Measure):
        return speed
    return speed.scaled(100 / ceiling.value) if isinstance(ceiling, Measure) else ceiling


def _roofline_rows(entries: Sequence[Entry]) -> list[Row]:
    rooflines = [roofline_of(e) for e in entries]
    common = common_batch(entries)
    batches = [e.run.settings.batch_size if e.run else common for e in entries]
    return [
        _text_row("roofline", "bandwidth", [_bandwidth_text(r) for r in rooflines]),
        *_ceiling_rows(entries, rooflines, [1] * len(entries), batched=False),
        *_ceiling_rows(entries, rooflines, batches, batched=True),
    ]


def _ceiling_rows(
    entries: Sequence[Entry],
    rooflines: Sequence[Roofline | None],
    batches: Sequence[int | None],
    batched: bool,
) -> list[Row]:
    """The decode ceiling at each column's batch, and the measured speed as a share of it."""
    name = batch_label(entries) if batched else "batch 1"
    ceilings = [_ceiling(r, b) for r, b in zip(rooflines, batches, strict=True)]
    percents = [
        _percent_of(_speed(entry, batched), ceiling)
        for entry, ceiling in zip(entries, ceilings, strict=True)
    ]
    return [
        _row(
            "roofline", f"decode ceiling, {name} (tok/s)", "tok/s", ceilings, "higher", exact=True
        ),
        _row("roofline", f"% of decode roofline, {name}", "%", percents, "higher"),
    ]


def _ceiling(roofline: Roofline | None, batch: int | None) -> Cell:
    if roofline is None:
        return NO_BUNDLE
    return Measure(roofline.tokens_per_s(batch)) if batch else NOT_MEASURED


def _bandwidth_text(roofline: Roofline | None) -> str:
    return f"{roofline.bandwidth_gbps:g} GB/s ({roofline.target})" if roofline else NO_BUNDLE


def _speed(entry: Entry, batched: bool) -> Cell:
    if entry.run is None:
        return entry.not_measured
    metrics = entry.run.metrics
    return _spread_cell(metrics.decode_tok_s_batched if batched else metrics.decode_tok_s)


# --- cross-engine and quality ------------------------------------------------------------------


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


def _cross_engine_rows(entries: Sequence[Entry]) -> list[Row]:
    if len({e.fact("backend") for e in entries}) < 2:
        return []
    batch = batch_label(entries)
    rows = [_text_row("cross-engine", "engine and tools", [_tools_text(e) for e in entries])]
    ratios: list[tuple[str, list[Cell], Better]] = [
        ("decode speed vs first, batch 1", [_speed(e, batched=False) for e in entries], "higher"),
        (f"decode speed vs first, {batch}", [_speed(e, batched=True) for e in entries], "higher"),
        ("engine size vs first", [_engine_bytes(e) for e in entries], "lower"),
    ]
    for label, cells, better in ratios:
        rows.append(_row("cross-engine", label, "x", _ratio_cells(cells), better, compare=False))
    return rows


def _verdict_text(entry: Entry) -> str:
    if entry.run is None:
        return entry.not_measured
    text = _verdict_words(entry.run)
    return text if entry.run.gate_enforced else f"{text} {NO_GATE_MARK}"


def _verdict_words(run: RunResult) -> str:
    quality = run.quality
    if quality is None:
        return "no verdict"
    if quality.passed:
        return f"pass ({quality.quality_class})"
    failed = "; ".join(
        f"{check.name} {check.value:.3g} (limit {check.limit:.3g})"
        for check in quality.failed_checks
    )
    return f"FAIL ({quality.quality_class}): {failed}"


def _reference_text(entry: Entry) -> str:
    """What the answers were judged against: the reference's provenance (part of the result)."""
    if entry.run is None:
        return entry.not_measured
    if entry.run.quality is None:
        return "no verdict"
    return entry.run.quality.reference.get("provenance") or "provenance not recorded"


def _quality_metrics(entry: Entry) -> dict[str, float]:
    if entry.run is None or entry.run.quality is None:
        return {}
    return entry.run.quality.metrics


def _quality_rows(entries: Sequence[Entry]) -> list[Row]:
    rows = [
        _text_row("quality", "quality verdict", [_verdict_text(e) for e in entries]),
        _text_row("quality", "reference", [_reference_text(e) for e in entries]),
    ]
    names = sorted({name for e in entries for name in _quality_metrics(e)})
    directions = _check_directions(entries)
    for name in names:
        cells = [_metric_cell(e, name) for e in entries]
        # greedy outputs make the metrics deterministic: any difference is real
        rows.append(_row("quality", name, "", cells, directions.get(name), exact=True))
    return rows


def _check_directions(entries: Sequence[Entry]) -> dict[str, Better]:
    """Which way is better for each metric the gate checks (a "min" limit: higher)."""
    checks = [c for e in entries if e.run and e.run.quality for c in e.run.quality.checks]
    return {c.name: "higher" if c.direction == "min" else "lower" for c in checks}


def _metric_cell(entry: Entry, name: str) -> Cell:
    if entry.run is None:
        return entry.not_measured
    value = _quality_metrics(entry).get(name)
    return Measure(value) if value is not None else None


def quality_plot_metric(entries: Sequence[Entry]) -> str | None:
    names = sorted({name for e in entries for name in _quality_metrics(e)})
    for key in QUALITY_PLOT_KEYS:
        for name in names:
            if key in name.lower():
                return name
    return None


# --- notes ----------------------------------------------------------------------------------


def _notes(entries: Sequence[Entry], labels: Sequence[str]) -> list[str]:
    notes = [SPREAD_NOTE]
    for label, entry in zip(labels, entries, strict=True):
        notes += _entry_notes(label, entry)
    return notes + _precision_notes(entries, labels)


def _entry_notes(label: str, entry: Entry) -> list[str]:
    notes = []
    if entry.problem:
        notes.append(f"{label}: no build, artifact or roofline figures: {entry.problem}.")
    if entry.unmeasured_note:
        notes.append(f"{label}: {entry.not_measured}: {entry.unmeasured_note}.")
    roofline = roofline_of(entry)
    if roofline is not None:
        notes.append(f"{label}: decode roofline = {roofline.describe()}.")
    if entry.no_gate:
        notes.append(
            f"{label} was measured with --no-gate: a failing quality gate did not stop it."
        )
    if entry.run is not None and entry.run.load.first_page_cache != "dropped":
        notes.append(
            f"{label}: the first load may have read the engine from the page cache "
            f"({entry.run.load.first_page_cache})."
        )
    return notes


def _precision_notes(entries: Sequence[Entry], labels: Sequence[str]) -> list[str]:
    backends = {e.fact("backend") for e in entries}
    precisions = {e.fact("precision") for e in entries}
    if len(backends) < 2 or len(precisions) < 2:
        return []
    described = ", ".join(
        f"{label}: {e.fact('precision')}" for label, e in zip(labels, entries, strict=True)
    )
    return [
        f"The engines compared use different precisions ({described}); their speed and size "
        "differences mix the engine with the quantization."
    ]


# --- regression check (--baseline) ------------------------------------------------------------


def _verdict_name(passed: bool | None) -> str:
    return {None: "no verdict", False: "fail", True: "pass"}[passed]


@dataclass(frozen=True)
class RegressionCheck:
    """One run against the baseline, by the rule in REGRESSION_RULE."""

    baseline: str
    candidate: str
    baseline_speed: Measure
    candidate_speed: Measure
    baseline_passed: bool | None
    candidate_passed: bool | None
    machines: tuple[str, str] = ("", "")
    """Where the baseline and the run were measured."""

    @property
    def noise(self) -> float | None:
        return combined_noise(self.baseline_speed, self.candidate_speed)

    @property
    def drop(self) -> float:
        return self.baseline_speed.value - self.candidate_speed.value

    @property
    def undetermined(self) -> bool:
        return self.noise is None

    @property
    def speed_regressed(self) -> bool:
        return self.noise is not None and self.drop > self.noise

    @property
    def quality_regressed(self) -> bool:
        return VERDICT_RANK[self.candidate_passed] < VERDICT_RANK[self.baseline_passed]

    @property
    def regressed(self) -> bool:
        return self.speed_regressed or self.quality_regressed

    def speed_line(self) -> str:
        if self.noise is None:
            state = "cannot tell from noise (a run measured once has no spread)"
        else:
            state = "REGRESSED" if self.speed_regressed else "ok"
            state = f"drop {self.drop:.2f} vs noise {self.noise:.2f}: {state}"
        return (
            f"{self.candidate}: decode tok/s (batch 1) {_measure_text(self.baseline_speed)} → "
            f"{_measure_text(self.candidate_speed)}; {state}"
        )

    def quality_line(self) -> str:
        state = "WORSE" if self.quality_regressed else "ok"
        return (
            f"{self.candidate}: quality verdict {_verdict_name(self.baseline_passed)} → "
            f"{_verdict_name(self.candidate_passed)}: {state}"
        )

    def lines(self) -> list[tuple[str, bool]]:
        """Each line of the check with whether it is a regression."""
        lines = [
            (self.speed_line(), self.speed_regressed),
            (self.quality_line(), self.quality_regressed),
        ]
        if self.machines[0] != self.machines[1]:
            lines.append(
                (
                    f"{self.candidate}: note: measured on {self.machines[1]}, the "
                    f"baseline on {self.machines[0]}",
                    False,
                )
            )
        return lines


def _measure_text(measure: Measure) -> str:
    if measure.range is None:
        return f"{measure.value:.2f} (n={measure.n})"
    return f"{measure.value:.2f} ({measure.low:.2f}–{measure.high:.2f}, n={measure.n})"


def _passed(run: RunResult) -> bool | None:
    return None if run.quality is None else run.quality.passed


def regression_checks(entries: Sequence[Entry], labels: Sequence[str]) -> list[RegressionCheck]:
    base, base_machine = entries[0].run, _machine_text(entries[0])
    if base is None:
        raise BadInputError("--baseline must be a run result")
    candidates = [
        (label, e.run, _machine_text(e))
        for label, e in zip(labels[1:], entries[1:], strict=True)
        if e.run
    ]
    if not candidates:
        raise BadInputError("--baseline needs at least one other run result to compare with it")
    return [
        RegressionCheck(
            labels[0],
            label,
            Measure.of(base.metrics.decode_tok_s),
            Measure.of(run.metrics.decode_tok_s),
            _passed(base),
            _passed(run),
            (base_machine, machine),
        )
        for label, run, machine in candidates
    ]


def enforce(checks: Sequence[RegressionCheck]) -> None:
    """Raise RegressionError for a regression, BadInputError when noise cannot be judged."""
    failed = [line for check in checks for line, bad in check.lines() if bad]
    if failed:
        raise RegressionError(
            "regression against the baseline: " + "; ".join(failed), REGRESSION_RULE
        )
    unknown = [check.candidate for check in checks if check.undetermined]
    if unknown:
        raise BadInputError(
            "cannot tell a regression from noise for "
            + ", ".join(unknown)
            + ": a run measured once has no spread",
            hint="bench the baseline and the run with --runs 2 or more",
        )


# --- the report ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    label: str
    source: str
    run_id: str | None
    bundle_id: str | None
    no_gate: bool
    not_measured: str | None = None
    """Why the column has no runtime figures (it has no run), or None when it was measured."""


@dataclass(frozen=True)
class PlotPoint:
    label: str
    engine_bytes: float | None
    decode: Measure | None
    batched: Measure | None
    quality: float | None
    passed: bool | None


@dataclass(frozen=True)
class Report:
    columns: list[Column]
    rows: list[Row]
    notes: list[str]
    checks: list[RegressionCheck]
    points: list[PlotPoint]
    quality_metric: str | None
    batch: str
    """How the batched figures are labelled: "batch N" when every run used N."""

    def row(self, label: str) -> Row:
        for row in self.rows:
            if row.label == label:
                return row
        raise KeyError(label)


ROW_BUILDERS: tuple[Callable[[Sequence[Entry]], list[Row]], ...] = (
    _setup_rows,
    _build_rows,
    _artifact_rows,
    _runtime_rows,
    _roofline_rows,
    _cross_engine_rows,
    _quality_rows,
)


def build_report(
    entries: Sequence[Entry], check_baseline: bool = False, gpus: Sequence[Gpu] | None = None
) -> Report:
    """``gpus``: this machine's NVIDIA GPUs (see :func:`mark_unmeasured`)."""
    entries = mark_unmeasured(entries, gpus)
    labels = column_labels(entries)
    metric = quality_plot_metric(entries)
    return Report(
        columns=[_column(label, entry) for label, entry in zip(labels, entries, strict=True)],
        rows=[row for builder in ROW_BUILDERS for row in builder(entries)],
        notes=_notes(entries, labels),
        checks=regression_checks(entries, labels) if check_baseline else [],
        points=[_point(label, e, metric) for label, e in zip(labels, entries, strict=True)],
        quality_metric=metric,
        batch=batch_label(entries),
    )


def _column(label: str, entry: Entry) -> Column:
    bundle_id = entry.manifest.bundle_id if entry.manifest else entry.summary.get("bundle_id")
    run_id = entry.run.run_id if entry.run else None
    unmeasured = entry.not_measured if entry.run is None else None
    return Column(label, entry.source, run_id, bundle_id, entry.no_gate, unmeasured)


def _point(label: str, entry: Entry, metric: str | None) -> PlotPoint:
    size = _engine_bytes(entry)
    decode, batched = _speed(entry, batched=False), _speed(entry, batched=True)
    quality = _quality_metrics(entry).get(metric) if metric else None
    return PlotPoint(
        label,
        size.value if isinstance(size, Measure) else None,
        decode if isinstance(decode, Measure) else None,
        batched if isinstance(batched, Measure) else None,
        quality,
        _passed(entry.run) if entry.run else None,
    )


# --- formatting -------------------------------------------------------------------------------

SECTION_TITLES = {
    "setup": "Set-up",
    "build": "Build pipeline",
    "artifacts": "Artifacts",
    "runtime": "Runtime",
    "roofline": "Decode roofline",
    "cross-engine": "Cross-engine",
    "quality": "Quality",
}
BYTE_SCALES = ((1e9, " GB"), (1e6, " MB"), (1e3, " kB"))


def _scale(unit: str, value: float) -> tuple[float, str]:
    """Divisor and suffix for showing a value of ``unit`` near ``value``."""
    if unit == "bytes":
        for divisor, suffix in BYTE_SCALES:
            if abs(value) >= divisor:
                return divisor, suffix
        return 1.0, " B"
    return 1.0, {"%": " %", "x": "×"}.get(unit, "")


def _decimals(value: float) -> int:
    """Three significant digits below 10, one decimal up to 1000, none above."""
    magnitude = abs(value)
    if magnitude >= 1000:
        return 0
    if magnitude >= 10:
        return 1
    if magnitude >= 1 or magnitude == 0:
        return 2
    return 2 - math.floor(math.log10(magnitude))


def _number(value: float, like: float | None = None) -> str:
    """``value`` with the decimals that suit ``like`` (itself by default)."""
    return f"{value:,.{_decimals(value if like is None else like)}f}"


def format_cell(cell: Cell, unit: str) -> str:
    if cell is None:
        return NOT_APPLICABLE
    if isinstance(cell, str):
        return cell
    divisor, suffix = _scale(unit, cell.value)
    text = _number(cell.value / divisor) + suffix
    if cell.range is not None and cell.low is not None and cell.high is not None:
        low, high = cell.low / divisor, cell.high / divisor
        text += f" ({_number(low, cell.value / divisor)}–{_number(high, cell.value / divisor)})"
    return text


def format_delta(change: Delta | None, unit: str) -> str:
    if change is None:
        return ""
    divisor, suffix = _scale(unit, change.absolute)
    sign = "+" if change.absolute >= 0 else "-"
    text = f"{sign}{_number(abs(change.absolute) / divisor)}{' pp' if unit == '%' else suffix}"
    if change.percent is not None:
        text += f" ({change.percent:+.1f} %)"
    return f"≈ {text}" if change.beyond_noise is False else text


def _delta_class(change: Delta | None, row: Row) -> str:
    """ "better"/"worse" only for real differences; "noise" within noise; "" when unknown."""
    if change is None or row.better is None or change.absolute == 0:
        return ""
    if change.beyond_noise is False:
        return "noise"
    if change.beyond_noise is None and not row.exact:
        return ""  # a figure measured once: no telling a difference from noise
    improved = (change.absolute > 0) == (row.better == "higher")
    return "better" if improved else "worse"


@dataclass(frozen=True)
class Shown:
    """A rendered table cell: its text and its kind (for HTML styling)."""

    text: str
    kind: str = ""


def header(report: Report) -> list[str]:
    """The metric column, then each run's column followed (after the first) by its delta."""
    first, *others = [column.label for column in report.columns]
    return ["metric", first, *[text for label in others for text in (label, f"Δ {label}")]]


def _text_kind(text: str) -> str:
    """Text cells wrap; a failed verdict or a --no-gate run stands out."""
    return "text bad" if text.startswith("FAIL") or NO_GATE_MARK in text else "text"


def shown_cells(row: Row) -> list[Shown]:
    shown = []
    for index, (cell, change) in enumerate(zip(row.cells, row.deltas(), strict=True)):
        text = format_cell(cell, row.unit)
        shown.append(Shown(text, _text_kind(text) if row.unit == "text" else ""))
        if index:
            shown.append(Shown(format_delta(change, row.unit), _delta_class(change, row)))
    return shown


def _sections(report: Report) -> list[tuple[str, list[Row]]]:
    grouped: dict[str, list[Row]] = {}
    for row in report.rows:
        grouped.setdefault(row.section, []).append(row)
    return [(SECTION_TITLES.get(name, name), rows) for name, rows in grouped.items()]


def check_lines(report: Report) -> list[str]:
    if not report.checks:
        return []
    return [f"rule: {REGRESSION_RULE}"] + [
        line for check in report.checks for line, _ in check.lines()
    ]


# --- markdown ---------------------------------------------------------------------------------


def _md(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(_md(cell) for cell in cells) + " |"


def render_markdown(report: Report, plot_files: dict[str, str] | None = None) -> str:
    titles = header(report)
    lines = ["# edgepack report", "", _md_row(titles), "|" + "---|" * len(titles)]
    for title, rows in _sections(report):
        lines.append(_md_row([f"**{title}**", *[""] * (len(titles) - 1)]))
        lines += [_md_row([row.label, *[s.text for s in shown_cells(row)]]) for row in rows]
    if report.checks:
        lines += ["", "## Baseline check", "", *[f"- {_md(line)}" for line in check_lines(report)]]
    lines += ["", "## Notes", "", *[f"- {_md(note)}" for note in report.notes]]
    if plot_files:
        lines += ["", "## Plots", ""]
        lines += [f"![{PLOT_TITLES[name]}]({path})" for name, path in plot_files.items()]
    return "\n".join(lines) + "\n"


# --- HTML -------------------------------------------------------------------------------------

HTML_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { padding: 4px 10px; border-bottom: 1px solid #e2e2e2; text-align: right; }
td { white-space: nowrap; } td.text { white-space: normal; max-width: 26em; }
th { background: #fafafa; vertical-align: bottom; }
th:first-child, td:first-child { text-align: left; }
tr.section td { background: #eef1f5; font-weight: 600; text-align: left; }
td.better { color: #17692d; } td.worse { color: #b00020; } td.noise { color: #8a8a8a; }
.nogate { color: #b00020; font-weight: 600; }
li.bad, td.bad { color: #b00020; font-weight: 600; }
figure { display: inline-block; margin: 0 1.5em 1em 0; }
figure img { width: 560px; border: 1px solid #e2e2e2; }
"""


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def _element(tag: str, text: str, css: str = "") -> str:
    attribute = f' class="{css}"' if css else ""
    return f"<{tag}{attribute}>{_esc(text)}</{tag}>"


def _html_header(report: Report) -> str:
    cells = [
        _element("th", text, "nogate" if NO_GATE_MARK in text else "") for text in header(report)
    ]
    return "<tr>" + "".join(cells) + "</tr>"


def _html_row(row: Row) -> str:
    cells = [_element("td", row.label)]
    cells += [_element("td", shown.text, shown.kind) for shown in shown_cells(row)]
    return "<tr>" + "".join(cells) + "</tr>"


def _html_table(report: Report) -> str:
    width = len(header(report))
    body = [_html_header(report)]
    for title, rows in _sections(report):
        body.append(f'<tr class="section"><td colspan="{width}">{_esc(title)}</td></tr>')
        body += [_html_row(row) for row in rows]
    return "<table>\n" + "\n".join(body) + "\n</table>"


def _html_checks(report: Report) -> str:
    if not report.checks:
        return ""
    items = [_element("li", f"rule: {REGRESSION_RULE}")]
    items += [
        _element("li", line, "bad" if bad else "")
        for check in report.checks
        for line, bad in check.lines()
    ]
    return "<h2>Baseline check</h2>\n<ul>" + "".join(items) + "</ul>"


def _html_plots(images: dict[str, bytes]) -> str:
    if not images:
        return ""
    figures = [
        f'<figure><img alt="{_esc(PLOT_TITLES[name])}" '
        f'src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}"></figure>'
        for name, png in images.items()
    ]
    return "<h2>Plots</h2>\n" + "\n".join(figures)


def render_html(report: Report, images: dict[str, bytes] | None = None) -> str:
    """One self-contained page: inline CSS, plots embedded as data URIs, no external resources."""
    notes = "".join(_element("li", note) for note in report.notes)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>edgepack report</title>",
        f"<style>{HTML_STYLE}</style></head><body>",
        "<h1>edgepack report</h1>",
        _html_table(report),
        _html_checks(report),
        _html_plots(images or {}),
        f"<h2>Notes</h2>\n<ul>{notes}</ul>",
        "</body></html>",
    ]
    return "\n".join(part for part in parts if part) + "\n"


# --- JSON -------------------------------------------------------------------------------------


def _cell_json(cell: Cell, unit: str) -> dict[str, Any] | None:
    if cell is None:
        return None
    if isinstance(cell, str):
        return {"text": cell}
    return {**asdict(cell), "text": format_cell(cell, unit)}


def _delta_json(change: Delta | None) -> dict[str, Any] | None:
    if change is None:
        return None
    return {**asdict(change), "beyond_noise": change.beyond_noise}


def _row_json(row: Row) -> dict[str, Any]:
    return {
        "section": row.section,
        "label": row.label,
        "unit": row.unit,
        "better": row.better,
        "cells": [_cell_json(cell, row.unit) for cell in row.cells],
        "deltas": [_delta_json(change) for change in row.deltas()],
    }


def _check_json(check: RegressionCheck) -> dict[str, Any]:
    return {
        "baseline": check.baseline,
        "run": check.candidate,
        "baseline_decode_tok_s": asdict(check.baseline_speed),
        "run_decode_tok_s": asdict(check.candidate_speed),
        "drop": check.drop,
        "noise": check.noise,
        "speed_regressed": check.speed_regressed,
        "baseline_verdict": _verdict_name(check.baseline_passed),
        "run_verdict": _verdict_name(check.candidate_passed),
        "quality_regressed": check.quality_regressed,
        "regressed": check.regressed,
    }


def report_json(report: Report, plot_files: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "schema_version": REPORT_SCHEMA_VERSION,
        "columns": [asdict(column) for column in report.columns],
        "rows": [_row_json(row) for row in report.rows],
        "notes": report.notes,
        "baseline_check": {
            "rule": REGRESSION_RULE,
            "checks": [_check_json(check) for check in report.checks],
        }
        if report.checks
        else None,
        "plots": plot_files or {},
    }


def render_json(report: Report, plot_files: dict[str, str] | None = None) -> str:
    return json.dumps(report_json(report, plot_files), indent=2) + "\n"


# --- plots ------------------------------------------------------------------------------------

SPEED_PLOT = "tokens_vs_size.png"
QUALITY_PLOT = "quality_vs_speed.png"
PLOT_TITLES = {
    SPEED_PLOT: "Decode tokens/s vs engine size",
    QUALITY_PLOT: "Quality vs decode speed",
}
VERDICT_COLOURS = {None: "#8a8a8a", False: "#b00020", True: "#17692d"}


def render_plots(report: Report) -> dict[str, bytes]:
    """PNG bytes by file name; a plot is left out when no column has data for it."""
    plots = {}
    sized = [p for p in report.points if p.engine_bytes and p.decode]
    if sized:
        plots[SPEED_PLOT] = _speed_plot(sized, report.batch)
    rated = [p for p in report.points if p.quality is not None and p.decode]
    if rated and report.quality_metric:
        plots[QUALITY_PLOT] = _quality_plot(rated, report.quality_metric)
    return plots


def _axes(title: str, x_label: str, y_label: str) -> tuple[Figure, Axes]:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ToolMissingError(
            "plots need matplotlib, which is not installed", hint="pip install 'edgepack[report]'"
        ) from exc
    figure = Figure(figsize=(6.4, 4.4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.set_title(title)
    axes.set_xlabel(x_label)
    axes.set_ylabel(y_label)
    axes.grid(True, alpha=0.3)
    return figure, axes


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _error_bars(measures: Sequence[Measure]) -> list[list[float]]:
    below = [m.value - m.low if m.low is not None else 0.0 for m in measures]
    above = [m.high - m.value if m.high is not None else 0.0 for m in measures]
    return [below, above]


def _label_points(
    axes: Axes, points: Sequence[PlotPoint], xs: Sequence[float], ys: Sequence[float]
) -> None:
    for point, x, y in zip(points, xs, ys, strict=True):
        axes.annotate(point.label, (x, y), textcoords="offset points", xytext=(6, 6), fontsize=8)


def _speed_plot(points: Sequence[PlotPoint], batch: str) -> bytes:
    figure, axes = _axes(PLOT_TITLES[SPEED_PLOT], "engine size (MB)", "decode tokens/s")
    xs = [(p.engine_bytes or 0.0) / 1e6 for p in points]
    for name, series in (
        ("batch 1", [p.decode for p in points]),
        (batch, [p.batched for p in points]),
    ):
        shown = [(x, m) for x, m in zip(xs, series, strict=True) if m is not None]
        if shown:
            measures = [m for _, m in shown]
            axes.errorbar(
                [x for x, _ in shown],
                [m.value for m in measures],
                yerr=_error_bars(measures),
                fmt="o" if name == "batch 1" else "s",
                capsize=4,
                label=f"decode, {name} (median, min–max)",
            )
    _label_points(axes, points, xs, [p.decode.value if p.decode else 0.0 for p in points])
    axes.set_xlim(left=0, right=max(xs) * 1.25)
    axes.set_ylim(bottom=0)
    axes.legend(fontsize=8, loc="best")
    return _png(figure)


def _quality_plot(points: Sequence[PlotPoint], metric: str) -> bytes:
    figure, axes = _axes(PLOT_TITLES[QUALITY_PLOT], "decode tokens/s, batch 1", metric)
    xs = [p.decode.value if p.decode else 0.0 for p in points]
    ys = [p.quality or 0.0 for p in points]
    for passed, colour in VERDICT_COLOURS.items():
        group = [i for i, p in enumerate(points) if p.passed is passed]
        if group:
            axes.scatter(
                [xs[i] for i in group],
                [ys[i] for i in group],
                c=colour,
                s=60,
                zorder=3,
                label=f"verdict: {_verdict_name(passed)}",
            )
    _label_points(axes, points, xs, ys)
    axes.legend(fontsize=8, loc="best")
    axes.set_xlim(left=0, right=max(xs) * 1.25)
    return _png(figure)

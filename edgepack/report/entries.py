"""What a report compares: run results with their bundles' manifests, and bundles not yet run.

A bundle without a run has its build and artifact figures from its manifest and "not measured" in
every runtime cell; where its engine needs a GPU this machine lacks (a TensorRT-RTX engine and its
compute capability), the cells say "not measured: no supported GPU" and a note says which GPU it
needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgepack.bench.result import RunResult
from edgepack.bundle import Manifest, bundle_summary, read_manifest
from edgepack.errors import BadInputError, BundleError
from edgepack.report.cells import NO_GATE_MARK, NO_SUPPORTED_GPU, NOT_MEASURED

if TYPE_CHECKING:
    # the one place the report names the GPU detection (the other modules take Gpu from here)
    from edgepack.bench.gpus import Gpu as Gpu


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


def machine_text(entry: Entry) -> str:
    if entry.run is None:
        return entry.not_measured
    machine = entry.run.machine
    cores = machine.get("usable_cores") or machine.get("logical_cores")
    name = machine.get("cpu_model") or machine.get("hostname") or "?"
    return f"{name}, {cores} cores ({entry.run.location})" if cores else str(name)


def run_passed(run: RunResult) -> bool | None:
    return None if run.quality is None else run.quality.passed


def verdict_name(passed: bool | None) -> str:
    return {None: "no verdict", False: "fail", True: "pass"}[passed]

"""Attach a quality verdict to a run: the reference for the bundle's model, then the gate."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgepack.bench.result import RunResult
from edgepack.bundle import Manifest, read_manifest
from edgepack.cache import HASH_INDEX_FILE, FileHashIndex
from edgepack.errors import BadInputError, QualityGateError
from edgepack.models import resolve_model_source
from edgepack.quality.gate import gate_run
from edgepack.quality.reference import load_or_compute_reference, prompts_sha256
from edgepack.quality.thresholds import GateConfig, quality_class


@dataclass(frozen=True)
class GateSubject:
    """What a run's answers are judged as: a source model and a quality class."""

    model_dir: Path
    model_hash: str
    quality_class: str

    @classmethod
    def of_model(cls, reference_model: str, cache_root: Path, klass: str) -> GateSubject:
        """A source model named as ``--model`` is (folder, demo name, cached hub id)."""
        source = resolve_model_source(reference_model, cache_root)
        hashes = FileHashIndex(cache_root / HASH_INDEX_FILE)
        model_hash = hashes.tree_hash(source.directory)
        hashes.save()
        return cls(source.directory, model_hash, klass)

    @classmethod
    def of_bundle(cls, manifest: Manifest) -> GateSubject:
        recipe = manifest.recipe
        return cls(
            Path(manifest.model["directory"]),
            str(manifest.model["hash"]),
            quality_class(str(recipe["precision"]), str(recipe["kv_cache_dtype"])),
        )


def apply_gate(
    result: RunResult,
    subject: GateSubject | Manifest,
    prompts_file: Path,
    cache_root: Path,
    config: GateConfig,
    progress: Callable[[str, int, int], None] = lambda *a: None,
) -> RunResult:
    """Compute (or reuse) the reference outputs and judge the run against them."""
    if isinstance(subject, Manifest):
        subject = GateSubject.of_bundle(subject)
    reference = load_or_compute_reference(
        subject.model_dir,
        subject.model_hash,
        prompts_file,
        result.settings.max_new_tokens,
        cache_root,
        progress,
    )
    verdict = gate_run(result.outputs, result.heldout, subject.quality_class, reference, config)
    return result.model_copy(update={"quality": verdict, "gate_enforced": True})


def regate(
    result: RunResult,
    cache_root: Path,
    config: GateConfig,
    reference_model: str | None = None,
    prompts_file: Path | None = None,
    progress: Callable[[str, int, int], None] = lambda *a: None,
) -> RunResult:
    """Judge a saved run again: against its bundle's source model, or ``reference_model``."""
    if reference_model is not None:
        klass = result.quality.quality_class if result.quality else _class_of(result)
        subject = GateSubject.of_model(reference_model, cache_root, klass)
    else:
        bundle_dir = Path(str(result.bundle.get("dir", "")))
        if not (bundle_dir / "manifest.json").is_file():
            raise BadInputError(
                f"the run's bundle is no longer at {bundle_dir}",
                hint="name the source model with --reference-model (a folder or demo:NAME)",
            )
        subject = GateSubject.of_bundle(read_manifest(bundle_dir))
    prompts = prompts_file or Path(result.settings.prompts_file)
    if not prompts.is_file() or prompts_sha256(prompts) != result.settings.prompts_sha256:
        raise BadInputError(
            f"the prompt set the run answered ({prompts}, sha256 "
            f"{result.settings.prompts_sha256[:12]}) is not on this machine",
            hint="pass that prompt set's file with --prompts",
        )
    return apply_gate(result, subject, prompts, cache_root, config, progress)


def _class_of(result: RunResult) -> str:
    precision = str(result.bundle.get("precision"))
    try:
        return quality_class(precision, "fp16")
    except KeyError:
        raise BadInputError(
            f"the run records no quality class and its precision {precision!r} names none",
            hint="judge it with its bundle, or bench it again",
        ) from None


def enforce(result: RunResult) -> None:
    """Raise QualityGateError when an enforced gate failed (after the result is saved)."""
    verdict = result.quality
    if result.gate_enforced and verdict is not None and not verdict.passed:
        hint = (
            "the source model's own answers are degenerate: the gate cannot judge an engine "
            "against it; check the model's weights (or pass another --reference-model)"
            if not verdict.reference_usable
            else "the engine's answers are degenerate or drifted from the reference; see the "
            "result JSON (--no-gate records a run without the gate)"
        )
        raise QualityGateError(f"quality gate failed: {verdict.summary()}", hint=hint)

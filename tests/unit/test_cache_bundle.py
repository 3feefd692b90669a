"""The stage cache, the pipeline's cache keys, and bundle sealing/verification."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
from dataclasses import replace
from pathlib import Path

import pytest

from edgepack.backends import Stage, StageContext
from edgepack.bundle import Manifest, read_manifest, verify_bundle, write_bundle
from edgepack.cache import FileHashIndex, StageCache, content_key, sha256_file, sha256_range
from edgepack.errors import BundleError
from edgepack.models import resolve_spec
from edgepack.pipeline import stage_key
from edgepack.plan import Limits, Plan, PlanRequest, make_plan
from edgepack.targets import TargetRegistry


def _write_file(output: Path) -> None:
    (output / "engine.bin").write_bytes(b"engine-bytes")


def _failing_build(output: Path) -> None:
    (output / "half.bin").write_bytes(b"partial")
    raise RuntimeError("tool crashed")


def test_second_produce_reuses_the_entry(tmp_path: Path) -> None:
    cache = StageCache(tmp_path)
    calls: list[Path] = []

    def build(output: Path) -> None:
        calls.append(output)
        _write_file(output)

    first = cache.produce("k1", build, {"stage": "engine"})
    second = cache.produce("k1", build, {"stage": "engine"})
    assert len(calls) == 1
    assert second.output_dir == first.output_dir
    assert (second.output_dir / "engine.bin").read_bytes() == b"engine-bytes"
    assert second.wall_s >= 0


def test_force_rebuilds(tmp_path: Path) -> None:
    cache = StageCache(tmp_path)
    calls: list[int] = []

    def build(output: Path) -> None:
        calls.append(1)
        _write_file(output)

    cache.produce("k1", build, {})
    cache.produce("k1", build, {}, force=True)
    assert len(calls) == 2


def test_failed_stage_leaves_no_entry_and_no_temporary(tmp_path: Path) -> None:
    cache = StageCache(tmp_path)
    with pytest.raises(RuntimeError):
        cache.produce("k1", _failing_build, {})
    assert cache.lookup("k1") is None
    assert not (tmp_path / "stages" / "k1").exists()
    assert list((tmp_path / "tmp").iterdir()) == []


def _produce_in_child(root: str, marker_dir: str) -> None:
    def build(output: Path) -> None:
        (Path(marker_dir) / f"built-{multiprocessing.current_process().pid}").touch()
        _write_file(output)

    StageCache(Path(root)).produce("shared", build, {})


def test_concurrent_builders_build_once(tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    context = multiprocessing.get_context("fork")
    workers = [
        context.Process(target=_produce_in_child, args=(str(tmp_path / "cache"), str(markers)))
        for _ in range(3)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
        assert worker.exitcode == 0
    assert len(list(markers.iterdir())) == 1


def test_content_key_is_order_independent_and_sensitive() -> None:
    assert content_key({"a": 1, "b": [1, 2]}) == content_key({"b": [1, 2], "a": 1})
    assert content_key({"a": 1}) != content_key({"a": 2})


def test_file_hash_index_notices_changes(tmp_path: Path) -> None:
    file = tmp_path / "w.bin"
    file.write_bytes(b"one")
    index = FileHashIndex(tmp_path / "index.json")
    first = index.sha256(file)
    assert first == sha256_file(file)
    file.write_bytes(b"two-longer")
    assert index.sha256(file) != first
    index.save()
    reloaded = FileHashIndex(tmp_path / "index.json")
    assert reloaded.sha256(file) == sha256_file(file)


def _plan(precision: str = "int4") -> Plan:
    registry = TargetRegistry.default()
    request = PlanRequest(
        target=registry.get("host-x86_64-cpu"),
        model=resolve_spec("smollm2-135m-instruct"),
        precision=precision,
    )
    return make_plan(request)


def _stage(config: dict[str, str]) -> Stage:
    def run(context: StageContext) -> None:
        _write_file(context.output_dir)

    return Stage(name="engine", description="test", config=config, inputs=("model",), run=run)


def test_stage_key_changes_with_every_input() -> None:
    plan = _plan()
    base = stage_key(plan, _stage({"p": "int4"}), {"model": "m1"})
    assert base == stage_key(plan, _stage({"p": "int4"}), {"model": "m1"})
    assert base != stage_key(plan, _stage({"p": "fp32"}), {"model": "m1"})
    assert base != stage_key(plan, _stage({"p": "int4"}), {"model": "m2"})
    other_limits = replace(plan, limits=Limits(max_batch_size=8))
    assert base != stage_key(other_limits, _stage({"p": "int4"}), {"model": "m1"})
    other_target = replace(plan, target=TargetRegistry.default().get("generic-aarch64-cpu"))
    assert base != stage_key(other_target, _stage({"p": "int4"}), {"model": "m1"})


def test_a_recipe_independent_stage_keys_on_its_config_and_inputs_alone() -> None:
    shared = replace(_stage({"p": "x"}), recipe_independent=True)
    plan = _plan()
    other = replace(plan, target=TargetRegistry.default().get("generic-aarch64-cpu"))
    other = replace(other, precision="fp32", limits=Limits(max_batch_size=8))
    assert stage_key(plan, shared, {"model": "m1"}) == stage_key(other, shared, {"model": "m1"})
    assert stage_key(plan, shared, {"model": "m1"}) != stage_key(plan, shared, {"model": "m2"})


def _manifest() -> Manifest:
    return Manifest(
        edgepack_version="test",
        model={"name": "m", "hash": "h"},
        recipe={"backend": "ort", "precision": "int4"},
        target={"name": "host-x86_64-cpu"},
        tools={"edgepack": "test"},
        plan={},
        stages=[],
    )


def _sealed_bundle(tmp_path: Path) -> Path:
    source = tmp_path / "engine-src"
    (source / "sub").mkdir(parents=True)
    (source / "model.onnx").write_bytes(b"x" * 1000)
    (source / "sub" / "tokenizer.json").write_text("{}")
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({"prompts": []}))
    destination = tmp_path / "bundle"
    index = FileHashIndex(tmp_path / "index.json")
    write_bundle(destination, _manifest(), {"engine": source, "prompts.json": prompts}, index)
    index.save()
    return destination


def test_bundle_lists_every_file_and_verifies(tmp_path: Path) -> None:
    bundle = _sealed_bundle(tmp_path)
    manifest = verify_bundle(bundle)
    assert {r.path for r in manifest.files} == {
        "engine/model.onnx",
        "engine/sub/tokenizer.json",
        "prompts.json",
    }
    assert manifest.file_record("engine/model.onnx").size == 1000
    assert manifest.bundle_id == manifest.content_id()
    assert not any(p.name.startswith(".bundle") for p in tmp_path.iterdir())


def test_bundle_id_is_stable_for_same_content(tmp_path: Path) -> None:
    first = read_manifest(_sealed_bundle(tmp_path / "a"))
    second = read_manifest(_sealed_bundle(tmp_path / "b"))
    assert first.bundle_id == second.bundle_id


def test_one_changed_byte_fails_verification(tmp_path: Path) -> None:
    bundle = _sealed_bundle(tmp_path)
    engine = bundle / "engine" / "model.onnx"
    data = bytearray(engine.read_bytes())
    data[500] ^= 0x01
    engine.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"engine/model\.onnx: sha256 differs"):
        verify_bundle(bundle)


def test_a_written_bundle_is_verified_through_the_index_without_reading_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copies were hashed as they were written: the first deploy after a build reads no
    file, and a file touched since is read again."""
    bundle = _sealed_bundle(tmp_path)
    read: list[Path] = []
    monkeypatch.setattr("edgepack.cache.sha256_file", lambda path: read.append(path) or "0" * 64)
    index = FileHashIndex(tmp_path / "index.json")
    verify_bundle(bundle, index)
    assert read == []
    (bundle / "prompts.json").touch()
    with pytest.raises(BundleError, match=r"prompts\.json: sha256 differs"):
        verify_bundle(bundle, FileHashIndex(tmp_path / "index.json"))
    assert read == [bundle / "prompts.json"]


def test_a_source_that_changes_while_the_bundle_is_written_fails_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "engine-src"
    source.mkdir()
    (source / "model.onnx").write_bytes(b"x" * 1000)
    original = FileHashIndex.sha256

    def hash_then_change(self: FileHashIndex, path: Path) -> str:
        digest = original(self, path)
        path.write_bytes(b"y" * 1000)  # rewritten between its record and its copy
        return digest

    monkeypatch.setattr(FileHashIndex, "sha256", hash_then_change)
    index = FileHashIndex(tmp_path / "index.json")
    with pytest.raises(BundleError, match="changed while the bundle was being written"):
        write_bundle(tmp_path / "bundle", _manifest(), {"engine": source}, index)
    assert not (tmp_path / "bundle").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["engine-src"]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda b: (b / "engine" / "model.onnx").unlink(), "missing"),
        (lambda b: (b / "engine" / "extra.bin").write_bytes(b"1"), "not in the manifest"),
        (lambda b: (b / "engine" / "model.onnx").write_bytes(b"short"), "size"),
    ],
)
def test_verification_names_each_damage(tmp_path: Path, damage: object, message: str) -> None:
    bundle = _sealed_bundle(tmp_path)
    damage(bundle)  # type: ignore[operator]
    with pytest.raises(BundleError, match=message):
        verify_bundle(bundle)


def test_edited_manifest_fails_verification(tmp_path: Path) -> None:
    bundle = _sealed_bundle(tmp_path)
    data = json.loads((bundle / "manifest.json").read_text())
    data["recipe"]["precision"] = "fp32"
    (bundle / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match="bundle id"):
        verify_bundle(bundle)


def test_directory_without_manifest_is_not_a_bundle(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"no manifest\.json"):
        verify_bundle(tmp_path)


def test_failed_bundle_write_keeps_the_old_bundle(tmp_path: Path) -> None:
    bundle = _sealed_bundle(tmp_path)
    before = read_manifest(bundle).bundle_id
    index = FileHashIndex(tmp_path / "index.json")
    with pytest.raises(FileNotFoundError):
        write_bundle(bundle, _manifest(), {"engine": tmp_path / "does-not-exist"}, index)
    assert read_manifest(bundle).bundle_id == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_replacing_a_directory_never_leaves_it_missing(tmp_path: Path) -> None:
    """Another process polling the destination during 300 replacements always finds one."""
    import subprocess

    from edgepack.cache import replace_directory

    destination = tmp_path / "bundle"
    destination.mkdir()
    (destination / "manifest.json").write_text("0")
    watch = 'while [ ! -f "$1/stop" ]; do [ -f "$1/bundle/manifest.json" ] || echo missing; done'
    reader = subprocess.Popen(["sh", "-c", watch, "sh", str(tmp_path)], stdout=subprocess.PIPE)
    try:
        for generation in range(1, 301):
            staging = tmp_path / f"staging-{generation}"
            staging.mkdir()
            (staging / "manifest.json").write_text(str(generation))
            replace_directory(staging, destination)
            assert not staging.exists()
    finally:
        (tmp_path / "stop").write_text("")
        out, _ = reader.communicate(timeout=30)
    assert (destination / "manifest.json").read_text() == "300"
    assert out.decode().count("missing") == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "stop"]


def test_a_range_hash_is_the_hash_of_those_bytes(tmp_path: Path) -> None:
    data = bytes(range(256)) * 9000  # longer than one read
    path = tmp_path / "blob"
    path.write_bytes(data)
    for start, length in [(0, len(data)), (3, 5), (1000, 2_000_000), (len(data) - 2, 10)]:
        expected = hashlib.sha256(data[start : start + length]).hexdigest()
        assert sha256_range(path, start, length) == expected

"""The Edge-LLM device half against the aarch64 test device, a fixture Jetson AGX Orin: deploy
checks the device's Edge-LLM, TensorRT and plugin before anything ships, builds the engine there
with llm_build (it stays there, its sha256 computed there), reuses it on a re-deploy; bench
--remote runs llm_inference and llm_bench with tegrastats alongside and the host's gate judges the
answers the test chose for the fixture: the model's own pass, token salad fails.

The bundle is the host half in the shape the export writes (llm/config.json of the pinned
Edge-LLM, the model's tokenizer); the real export is the slow tier's (tests/slow)."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from edgepack.backends.edgellm.runtime import render_sources
from edgepack.bundle import Manifest, write_bundle
from edgepack.cache import FileHashIndex
from edgepack.cli.main import run
from edgepack.errors import ExitCode
from edgepack.models import load_card, resolve_model_source
from edgepack.plan import Limits, PlanRequest, make_plan
from edgepack.quality.reference import load_or_compute_reference
from edgepack.runtime.spec import RuntimeSpec
from edgepack.targets import TargetRegistry
from tests.conftest import require_demo_stack
from tests.integration.arm64_device import (
    DeviceRoot,
)
from tests.integration.conftest import NetnsDevice, SshClientSide, SshServer
from tests.integration.edgellm_device import FixtureJetson

pytestmark = pytest.mark.integration
ROOT = "/opt/edgepack"
PROMPTS = 3
NEW_TOKENS = 16
PLUGIN_ROW = "libNvInfer_edgellm_plugin.so (EDGELLM_PLUGIN_PATH)"
SALAD = "strugg (str, 1, 1, 1, 1) 1) 1) 1) 1) 1) 1) 1) 1) 1)"


@pytest.fixture
def jetson(
    arm64_root: DeviceRoot,
    netns_factory: Callable[[], NetnsDevice],
    sshd_factory: Callable[..., SshServer],
    ssh_client: SshClientSide,
) -> FixtureJetson:
    root = arm64_root
    board = FixtureJetson(root)
    board.install()
    device = netns_factory()
    # The root serves the whole module; each test starts its own sshd there.
    shutil.rmtree(root.path / "etc" / "edgepack-test" / "sshd-jetson", ignore_errors=True)
    sshd_factory("jetson", address=device.device_address, port=22, netns=device.name, chroot=root)
    # An emulated sshd forks and answers slowly on a loaded machine: wait longer for its banner.
    with ssh_client.config.open("a", encoding="utf-8") as config:
        config.write("Host jetson\n  ConnectTimeout 60\n")
    return board


@pytest.fixture(scope="module")
def demo(session_cache: Path) -> tuple[Path, str]:
    require_demo_stack()
    source = resolve_model_source("demo:smollm2-135m", session_cache)
    return source.directory, FileHashIndex(session_cache / "hashes.json").tree_hash(
        source.directory
    )


def _bundle(
    directory: Path, demo: tuple[Path, str], build_ram: float = 1e9, runtime: bool = False
) -> Path:
    """An Edge-LLM host-half bundle of the demo model (what `build --until export` seals); with
    ``runtime``, the C++ runtime's sources as the build's runtime stage renders them."""
    model_dir, model_hash = demo
    engine = directory.parent / f"{directory.name}-engine" / "llm"
    engine.mkdir(parents=True)
    config = json.loads((model_dir / "config.json").read_text())
    runtime = {
        "model": "llama",
        "edgellm_version": "0.11.0",
        "kv_cache_dtype": "fp16",
        "hidden_size": config["hidden_size"],
        "vocab_size": config["vocab_size"],
    }
    (engine / "config.json").write_text(json.dumps(runtime))
    (engine / "model.onnx").write_bytes(b"ONNX graph with trt_edgellm::AttentionPlugin nodes\n")
    shutil.copy2(model_dir / "tokenizer.json", engine / "tokenizer.json")
    prompts = json.loads((Path(__file__).parents[2] / "prompts" / "default.json").read_text())
    prompts["prompts"] = prompts["prompts"][:PROMPTS]
    prompts_file = directory.parent / f"{directory.name}-prompts.json"
    prompts_file.write_text(json.dumps(prompts))
    manifest = Manifest(
        edgepack_version="test",
        model={"name": "smollm2-135m-instruct", "directory": str(model_dir), "hash": model_hash},
        recipe={
            "backend": "edgellm",
            "precision": "int8_sq",
            "kv_cache_dtype": "fp16",
            "limits": {"max_batch_size": 1, "max_input_len": 256, "max_seq_len": 512},
        },
        target={"name": "jetson-agx-orin-64gb", "arch": "aarch64", "cuda_arch": "87"},
        tools={"tensorrt-edgellm": "0.11.0"},
        plan={"memory": {"build_host_ram_bytes": build_ram}},
        stages=[],
    )
    index = FileHashIndex(directory.parent / f"{directory.name}-hashes.json")
    contents = {"engine": engine.parent, "prompts.json": prompts_file}
    if runtime:
        contents["runtime"] = directory.parent / f"{directory.name}-runtime"
        spec = RuntimeSpec.for_target(
            TargetRegistry.default().get("jetson-agx-orin-64gb"), backend="edgellm",
            model_name="smollm2-135m-instruct", precision="int8_sq", kv_cache_dtype="fp16",
            limits=Limits(1, 256, 512),
        )  # fmt: skip
        render_sources(spec, contents["runtime"])
    write_bundle(directory, manifest, contents, index)
    return directory


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run(list(argv))
    return code, out.getvalue(), err.getvalue()


def _deploy(bundle: Path) -> tuple[int, dict[str, object], str]:
    code, out, err = _cli(
        "deploy", "--host", "jetson", "--root", ROOT, "--bundle", str(bundle), "--json"
    )
    assert out, err
    [host] = json.loads(out)
    return code, host, err


def _bench(out: Path, *extra: str) -> tuple[int, str, str]:
    return _cli(
        "bench",
        "--host",
        "jetson",
        "--root",
        ROOT,
        "--runs",
        "1",
        "--warmup",
        "0",
        "--max-new-tokens",
        str(NEW_TOKENS),
        "--json-out",
        str(out),
        *extra,
    )


def test_engine_built_on_the_device_and_the_gate_judges_its_answers(
    jetson: FixtureJetson, demo: tuple[Path, str], tmp_path: Path, session_cache: Path
) -> None:
    bundle = _bundle(tmp_path / "bundle", demo)
    code, host, err = _deploy(bundle)
    assert code == 0, host
    engine = host["steps"]["edgellm_engine"]
    assert engine["status"] == "built"
    files = {f["path"]: f for f in engine["files"]}
    on_device = jetson.root / engine["directory"].lstrip("/") / "llm.engine"
    assert files["llm.engine"]["size"] == on_device.stat().st_size  # computed there, kept there
    assert not (bundle / "engine" / "llm.engine").exists()
    record = json.loads((on_device.parent / "engine.json").read_text())
    assert record["device"]["tensorrt"] == "10.3.0.30-1+cuda12.5"
    assert record["device"]["edgellm"] == "0.11.0" and record["llm_build"]["tensorrt"] == "10.3.0"
    assert "--maxKVCacheCapacity" in record["llm_build"]["argv"]

    code, host, err = _deploy(bundle)
    assert code == 0, host
    assert host["status"] == "no change" and host["steps"]["edgellm_engine"]["status"] == "reused"

    model_dir, model_hash = demo
    prompts = bundle / "prompts.json"
    reference = load_or_compute_reference(model_dir, model_hash, prompts, NEW_TOKENS, session_cache)
    jetson.answer_with([output.text for output in reference.outputs])
    code, _, err = _bench(tmp_path / "healthy.json")
    assert code == 0, err
    result = json.loads((tmp_path / "healthy.json").read_text())
    assert result["quality"]["passed"] is True, result["quality"]["checks"]
    assert result["machine"]["runner"] == "edgellm"
    assert result["raw"]["llm_bench"]["decode"]["tokens_per_s"] == 162.5
    assert result["metrics"]["decode_tok_s"]["median"] == 161.03
    assert result["metrics"]["peak_rss_bytes"] == 1283457024
    telemetry = result["telemetry"]
    assert telemetry["power_w"]["mean"] == pytest.approx(22.319)
    assert telemetry["tegrastats"]["power_rails"]["board"] == "Jetson AGX Orin"

    jetson.answer_with([SALAD] * PROMPTS)
    code, _, err = _bench(tmp_path / "salad.json")
    assert code == ExitCode.QUALITY_GATE, err
    assert json.loads((tmp_path / "salad.json").read_text())["quality"]["passed"] is False


def _refused(bundle: Path, jetson: FixtureJetson, *expected: str) -> None:
    code, host, _ = _deploy(bundle)
    flat = " ".join(f"{host.get('error')} {host.get('hint')}".split())
    assert code == ExitCode.REMOTE, host
    for text in expected:
        assert text in flat, flat
    assert not (jetson.root / ROOT.lstrip("/") / "releases").exists() or not any(
        (jetson.root / ROOT.lstrip("/") / "releases").iterdir()
    )


def test_deploy_refuses_before_shipping_and_says_what_to_install(
    jetson: FixtureJetson, demo: tuple[Path, str], tmp_path: Path
) -> None:
    shutil.rmtree(jetson.root / ROOT.lstrip("/"), ignore_errors=True)
    bundle = _bundle(tmp_path / "bundle", demo)
    jetson.set_tensorrt("10.13.3.9-1+cuda13.0")
    _refused(bundle, jetson, "bundle needs TensorRT 10.3", "has 10.13.3.9")
    jetson.set_tensorrt("10.3.0.30-1+cuda12.5")
    jetson.set_version("0.10.1")
    _refused(bundle, jetson, "the export is Edge-LLM 0.11.0 but device jetson has Edge-LLM 0.10.1")
    jetson.set_version("0.11.0")
    jetson.remove_plugin()
    _refused(bundle, jetson, "plugin library is not there", "EDGELLM_PLUGIN_PATH")
    jetson.uninstall()
    _refused(
        bundle,
        jetson,
        "has no Edge-LLM llm_build, llm_inference, llm_bench",
        "build TensorRT Edge-LLM 0.11.0 on the device",
        "-DEMBEDDED_TARGET=",
    )
    jetson.install()
    big = _bundle(tmp_path / "big", demo, build_ram=1e15)
    _refused(big, jetson, "building the engine on jetson needs about 1000000.0 GB")


def test_llm_build_out_of_memory_switches_nothing(
    jetson: FixtureJetson, demo: tuple[Path, str], tmp_path: Path
) -> None:
    shutil.rmtree(jetson.root / ROOT.lstrip("/"), ignore_errors=True)
    jetson.out_of_memory(True)
    code, host, _ = _deploy(_bundle(tmp_path / "bundle", demo))
    flat = " ".join(f"{host.get('error')} {host.get('hint')}".split())
    assert code == ExitCode.TOOL_FAILED, host
    assert "llm_build failed on jetson" in flat and "ran out of memory" in flat
    assert "the whole log:" in flat
    assert not (jetson.root / ROOT.lstrip("/") / "current").exists()
    jetson.out_of_memory(False)


def test_build_host_stage_builds_there_and_deploy_adopts_that_engine(
    jetson: FixtureJetson, demo: tuple[Path, str], tmp_path: Path
) -> None:
    """``build --host``'s engine stage: the export shipped with the deploy machinery, llm_build
    run there, the engine left there; a deploy of that bundle to the same device adopts it."""
    from edgepack.backends import BACKENDS
    from edgepack.backends.base import StageContext
    from edgepack.backends.edgellm.toolchain import DEVICE_ENGINE_RECORD

    shutil.rmtree(jetson.root / ROOT.lstrip("/"), ignore_errors=True)
    source = _bundle(tmp_path / "source", demo)
    plan = make_plan(
        PlanRequest(
            target=TargetRegistry.default().get("jetson-agx-orin-64gb"),
            model=load_card("smollm2-135m-instruct"),
            precision="int8_sq",
            limits=Limits(1, 256, 512),
        )
    )
    stage = BACKENDS["edgellm"].device_engine_stage(plan, f"jetson:{ROOT}")
    out = tmp_path / "engine-stage"
    out.mkdir()
    stage.run(StageContext(plan, {"export": source / "engine"}, out, lambda line: None))
    record = json.loads((out / DEVICE_ENGINE_RECORD).read_text())
    files = {f["path"]: f for f in record["files"]}
    built = jetson.root / record["remote_dir"].lstrip("/") / "llm.engine"
    assert built.stat().st_size == files["llm.engine"]["size"] and not (out / "llm.engine").exists()
    assert (out / "llm" / "model.onnx").is_file()  # the bundle still carries the export
    assert record["bytes_shipped"] > 0 and record["device"]["edgellm"] == "0.11.0"

    bundle = tmp_path / "bundle"
    manifest = json.loads((source / "manifest.json").read_text())
    index = FileHashIndex(tmp_path / "hashes.json")
    write_bundle(
        bundle,
        Manifest.model_validate({**manifest, "files": [], "bundle_id": ""}),
        {"engine": out, "prompts.json": source / "prompts.json"},
        index,
    )
    code, host, _ = _deploy(bundle)
    assert code == 0, host
    assert host["steps"]["edgellm_engine"]["status"] == "adopted"


def _doctor_rows() -> dict[str, dict[str, object]]:
    code, out, err = _cli("doctor", "--host", f"jetson:{ROOT}", "--target", "jetson-agx-orin-64gb",
                       "--json")  # fmt: skip
    assert code == 0, err
    return {
        row["component"]: row
        for row in json.loads(out)
        if row["where"] == "jetson" and row["backend"] == "edgellm"
    }


def test_doctor_lists_what_the_device_has_and_lacks(jetson: FixtureJetson) -> None:
    """``doctor --host``: the Edge-LLM tools, release, plugin, TensorRT, CUDA and JetPack of the
    fixture Orin against its profile, then what a bare one lacks, with what to install."""
    rows = _doctor_rows()
    assert set(rows) == {
        "llm_build", "llm_inference", "llm_bench", "Edge-LLM release",
        PLUGIN_ROW, "TensorRT", "CUDA", "JetPack (L4T)",
    }  # fmt: skip
    assert [(n, r["detail"], r["fix"]) for n, r in rows.items() if not r["found"]] == []
    assert rows["llm_build"]["detail"] == "/opt/TensorRT-Edge-LLM/build/examples/llm/llm_build"
    assert rows["TensorRT"]["detail"] == "10.3.0.30-1+cuda12.5"
    assert (rows["CUDA"]["detail"], rows["JetPack (L4T)"]["detail"]) == ("12.6.68", "36.4")

    jetson.remove_plugin()
    jetson.uninstall()
    jetson.set_tensorrt("10.13.3.9-1+cuda13.0")
    rows = _doctor_rows()
    missing = {name for name, row in rows.items() if not row["found"]}
    assert missing == set(rows) - {"CUDA", "JetPack (L4T)"}
    assert "build TensorRT Edge-LLM 0.11.0 on the device" in str(rows["llm_bench"]["fix"])
    assert "-DEMBEDDED_TARGET=jetson-orin" in str(rows["llm_build"]["fix"])
    assert "EDGELLM_PLUGIN_PATH" in str(rows[PLUGIN_ROW]["fix"])
    assert "needs TensorRT 10.3: flash JetPack 6.2" in str(rows["TensorRT"]["fix"])
    jetson.install()


def test_runtime_compiled_on_the_device_and_benched(
    jetson: FixtureJetson, demo: tuple[Path, str], tmp_path: Path, session_cache: Path
) -> None:
    """The bundle's templates/edgellm sources compiled at deploy by the device's own g++ and
    CMake (under qemu) with the profile's toolchain file, against the (fixture) Edge-LLM there;
    an Edge-LLM configured for another EMBEDDED_TARGET stops it; `bench --runner runtime` runs
    it on the device's engine and the gate judges the answers: the model's pass, salad fails."""
    from tokenizers import Tokenizer

    shutil.rmtree(jetson.root / ROOT.lstrip("/"), ignore_errors=True)
    bundle = _bundle(tmp_path / "bundle", demo, runtime=True)
    jetson.install_sdk(embedded_target="auto-thor")
    code, host, _ = _deploy(bundle)
    flat = " ".join(f"{host.get('error')} {host.get('hint')}".split())
    assert code == ExitCode.TOOL_FAILED, host
    assert "compiling the Edge-LLM runtime on jetson failed" in flat, flat
    assert "built for EMBEDDED_TARGET='auto-thor'" in flat and "jetson-orin" in flat, flat
    assert not (jetson.root / ROOT.lstrip("/") / "current").exists()

    jetson.install_sdk()
    code, host, _ = _deploy(bundle)
    assert code == 0, host
    runtime = host["steps"]["edgellm_runtime"]
    assert runtime["status"] == "built" and runtime["embedded_target"] == "jetson-orin"
    binary = jetson.root / runtime["binary"].lstrip("/")
    header = binary.read_bytes()[:20]
    assert header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == 183  # aarch64
    assert "-DCMAKE_TOOLCHAIN_FILE=" in " ".join(runtime["configure"])
    code, host, _ = _deploy(bundle)
    assert code == 0 and host["steps"]["edgellm_runtime"]["status"] == "reused", host

    model_dir, model_hash = demo
    reference = load_or_compute_reference(
        model_dir, model_hash, bundle / "prompts.json", NEW_TOKENS, session_cache
    )
    prompts = json.loads((bundle / "prompts.json").read_text())["prompts"]
    texts = {prompt["id"]: prompt["text"] for prompt in prompts}
    jetson.answer_prompts({texts[out.id]: (out.text, out.token_ids) for out in reference.outputs})
    code, _, err = _bench(tmp_path / "healthy.json", "--runner", "runtime", "--batch-size", "1")
    assert code == 0, err
    result = json.loads((tmp_path / "healthy.json").read_text())
    assert result["quality"]["passed"] is True, result["quality"]["checks"]
    assert result["machine"]["runner"] == "runtime"
    assert result["machine"]["runtime_build"]["embedded_target"] == "jetson-orin"
    assert [o["token_ids"] for o in result["outputs"]] == [o.token_ids for o in reference.outputs]
    assert result["metrics"]["decode_tok_s"]["median"] > 0
    assert result["telemetry"]["tegrastats"]["power_rails"]["board"] == "Jetson AGX Orin"

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    salad = tokenizer.encode(SALAD, add_special_tokens=False).ids[:NEW_TOKENS]
    jetson.answer_prompts({text: (tokenizer.decode(salad), salad) for text in texts.values()})
    code, _, err = _bench(tmp_path / "salad.json", "--runner", "runtime", "--batch-size", "1")
    assert code == ExitCode.QUALITY_GATE, err
    assert json.loads((tmp_path / "salad.json").read_text())["quality"]["passed"] is False

"""The Edge-LLM backend: host checks and device-side parsing, on recorded and documented formats."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from edgepack.backends.edgellm import backend as edgellm_backend
from edgepack.backends.edgellm.bench_io import (
    parse_answers,
    parse_llm_bench,
    parse_profile,
    request_file,
)
from edgepack.backends.edgellm.device import (
    build_memory_problem,
    device_problems,
    explain_llm_build,
    llm_build_job,
    parse_llm_build_log,
    parse_probe,
)
from edgepack.backends.edgellm.export_check import check_export
from edgepack.backends.edgellm.stages import export_arguments, host_stages
from edgepack.builders.common import place_argv
from edgepack.errors import RemoteError, ToolMissingError
from edgepack.models import load_card
from edgepack.plan import Limits, PlanRequest, make_plan
from edgepack.remote.facts import parse_facts
from edgepack.targets import TargetRegistry
from edgepack.toolenv import ToolEnvSpec, _index_arguments, read_toolenv

FIXTURES = Path(__file__).parents[1] / "fixtures" / "edgellm"
ORIN = "jetson-agx-orin-64gb"


def _plan(registry: TargetRegistry, precision: str, target: str = ORIN, **options: Any) -> Any:
    spec = load_card("smollm2-135m-instruct")
    request = PlanRequest(target=registry.get(target), model=spec, precision=precision, **options)
    return make_plan(request)


def _summary(precision: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"inspect-smollm2-{precision}.json").read_text())


def _failed(checks: list[Any]) -> dict[str, str]:
    return {check.name: check.detail for check in checks if not check.ok}


@pytest.mark.parametrize("precision", ["fp16", "int8_sq"])
def test_real_exports_pass_their_checks(registry: TargetRegistry, precision: str) -> None:
    assert _failed(check_export(_summary(precision), _plan(registry, precision))) == {}


def test_export_of_another_precision_fails(registry: TargetRegistry) -> None:
    assert "weight precision" in _failed(check_export(_summary("fp16"), _plan(registry, "int8_sq")))
    assert "weight precision" in _failed(check_export(_summary("int8_sq"), _plan(registry, "fp16")))


def test_export_without_plugins_or_with_wrong_config_fails(registry: TargetRegistry) -> None:
    plan = _plan(registry, "int8_sq")
    broken = copy.deepcopy(_summary("int8_sq"))
    broken["ops"]["trt_edgellm::AttentionPlugin"] = 29
    broken["config"]["edgellm_version"] = "0.10.1"
    broken["config"]["kv_cache_dtype"] = "fp8"
    broken["inputs"] = [i for i in broken["inputs"] if i["name"] != "past_key_values_7"]
    failed = _failed(check_export(broken, plan))
    assert "29 trt_edgellm::AttentionPlugin for 30 layers" in failed["plugin ops"]
    assert "'0.10.1'" in failed["config.json"] and "kv_cache_dtype" in failed["config.json"]
    assert "past_key_values_7 None" in failed["inputs and outputs"]


def test_export_checks_sizes_and_context(registry: TargetRegistry) -> None:
    plan = _plan(registry, "int8_sq", limits=Limits(1, 1024, 8192))
    small = copy.deepcopy(_summary("int8_sq"))
    small["files"]["model.onnx.data"] //= 3
    small["config"]["max_position_embeddings"] = 4096
    failed = _failed(check_export(small, plan))
    assert "file sizes" in failed and "context limit" in failed


def test_plan_explains_int4_awq_and_nvfp4(registry: TargetRegistry, monkeypatch) -> None:
    problems = _plan(registry, "int4_awq").problems
    assert any("blocks of 128 with edgellm" in p and "576" in p for p in problems)
    monkeypatch.setattr(edgellm_backend, "host_has_cuda", lambda: False)
    nvfp4 = _plan(registry, "nvfp4", target="jetson-thor")
    assert nvfp4.valid  # the plan is the target's; the host's lack is a warning...
    assert any("nvfp4 quantization needs a CUDA GPU" in w for w in nvfp4.warnings)
    with pytest.raises(ToolMissingError, match="needs a CUDA GPU"):
        edgellm_backend.EDGELLM.stages(nvfp4)  # ...and the build refuses before any work
    monkeypatch.setattr(edgellm_backend, "host_has_cuda", lambda: True)
    thor = _plan(registry, "nvfp4", target="jetson-thor")
    assert [s.name for s in edgellm_backend.EDGELLM.stages(thor)] == ["quantize", "export"]


def test_orin_profile_on_jetpack_6_warns(registry: TargetRegistry) -> None:
    plan = _plan(registry, "int8_sq")
    assert plan.backend == "edgellm" and plan.valid
    assert any("supports Orin only on JetPack 7.2" in w for w in plan.warnings)
    assert not any("JetPack" in w for w in _plan(registry, "fp8", target="jetson-thor").warnings)


def test_stages_and_their_arguments(registry: TargetRegistry) -> None:
    assert [s.name for s in host_stages(_plan(registry, "fp16"))] == ["export"]
    stages = host_stages(_plan(registry, "int8_sq"))
    assert [(s.name, s.inputs) for s in stages] == [
        ("quantize", ("model",)),
        ("export", ("quantize", "model")),
    ]
    assert stages[0].config["calibration"]["sha256"]
    assert export_arguments(_plan(registry, "int8_sq")) == ["--target-sm", "87"]


def test_llm_bench_summaries() -> None:
    decode = parse_llm_bench((FIXTURES / "llm_bench-decode.txt").read_text())
    assert decode == {
        "mode": "decode",
        "batch_size": 1,
        "e2e_ms": 6.1538,
        "tokens_per_s": 162.5,
        "past_kv_len": 2048,
        "osl": 1,
        "iterations": 10,
    }
    prefill = parse_llm_bench((FIXTURES / "llm_bench-prefill.txt").read_text())
    assert (prefill["mode"], prefill["input_len"], prefill["tokens_per_s"]) == (
        "prefill",
        128,
        12959.8,
    )


def test_llm_bench_inconsistent_or_unknown_output_is_refused() -> None:
    text = (FIXTURES / "llm_bench-decode.txt").read_text()
    with pytest.raises(RemoteError, match="disagrees"):
        parse_llm_bench(text.replace("Tokens/sec (E2E): 162.5", "Tokens/sec (E2E): 300.0"))
    with pytest.raises(RemoteError, match=r"Edge-LLM 0\.11\.0"):
        parse_llm_bench(text.replace("=== Results Summary ===", "== Summary =="))


def test_llm_inference_profile_and_answers() -> None:
    profile = parse_profile((FIXTURES / "llm_inference-profile.json").read_text())
    assert (profile["decode_tok_s"], profile["prefill_tok_s"]) == (161.03, 2565.7)
    assert (profile["peak_memory_bytes"], profile["peak_memory_kind"]) == (1283457024, "unified")
    answers = parse_answers((FIXTURES / "llm_inference-output.json").read_text(), expected=2)
    assert answers[0] == "The capital of France is Paris."
    with pytest.raises(RemoteError, match="2 answers for 3 prompts"):
        parse_answers((FIXTURES / "llm_inference-output.json").read_text(), expected=3)
    with pytest.raises(RemoteError, match=r"generation\.tokens_per_second"):
        parse_profile(json.dumps({"prefill": {}, "generation": {}}))
    request = request_file(["a", "b"], 64, 2)
    assert request["requests"][1]["messages"] == [{"role": "user", "content": "b"}]


def test_llm_build_logs_explained() -> None:
    oom = explain_llm_build((FIXTURES / "llm_build-oom.log").read_text())
    assert oom.startswith("the device ran out of memory building the engine")
    plugin = explain_llm_build((FIXTURES / "llm_build-no-plugin.log").read_text())
    assert "EDGELLM_PLUGIN_PATH" in plugin
    ok = parse_llm_build_log((FIXTURES / "llm_build-ok.log").read_text())
    assert ok == {"tensorrt": "10.3.0", "log_lines": {"INFO": 4}}
    assert explain_llm_build("[09:00:00.000] [ERROR] [x.cpp:1:f] bad shape\n") == "bad shape"


def test_device_probe_and_version_lock() -> None:
    probe = parse_probe(
        "llm_build=/opt/TensorRT-Edge-LLM/build/examples/llm/llm_build\n"
        "llm_inference=/opt/TensorRT-Edge-LLM/build/examples/llm/llm_inference\n"
        "llm_bench=/opt/TensorRT-Edge-LLM/build/examples/llm/llm_bench\n"
        "home=/opt/TensorRT-Edge-LLM\nedgellm_version=0.11.0\n"
        "plugin=/opt/TensorRT-Edge-LLM/build/libNvInfer_edgellm_plugin.so\nplugin_readable=yes\n"
    )
    assert device_problems("0.11.0", probe, "orin", "HINT") == []
    older = parse_probe(
        "\n".join(
            line.replace("0.11.0", "0.10.1")
            for line in [
                f"{tool}=/x/{tool}" for tool in ("llm_build", "llm_inference", "llm_bench")
            ]
            + ["edgellm_version=0.11.0", "plugin=/x/p.so"]
        )
    )
    problems = device_problems("0.11.0", older, "orin", "HINT")
    assert any("plugin library is not there (/x/p.so)" in p for p in problems)
    assert any(
        "the export is Edge-LLM 0.11.0 but device orin has Edge-LLM 0.10.1" in p for p in problems
    )
    bare = device_problems("0.11.0", parse_probe(""), "orin", "build it (HINT)")
    assert bare == [
        "device orin has no Edge-LLM llm_build, llm_inference, llm_bench; build it (HINT)"
    ]


def test_build_memory_and_llm_build_job(registry: TargetRegistry, tmp_path: Path) -> None:
    plan = _plan(registry, "fp16", target="jetson-orin-nano-8gb")
    facts = parse_facts("nano", "arch=aarch64\nroot=/data\nmem_available_kb=100000\n")
    assert "needs about" in str(build_memory_problem(plan, facts))
    roomy = parse_facts("nano", "arch=aarch64\nroot=/data\nmem_available_kb=6000000\n")
    assert build_memory_problem(plan, roomy) is None
    job = llm_build_job(plan, tmp_path, "/opt/llm_build", "/opt/p.so", "HINT")
    assert not job.fetch_outputs and job.env == {"EDGELLM_PLUGIN_PATH": "/opt/p.so"}
    assert place_argv(job.argv, {"onnx": "/r/onnx"}, "/r/out") == [
        "/opt/llm_build",
        "--onnxDir",
        "/r/onnx/llm",
        "--engineDir",
        "/r/out",
        "--maxBatchSize",
        "4",
        "--maxInputLen",
        "1024",
        "--maxKVCacheCapacity",
        "2048",
    ]


def test_toolenv_key_and_record(tmp_path: Path, monkeypatch) -> None:
    spec = ToolEnvSpec("edgellm", "0.11.0", ("a==1", "b==2"))
    assert spec.key == ToolEnvSpec("edgellm", "0.11.0", ("b==2", "a==1")).key
    assert spec.key != ToolEnvSpec("edgellm", "0.11.0", ("a==1", "b==3")).key
    folder = tmp_path / spec.folder_name
    folder.mkdir()
    assert read_toolenv(spec, folder) is None  # no record: an interrupted creation
    (folder / "edgepack-toolenv.json").write_text(json.dumps({"key": "other"}))
    assert read_toolenv(spec, folder) is None
    (folder / "edgepack-toolenv.json").write_text(json.dumps({"key": spec.key, "name": "x"}))
    assert read_toolenv(spec, folder) is not None
    monkeypatch.setenv("PIP_FIND_LINKS", "/opt/wheels /srv/more")
    monkeypatch.delenv("UV_FIND_LINKS", raising=False)
    assert _index_arguments() == ["--find-links", "/opt/wheels", "--find-links", "/srv/more"]
    monkeypatch.setenv("UV_FIND_LINKS", "/mine")
    assert "--find-links" not in _index_arguments()


def test_doctor_rows_name_what_is_missing(registry: TargetRegistry) -> None:
    from edgepack.backends.edgellm.device import doctor_rows
    from edgepack.remote.facts import DeviceFacts

    orin = registry.get("jetson-agx-orin-64gb")
    facts = DeviceFacts(
        host="jetson", root="/opt/edgepack", free_bytes=1, arch="aarch64",
        tensorrt="10.13.3.9-1+cuda13.0", cuda="12.6.68",
    )  # fmt: skip
    rows = {
        row.component: row
        for row in doctor_rows(parse_probe("llm_build=/x/llm_build\n"), facts, orin)
    }
    assert rows["llm_build"].found and rows["llm_build"].fix == ""
    assert (
        not rows["llm_inference"].found
        and "-DEMBEDDED_TARGET=jetson-orin" in rows["llm_inference"].fix
    )
    assert "Edge-LLM 0.11.0" in rows["Edge-LLM release"].fix
    assert "EDGELLM_PLUGIN_PATH" in rows["libNvInfer_edgellm_plugin.so (EDGELLM_PLUGIN_PATH)"].fix
    assert rows["CUDA"].found and not rows["TensorRT"].found
    assert "needs TensorRT 10.3: flash JetPack 6.2" in rows["TensorRT"].fix
    assert not rows["JetPack (L4T)"].found and "L4T) 36.4" in rows["JetPack (L4T)"].fix
    unknown = {row.component: row for row in doctor_rows(parse_probe(""), facts, None)}
    assert unknown["TensorRT"].found and "-DEMBEDDED_TARGET=auto" in unknown["llm_bench"].fix


def test_only_device_built_backends_take_host(registry: TargetRegistry) -> None:
    from edgepack.backends import BACKENDS
    from edgepack.errors import BadInputError

    cpu = make_plan(
        PlanRequest(
            target=registry.get("host-x86_64-cpu"),
            model=load_card("smollm2-135m-instruct"),
            precision="int4",
        )
    )
    with pytest.raises(BadInputError, match="builds it here"):
        BACKENDS["ort"].device_engine_stage(cpu, "jetson")
    stage = BACKENDS["edgellm"].device_engine_stage(_plan(registry, "int8_sq"), "jetson")
    assert (stage.name, stage.inputs, stage.config["device"]) == ("engine", ("export",), "jetson")
    assert stage.config["limits"]["max_kv_cache_capacity"] == 2048


def test_host_is_the_ssh_builder(registry: TargetRegistry) -> None:
    """`build --host D` and `--builder ssh:D` are one builder: the same plan, the same stage."""
    from edgepack.builders.choice import engine_host, resolve_builder
    from edgepack.errors import BadInputError
    from edgepack.pipeline import plan_stages

    assert resolve_builder(None, "me@jetson:/srv/ep") == resolve_builder(
        "ssh:me@jetson:/srv/ep", None
    )
    assert resolve_builder("ssh:jetson", "jetson") == "ssh:jetson"
    with pytest.raises(BadInputError, match="name different builders"):
        resolve_builder("ssh:other", "jetson")
    plans = [
        _plan(registry, "int8_sq", builder=resolve_builder(builder, host))
        for builder, host in (("ssh:jetson", None), (None, "jetson"))
    ]
    assert plans[0].builder == plans[1].builder == "ssh:jetson" and plans[0].valid
    stages = [plan_stages(plan, engine_host=engine_host(plan.builder))[-1] for plan in plans]
    assert stages[0].name == stages[1].name == "engine"
    assert stages[0].config == stages[1].config and stages[0].config["device"] == "jetson"
    local = _plan(registry, "int8_sq", builder="local")
    assert not local.valid and any("built on the device itself" in p for p in local.problems)


def test_runtime_ships_as_sources_for_the_device(registry: TargetRegistry, tmp_path: Path) -> None:
    from edgepack.backends.base import StageContext
    from edgepack.backends.edgellm.runtime import configure_arguments, explain_compile
    from edgepack.cli.build import runtime_choice
    from edgepack.errors import BadInputError
    from edgepack.runtime.spec import RuntimeBuild, default_mode

    plan = _plan(registry, "int8_sq")
    assert default_mode(plan.target, "edgellm") == "device"
    with pytest.raises(BadInputError, match="compiled on the device at deploy"):
        runtime_choice("cross", plan, tmp_path)
    ort = _plan(registry, "int4", backend="ort")
    with pytest.raises(BadInputError, match="the ort runtime is compiled here"):
        runtime_choice("device", ort, tmp_path)
    stage = edgellm_backend.EDGELLM.runtime_stage(plan, RuntimeBuild("device"))
    stage.run(StageContext(plan, {}, tmp_path, lambda line: None))
    toolchain = (tmp_path / "src" / "toolchain.cmake").read_text()
    assert "set(EMBEDDED_TARGET jetson-orin" in toolchain and "aarch64-linux-gnu-g++" in toolchain
    info = json.loads((tmp_path / "build-info.json").read_text())
    assert (info["mode"], info["embedded_target"]) == ("device", "jetson-orin")
    assert configure_arguments("/r/runtime/src", "/opt/E")[0] == (
        "-DCMAKE_TOOLCHAIN_FILE=/r/runtime/src/toolchain.cmake"
    )
    log = "-- x\nCMake Error at CMakeLists.txt:60 (message):\n  Edge-LLM built for X\nCall Stack\n"
    assert explain_compile(log) == "Edge-LLM built for X"
    assert explain_compile("a\nmain.cpp:3:1: error: nope\nb\n") == "main.cpp:3:1: error: nope"

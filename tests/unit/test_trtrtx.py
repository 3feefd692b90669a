"""The trtrtx backend without building anything: plan rules, stage configs, the decode loop, and
the plain refusal where no GPU can run its engines."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest

from edgepack.backends import BACKENDS
from edgepack.backends.trtrtx import TRTRTX
from edgepack.backends.trtrtx.backend import SUPPORTED_SM
from edgepack.backends.trtrtx.decode import DecoderLayout, greedy_decode
from edgepack.bench.gpus import Gpu, parse_gpu_list, require_supported_gpu
from edgepack.errors import EdgepackError, ExitCode, ToolMissingError
from edgepack.models import ModelSpec, load_card
from edgepack.pipeline import stage_key
from edgepack.plan import Limits, PlanRequest, block_size_for, make_plan
from edgepack.resources import data_dir

SMOLLM2 = load_card("smollm2-135m-instruct")


@pytest.fixture
def trtrtx_plan(registry):
    def make(target: str, precision: str, model: ModelSpec = SMOLLM2, **options):
        request = PlanRequest(
            target=registry.get(target), model=model, precision=precision, backend="trtrtx",
            **options,
        )  # fmt: skip
        return make_plan(request)

    return make


def _stage(plan, name: str):
    return next(stage for stage in TRTRTX.stages(plan) if stage.name == name)


# --- the plan ------------------------------------------------------------------------------------


def test_the_registry_holds_the_real_backend() -> None:
    assert BACKENDS["trtrtx"] is TRTRTX
    assert TRTRTX.kv_dtypes == ("fp16",)


@pytest.mark.parametrize(
    ("target", "precision"),
    [
        ("ada-sm89", "fp16"),
        ("ada-sm89", "fp8"),
        ("ada-sm89", "int8_wo"),
        ("ada-sm89", "int4"),
        ("rtx-pro-blackwell", "fp16"),
        ("rtx-pro-blackwell", "fp8"),
        ("rtx-pro-blackwell", "int8_wo"),
        ("rtx-pro-blackwell", "int4"),
    ],
)
def test_valid_plans(trtrtx_plan, target: str, precision: str) -> None:
    plan = trtrtx_plan(target, precision)
    assert plan.problems == []
    assert plan.kv_cache_dtype == "fp16"


def test_nvfp4_is_refused_on_ada_for_the_hardware(trtrtx_plan) -> None:
    target, backend = trtrtx_plan("ada-sm89", "nvfp4").problems
    assert "ada-sm89 (SM89) has no FP4 tensor cores" in target
    assert "compute capability >= 10.0" in target
    assert "backend trtrtx cannot build nvfp4; it builds: fp16, fp8, int8_wo, int4" in backend


def test_nvfp4_on_blackwell_is_refused_for_the_quantizer_with_the_fix(trtrtx_plan) -> None:
    (reason,) = trtrtx_plan("rtx-pro-blackwell", "nvfp4").problems  # one line, no generic one
    assert "\n" not in reason
    assert reason.startswith(
        "rtx-pro-blackwell (SM120) runs nvfp4, but trtrtx cannot quantize to it: ModelOpt 0.47's"
    )
    assert "ONNX quantizer, which trtrtx quantizes with, has no NVFP4 mode" in reason
    assert "its torch NVFP4 path calibrates on a CUDA GPU" in reason
    assert reason.endswith("use --precision fp8, int8_wo or int4 with trtrtx on this target")
    with pytest.raises(EdgepackError, match="has no NVFP4 mode"):
        trtrtx_plan("rtx-pro-blackwell", "nvfp4").require_valid()


def test_the_quantizer_reason_is_not_given_where_the_gpu_lacks_fp4(trtrtx_plan) -> None:
    assert not any("ModelOpt" in p for p in trtrtx_plan("ada-sm89", "nvfp4").problems)


def test_int4_block_size_divides_the_hidden_size(trtrtx_plan) -> None:
    plan = trtrtx_plan("ada-sm89", "int4")
    assert block_size_for(SMOLLM2, TRTRTX, "int4") == 64  # 576 = 4.5 × 128
    assert _stage(plan, "quantize").config["block_size"] == 64
    qwen = load_card("qwen3-8b")
    assert block_size_for(qwen, TRTRTX, "int4") == 128


def test_int4_without_a_fitting_block_is_refused_with_the_reason(trtrtx_plan) -> None:
    odd = dataclasses.replace(SMOLLM2, name="odd-model", hidden_size=1000, intermediate_size=2048)
    [problem] = trtrtx_plan("ada-sm89", "int4", model=odd).problems
    assert "int4 quantizes in blocks of 128, 64 or 32 with trtrtx" in problem
    assert "none of which divides odd-model's hidden size 1000" in problem
    assert "intermediate size" not in problem  # 2048 divides fine


def test_int4_weights_count_fp16_scales_per_block(trtrtx_plan) -> None:
    parts = trtrtx_plan("ada-sm89", "int4").memory.weights_by_part
    assert parts["mlp"] == pytest.approx(SMOLLM2.parameters.mlp * (4 + 16 / 64) / 8)
    assert parts["embedding"] == SMOLLM2.parameters.embedding * 2  # kept in fp16


def test_every_target_that_allows_trtrtx_has_a_compute_capability_it_builds(registry) -> None:
    allowing = [t for t in registry.all() if "trtrtx" in t.backends.allowed]
    assert {t.name for t in allowing} >= {"ada-sm89", "rtx-pro-blackwell"}
    assert all(t.gpu is not None and t.gpu.sm in SUPPORTED_SM for t in allowing)


def test_a_target_it_cannot_build_for_is_warned_and_refused(registry) -> None:
    orin = registry.get("jetson-agx-orin-64gb")
    plan = make_plan(PlanRequest(target=orin, model=SMOLLM2, precision="fp16", backend="trtrtx"))
    assert any("TensorRT-RTX builds no engines for SM87" in w for w in plan.warnings)
    with pytest.raises(EdgepackError, match="cannot build an engine for jetson-agx-orin-64gb"):
        TRTRTX.stages(plan)


# --- the stages ----------------------------------------------------------------------------------


def test_stages_export_quantize_engine(trtrtx_plan) -> None:
    stages = TRTRTX.stages(trtrtx_plan("ada-sm89", "fp16"))
    assert [s.name for s in stages] == ["export", "quantize", "engine"]
    assert [s.inputs for s in stages] == [("model",), ("export", "model"), ("quantize", "model")]
    quantize = stages[1].config
    assert quantize["fp16_conversion"]["io"] == "fp16"
    assert quantize["check"]["gate"] is True  # the fp16 network must match transformers


def test_one_export_serves_every_precision_target_and_limit(trtrtx_plan) -> None:
    """The fp32 export is half a gigabyte and minutes of work for the demo model alone."""
    fp16 = trtrtx_plan("ada-sm89", "fp16")
    others = [
        trtrtx_plan("ada-sm89", "int4"),
        trtrtx_plan("dgx-spark", "fp16"),
        trtrtx_plan("ada-sm89", "fp16", limits=Limits(max_batch_size=2)),
    ]
    hashes = {"model": "m", "export": "e", "quantize": "q"}
    for plan in others:
        for name, shared in (("export", True), ("quantize", False), ("engine", False)):
            same = stage_key(fp16, _stage(fp16, name), hashes) == stage_key(
                plan, _stage(plan, name), hashes
            )
            assert same == shared, (name, plan.precision, plan.target.name)


def test_engine_config_follows_the_target_and_the_limits(trtrtx_plan) -> None:
    limits = Limits(max_batch_size=2, max_input_len=512, max_seq_len=1024)
    ada = _stage(trtrtx_plan("ada-sm89", "fp16", limits=limits), "engine").config
    assert ada["compute_capability"] == "SM89"
    assert ada["layout"] == {"layers": 30, "kv_heads": 3, "head_dim": 64}
    assert ada["profiles"]["prefill"] == {
        "batch": [1, 1, 2], "tokens": [1, 128, 512], "past": [0, 0, 0],
    }  # fmt: skip
    assert ada["profiles"]["decode"]["past"] == [1, 256, 1023]
    blackwell = _stage(trtrtx_plan("rtx-pro-blackwell", "fp16"), "engine").config
    assert blackwell["compute_capability"] == "SM120"


def test_fp8_quantizes_matmuls_only_and_records_its_calibration(trtrtx_plan) -> None:
    config = _stage(trtrtx_plan("ada-sm89", "fp8"), "quantize").config
    assert config["quantize_mode"] == "fp8"
    assert config["op_types_to_quantize"] == ["MatMul"]
    assert config["high_precision_dtype"] == "fp32"  # ModelOpt's own fp16 pass is slow
    assert "RMSNorm" in config["fp16_conversion"]["kept_fp32"]
    # Judged with the 8-bit class's artifact limits, not the fp16 tolerance: the stage fails beyond.
    assert config["check"]["gate"] is True
    assert config["check"]["limits"]["class"] == "8bit"
    assert "max_abs_logit_diff" not in config["check"]
    prompts = (data_dir("prompts") / "default.json").read_bytes()
    assert config["calibration"]["sha256"] == hashlib.sha256(prompts).hexdigest()


def test_int8_weight_only_is_modelopts_weight_only_quantizer_at_8_bits(trtrtx_plan) -> None:
    stage = _stage(trtrtx_plan("ada-sm89", "int8_wo"), "quantize")
    config = stage.config
    assert config["quantize_mode"] == "int4"  # ModelOpt's int8 mode would quantize activations
    assert config["weight_bits"] == 8
    assert config["block_size"] == -1  # one scale per output channel
    assert config["calibration_method"] == "rtn_dq"
    assert config["calibration"] is None  # round to nearest reads no data
    assert config["keep_lm_head"] is True
    assert "op_types_to_quantize" not in config
    assert "int8 weight-only" in stage.description


def test_int8_weights_take_one_byte(trtrtx_plan) -> None:
    parts = trtrtx_plan("ada-sm89", "int8_wo").memory.weights_by_part
    assert parts["mlp"] == pytest.approx(SMOLLM2.parameters.mlp * 1.0)
    assert parts["lm_head"] == SMOLLM2.parameters.lm_head * 2  # kept in fp16


def test_norm_statistics_are_found_after_each_pow() -> None:
    helper = pytest.importorskip("onnx.helper")
    from edgepack.backends.trtrtx.worker import norm_statistics_nodes

    chain = [("Pow", ["x", "two"], "p"), ("ReduceMean", ["p"], "m"), ("Add", ["m", "eps"], "a")]
    chain += [("Sqrt", ["a"], "s"), ("Reciprocal", ["s"], "r"), ("Mul", ["x", "r"], "y")]
    chain += [("Add", ["y", "x"], "z")]  # the residual: not a statistic
    nodes = [helper.make_node(op, inputs, [out], name=f"n_{out}") for op, inputs, out in chain]
    graph = helper.make_graph(nodes, "norm", [], [])
    assert norm_statistics_nodes(helper.make_model(graph)) == ["n_p", "n_m", "n_a", "n_s", "n_r"]


# --- the decode loop -----------------------------------------------------------------------------

VOCAB = 16
EOS = 15


class CountingSession:
    """A numeric stand-in for a decoder: the next token is the last one plus one; the cache
    grows by one entry per input token, holding the token id."""

    kv_dtype = np.float32

    def __init__(self, layout: DecoderLayout) -> None:
        self.layout = layout
        self.calls: list[dict[str, np.ndarray]] = []

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.calls.append(feeds)
        ids = feeds["input_ids"]
        logits = np.zeros((*ids.shape, VOCAB), np.float32)
        np.put_along_axis(logits, ((ids + 1) % VOCAB)[..., None], 1.0, axis=-1)
        new = np.broadcast_to(
            ids[:, None, :, None], (ids.shape[0], self.layout.kv_heads, ids.shape[1], 2)
        )
        outputs = {"logits": logits}
        for name in self.layout.kv_names("past_key_values"):
            present = np.concatenate([feeds[name], new.astype(np.float32)], axis=2)
            outputs[name.replace("past_key_values", "present")] = present
        return outputs


def test_greedy_decode_left_pads_grows_the_cache_and_stops_at_eos() -> None:
    layout = DecoderLayout(layers=2, kv_heads=1, head_dim=2)
    session = CountingSession(layout)
    result = greedy_decode(session, layout, [[3, 4, 5], [12]], 5, eos_ids={EOS}, keep_logits=True)
    assert result.tokens == [[6, 7, 8, 9, 10], [13, 14]]
    assert result.stopped_at_eos == [False, True]
    prefill, last = session.calls[0], session.calls[-1]
    assert prefill["input_ids"].tolist() == [[3, 4, 5], [0, 0, 12]]
    assert prefill["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
    assert prefill["position_ids"].tolist() == [[0, 1, 2], [0, 0, 0]]
    assert prefill["past_key_values.1.value"].shape == (2, 1, 0, 2)
    assert last["attention_mask"].shape == (2, 7)
    assert last["position_ids"].tolist() == [[6], [4]]
    assert last["past_key_values.0.key"].shape == (2, 1, 6, 2)
    assert len(result.logits) == 5


def test_profile_shapes_come_from_corners() -> None:
    layout = DecoderLayout(layers=1, kv_heads=3, head_dim=64)
    shapes = layout.input_shapes([(1, 1, 0), (1, 128, 0), (4, 1024, 0)])
    assert shapes["attention_mask"] == ((1, 1), (1, 128), (4, 1024))
    assert shapes["past_key_values.0.key"] == ((1, 3, 0, 64), (1, 3, 0, 64), (4, 3, 0, 64))
    assert layout.input_names()[-1] == "past_key_values.0.value"


def test_layout_from_a_config_without_head_dim() -> None:
    config = {"num_hidden_layers": 4, "num_attention_heads": 8, "hidden_size": 512}
    assert DecoderLayout.of_config(config) == DecoderLayout(4, 8, 64)


# --- no GPU, no numbers --------------------------------------------------------------------------


def test_nvidia_smi_output_is_parsed() -> None:
    text = "NVIDIA RTX 6000 Ada Generation, 8.9\nNVIDIA H100 80GB HBM3, 9.0\n"
    assert parse_gpu_list(text) == [
        Gpu("NVIDIA RTX 6000 Ada Generation", "8.9"),
        Gpu("NVIDIA H100 80GB HBM3", "9.0"),
    ]


def test_no_gpu_is_a_plain_refusal() -> None:
    with pytest.raises(ToolMissingError) as caught:
        require_supported_gpu("SM89", gpus=[])
    assert caught.value.exit_code == ExitCode.TOOL_MISSING
    assert caught.value.message.startswith("no supported GPU:")
    assert "no NVIDIA GPU" in caught.value.message
    assert "no numbers were recorded" in caught.value.message


def test_hopper_is_refused_and_the_matching_gpu_is_taken() -> None:
    hopper = Gpu("NVIDIA H100 80GB HBM3", "9.0")
    with pytest.raises(ToolMissingError, match=r"has NVIDIA H100 80GB HBM3 \(SM90\)"):
        require_supported_gpu("SM89", gpus=[hopper])
    ada = Gpu("NVIDIA RTX 6000 Ada Generation", "8.9")
    assert require_supported_gpu("SM89", gpus=[hopper, ada]) == ada


# --- int8 weight-only: the graph ModelOpt writes -------------------------------------------------


def _tiny_decoder(path) -> dict[str, np.ndarray]:
    """x → MatMul(w_up) → Relu → MatMul(w_down) → + x → MatMul(lm_head) → logits, with an
    activation × activation MatMul (attention-like) beside it: what quantization must tell apart."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)
    weights = {
        "w_up": rng.standard_normal((16, 32)).astype(np.float32),
        "w_down": rng.standard_normal((32, 16)).astype(np.float32) * 0.1,
        "lm_head": rng.standard_normal((16, 8)).astype(np.float32),
    }
    nodes = [
        helper.make_node("MatMul", ["x", "w_up"], ["up"], name="up_proj"),
        helper.make_node("Relu", ["up"], ["act"], name="relu"),
        helper.make_node("MatMul", ["act", "w_down"], ["down"], name="down_proj"),
        helper.make_node("Add", ["down", "x"], ["residual"], name="residual"),
        helper.make_node("MatMul", ["residual", "lm_head"], ["logits"], name="lm_head_proj"),
        helper.make_node("Transpose", ["x"], ["x_t"], name="transpose", perm=[1, 0]),
        helper.make_node("MatMul", ["x", "x_t"], ["scores"], name="scores"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 16])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, [4, 8]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, [4, 4]),
        ],
        [numpy_helper.from_array(value, name) for name, value in weights.items()],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]), str(path))
    return weights


def test_int8_weight_only_graph(trtrtx_plan, tmp_path) -> None:
    """ModelOpt, run as the quantize stage runs it, on a tiny decoder: int8 weights with one
    scale per output channel, a DequantizeLinear into each weight MatMul, lm_head and activations
    untouched, and outputs that still match."""
    pytest.importorskip("modelopt.onnx.quantization")
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper

    from edgepack.backends.trtrtx.worker import _modelopt_quantize

    weights = _tiny_decoder(tmp_path / "model.onnx")
    config = dict(_stage(trtrtx_plan("ada-sm89", "int8_wo"), "quantize").config)
    details = _modelopt_quantize(config, tmp_path / "model.onnx", tmp_path, tmp_path / "q")
    assert details["weights"] == {
        "weight_dtypes": {"INT8": 2},
        "per_output_channel": 2,
        "matmuls_on_quantized_weights": 2,
        "activation_qdq_nodes": 0,
    }
    model = onnx.load(str(tmp_path / "q" / "model.onnx"))
    producers = {out: node for node in model.graph.node for out in node.output}
    initializers = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    assert not any(node.op_type == "QuantizeLinear" for node in model.graph.node)
    matmuls = {node.name: node for node in model.graph.node if node.op_type == "MatMul"}
    for name, weight in (("up_proj", "w_up"), ("down_proj", "w_down")):
        dequantize = producers[matmuls[name].input[1]]
        assert dequantize.op_type == "DequantizeLinear"
        assert [(a.name, a.i) for a in dequantize.attribute] == [("axis", 1)]
        values, scale = initializers[dequantize.input[0]], initializers[dequantize.input[1]]
        assert values.dtype == np.int8
        original = weights[weight]
        assert scale.shape == (original.shape[1],)  # one per output channel
        np.testing.assert_allclose(scale, np.abs(original).max(axis=0) / 127, rtol=1e-6)
        assert np.all(np.abs(values.astype(np.float32) * scale - original) <= scale / 2 + 1e-7)
    assert matmuls["lm_head_proj"].input[1] == "lm_head"  # kept as it was
    assert initializers["lm_head"].dtype == np.float32
    assert list(matmuls["scores"].input) == ["x", "x_t"]  # activations are not quantized

    ort = pytest.importorskip("onnxruntime")
    x = np.random.default_rng(1).standard_normal((4, 16)).astype(np.float32)
    reference, quantized = (
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})
        for path in (tmp_path / "model.onnx", tmp_path / "q" / "model.onnx")
    )
    np.testing.assert_allclose(quantized[1], reference[1])
    assert np.abs(quantized[0] - reference[0]).max() < 0.02 * np.abs(reference[0]).max()


def test_a_graph_that_is_not_int8_weight_only_is_refused(tmp_path) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    from edgepack.backends.trtrtx.worker import require_int8_weight_only
    from edgepack.errors import ToolFailedError

    weight = numpy_helper.from_array(np.ones((4, 2), np.int8), "w_q")
    scale = numpy_helper.from_array(np.ones(2, np.float32), "w_scale")
    x_scale = numpy_helper.from_array(np.array(0.1, np.float32), "x_scale")
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_scale"], ["x_q"]),  # an activation Q/DQ
        helper.make_node("DequantizeLinear", ["x_q", "x_scale"], ["x_dq"]),
        helper.make_node("DequantizeLinear", ["w_q", "w_scale"], ["w"], axis=1),
        helper.make_node("MatMul", ["x_dq", "w"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "w8a8",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        [weight, scale, x_scale],
    )
    onnx.save(helper.make_model(graph), str(tmp_path / "w8a8.onnx"))
    with pytest.raises(ToolFailedError, match="'activation_qdq_nodes': 2"):
        require_int8_weight_only(tmp_path / "w8a8.onnx", 1)

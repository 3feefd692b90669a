"""The planner: every problem at once, memory fit, and the decode roofline."""

from __future__ import annotations

import dataclasses
import json

import pytest

from edgepack.errors import BadInputError, InvalidPlanError
from edgepack.models import ModelSpec, load_card
from edgepack.plan import GB, Limits, PlanRequest, make_plan
from edgepack.targets import BuildSpec

ORIN = "jetson-agx-orin-64gb"

# Qwen2.5-32B's config.json: a model above the 30 B line for a quantized KV cache.
QWEN_32B = ModelSpec.from_config(
    {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "hidden_size": 5120,
        "intermediate_size": 27648,
        "num_hidden_layers": 64,
        "num_attention_heads": 40,
        "num_key_value_heads": 8,
        "vocab_size": 152064,
        "max_position_embeddings": 32768,
    },
    name="qwen2.5-32b",
    source="test",
)


@pytest.fixture
def plan_for(registry):
    def make(target, model, precision, **options):
        spec = model if isinstance(model, ModelSpec) else load_card(model)
        profile = target if not isinstance(target, str) else registry.get(target)
        if (options.get("backend") or profile.backends.default) == "trtllm":
            # a GPU host named for the engine build (not contacted at plan time)
            options.setdefault("builder", "ssh:gpu-box")
        return make_plan(PlanRequest(target=profile, model=spec, precision=precision, **options))

    return make


def _problems_with(plan, *fragments):
    return [p for p in plan.problems if all(f in p for f in fragments)]


# --- a valid plan ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "model", "precision"),
    [
        ("ada-sm89", "qwen2.5-7b-instruct", "fp16"),
        ("ada-sm89", "qwen2.5-7b-instruct", "fp8"),
        ("jetson-thor", "qwen3-8b", "nvfp4"),
        (ORIN, "qwen3-8b", "int4_awq"),
        ("host-x86_64-cpu", "smollm2-135m-instruct", "int4"),
    ],
)
def test_valid_plans_have_no_problems(plan_for, target, model, precision) -> None:
    plan = plan_for(target, model, precision)
    assert plan.problems == []
    assert plan.valid
    plan.require_valid()
    assert plan.memory.fits


def test_backend_and_kv_dtype_default_to_the_targets(plan_for) -> None:
    assert plan_for(ORIN, "qwen3-8b", "int4_awq").backend == "edgellm"
    assert plan_for("ada-sm89", "qwen3-8b", "fp16").backend == "trtllm"
    cpu = plan_for("host-x86_64-cpu", "smollm2-135m-instruct", "int4")
    assert (cpu.backend, cpu.kv_cache_dtype) == ("ort", "fp32")
    assert plan_for("ada-sm89", "qwen3-8b", "fp8").kv_cache_dtype == "fp16"


# --- every problem at once ------------------------------------------------------------------


def test_all_problems_are_collected_at_once(plan_for) -> None:
    plan = plan_for(ORIN, "qwen3-8b", "fp8", backend="trtllm", kv_cache_dtype="fp8")
    assert len(plan.problems) >= 3
    assert _problems_with(plan, "fp8", "SM87")  # precision
    assert _problems_with(plan, "backend trtllm is not available")  # backend
    assert _problems_with(plan, "fp8 KV cache", "supported: fp16, fp32")  # KV dtype
    assert not plan.valid
    with pytest.raises(InvalidPlanError) as caught:
        plan.require_valid()
    assert caught.value.problems == plan.problems


def test_fp8_on_orin_names_sm87_and_the_supported_precisions(plan_for, registry) -> None:
    plan = plan_for(ORIN, "qwen3-8b", "fp8")
    [problem] = _problems_with(plan, "fp8", "SM87")
    assert "FP8 tensor cores" in problem
    assert "supported: " + ", ".join(registry.get(ORIN).precisions.weights) in problem
    assert "fp16, int8_sq, int4_awq" in problem


def test_nvfp4_on_ada_is_refused(plan_for) -> None:
    plan = plan_for("ada-sm89", "qwen3-8b", "nvfp4")
    [problem] = plan.problems
    assert "SM89" in problem and "nvfp4" in problem and "10.0" in problem


def test_gpu_precision_on_a_cpu_target_is_refused(plan_for) -> None:
    plan = plan_for("host-x86_64-cpu", "qwen3-0.6b", "int8_sq", backend="ort")
    assert _problems_with(plan, "has no GPU for int8_sq")
    assert _problems_with(plan, "backend ort cannot build int8_sq")


def test_precision_the_backend_cannot_build(plan_for) -> None:
    # ada-sm89 supports int8_wo, edgellm does not build it
    plan = plan_for("ada-sm89", "qwen3-8b", "int8_wo", backend="edgellm")
    assert plan.problems == [
        "backend edgellm cannot build int8_wo; it builds: fp16, fp8, int8_sq, int4_awq, nvfp4"
    ]


def test_backend_not_allowed_on_target(plan_for) -> None:
    plan = plan_for("ada-sm89", "qwen3-0.6b", "int4", backend="ort", kv_cache_dtype="fp16")
    assert plan.problems == [
        "backend ort is not available for ada-sm89; use --backend trtllm or trtrtx or edgellm"
    ]


def test_kv_dtype_the_target_lacks(plan_for) -> None:
    plan = plan_for(ORIN, "qwen3-8b", "int4_awq", kv_cache_dtype="fp8", allow_kv_quantization=True)
    assert plan.problems == [
        f"{ORIN} (SM87) does not support a fp8 KV cache; supported: fp16, fp32"
    ]


def test_kv_dtype_the_backend_lacks(plan_for) -> None:
    # ada-sm89 has bf16 KV caches; TensorRT for RTX only fp16
    plan = plan_for("ada-sm89", "qwen3-8b", "fp16", backend="trtrtx", kv_cache_dtype="bf16")
    assert plan.problems == ["backend trtrtx has no bf16 KV cache; it offers: fp16"]


@pytest.mark.parametrize("kv_dtype", ["fp8", "int8"])
def test_quantized_kv_on_a_small_model_needs_permission(plan_for, kv_dtype) -> None:
    refused = plan_for("ada-sm89", "qwen2.5-7b-instruct", "fp8", kv_cache_dtype=kv_dtype)
    [problem] = refused.problems
    assert f"{kv_dtype} KV cache on a 7.6 B-parameter model" in problem
    assert "--allow-kv-quantization" in problem
    allowed = plan_for(
        "ada-sm89",
        "qwen2.5-7b-instruct",
        "fp8",
        kv_cache_dtype=kv_dtype,
        allow_kv_quantization=True,
    )
    assert allowed.valid
    assert any(f"{kv_dtype} KV cache" in w and "strict" in w for w in allowed.warnings)


def test_quantized_kv_on_a_large_model_is_fine(plan_for) -> None:
    assert QWEN_32B.parameters.total > 30e9
    plan = plan_for("ada-sm89", QWEN_32B, "fp8", kv_cache_dtype="fp8")
    assert plan.valid, plan.problems
    assert not any("KV cache" in w for w in plan.warnings)


def test_memory_that_does_not_fit_names_the_sizes(plan_for) -> None:
    plan = plan_for("jetson-orin-nano-8gb", "llama-3.1-8b-instruct", "fp16")
    assert not plan.memory.fits
    [problem] = _problems_with(plan, "gives the LLM")
    assert f"needs {plan.memory.total_bytes / GB:.1f} GB" in problem
    assert f"weights {plan.memory.weight_bytes / GB:.1f}" in problem
    assert f"{plan.memory.budget_bytes / GB:.1f} GB (60% of 8 GB)" in problem


def test_memory_budget_is_the_llm_share_of_the_device(plan_for) -> None:
    plan = plan_for("jetson-orin-nano-8gb", "qwen3-0.6b", "fp16")
    assert plan.memory.budget_bytes == pytest.approx(8e9 * 0.6)
    assert plan.memory.fits and plan.valid


def test_build_ram_on_the_device(plan_for, registry) -> None:
    ada = registry.get("ada-sm89")
    on_host = plan_for(ada, "llama-3.1-8b-instruct", "fp16")
    assert on_host.memory.build_host_ram_bytes > 48 * GB  # but the host builds: no problem
    assert on_host.valid, on_host.problems
    on_device = ada.model_copy(update={"build": BuildSpec(engine_location="device")})
    plan = plan_for(on_device, "llama-3.1-8b-instruct", "fp16")
    [problem] = plan.problems
    assert "building the engine on ada-sm89 needs about" in problem
    assert f"{plan.memory.build_host_ram_bytes / GB:.1f} GB" in problem
    assert "the device has 48 GB" in problem


def test_int4_awq_block_size_must_divide_the_hidden_size(plan_for) -> None:
    plan = plan_for("ada-sm89", "smollm2-135m-instruct", "int4_awq")
    [problem] = plan.problems
    assert "blocks of 128" in problem
    assert "hidden size 576" in problem
    assert "[16, 32, 64]" in problem
    assert not _block_problems(plan_for("ada-sm89", "qwen3-8b", "int4_awq"))


def _block_problems(plan):
    return _problems_with(plan, "quantizes in blocks")


@pytest.mark.parametrize(
    ("limits", "fragment"),
    [
        (Limits(max_input_len=2048, max_seq_len=2048), "leaves no room to generate"),
        (Limits(max_input_len=4096, max_seq_len=2048), "leaves no room to generate"),
        (Limits(max_seq_len=65536), "exceeds qwen3-8b's context of 40960 tokens"),
        (Limits(max_batch_size=0), "--max-batch-size must be at least 1"),
    ],
)
def test_limit_problems(plan_for, limits, fragment) -> None:
    plan = plan_for("jetson-thor", "qwen3-8b", "fp16", limits=limits)
    assert _problems_with(plan, fragment)


def test_limits_at_the_model_context_are_fine(plan_for) -> None:
    limits = Limits(max_batch_size=1, max_input_len=1024, max_seq_len=40960)
    assert plan_for("jetson-thor", "qwen3-8b", "fp16", limits=limits).valid


@pytest.mark.parametrize(
    ("options", "suggestion"),
    [
        ({"precision": "fp9"}, '"fp8"'),
        ({"precision": "fp16", "backend": "trt-llm"}, '"trtllm"'),
        ({"precision": "fp16", "kv_cache_dtype": "fp61"}, '"fp16"'),
    ],
)
def test_unknown_names_are_bad_input(registry, options, suggestion) -> None:
    request = PlanRequest(target=registry.get("ada-sm89"), model=load_card("qwen3-8b"), **options)
    with pytest.raises(BadInputError) as caught:
        make_plan(request)
    assert f"did you mean {suggestion}" in caught.value.message
    assert caught.value.hint


# --- sizes and the roofline (REFERENCE.md §1 and §3) -----------------------------------------


@pytest.mark.parametrize(
    ("precision", "measured_gb", "measured_tok_s"),
    [("fp16", 15.0, 153.7), ("fp8", 8.2, 251.2)],
)
def test_the_original_study(plan_for, precision, measured_gb, measured_tok_s) -> None:
    """Qwen2.5-7B-Instruct on the RTX 6000 Ada: engine sizes and batch-3 speeds measured."""
    plan = plan_for("ada-sm89", "qwen2.5-7b-instruct", precision)
    assert plan.valid, plan.problems
    assert plan.memory.weight_bytes == pytest.approx(measured_gb * GB, rel=0.10)
    batch3 = [p for p in plan.roofline if p.batch == 3]
    assert batch3
    # The roofline is a ceiling: the measured speed must lie below it.
    assert all(point.tokens_per_s > measured_tok_s for point in batch3)


def test_roofline_by_hand_untied_fp16(plan_for) -> None:
    spec = load_card("qwen2.5-7b-instruct")
    plan = plan_for("ada-sm89", spec, "fp16", limits=Limits(3, 1024, 2048))
    counts = spec.parameters
    read = (counts.total - counts.embedding) * 2  # every weight but the embedding table, FP16
    kv_per_token = 28 * 2 * 4 * 128 * 2
    assert plan.weight_bytes_read_per_step == pytest.approx(read)
    assert plan.memory.kv_bytes_per_token == kv_per_token
    expected = 3 * 960e9 / (read + 3 * 2048 * kv_per_token)
    [point] = [p for p in plan.roofline if (p.batch, p.context_tokens) == (3, 2048)]
    assert point.tokens_per_s == pytest.approx(expected, rel=1e-9)
    assert {(p.batch, p.context_tokens) for p in plan.roofline} == {
        (1, 1024),
        (1, 2048),
        (3, 1024),
        (3, 2048),
    }


def test_tied_embedding_is_read_as_the_lm_head(plan_for) -> None:
    spec = load_card("smollm2-135m-instruct")
    plan = plan_for("host-x86_64-cpu", spec, "fp32")
    assert plan.weight_bytes_read_per_step == pytest.approx(spec.parameters.total * 4)
    untied = dataclasses.replace(load_card("qwen3-0.6b"), tie_word_embeddings=False)
    untied_plan = plan_for("host-x86_64-cpu", untied, "fp32")
    counts = untied.parameters
    assert untied_plan.weight_bytes_read_per_step == pytest.approx(
        (counts.total - counts.embedding) * 4
    )


def test_kv_bytes_per_token_follow_the_kv_dtype(plan_for) -> None:
    fp16 = plan_for("jetson-thor", "qwen3-8b", "fp16")
    assert fp16.memory.kv_bytes_per_token == 144 * 1024
    assert fp16.memory.kv_cache_bytes == 4 * 2048 * 144 * 1024
    fp8 = plan_for("jetson-thor", "qwen3-8b", "fp16", kv_cache_dtype="fp8")
    assert fp8.memory.kv_bytes_per_token == 72 * 1024


def test_quantized_weights_keep_embedding_and_lm_head_in_fp16(plan_for) -> None:
    spec = load_card("qwen3-8b")
    parts = plan_for("jetson-thor", spec, "fp8").memory.weights_by_part
    counts = spec.parameters
    assert parts["embedding"] == counts.embedding * 2
    assert parts["lm_head"] == counts.lm_head * 2
    assert parts["mlp"] == counts.mlp * 1


def test_summary_is_json_with_what_a_user_needs(plan_for) -> None:
    plan = plan_for(ORIN, "qwen3-8b", "fp8")
    summary = json.loads(json.dumps(plan.summary()))
    assert summary["valid"] is False
    assert summary["problems"] == plan.problems
    assert (summary["target"], summary["sm"], summary["model"]) == (ORIN, "SM87", "qwen3-8b")
    assert (summary["precision"], summary["backend"], summary["kv_cache_dtype"]) == (
        "fp8",
        "edgellm",
        "fp16",
    )
    assert summary["limits"] == {"max_batch_size": 4, "max_input_len": 1024, "max_seq_len": 2048}
    memory = summary["memory"]
    for key in ("weight_bytes", "kv_cache_bytes", "total_bytes", "budget_bytes", "fits"):
        assert key in memory
    assert memory["weight_bytes"] == pytest.approx(plan.memory.weight_bytes)
    assert summary["roofline"]["bandwidth_gbps"] == 204.8
    assert summary["roofline"]["points"][0].keys() == {"batch", "context_tokens", "tokens_per_s"}
    assert "warnings" in summary and "target_hash" in summary

"""The command lines of the TensorRT-LLM tools, per precision (REFERENCE.md §5).

``trtllm-build``: paged KV cache, paged context FMHA and multiple optimization profiles always;
the GEMM plugin on (``auto``) for every precision but FP8, where it is off (FP8 GEMMs come from
TensorRT's strongly typed network, the plugin would run them in 16 bits); FP8 context FMHA only
with an FP8 KV cache; the limits from the plan. ``trtllm-bench throughput`` on the engine with
the TensorRT backend (its default is PyTorch), the plan's batch as concurrency.
"""

from __future__ import annotations

from edgepack.builders.job import Arg, InputPath, OutputPath

GEMM_PLUGIN_OFF = ("fp8",)


def trtllm_build_argv(
    precision: str, kv_cache_dtype: str, max_batch: int, max_input: int, max_seq: int
) -> tuple[Arg, ...]:
    gemm = "disable" if precision in GEMM_PLUGIN_OFF else "auto"
    argv: list[Arg] = [
        "trtllm-build",
        "--checkpoint_dir", InputPath("checkpoint"),
        "--output_dir", OutputPath(),
        "--max_batch_size", str(max_batch),
        "--max_input_len", str(max_input),
        "--max_seq_len", str(max_seq),
        "--gemm_plugin", gemm,
        "--kv_cache_type", "paged",
        "--use_paged_context_fmha", "enable",
        "--multiple_profiles", "enable",
        "--workers", "1",
        "--monitor_memory",
    ]  # fmt: skip
    if kv_cache_dtype == "fp8":
        argv += ["--use_fp8_context_fmha", "enable"]
    return tuple(argv)


def trtllm_bench_argv(
    model: str, engine_dir: str, tokenizer_dir: str, dataset: str, report: str, batch: int
) -> list[str]:
    return [
        "trtllm-bench", "--model", model, "--model_path", tokenizer_dir,
        "throughput", "--backend", "tensorrt", "--engine_dir", engine_dir,
        "--dataset", dataset, "--max_batch_size", str(batch), "--concurrency", str(batch),
        "--warmup", "1", "--report_json", report,
    ]  # fmt: skip

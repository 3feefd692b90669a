"""The trtllm checkpoint stage, run in a child process:
``python -m edgepack.backends.trtllm.worker JOB.json``.

fp16/bf16: the Hugging Face weights exported as a TensorRT-LLM checkpoint. fp8, int8_sq,
int4_awq, int8_wo, int4_wo (and nvfp4 where CUDA is): ModelOpt's ``mtq.quantize`` with the
precision's config (fake quantization on a CPU), calibrated on the prompt set or the user's
calibration file, then ``export_tensorrt_llm_checkpoint``. The checkpoint's config is completed
where ModelOpt 0.47 leaves TensorRT-LLM to guess (the RoPE base of a transformers-5 config), its
KV-cache dtype is made explicit, and the checkpoint check runs before the stage is accepted.
"""

from __future__ import annotations

import copy
import json
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgepack.backends.child import TOKENIZER_FILES, peak_rss_bytes, worker_main
from edgepack.backends.trtllm.check import CHECK_PROMPT, check_checkpoint
from edgepack.errors import ToolFailedError
from edgepack.quality.prompts import chat_ids

CHECKPOINT_RECORD = "checkpoint.json"
TOKENIZER_DIR = "tokenizer"
KV_QUANTIZERS = "*[kv]_bmm_quantizer"
TOKENS_FILE = "prompts.tokens.json"
DTYPES = {"float16": "float16", "bfloat16": "bfloat16"}


def checkpoint(config: dict[str, Any], inputs: dict[str, Path], out: Path) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = inputs["model"]
    device = config["device"]
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model: Any = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    model.eval().to(device)
    record: dict[str, Any] = {"device": device}
    quant_cfg = modelopt_config(config)
    if quant_cfg is not None:
        record |= _quantize(model, quant_cfg, config, tokenizer)
    started = time.perf_counter()
    _export(model, config, out)
    record["export_s"] = time.perf_counter() - started
    del model
    record["config_fixes"] = complete_config(out / "config.json", model_dir, config)
    _write_prompt_tokens(tokenizer, out / TOKENS_FILE)
    _copy_tokenizer(model_dir, out / TOKENIZER_DIR)
    record["checkpoint_bytes"] = sum(f.stat().st_size for f in out.glob("rank*.safetensors"))
    source: Any = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    source.eval()
    started = time.perf_counter()
    prompt = chat_ids(tokenizer, CHECK_PROMPT)
    record["check"] = check_checkpoint(out, source, prompt, config["precision"])
    record["check_s"] = time.perf_counter() - started
    return record


def modelopt_config(config: dict[str, Any]) -> dict[str, Any] | None:
    """``mtq.<name>`` for the precision, its weight block size set to the plan's group size,
    with the KV-cache quantizers the plan asks for (none unless asked); None: no quantization."""
    import modelopt.torch.quantization as mtq

    name, kv = config["modelopt_config"], config["kv_cache_dtype"]
    if name is None and kv not in ("fp8", "int8"):
        return None
    if name is None:
        quant_cfg: dict[str, Any] = {"quant_cfg": [{"quantizer_name": "*", "enable": False}],
                                     "algorithm": "max"}  # fmt: skip
    else:
        quant_cfg = copy.deepcopy(getattr(mtq, name))
    entries: list[dict[str, Any]] = quant_cfg["quant_cfg"]
    group = config.get("group_size")
    for entry in entries:
        block = (entry.get("cfg") or {}).get("block_sizes")
        if entry.get("quantizer_name") == "*weight_quantizer" and block and group:
            block[-1] = group
    if kv == "fp8":
        entries += copy.deepcopy(mtq.FP8_KV_CFG["quant_cfg"])
    elif kv == "int8":
        entries.append({"quantizer_name": KV_QUANTIZERS, "cfg": {"num_bits": 8, "axis": None}})
    return quant_cfg


def calibration_windows(config: dict[str, Any], tokenizer: Any) -> list[list[int]]:
    """The calibration texts (chat-templated prompts, or the file's lines), packed into one
    token stream and cut into equal windows; the first ``samples`` of them."""
    calibration = config["calibration"]
    path = Path(calibration["path"])
    if calibration["format"] == "prompts":
        data = json.loads(path.read_text(encoding="utf-8"))
        stream = [t for p in data["prompts"] for t in chat_ids(tokenizer, p["text"])]
    else:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        stream = [t for line in lines for t in tokenizer(line)["input_ids"]]
    window = int(calibration["window_tokens"])
    windows = [stream[i : i + window] for i in range(0, len(stream) - window + 1, window)]
    if not windows:
        raise ToolFailedError(f"the calibration set {path} has fewer than {window} tokens")
    return windows[: calibration["samples"]] if calibration.get("samples") else windows


def _quantize(
    model: Any, quant_cfg: dict[str, Any], config: dict[str, Any], tokenizer: Any
) -> dict[str, Any]:
    import modelopt.torch.quantization as mtq
    import torch

    windows = calibration_windows(config, tokenizer)
    device = config["device"]

    def calibrate(target: Any) -> None:
        with torch.no_grad():
            for window in windows:
                target(torch.tensor([window], device=device))

    started = time.perf_counter()
    mtq.quantize(model, quant_cfg, calibrate)
    return {
        "quantize_s": time.perf_counter() - started,
        "calibration_samples": len(windows),
        "modelopt_config": config["modelopt_config"],
    }


def _export(model: Any, config: dict[str, Any], out: Path) -> None:
    import torch
    from modelopt.torch.export import export_tensorrt_llm_checkpoint

    dtype = getattr(torch, DTYPES[config["dtype"]])
    try:
        export_tensorrt_llm_checkpoint(
            model, config["decoder_type"], dtype=dtype, export_dir=out, inference_tensor_parallel=1
        )
    except (ValueError, AssertionError, NotImplementedError) as error:
        raise ToolFailedError(
            f"ModelOpt's export_tensorrt_llm_checkpoint refused: {str(error).splitlines()[0]}",
            hint="pin nvidia-modelopt 0.47 (its export changes between minor versions)",
        ) from error


def complete_config(path: Path, model_dir: Path, config: dict[str, Any]) -> list[str]:
    """What the exported config.json leaves to TensorRT-LLM's defaults although the model says
    otherwise, set from the source config; and the KV-cache dtype, always explicit."""
    checkpoint_config = json.loads(path.read_text(encoding="utf-8"))
    source = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    rope = source.get("rope_parameters") or {}
    theta = rope.get("rope_theta", source.get("rope_theta"))
    fixes = []
    if theta is not None and checkpoint_config.get("rotary_base") != theta:
        checkpoint_config["rotary_base"] = float(theta)
        fixes.append(f"rotary_base {theta} (the export left TensorRT-LLM's default 10000)")
    scaling = source.get("rope_scaling") or (rope if rope.get("rope_type") != "default" else None)
    if scaling and not checkpoint_config.get("rotary_scaling"):
        checkpoint_config["rotary_scaling"] = {
            k: v for k, v in scaling.items() if k != "rope_theta"
        }
        fixes.append(f"rotary_scaling {checkpoint_config['rotary_scaling']}")
    quantization = checkpoint_config.setdefault("quantization", {})
    if quantization.get("quant_algo") != config["quant_algo"]:
        raise ToolFailedError(
            f"ModelOpt exported quant_algo {quantization.get('quant_algo')!r} for "
            f"{config['precision']}; the trtllm backend expects {config['quant_algo']!r}",
            hint="pin nvidia-modelopt 0.47 (its export changes between minor versions)",
        )
    wanted_kv = config["kv_cache_quant_algo"]
    if quantization.get("kv_cache_quant_algo") != wanted_kv:
        raise ToolFailedError(
            f"the exported checkpoint's kv_cache_quant_algo is "
            f"{quantization.get('kv_cache_quant_algo')!r}, the plan's is {wanted_kv!r}",
            hint="ModelOpt quantized the KV cache unasked (or not as asked); pin it",
        )
    quantization["kv_cache_quant_algo"] = wanted_kv
    path.write_text(json.dumps(checkpoint_config, indent=4) + "\n", encoding="utf-8")
    return fixes


def _write_prompt_tokens(tokenizer: Any, path: Path) -> None:
    """The prompt set as the TensorRT-LLM runtime takes it: chat-templated token ids."""
    from edgepack.resources import data_dir

    data = json.loads((data_dir("prompts") / "default.json").read_text(encoding="utf-8"))
    prompts = [
        {"id": p["id"], "input_ids": chat_ids(tokenizer, p["text"])} for p in data["prompts"]
    ]
    path.write_text(json.dumps({"name": data["name"], "prompts": prompts}) + "\n", encoding="utf-8")


def _copy_tokenizer(model_dir: Path, destination: Path) -> None:
    destination.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        if (model_dir / name).is_file():
            shutil.copyfile(model_dir / name, destination / name)


def run_job(job_path: Path) -> dict[str, Any]:
    job = json.loads(job_path.read_text(encoding="utf-8"))
    out = Path(job["output_dir"])
    out.mkdir(parents=True, exist_ok=True)
    inputs = {name: Path(path) for name, path in job["inputs"].items()}
    started = time.perf_counter()
    details = checkpoint(job["config"], inputs, out)
    record = {
        "stage": "checkpoint",
        "wall_s": time.perf_counter() - started,
        "peak_rss_bytes": peak_rss_bytes(),
        **details,
    }
    (out / CHECKPOINT_RECORD).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return record


def _summary(record: dict[str, Any]) -> str:
    check = record["check"]["logits"]
    return (
        f"checkpoint done in {record['wall_s']:.1f} s: max |Δlogit| "
        f"{check['max_abs_logit_diff']:.3f}, top-1 {check['top1_agreement']}/{check['steps']}"
    )


def main(argv: Sequence[str]) -> int:
    return worker_main(argv, "edgepack.backends.trtllm.worker", run_job, _summary)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

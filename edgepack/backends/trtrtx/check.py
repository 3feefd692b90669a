"""The trtrtx stages' network checks: an ONNX network the engine is built from, greedy-decoded
through onnxruntime, against transformers on the same tokens, judged with the artifact limits of
its precision (:mod:`edgepack.quality.artifact`). Runs in the stages' child process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgepack.backends.trtrtx.decode import DecoderLayout, OrtKvSession, greedy_decode
from edgepack.errors import ToolFailedError
from edgepack.quality.artifact import (
    ARTIFACT_LIMITS,
    StepFigure,
    artifact_class,
    judge_artifact,
    logit_figures,
    require_artifact,
)
from edgepack.quality.prompts import chat_ids

ONNX_FILE = "model.onnx"


def check_export(
    onnx_path: Path, model: Any, model_dir: Path, layout: DecoderLayout, check: dict[str, Any]
) -> dict[str, Any]:
    """The exported graph must agree with transformers; raise when it does not."""
    figures = compare_with_transformers(onnx_path, model, model_dir, layout, check)
    hint = "the exporter or this transformers version mishandles the model; report it"
    return judged_record(figures, "the exported ONNX", "fp32", check, hint)


def compare_with_transformers(
    onnx_path: Path, model: Any, model_dir: Path, layout: DecoderLayout, check: dict[str, Any]
) -> list[StepFigure]:
    """Greedy-decode a prompt through onnxruntime and compare every step's logits with
    transformers on the same tokens: the prefill's last position, then each decode step."""
    import torch

    [prompt] = chat_prompt_ids(model_dir, check["prompt"])
    session = OrtKvSession.load(onnx_path)
    generation = greedy_decode(
        session, layout, [prompt], check["decode_steps"], eos_ids=set(), keep_logits=True
    )
    tokens = prompt + generation.tokens[0]
    with torch.no_grad():
        reference = model(torch.tensor([tokens])).logits[0].numpy()
    steps = np.stack([reference[len(prompt) - 1 + step] for step in range(check["decode_steps"])])
    got = np.stack([logits[0] for logits in generation.logits])
    names = ["prefill"] + [f"decode {step}" for step in range(1, check["decode_steps"])]
    return logit_figures(steps, got, names)


def judged_record(
    figures: list[StepFigure], what: str, precision: str, check: dict[str, Any], hint: str
) -> dict[str, Any]:
    """Judge the figures with the precision's artifact limits (``check`` may tighten the
    max |Δlogit|), raise when they fail, and return the stage's record of them."""
    limits = ARTIFACT_LIMITS[artifact_class(precision)]
    if "max_abs_logit_diff" in check:
        own = limits.max_abs_logit_diff_max
        tighter = (
            check["max_abs_logit_diff"] if own is None else min(own, check["max_abs_logit_diff"])
        )
        limits = limits.model_copy(update={"max_abs_logit_diff_max": tighter})
    verdict = judge_artifact(what, precision, figures, limits=limits)
    require_artifact(verdict, hint)
    return {
        "steps": len(figures),
        "max_abs_logit_diff": max(f.max_abs_logit_diff for f in figures),
        "top1_agreement": sum(f.top1_match for f in figures),
        "verdict": verdict.model_dump(mode="json"),
    }


def chat_prompt_ids(model_dir: Path, *texts: str) -> list[list[int]]:
    """Token ids of each text as one user turn in the model's chat template (as the reference
    outputs of the quality gate encode them)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    return [chat_ids(tokenizer, text) for text in texts]


NETWORK_HINTS = {
    "fp16": "the fp16 conversion loses too much; keep more of the network in fp32",
    "quantized": "the quantized network drifted from the source beyond its precision's limits; "
    "see quantize.json's check for the step, and try another block size or calibration",
}


def check_network(config: dict[str, Any], out: Path, model_dir: Path) -> dict[str, Any]:
    """The network the engine is built from, against transformers on the CPU, judged with the
    limits of its precision (edgepack.quality.artifact): the stage fails beyond them."""
    import torch
    from transformers import AutoModelForCausalLM

    check = config["check"]
    model: Any = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    model.eval()
    layout = DecoderLayout.of_config(model.config.to_dict())
    precision = config["precision"]
    try:
        figures = compare_with_transformers(out / ONNX_FILE, model, model_dir, layout, check)
    except Exception as error:  # onnxruntime's own exception types, one per status code
        raise ToolFailedError(
            f"onnxruntime cannot run the {precision} network to check it: "
            f"{str(error).splitlines()[0][:200]}",
            hint="an unchecked network is not built; report this with the quantize log",
        ) from error
    hint = NETWORK_HINTS["fp16" if precision == "fp16" else "quantized"]
    return judged_record(figures, f"the {precision} network", precision, check, hint)

"""Reference outputs of the source model, run in float32 with transformers, computed once.

For a model hash, prompt set and generation length the reference holds the greedy continuation of
every prompt (same chat template, same token ids as the engine sees) and the per-token
log-probabilities of a held-out text. It is cached by those inputs, so it is computed once per
model and prompt set however many engines are compared with it.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from edgepack.cache import content_key
from edgepack.errors import BadInputError, ToolMissingError
from edgepack.quality.prompts import Prompt, PromptSet, chat_ids

REFERENCE_METHOD = "transformers, float32, greedy, batch 1, on the host CPU"
REFERENCE_FORMAT = 2
"""Bump when a Reference gains fields, so older cached references are recomputed."""


class ReferenceOutput(BaseModel):
    id: str
    prompt_token_ids: list[int]
    token_ids: list[int]
    text: str
    script: str | None = None
    """The script an answer to this prompt is written in (the prompt's, or the one it names)."""


class HeldoutScore(BaseModel):
    token_ids: list[int]
    logprobs: list[float]
    """Log-probability of each token after the first."""

    @property
    def mean_nll(self) -> float:
        return -sum(self.logprobs) / len(self.logprobs)


class Reference(BaseModel):
    key: str
    model_hash: str
    prompts_sha256: str
    max_new_tokens: int
    method: str
    versions: dict[str, str]
    outputs: list[ReferenceOutput]
    heldout: HeldoutScore | None
    compute_s: float
    vocab_size: int | None = None
    provenance: str = ""
    """Where the source model's weights come from, in words: part of every result."""


def prompts_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def reference_key(model_hash: str, prompts_hash: str, max_new_tokens: int) -> str:
    return content_key(
        {
            "model": model_hash,
            "prompts": prompts_hash,
            "max_new_tokens": max_new_tokens,
            "method": REFERENCE_METHOD,
            "format": REFERENCE_FORMAT,
        }
    )


def load_or_compute_reference(
    model_dir: Path,
    model_hash: str,
    prompts_path: Path,
    max_new_tokens: int,
    cache_root: Path,
    progress: Callable[[str, int, int], None] = lambda *a: None,
) -> Reference:
    prompts_hash = prompts_sha256(prompts_path)
    key = reference_key(model_hash, prompts_hash, max_new_tokens)
    cached = cache_root / "references" / f"{key}.json"
    if cached.is_file():
        return Reference.model_validate_json(cached.read_text(encoding="utf-8"))
    if not (model_dir / "config.json").is_file():
        raise BadInputError(
            f"the reference needs the source model, which is no longer at {model_dir}",
            hint="rebuild the bundle on this machine, or pass --no-gate to skip the quality gate",
        )
    reference = _compute(model_dir, PromptSet.load(prompts_path), max_new_tokens, progress)
    reference = reference.model_copy(
        update={"key": key, "model_hash": model_hash, "prompts_sha256": prompts_hash}
    )
    cached.parent.mkdir(parents=True, exist_ok=True)
    temporary = cached.with_name(f".{cached.name}.{os.getpid()}.tmp")
    temporary.write_text(reference.model_dump_json(), encoding="utf-8")
    temporary.replace(cached)
    return reference


def _import_transformers() -> tuple[Any, Any]:
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise ToolMissingError(
            f"the quality gate's reference needs {exc.name}",
            hint="pip install 'edgepack[demo]' (torch and transformers), or pass --no-gate",
        ) from exc
    return torch, transformers


def _compute(
    model_dir: Path,
    prompt_set: PromptSet,
    max_new_tokens: int,
    progress: Callable[[str, int, int], None],
) -> Reference:
    torch, transformers = _import_transformers()
    started = time.perf_counter()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(model_dir))
    model = transformers.AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    model.eval()
    outputs = []
    total = len(prompt_set.prompts)
    with torch.inference_mode():
        for index, prompt in enumerate(prompt_set.prompts):
            progress("reference outputs", index, total)
            outputs.append(_greedy(torch, model, tokenizer, prompt, max_new_tokens))
        progress("reference outputs", total, total)
        heldout = _score_heldout(torch, model, tokenizer, prompt_set)
    return Reference(
        key="",
        model_hash="",
        prompts_sha256="",
        max_new_tokens=max_new_tokens,
        method=REFERENCE_METHOD,
        versions={"torch": torch.__version__, "transformers": transformers.__version__},
        outputs=outputs,
        heldout=heldout,
        compute_s=time.perf_counter() - started,
        vocab_size=int(model.config.vocab_size),
        provenance=source_provenance(model_dir),
    )


def source_provenance(model_dir: Path) -> str:
    """What the reference model is: the demo's converted GGUF, or a folder's own dtype."""
    from edgepack.demo import demo_provenance

    demo = demo_provenance(model_dir)
    if demo is not None:
        return demo
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = {}
    dtype = config.get("dtype") or config.get("torch_dtype") or "unknown dtype"
    quantized = config.get("quantization_config")
    kind = f"quantized ({quantized.get('quant_method', '?')})" if quantized else str(dtype)
    return f"the model folder {model_dir.name} as given ({kind} weights), run in float32"


def _greedy(
    torch: Any, model: Any, tokenizer: Any, prompt: Prompt, max_new_tokens: int
) -> ReferenceOutput:
    prompt_ids = chat_ids(tokenizer, prompt.text)
    generated = model.generate(
        torch.tensor([prompt_ids]),
        attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
    )[0, len(prompt_ids) :].tolist()
    eos = tokenizer.eos_token_id
    new_ids = generated[: generated.index(eos)] if eos in generated else generated
    return ReferenceOutput(
        id=prompt.id,
        prompt_token_ids=prompt_ids,
        token_ids=new_ids,
        text=tokenizer.decode(new_ids, skip_special_tokens=True),
        script=prompt.answer_script(),
    )


def _score_heldout(
    torch: Any, model: Any, tokenizer: Any, prompt_set: PromptSet
) -> HeldoutScore | None:
    if prompt_set.heldout is None:
        return None
    encoded = tokenizer(prompt_set.heldout.text, add_special_tokens=False)["input_ids"]
    ids = [int(t) for t in encoded]
    logits = model(torch.tensor([ids])).logits[0, :-1].double()
    logprobs = torch.log_softmax(logits, dim=-1)
    targets = torch.tensor(ids[1:])
    return HeldoutScore(
        token_ids=ids, logprobs=logprobs[torch.arange(len(targets)), targets].tolist()
    )

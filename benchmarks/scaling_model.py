"""Random-initialised models of the demo's architecture (SmolLM2, ``LlamaForCausalLM``) at three
sizes, saved as the Hugging Face folder a user would hand to ``edgepack build --model ./folder``.

Only the shape changes between sizes: every other config field is the demo model's own. The
weights are random (a seeded ``from_config``): timing a build, a deploy or a decode step needs the
bytes, not what they say.

    python -m benchmarks.scaling_model SIZE OUT DEMO_FOLDER

makes one in a process of its own, so that the memory torch took is returned before the build.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

SHAPES: dict[str, dict[str, int]] = {
    "135m": {},  # the demo's own config
    "360m": {"hidden_size": 960, "num_hidden_layers": 32, "num_attention_heads": 15,
             "num_key_value_heads": 5, "intermediate_size": 2560},  # SmolLM2-360M
    "1b": {"hidden_size": 2048, "num_hidden_layers": 16, "num_attention_heads": 32,  # Llama 3.2-1B
           "num_key_value_heads": 8, "intermediate_size": 8192, "vocab_size": 49152},
}  # fmt: skip
"""Each size's shape, over the demo's config."""
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "chat_template.jinja", "generation_config.json")  # fmt: skip


def model_config(base: dict[str, Any], size: str) -> dict[str, Any]:
    """The demo's config with ``size``'s shape; ``head_dim`` follows the new hidden size."""
    shape = SHAPES[size]
    config = {**base, **shape}
    config["head_dim"] = config["hidden_size"] // config["num_attention_heads"]
    config["torch_dtype"] = "float32"
    return config


def parameter_count(config: dict[str, Any]) -> int:
    """Weights of a Llama decoder of this shape: embeddings (once more when the lm_head is not
    tied), per layer the attention and gated MLP projections and two norms, and the final norm."""
    hidden, vocab = config["hidden_size"], config["vocab_size"]
    head_dim = config.get("head_dim") or hidden // config["num_attention_heads"]
    q_out = config["num_attention_heads"] * head_dim
    kv_out = config["num_key_value_heads"] * head_dim
    attention = hidden * (2 * q_out + 2 * kv_out)
    mlp = 3 * hidden * config["intermediate_size"]
    layer = attention + mlp + 2 * hidden
    embeddings = vocab * hidden * (1 if config.get("tie_word_embeddings", False) else 2)
    return int(embeddings + config["num_hidden_layers"] * layer + hidden)


def make_model(size: str, out: Path, demo: Path) -> Path:
    """``size``'s random model saved as fp32 safetensors in ``out``, with the demo's tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    base = json.loads((demo / "config.json").read_text(encoding="utf-8"))
    torch.manual_seed(0)
    config = LlamaConfig.from_dict(model_config(base, size))
    model = LlamaForCausalLM(config)  # fp32: torch's default dtype
    model.save_pretrained(str(out), safe_serialization=True)
    for name in TOKENIZER_FILES:
        if (demo / name).is_file():
            shutil.copyfile(demo / name, out / name)
    return out


if __name__ == "__main__":
    make_model(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]))

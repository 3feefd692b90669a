"""A model folder's chat template rendered the way transformers renders it (jinja2, sandboxed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgepack.errors import BadInputError


def render_chat_template(engine_dir: Path, messages: list[dict[str, str]]) -> str:
    """Render the engine folder's chat template with jinja2, the way transformers does."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    template, special_tokens = _read_chat_template(engine_dir)
    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    environment.globals["raise_exception"] = _raise_template_error
    rendered = environment.from_string(template).render(
        messages=messages, add_generation_prompt=True, **special_tokens
    )
    return str(rendered)


def _read_chat_template(engine_dir: Path) -> tuple[str, dict[str, str]]:
    config_path = engine_dir / "tokenizer_config.json"
    config: dict[str, Any] = json.loads(config_path.read_text()) if config_path.is_file() else {}
    jinja_path = engine_dir / "chat_template.jinja"
    template = jinja_path.read_text() if jinja_path.is_file() else config.get("chat_template")
    if isinstance(template, list):  # several named templates; "default" is the chat one
        template = next((t["template"] for t in template if t.get("name") == "default"), None)
    if not isinstance(template, str):
        raise BadInputError(
            f"{engine_dir} has no chat template (chat_template.jinja or tokenizer_config.json)"
        )
    return template, _special_tokens(config)


def _special_tokens(config: dict[str, Any]) -> dict[str, str]:
    tokens: dict[str, str] = {}
    for key in ("bos_token", "eos_token", "pad_token", "unk_token"):
        value = config.get(key)
        if isinstance(value, dict):
            value = value.get("content")
        if isinstance(value, str):
            tokens[key] = value
    return tokens


def _raise_template_error(message: str) -> None:
    raise BadInputError(f"chat template: {message}")

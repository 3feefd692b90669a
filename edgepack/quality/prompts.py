"""Prompt sets: the questions every engine answers and the held-out text it scores."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from edgepack.errors import BadInputError
from edgepack.quality.absolute import dominant_script
from edgepack.userfiles import first_problem, read_user_text


class Prompt(BaseModel):
    id: str
    text: str
    script: str | None = None
    """The Unicode script its answer must be written in (LATIN, CYRILLIC, CJK, ...); default:
    the prompt's own. Name it where the prompt asks for another language."""

    def answer_script(self) -> str | None:
        return self.script or dominant_script(self.text)


class PromptSet(BaseModel):
    name: str
    prompts: list[Prompt] = Field(min_length=1)
    heldout: Prompt | None = None

    @classmethod
    def load(cls, path: Path) -> PromptSet:
        hint = 'expected {"name": ..., "prompts": [{"id": "...", "text": "..."}]}'
        text = read_user_text(path, "prompt file", hint)
        try:
            return cls.model_validate_json(text)
        except ValueError as exc:  # pydantic's ValidationError is one
            raise BadInputError(
                f"{path} is not a prompt set: {first_problem(exc)}", hint=hint, detail=str(exc)
            ) from exc


def chat_ids(tokenizer: Any, text: str) -> list[int]:
    """Token ids of ``text`` as one user turn in the tokenizer's chat template, ready for the
    answer: how the reference and every engine put a prompt to the model."""
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False
    )
    return [int(t) for t in tokenizer(rendered, add_special_tokens=False)["input_ids"]]

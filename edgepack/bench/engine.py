"""What the bench needs of an engine, whichever backend or baseline provides it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, TypeVar

PromptT = TypeVar("PromptT")


@dataclass
class GenerationSample:
    """One batched generation: its outputs and how long prefill and decode took."""

    prompt_tokens: list[int]
    output_token_ids: list[list[int]]
    texts: list[str]
    ttft_s: float
    decode_s: float
    new_tokens: list[int]
    total_s: float
    # True where the sequence ended with an end-of-sequence token (that token is counted in
    # new_tokens but left out of output_token_ids and texts).
    stopped_at_eos: list[bool] = field(default_factory=list)

    @property
    def batch_size(self) -> int:
        return len(self.prompt_tokens)

    @property
    def decode_tokens_per_s(self) -> float:
        """Tokens produced by decode steps (all but each sequence's first) per second, summed."""
        decoded = sum(max(count - 1, 0) for count in self.new_tokens)
        return decoded / self.decode_s if self.decode_s > 0 else 0.0


class BenchEngine(Protocol[PromptT]):
    """What the bench needs of an engine; the ORT runner and the baseline engines provide it.

    A prompt is whatever the engine consumes: token ids for ORT and llama.cpp, text for a server.
    """

    load_s: float
    supports_batching: bool

    def encode_chat(self, user_message: str) -> PromptT: ...

    def generate(self, prompts: list[PromptT], max_new_tokens: int) -> GenerationSample: ...

    def score_text(self, text: str) -> tuple[list[int], list[float]] | None:
        """Token ids of ``text`` and the log-probability of each after the first, if exposed."""
        ...

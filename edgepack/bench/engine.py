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
    def decoded_tokens(self) -> int:
        """Tokens produced by decode steps: all but each sequence's first (prefill makes that)."""
        return sum(max(count - 1, 0) for count in self.new_tokens)

    @property
    def decode_tokens_per_s(self) -> float:
        """Tokens produced by decode steps per second of decode wall time, all sequences summed."""
        return decode_rate([self])


def decode_rate(samples: list[GenerationSample]) -> float:
    """Decode tok/s over generations: their decode-step tokens over their decode wall time.

    Each sample's decode time runs from its first token to its last sequence's last, so a batch
    whose answers stop at different lengths is charged for the steps its finished sequences sit
    through; the bench's batched runs ignore end-of-sequence for that reason (README: bench).
    """
    seconds = sum(sample.decode_s for sample in samples)
    tokens = sum(sample.decoded_tokens for sample in samples)
    return tokens / seconds if seconds > 0 else 0.0


class BenchEngine(Protocol[PromptT]):
    """What the bench needs of an engine; the ORT runner and the baseline engines provide it.

    A prompt is whatever the engine consumes: token ids for ORT and llama.cpp, text for a server.
    """

    load_s: float
    supports_batching: bool

    def encode_chat(self, user_message: str) -> PromptT: ...

    def generate(
        self, prompts: list[PromptT], max_new_tokens: int, *, ignore_eos: bool = False
    ) -> GenerationSample:
        """Greedy answers; with ``ignore_eos`` each sequence makes exactly ``max_new_tokens``."""
        ...

    def score_text(self, text: str) -> tuple[list[int], list[float]] | None:
        """Token ids of ``text`` and the log-probability of each after the first, if exposed."""
        ...

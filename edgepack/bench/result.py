"""RunResult: everything one benchmark run measured, with the raw samples behind each figure."""

from __future__ import annotations

import datetime
import uuid
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from edgepack.bench.stats import Spread
from edgepack.errors import BadInputError
from edgepack.quality.reference import HeldoutScore
from edgepack.quality.verdict import QualityVerdict
from edgepack.userfiles import first_problem, read_user_text, write_user_text

SCHEMA_VERSION = 1


class LoadTimes(BaseModel):
    first_s: float
    first_page_cache: str
    """What the page cache held for the first load: "dropped" (evicted before it) or "unknown"."""
    warm: Spread
    """Loads with the engine files already in the page cache."""


class PromptOutput(BaseModel):
    id: str
    prompt: str
    text: str
    prompt_tokens: int
    new_tokens: int
    token_ids: list[int]


class BenchSettings(BaseModel):
    runs: int
    warmup: int
    batch_size: int
    max_new_tokens: int
    prompts_file: str
    prompts_sha256: str
    greedy: bool = True
    threads: int | None = None
    """CPU threads the engine computed with (None: not a CPU engine, or set by a server)."""


class Metrics(BaseModel):
    ttft_s: Spread
    prefill_tok_s: Spread
    decode_tok_s: Spread
    """Single stream (batch 1)."""
    decode_tok_s_batched: Spread | None
    """All sequences of a batch of ``batch_size`` together."""
    e2e_s: Spread
    """Wall time of one prompt's whole generation, batch 1."""
    batched_e2e_s: Spread | None
    peak_rss_bytes: int


class RunResult(BaseModel):
    schema_version: int = SCHEMA_VERSION
    run_id: str = Field(default_factory=lambda: uuid.uuid4().hex[:12])
    created_at: str = Field(
        default_factory=lambda: datetime.datetime.now(datetime.timezone.utc).isoformat()
    )
    location: str
    """"local" or the device host name."""
    bundle: dict[str, Any]
    machine: dict[str, Any]
    settings: BenchSettings
    load: LoadTimes
    metrics: Metrics
    outputs: list[PromptOutput]
    raw: dict[str, Any] = {}
    """Per-prompt samples of every run, for anyone who wants to redo the statistics."""
    heldout: HeldoutScore | None = None
    """The engine's log-probabilities of the prompt set's held-out text (perplexity check)."""
    quality: QualityVerdict | None = None
    gate_enforced: bool = True
    """False when the run was made with --no-gate (printed in every report)."""
    telemetry: dict[str, Any] | None = None

    def save(self, path: Path) -> None:
        write_user_text(path, self.model_dump_json(indent=2), "run result")

    @classmethod
    def load_file(cls, path: Path) -> RunResult:
        hint = "a run result is the JSON file `edgepack bench` writes (runs/*.json)"
        text = read_user_text(path, "run result", hint)
        try:
            return cls.model_validate_json(text)
        except ValueError as exc:  # pydantic's ValidationError is one
            raise BadInputError(
                f"{path} is not an edgepack run result: {first_problem(exc)}",
                hint=hint,
                detail=str(exc),
            ) from exc

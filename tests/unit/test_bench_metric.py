"""What bench's decode tok/s count (README, "What bench's tok/s count"), on engines with known
per-step times: the ORT runner over a fake of onnxruntime-genai 0.18's generator, and the bench
loop over a fake engine whose answers stop at different lengths."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from edgepack.backends.ort import runner
from edgepack.backends.ort.runner import OrtEngine
from edgepack.bench.engine import GenerationSample, decode_rate
from edgepack.bench.local import BenchOptions, measure_engine
from edgepack.bench.result import RunResult
from edgepack.resources import data_dir

EOS = 2
PREFILL_S = 0.5


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def perf_counter(self) -> float:
        return self.now


class FakeGenerator:
    """onnxruntime-genai 0.18 as the runner's docstring describes it: prefill in append_tokens,
    the first generate_next_token only picks, every later one runs a decode step (timed by the
    clock); the EOS that ends a sequence is not stored, a finished row is filled with padding."""

    def __init__(self, params: Any, answers: list[list[int]], step_s: list[float], clock: Clock):
        self.options = params.options
        self.answers, self.step_s, self.clock = answers, step_s, clock
        self.calls = 0

    def append_tokens(self, batch: np.ndarray) -> None:
        self.prompt = batch
        self.clock.now += PREFILL_S

    def _limit(self) -> int:
        return int(self.options["max_length"]) - self.prompt.shape[1]

    def _produced(self, row: int) -> tuple[list[int], bool]:
        """A row's new tokens as stored, and whether an (unstored) EOS ended them."""
        limit, answer = self._limit(), self.answers[row]
        if "min_length" in self.options:
            return (answer + [7] * limit)[:limit], False
        return (answer, True) if len(answer) < limit else (answer[:limit], False)

    def generate_next_token(self) -> None:
        if self.calls > 0:
            self.clock.now += self.step_s[self.calls - 1]
        self.calls += 1

    def is_done(self) -> bool:
        lengths = [
            len(tokens) + eos for tokens, eos in map(self._produced, range(len(self.prompt)))
        ]
        return self.calls >= max(lengths)

    def get_sequence(self, row: int) -> np.ndarray:
        tokens, _ = self._produced(row)
        padding = [EOS] * (self._limit() - len(tokens)) if len(self.prompt) > 1 else []
        return np.asarray([*self.prompt[row].tolist(), *tokens, *padding])


def fake_genai(answers: list[list[int]], step_s: list[float], clock: Clock) -> Any:
    class Params:
        def __init__(self, model: Any) -> None:
            self.options: dict[str, Any] = {}

        def set_search_options(self, **options: Any) -> None:
            self.options = options

    made: list[FakeGenerator] = []

    def generator(model: Any, params: Params) -> FakeGenerator:
        made.append(FakeGenerator(params, answers, step_s, clock))
        return made[-1]

    return SimpleNamespace(GeneratorParams=Params, Generator=generator, made=made)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(runner, "time", fake)
    return fake


def engine_with(
    monkeypatch: pytest.MonkeyPatch, answers: list[list[int]], step_s: list[float], clock: Clock
) -> tuple[OrtEngine, Any]:
    genai = fake_genai(answers, step_s, clock)
    monkeypatch.setattr(runner, "_import_genai", lambda: genai)
    tokenizer = SimpleNamespace(
        eos_token_ids=[EOS], pad_token_id=EOS, decode=lambda ids: " ".join(map(str, ids))
    )
    return OrtEngine(Path("engine"), object(), tokenizer, 0.0), genai


STEPS = [0.010 + 0.001 * index for index in range(40)]
"""Known per-step decode times: each step a millisecond slower than the one before."""


def test_a_batch_1_answer_ending_at_eos_counts_the_eos_step(
    monkeypatch: pytest.MonkeyPatch, clock: Clock
) -> None:
    engine, genai = engine_with(monkeypatch, [[11, 12, 13, 14, 15]], STEPS, clock)
    sample = engine.generate([[1, 2, 3]], max_new_tokens=32)
    assert sample.output_token_ids == [[11, 12, 13, 14, 15]]
    assert sample.stopped_at_eos == [True]
    assert sample.new_tokens == [6]  # five words and the EOS, which the generator did not keep
    assert genai.made[0].calls == 6
    assert sample.ttft_s == pytest.approx(PREFILL_S)
    # Five decode steps made tokens 2..6 (the EOS the fifth); the first came from the prefill.
    assert sample.decode_s == pytest.approx(sum(STEPS[:5]))
    assert sample.decode_tokens_per_s == pytest.approx(5 / sum(STEPS[:5]))


def test_an_answer_cut_at_the_limit_did_not_stop_at_eos(
    monkeypatch: pytest.MonkeyPatch, clock: Clock
) -> None:
    engine, _ = engine_with(monkeypatch, [list(range(20, 60))], STEPS, clock)
    sample = engine.generate([[1, 2, 3]], max_new_tokens=8)
    assert sample.stopped_at_eos == [False]
    assert sample.new_tokens == [8]
    assert sample.decode_tokens_per_s == pytest.approx(7 / sum(STEPS[:7]))


def test_ignoring_eos_gives_every_sequence_of_a_batch_the_full_length(
    monkeypatch: pytest.MonkeyPatch, clock: Clock
) -> None:
    engine, _ = engine_with(monkeypatch, [[11], [12, 13, 14], list(range(20, 50))], STEPS, clock)
    short = engine.generate([[1], [1, 2], [1, 2, 3]], max_new_tokens=10)
    fixed = engine.generate([[1], [1, 2], [1, 2, 3]], max_new_tokens=10, ignore_eos=True)
    assert short.new_tokens == [2, 4, 10]
    assert fixed.new_tokens == [10, 10, 10]
    # Both batches ran nine decode steps (until their longest answer ended); the short answers'
    # rows sat through most of them, which only the fixed-length batch does not waste.
    assert short.decode_s == pytest.approx(sum(STEPS[:9]))
    assert fixed.decode_tokens_per_s == pytest.approx(27 / sum(STEPS[:9]))
    assert short.decode_tokens_per_s == pytest.approx(13 / sum(STEPS[:9]))


class StaticBatchEngine:
    """A bench engine whose answers stop at known lengths and whose batch runs until its longest
    answer ends, each step taking ``step_s`` whatever the batch size (a memory-bound decode)."""

    supports_batching = True
    load_s = 0.0

    def __init__(self, step_s: float) -> None:
        self.step_s = step_s
        self.calls: list[tuple[int, bool]] = []

    def encode_chat(self, user_message: str) -> list[int]:
        return [len(user_message) % 50 + 1] * 4

    def generate(
        self, prompts: list[list[int]], max_new_tokens: int, ignore_eos: bool = False
    ) -> GenerationSample:
        self.calls.append((len(prompts), ignore_eos))
        lengths = [max_new_tokens if ignore_eos else min(p[0], max_new_tokens) for p in prompts]
        return GenerationSample(
            prompt_tokens=[len(p) for p in prompts],
            output_token_ids=[[5] * n for n in lengths],
            texts=["x"] * len(prompts),
            ttft_s=0.1,
            decode_s=(max(lengths) - 1) * self.step_s,
            new_tokens=lengths,
            total_s=0.1 + (max(lengths) - 1) * self.step_s,
        )

    def score_text(self, text: str) -> None:
        return None


def bench(engine: StaticBatchEngine, options: BenchOptions) -> RunResult:
    prompts = data_dir("prompts") / "default.json"
    return measure_engine(lambda: engine, prompts, options, {}, "unknown")


def test_bench_reports_the_engine_s_batched_rate_not_its_answers_spread() -> None:
    engine = StaticBatchEngine(step_s=0.02)
    result = bench(engine, BenchOptions(runs=2, warmup=0, batch_size=3, max_new_tokens=64))
    batched = result.metrics.decode_tok_s_batched
    assert batched is not None
    assert batched.median == pytest.approx(3 / 0.02)  # three tokens a step, one step per 20 ms
    assert result.metrics.decode_tok_s.median == pytest.approx(1 / 0.02)
    assert {ignore for size, ignore in engine.calls if size == 3} == {True}
    assert {ignore for size, ignore in engine.calls if size == 1} == {False}


def test_batch_1_bench_makes_no_batched_runs() -> None:
    engine = StaticBatchEngine(step_s=0.02)
    result = bench(engine, BenchOptions(runs=1, warmup=0, batch_size=1, max_new_tokens=16))
    assert result.metrics.decode_tok_s_batched is None
    assert len(engine.calls) == 12  # the twelve prompts, once each


def test_decode_rate_sums_tokens_and_time_over_generations() -> None:
    def sample(new_tokens: list[int], decode_s: float) -> GenerationSample:
        n = len(new_tokens)
        return GenerationSample([1] * n, [[]] * n, [""] * n, 0.1, decode_s, new_tokens, 1.0)

    # (9 + 4) tokens after the first over 0.5 s, not the mean of the two rates (18 and 8).
    assert decode_rate([sample([10], 0.5), sample([5], 0.5)]) == pytest.approx(13.0)
    assert decode_rate([sample([1, 1], 0.0)]) == 0.0

"""A minimal, measured generation runner on ONNX Runtime GenAI.

It loads an engine folder written by ``onnxruntime_genai.models.builder`` (``genai_config.json``,
``model.onnx``, tokenizer files), applies the model's chat template, runs one batched greedy
generation and times prefill (time to first token) apart from decode.

How onnxruntime-genai (0.18) behaves, which the code below relies on:

- ``Generator.append_tokens`` runs the prefill; the first ``generate_next_token`` only picks the
  token from those logits, and every later call runs one decode step first.
- A batch of unequal prompts is right-padded with the pad token id (what ``Tokenizer.encode_batch``
  does too); left padding gives wrong outputs. Each sequence from ``get_sequence`` holds the padded
  prompt, then its new tokens; a finished sequence is filled with the pad token.
- The end-of-sequence token that ends a sequence is not stored in it (a batch-1 answer of 13
  tokens took 14 ``generate_next_token`` calls, the last one picking the EOS): a sequence shorter
  than ``max_new_tokens`` ended with one, which a decode step produced and the count includes.
- ``get_output("logits")`` after ``append_tokens`` holds the logits of every prompt position.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from edgepack.bench.chat import render_chat_template
from edgepack.bench.engine import GenerationSample
from edgepack.errors import BadInputError, ToolFailedError, ToolMissingError

_INSTALL_HINT = "pip install onnxruntime-genai"


class OrtEngine:
    """An onnxruntime-genai model and tokenizer, loaded from one engine folder."""

    supports_batching = True

    def __init__(self, engine_dir: Path, model: Any, tokenizer: Any, load_s: float) -> None:
        self.engine_dir = engine_dir
        self.load_s = load_s
        self._model = model
        self._tokenizer = tokenizer
        self._eos_ids = {int(token) for token in tokenizer.eos_token_ids}
        self._pad_id = int(tokenizer.pad_token_id)
        self.threads: int | None = None

    @classmethod
    def load(cls, engine_dir: Path, intra_op_threads: int | None = None) -> OrtEngine:
        """Load model and tokenizer from ``engine_dir``; ``load_s`` records how long that took.
        ``intra_op_threads`` is the caller's count unless the engine pins its own (a recipe's)."""
        og = _import_genai()
        if not (engine_dir / "genai_config.json").is_file():
            raise BadInputError(
                f"{engine_dir} is not an onnxruntime-genai engine (no genai_config.json)",
                hint="build one with: python -m onnxruntime_genai.models.builder -i HF_DIR -o OUT",
            )
        threads = pinned_threads(engine_dir) or intra_op_threads
        started = time.perf_counter()
        try:
            config = og.Config(str(engine_dir))
            if threads is not None:
                config.overlay(json.dumps(_threads_overlay(threads)))
            model = og.Model(config)
            tokenizer = og.Tokenizer(model)
        except RuntimeError as error:
            raise ToolFailedError(
                f"onnxruntime-genai could not load {engine_dir}: {error}"
            ) from error
        engine = cls(engine_dir, model, tokenizer, time.perf_counter() - started)
        engine.threads = threads
        return engine

    @property
    def model(self) -> Any:
        """The loaded ``onnxruntime_genai.Model``, for a bare loop beside this runner's."""
        return self._model

    @property
    def pad_token_id(self) -> int:
        """The token a batch's shorter prompts are right-padded with."""
        return self._pad_id

    def __enter__(self) -> OrtEngine:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Release the model's memory now rather than at garbage collection."""
        self._tokenizer = None
        self._model = None

    def encode_chat(self, user_message: str) -> list[int]:
        """Token ids of one user turn in the model's chat template, with the generation prompt."""
        text = self._render_chat([{"role": "user", "content": user_message}])
        return [int(token) for token in self._tokenizer.encode(text)]

    def encode_text(self, text: str) -> list[int]:
        """Token ids of plain text, no template and no special tokens added (for scoring)."""
        return [int(token) for token in self._tokenizer.encode(text)]

    def decode(self, ids: list[int]) -> str:
        import numpy as np

        return str(self._tokenizer.decode(np.asarray(ids, dtype=np.int32)))

    def generate(
        self,
        prompts: list[list[int]],
        max_new_tokens: int,
        greedy: bool = True,
        ignore_eos: bool = False,
    ) -> GenerationSample:
        """Run one batched generation of up to ``max_new_tokens`` per prompt.

        A sequence stops at its end-of-sequence token unless ``ignore_eos`` is set, which forces
        exactly ``max_new_tokens`` per sequence (for throughput runs with a fixed length).
        """
        _check_prompts(prompts, max_new_tokens)
        batch = self._padded_batch(prompts)
        width = batch.shape[1]
        try:
            started = time.perf_counter()
            generator = self._new_generator(
                len(prompts), width + max_new_tokens, greedy, ignore_eos
            )
            generator.append_tokens(batch)
            generator.generate_next_token()
            first_token = time.perf_counter()
            while not generator.is_done():
                generator.generate_next_token()
            finished = time.perf_counter()
        except RuntimeError as error:
            raise ToolFailedError(f"onnxruntime-genai failed while generating: {error}") from error
        sequences = [
            generator.get_sequence(index)[width:].tolist() for index in range(len(prompts))
        ]
        return self._sample(prompts, sequences, max_new_tokens, (started, first_token, finished))

    def score(self, token_ids: list[int]) -> list[float]:
        """Log-probability of each token after the first, given the tokens before it."""
        import numpy as np

        if len(token_ids) < 2:
            raise BadInputError("scoring needs at least two tokens")
        try:
            generator = self._new_generator(1, len(token_ids) + 1, greedy=True, ignore_eos=False)
            generator.append_tokens(np.asarray([token_ids], dtype=np.int32))
            logits = np.asarray(generator.get_output("logits"), dtype=np.float64)[0]
        except RuntimeError as error:
            raise ToolFailedError(f"onnxruntime-genai failed while scoring: {error}") from error
        shifted = logits[:-1] - logits[:-1].max(axis=-1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
        targets = np.asarray(token_ids[1:])
        return [float(value) for value in log_probs[np.arange(len(targets)), targets]]

    def score_text(self, text: str) -> tuple[list[int], list[float]]:
        """Plain text's token ids and each token's log-probability (held-out perplexity)."""
        token_ids = self.encode_text(text)
        return token_ids, self.score(token_ids)

    def _new_generator(self, batch: int, max_length: int, greedy: bool, ignore_eos: bool) -> Any:
        og = _import_genai()
        params = og.GeneratorParams(self._model)
        options: dict[str, Any] = {
            "batch_size": batch,
            "max_length": max_length,
            "do_sample": not greedy,
        }
        if ignore_eos:
            options["min_length"] = max_length
        params.set_search_options(**options)
        return og.Generator(self._model, params)

    def _padded_batch(self, prompts: list[list[int]]) -> Any:
        import numpy as np

        width = max(len(prompt) for prompt in prompts)
        batch = np.full((len(prompts), width), self._pad_id, dtype=np.int32)
        for row, prompt in enumerate(prompts):
            batch[row, : len(prompt)] = prompt
        return batch

    def _sample(
        self,
        prompts: list[list[int]],
        sequences: list[list[int]],
        max_new_tokens: int,
        times: tuple[float, float, float],
    ) -> GenerationSample:
        started, first_token, finished = times
        outputs: list[list[int]] = []
        stopped: list[bool] = []
        for sequence in sequences:
            tokens, hit_eos = self._cut_at_eos(sequence, max_new_tokens)
            outputs.append(tokens)
            stopped.append(hit_eos)
        return GenerationSample(
            prompt_tokens=[len(prompt) for prompt in prompts],
            output_token_ids=outputs,
            texts=[self.decode(tokens) for tokens in outputs],
            ttft_s=first_token - started,
            decode_s=finished - first_token,
            new_tokens=[
                len(tokens) + int(hit) for tokens, hit in zip(outputs, stopped, strict=True)
            ],
            total_s=finished - started,
            stopped_at_eos=stopped,
        )

    def _cut_at_eos(self, sequence: list[int], max_new_tokens: int) -> tuple[list[int], bool]:
        """The answer before its end-of-sequence token, and whether it ended with one."""
        for index, token in enumerate(sequence):
            if token in self._eos_ids:
                return sequence[:index], True
        # Stopped short of the limit without a stored EOS: the generator dropped it (see above).
        return sequence, len(sequence) < max_new_tokens

    def _render_chat(self, messages: list[dict[str, str]]) -> str:
        native = getattr(self._tokenizer, "apply_chat_template", None)
        if native is not None:
            # Raises "Empty chat template" when it finds none; the files may still hold one.
            with contextlib.suppress(RuntimeError):
                return str(native(json.dumps(messages), add_generation_prompt=True))
        return render_chat_template(self.engine_dir, messages)


def _check_prompts(prompts: list[list[int]], max_new_tokens: int) -> None:
    if not prompts or any(not prompt for prompt in prompts):
        raise BadInputError("generation needs at least one prompt, and no prompt may be empty")
    if max_new_tokens < 1:
        raise BadInputError(f"max_new_tokens must be at least 1, got {max_new_tokens}")


def pinned_threads(engine_dir: Path) -> int | None:
    """The intra-op threads the engine's genai_config.json sets (a target recipe's), if any."""
    try:
        config = json.loads((engine_dir / "genai_config.json").read_text(encoding="utf-8"))
        threads = config["model"]["decoder"]["session_options"]["intra_op_num_threads"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return threads if isinstance(threads, int) and not isinstance(threads, bool) else None


def _threads_overlay(threads: int) -> dict[str, Any]:
    options = {"intra_op_num_threads": threads}
    return {"model": {"decoder": {"session_options": options}}}


def _import_genai() -> Any:
    try:
        import onnxruntime_genai
    except ImportError as error:
        raise ToolMissingError(
            f"the onnxruntime-genai runtime is not installed ({error})", hint=_INSTALL_HINT
        ) from None
    return onnxruntime_genai

"""Greedy decoding over a KV-cache decoder: one loop for every session that runs it.

The decoder is the plain ONNX graph the ``trtrtx`` backend exports: inputs ``input_ids``,
``attention_mask``, ``position_ids`` and ``past_key_values.{layer}.{key,value}``; outputs
``logits`` and ``present.{layer}.{key,value}`` (the cache with the new tokens appended). One loop,
:func:`greedy_decode`, drives any :class:`KvSession`: onnxruntime over the exported graph (how the
export is checked against transformers, on any CPU) or the TensorRT-RTX engine on a GPU.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

Feeds = dict[str, np.ndarray]


@dataclass(frozen=True)
class DecoderLayout:
    """The shape of a decoder's KV cache, which names and sizes its inputs and outputs."""

    layers: int
    kv_heads: int
    head_dim: int

    @classmethod
    def of_config(cls, config: Mapping[str, Any]) -> DecoderLayout:
        """From a Hugging Face config.json."""
        heads = int(config["num_attention_heads"])
        head_dim = config.get("head_dim") or int(config["hidden_size"]) // heads
        return cls(
            layers=int(config["num_hidden_layers"]),
            kv_heads=int(config.get("num_key_value_heads") or heads),
            head_dim=int(head_dim),
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DecoderLayout:
        return cls(int(data["layers"]), int(data["kv_heads"]), int(data["head_dim"]))

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    def kv_names(self, prefix: str) -> list[str]:
        return [f"{prefix}.{i}.{kind}" for i in range(self.layers) for kind in ("key", "value")]

    def input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "position_ids", *self.kv_names("past_key_values")]

    def output_names(self) -> list[str]:
        return ["logits", *self.kv_names("present")]

    def past_shape(self, batch: int, past: int) -> tuple[int, int, int, int]:
        return (batch, self.kv_heads, past, self.head_dim)

    def empty_past(self, batch: int, dtype: type[np.floating[Any]]) -> Feeds:
        return {
            n: np.zeros(self.past_shape(batch, 0), dtype) for n in self.kv_names("past_key_values")
        }

    def prefill_feeds(self, prompts: Sequence[list[int]], dtype: type[np.floating[Any]]) -> Feeds:
        """A left-padded batch with an empty cache."""
        width = max(len(prompt) for prompt in prompts)
        ids = np.zeros((len(prompts), width), np.int64)
        mask = np.zeros((len(prompts), width), np.int64)
        for row, prompt in enumerate(prompts):
            ids[row, width - len(prompt) :] = prompt
            mask[row, width - len(prompt) :] = 1
        positions = np.maximum(mask.cumsum(axis=1) - 1, 0)
        return {
            "input_ids": ids,
            "attention_mask": mask,
            "position_ids": positions,
            **self.empty_past(len(prompts), dtype),
        }

    def input_shapes(
        self, corners: Sequence[tuple[int, int, int]]
    ) -> dict[str, tuple[tuple[int, ...], ...]]:
        """min/opt/max shape of every input from (batch, new tokens, past tokens) corners."""
        shapes: dict[str, tuple[tuple[int, ...], ...]] = {
            "input_ids": tuple((b, t) for b, t, _ in corners),
            "position_ids": tuple((b, t) for b, t, _ in corners),
            "attention_mask": tuple((b, p + t) for b, t, p in corners),
        }
        for name in self.kv_names("past_key_values"):
            shapes[name] = tuple(self.past_shape(b, p) for b, _, p in corners)
        return shapes


class KvSession(Protocol):
    @property
    def kv_dtype(self) -> type[np.floating[Any]]: ...

    def run(self, feeds: Feeds) -> Feeds: ...


@dataclass
class Generation:
    """Greedy continuations of a batch: new tokens (up to and without EOS) and timings."""

    tokens: list[list[int]]
    stopped_at_eos: list[bool]
    ttft_s: float
    decode_s: float
    logits: list[np.ndarray] = field(default_factory=list)
    """Each step's last-position logits, [batch, vocab], when asked for."""


def greedy_decode(
    session: KvSession,
    layout: DecoderLayout,
    prompts: Sequence[list[int]],
    max_new_tokens: int,
    eos_ids: set[int],
    keep_logits: bool = False,
) -> Generation:
    """Prefill the left-padded batch, then decode one token per step for every sequence."""
    feeds = layout.prefill_feeds(prompts, session.kv_dtype)
    state = _DecodeState(len(prompts), eos_ids)
    started = time.perf_counter()
    first_token = started
    for step in range(max_new_tokens):
        outputs = session.run(feeds)
        logits = np.asarray(outputs["logits"][:, -1, :], dtype=np.float32)
        if keep_logits:
            state.logits.append(logits)
        state.take(logits.argmax(axis=-1))
        if step == 0:
            first_token = time.perf_counter()
        if state.done:
            break
        feeds = _next_feeds(feeds, outputs, state.last)
    finished = time.perf_counter()
    return Generation(
        state.tokens, state.stopped, first_token - started, finished - first_token, state.logits
    )


@dataclass
class _DecodeState:
    batch: int
    eos_ids: set[int]
    tokens: list[list[int]] = field(init=False)
    stopped: list[bool] = field(init=False)
    last: np.ndarray = field(init=False)
    logits: list[np.ndarray] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.tokens = [[] for _ in range(self.batch)]
        self.stopped = [False] * self.batch
        self.last = np.zeros(self.batch, np.int64)

    def take(self, chosen: np.ndarray) -> None:
        self.last = chosen.astype(np.int64)
        for row, token in enumerate(self.last.tolist()):
            if self.stopped[row]:
                continue
            if token in self.eos_ids:
                self.stopped[row] = True
            else:
                self.tokens[row].append(token)

    @property
    def done(self) -> bool:
        return all(self.stopped)


def _next_feeds(feeds: Feeds, outputs: Feeds, last: np.ndarray) -> Feeds:
    batch = len(last)
    mask = np.concatenate([feeds["attention_mask"], np.ones((batch, 1), np.int64)], axis=1)
    past = {
        name.replace("present", "past_key_values", 1): value
        for name, value in outputs.items()
        if name.startswith("present.")
    }
    return {
        "input_ids": last.reshape(batch, 1),
        "attention_mask": mask,
        "position_ids": feeds["position_ids"][:, -1:] + 1,
        **past,
    }


# --- onnxruntime: the exported graph on any CPU --------------------------------------------------


class OrtKvSession:
    """onnxruntime over the exported ONNX decoder (how the export is checked)."""

    def __init__(self, session: Any) -> None:
        self._session = session
        past = next(i for i in session.get_inputs() if i.name.startswith("past_key_values."))
        self._kv_dtype: type[np.floating[Any]] = (
            np.float16 if "float16" in past.type else np.float32
        )
        self._names = [output.name for output in session.get_outputs()]

    @classmethod
    def load(cls, onnx_path: Path) -> OrtKvSession:
        """Without buffer reuse: onnxruntime 1.32's CPU provider otherwise fails fp16 graphs
        ('Shape mismatch attempting to re-use buffer' in an inserted Cast)."""
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.enable_mem_reuse = False
        options.enable_mem_pattern = False
        session = onnxruntime.InferenceSession(
            str(onnx_path), options, providers=["CPUExecutionProvider"]
        )
        return cls(session)

    @property
    def kv_dtype(self) -> type[np.floating[Any]]:
        return self._kv_dtype

    def run(self, feeds: Feeds) -> Feeds:
        return dict(zip(self._names, self._session.run(None, feeds), strict=True))

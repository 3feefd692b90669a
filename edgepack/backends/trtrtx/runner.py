"""The TensorRT-RTX engine the bench runs on an RTX GPU, over the shared greedy decode loop.

A TensorRT-RTX engine runs only on the compute capability it was built for, and never on Hopper or
Jetson (REFERENCE.md §11). :func:`edgepack.bench.gpus.require_supported_gpu` looks before anything
is loaded and refuses in plain words: no number is ever recorded for an engine that did not run.

The GPU path (:class:`TrtRtxSession`) copies the cache between host and device every step: simple
and correct, not fast. It has not run yet: no GPU this project can reach is supported by
TensorRT-RTX (its H100/H200 machines are compute capability 9.0).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgepack.backends.trtrtx.decode import DecoderLayout, Feeds, greedy_decode
from edgepack.bench.engine import GenerationSample
from edgepack.bench.gpus import Gpu, require_supported_gpu
from edgepack.bench.state import runner_state_file
from edgepack.cache import write_durably
from edgepack.errors import BadInputError, ToolFailedError, ToolMissingError
from edgepack.quality.prompts import chat_ids

ENGINE_FILE = "model.engine"
LAYOUT_FILE = "trtrtx.json"
RUNTIME_CACHE_FILE = "runtime.cache"
"""TensorRT-RTX's just-in-time kernels, kept across launches in the machine's state directory
(never next to the engine: the bundle stays what was verified)."""
INSTALL_HINT = "pip install 'edgepack[trtrtx]'"


def engine_settings(engine_dir: Path) -> dict[str, Any]:
    path = engine_dir / LAYOUT_FILE
    if not path.is_file():
        raise BadInputError(f"{engine_dir} is not a TensorRT-RTX engine folder (no {LAYOUT_FILE})")
    settings: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return settings


# --- TensorRT-RTX on the GPU ------------------------------------------------------------------


class TrtRtxSession:
    """One execution context of the engine; profile 0 prefills, profile 1 decodes."""

    def __init__(self, engine_dir: Path, trt: Any, cuda: Any) -> None:
        self._trt, self._cuda = trt, cuda
        self._cache_path = runner_state_file("trtrtx", engine_dir / ENGINE_FILE, RUNTIME_CACHE_FILE)
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engine = runtime.deserialize_cuda_engine((engine_dir / ENGINE_FILE).read_bytes())
        if self._engine is None:
            raise ToolFailedError(f"TensorRT-RTX could not load {engine_dir / ENGINE_FILE}")
        self._runtime_config = self._engine.create_runtime_config()
        cache = self._runtime_config.create_runtime_cache()
        if self._cache_path.is_file():
            cache.deserialize(self._cache_path.read_bytes())
        self._runtime_config.set_runtime_cache(cache)
        self._context = self._engine.create_execution_context(self._runtime_config)
        self._stream = cuda.Stream()
        self._buffers: dict[str, Any] = {}

    @property
    def kv_dtype(self) -> type[np.floating[Any]]:
        return np.float16

    def run(self, feeds: Feeds) -> Feeds:
        profile = 0 if feeds["past_key_values.0.key"].shape[2] == 0 else 1
        if self._context.active_optimization_profile != profile:
            self._context.set_optimization_profile_async(profile, self._stream.ptr)
        for name, array in feeds.items():
            self._context.set_input_shape(name, array.shape)
            self._device(name, array.nbytes).copy_from(_bytes(array), self._stream)
        outputs = {name: self._output(name) for name in self._output_names()}
        if not self._context.execute_async_v3(self._stream.ptr):
            raise ToolFailedError("TensorRT-RTX failed to run the engine")
        for name, array in outputs.items():
            self._buffers[name].copy_to(_bytes(array), self._stream)
        self._stream.synchronize()
        return outputs

    def save_runtime_cache(self) -> None:
        cache = self._runtime_config.get_runtime_cache()
        write_durably(self._cache_path, bytes(memoryview(cache.serialize())))

    def _output_names(self) -> list[str]:
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        output = self._trt.TensorIOMode.OUTPUT
        return [name for name in names if self._engine.get_tensor_mode(name) == output]

    def _output(self, name: str) -> np.ndarray:
        shape = tuple(self._context.get_tensor_shape(name))
        dtype = self._trt.nptype(self._engine.get_tensor_dtype(name))
        array = np.empty(shape, dtype)
        self._device(name, array.nbytes)
        return array

    def _device(self, name: str, nbytes: int) -> Any:
        """The tensor's device buffer, exactly ``nbytes`` long (grown, never shrunk, underneath);
        one byte for an empty tensor, which still needs an address."""
        buffer = self._buffers.get(name)
        if buffer is None:
            buffer = self._buffers[name] = self._cuda.DeviceArray.raw((0,))
        buffer.resize((max(nbytes, 1),))
        self._context.set_tensor_address(name, buffer.ptr)
        return buffer


def _bytes(array: np.ndarray) -> np.ndarray:
    """A contiguous byte view of ``array`` (the device buffers are untyped)."""
    return np.ascontiguousarray(array).reshape(-1).view(np.uint8)


def trtrtx_loader(engine_dir: Path) -> Callable[[], TrtRtxEngine]:
    """How the bench opens a trtrtx engine; refuses at once where no supported GPU is present."""
    TrtRtxEngine.require_gpu(engine_dir)
    return lambda: TrtRtxEngine.load(engine_dir)


class TrtRtxEngine:
    """The bench's view of a trtrtx bundle: tokenizer, generation, scoring."""

    supports_batching = True

    def __init__(self, engine_dir: Path, session: TrtRtxSession, tokenizer: Any, load_s: float):
        self.engine_dir = engine_dir
        self.load_s = load_s
        self._session = session
        self._tokenizer = tokenizer
        settings = engine_settings(engine_dir)
        self._layout = DecoderLayout.from_dict(settings["layout"])
        self._eos_ids = _eos_ids(engine_dir, tokenizer)

    @staticmethod
    def require_gpu(engine_dir: Path) -> Gpu:
        return require_supported_gpu(engine_settings(engine_dir)["compute_capability"])

    @classmethod
    def load(cls, engine_dir: Path) -> TrtRtxEngine:
        cls.require_gpu(engine_dir)
        trt, cuda = _import_runtime()
        from transformers import AutoTokenizer

        started = time.perf_counter()
        session = TrtRtxSession(engine_dir, trt, cuda)
        tokenizer = AutoTokenizer.from_pretrained(str(engine_dir))
        return cls(engine_dir, session, tokenizer, time.perf_counter() - started)

    def encode_chat(self, user_message: str) -> list[int]:
        return chat_ids(self._tokenizer, user_message)

    def encode_text(self, text: str) -> list[int]:
        return [int(t) for t in self._tokenizer.encode(text, add_special_tokens=False)]

    def generate(
        self, prompts: list[list[int]], max_new_tokens: int, ignore_eos: bool = False
    ) -> GenerationSample:
        from edgepack.bench.engine import GenerationSample

        eos_ids = set() if ignore_eos else self._eos_ids
        result = greedy_decode(self._session, self._layout, prompts, max_new_tokens, eos_ids)
        self._session.save_runtime_cache()
        return GenerationSample(
            prompt_tokens=[len(prompt) for prompt in prompts],
            output_token_ids=result.tokens,
            texts=[self._tokenizer.decode(tokens) for tokens in result.tokens],
            ttft_s=result.ttft_s,
            decode_s=result.decode_s,
            new_tokens=[
                len(t) + int(s) for t, s in zip(result.tokens, result.stopped_at_eos, strict=True)
            ],
            total_s=result.ttft_s + result.decode_s,
            stopped_at_eos=result.stopped_at_eos,
        )

    def score_text(self, text: str) -> tuple[list[int], list[float]]:
        token_ids = self.encode_text(text)
        return token_ids, self.score(token_ids)

    def score(self, token_ids: list[int]) -> list[float]:
        """Log-probability of each token after the first, from one prefill."""
        feeds = self._layout.prefill_feeds([token_ids], self._session.kv_dtype)
        logits = np.asarray(self._session.run(feeds)["logits"][0, :-1], dtype=np.float64)
        shifted = logits - logits.max(axis=-1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
        targets = np.asarray(token_ids[1:])
        return [float(v) for v in log_probs[np.arange(len(targets)), targets]]


def _eos_ids(engine_dir: Path, tokenizer: Any) -> set[int]:
    ids = {int(tokenizer.eos_token_id)} if tokenizer.eos_token_id is not None else set()
    generation = engine_dir / "generation_config.json"
    if generation.is_file():
        configured = json.loads(generation.read_text()).get("eos_token_id")
        ids |= set(
            configured if isinstance(configured, list) else [configured] if configured else []
        )
    return ids


def _import_runtime() -> tuple[Any, Any]:
    try:
        import tensorrt_rtx as trt
        from polygraphy import cuda
    except ImportError as error:
        raise ToolMissingError(
            f"running TensorRT-RTX engines needs {error.name}", hint=INSTALL_HINT
        ) from error
    return trt, cuda

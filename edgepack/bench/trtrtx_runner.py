"""Greedy decoding over a KV-cache decoder, and the TensorRT-RTX engine that runs it on an RTX GPU.

The decoder is the plain ONNX graph the ``trtrtx`` backend exports: inputs ``input_ids``,
``attention_mask``, ``position_ids`` and ``past_key_values.{layer}.{key,value}``; outputs
``logits`` and ``present.{layer}.{key,value}`` (the cache with the new tokens appended). One loop,
:func:`greedy_decode`, drives any :class:`KvSession`: onnxruntime over the exported graph (how the
export is checked against transformers, on any CPU) or the TensorRT-RTX engine on a GPU.

A TensorRT-RTX engine runs only on the compute capability it was built for, and never on Hopper or
Jetson (REFERENCE.md §11). :func:`require_supported_gpu` looks before anything is loaded and
refuses in plain words: no number is ever recorded for an engine that did not run.

The GPU path (:class:`TrtRtxSession`) copies the cache between host and device every step: simple
and correct, not fast. It has not run yet: no GPU this project can reach is supported by
TensorRT-RTX (its H100/H200 machines are compute capability 9.0).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from edgepack.errors import BadInputError, ToolFailedError, ToolMissingError

if TYPE_CHECKING:
    from edgepack.bench.ort_runner import GenerationSample

ENGINE_FILE = "model.engine"
LAYOUT_FILE = "trtrtx.json"
RUNTIME_CACHE_FILE = "runtime.cache"
"""TensorRT-RTX's just-in-time kernels, kept next to the engine across launches."""
INSTALL_HINT = "pip install 'edgepack[trtrtx]'"
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


# --- is there a GPU this engine runs on? ----------------------------------------------------------


@dataclass(frozen=True)
class Gpu:
    name: str
    compute_capability: str

    @property
    def sm(self) -> str:
        return "SM" + self.compute_capability.replace(".", "")


def visible_gpus() -> list[Gpu]:
    """NVIDIA GPUs that nvidia-smi reports; none where there is no driver."""
    program = shutil.which("nvidia-smi")
    if program is None:
        return []
    query = [program, "--query-gpu=name,compute_cap", "--format=csv,noheader"]
    try:
        text = subprocess.run(query, capture_output=True, text=True, check=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return parse_gpu_list(text)


def parse_gpu_list(text: str) -> list[Gpu]:
    gpus = []
    for line in text.splitlines():
        name, _, capability = line.rpartition(",")
        if name.strip() and capability.strip():
            gpus.append(Gpu(name.strip(), capability.strip()))
    return gpus


def supported_gpu(engine_sm: str, gpus: Sequence[Gpu]) -> Gpu | None:
    """The first of ``gpus`` an engine built for ``engine_sm`` runs on."""
    return next((gpu for gpu in gpus if gpu.sm == engine_sm), None)


def describe_gpus(gpus: Sequence[Gpu]) -> str:
    return ", ".join(f"{gpu.name} ({gpu.sm})" for gpu in gpus) or "no NVIDIA GPU"


def require_supported_gpu(engine_sm: str, gpus: Sequence[Gpu] | None = None) -> Gpu:
    """The GPU the engine runs on, or a plain refusal: nothing is measured without one."""
    found = visible_gpus() if gpus is None else list(gpus)
    matching = supported_gpu(engine_sm, found)
    if matching is not None:
        return matching
    raise ToolMissingError(
        f"no supported GPU: this TensorRT-RTX engine runs only on {engine_sm} and this machine "
        f"has {describe_gpus(found)}; nothing was run and no numbers were recorded",
        hint=f"deploy the bundle to an RTX workstation with an {engine_sm} GPU and bench it there",
    )


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
        self._cache_path = engine_dir / RUNTIME_CACHE_FILE
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
        self._cache_path.write_bytes(memoryview(cache.serialize()))

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
        from edgepack.backends.trtrtx_build import chat_ids

        return chat_ids(self._tokenizer, user_message)

    def encode_text(self, text: str) -> list[int]:
        return [int(t) for t in self._tokenizer.encode(text, add_special_tokens=False)]

    def generate(self, prompts: list[list[int]], max_new_tokens: int) -> GenerationSample:
        from edgepack.bench.ort_runner import GenerationSample

        result = greedy_decode(self._session, self._layout, prompts, max_new_tokens, self._eos_ids)
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

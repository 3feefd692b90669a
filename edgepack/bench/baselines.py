"""Baseline engines in edgepack's result format: llama.cpp on a GGUF file, and an Ollama server.

They run the same prompt set with the same chat template, are measured the same way, and are judged
by the same quality gate against the source model's reference, so ``edgepack report`` can put
"our engine" beside "what you use today". Neither batches: their batched figures are left empty.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgepack.bench.chat import render_chat_template
from edgepack.bench.engine import GenerationSample
from edgepack.bench.gating import GateSubject
from edgepack.bench.local import BenchOptions, ProgressCallback, measure_engine
from edgepack.bench.machine import engine_threads
from edgepack.bench.result import RunResult
from edgepack.cache import sha256_file
from edgepack.errors import BadInputError, RemoteError, ToolMissingError
from edgepack.models import resolve_model_source
from edgepack.resources import data_dir

OLLAMA_DEFAULT_URL = "http://127.0.0.1:11434"
NS = 1e9
QUANT_CLASSES = (
    (re.compile(r"(^|[^a-z0-9])(f32|fp32)([^a-z0-9]|$)"), "full"),
    (re.compile(r"(^|[^a-z0-9])(f16|fp16|bf16)([^a-z0-9]|$)"), "half"),
    (re.compile(r"(^|[^a-z0-9])(q8|int8|fp8)"), "8bit"),
)


def baseline_quality_class(name: str) -> str:
    """Threshold class from a GGUF file or Ollama tag name: Q8_0 → 8bit, F16 → half, else 4bit."""
    lowered = name.lower()
    for pattern, klass in QUANT_CLASSES:
        if pattern.search(lowered):
            return klass
    return "4bit"


def _sample(
    prompt_tokens: int, ids: list[int], text: str, times: tuple[float, float, float], eos: bool
) -> GenerationSample:
    ttft, decode, total = times
    return GenerationSample(
        prompt_tokens=[prompt_tokens],
        output_token_ids=[ids],
        texts=[text],
        ttft_s=ttft,
        decode_s=decode,
        new_tokens=[len(ids) + int(eos)],
        total_s=total,
        stopped_at_eos=[eos],
    )


def _single(prompts: list[Any], engine: str) -> Any:
    if len(prompts) != 1:
        raise BadInputError(
            f"{engine} generates one prompt at a time (got a batch of {len(prompts)})"
        )
    return prompts[0]


LLAMACPP_CONTEXT = 2048
"""The context of a default plan's engine (``edgepack.plan.Limits.max_seq_len``), which the
bundles the baseline is compared with are built for."""


class LlamaCppEngine:
    """llama.cpp through llama-cpp-python; greedy; the chat template of the reference model."""

    supports_batching = False

    def __init__(self, model: Any, chat_dir: Path, load_s: float, threads: int) -> None:
        self._model = model
        self._chat_dir = chat_dir
        self.load_s = load_s
        self.threads = threads

    @classmethod
    def load(cls, gguf: Path, chat_dir: Path, threads: int | None = None) -> LlamaCppEngine:
        """With the threads of the engines it is compared with (:func:`engine_threads`), for
        generation and prompt processing alike, and the context of a default plan."""
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise ToolMissingError(
                "the llama.cpp baseline needs llama-cpp-python",
                hint="pip install 'edgepack[llamacpp]' (compiles llama.cpp, ~5 minutes; on a VM "
                'that lists AMX it cannot use, with CMAKE_ARGS="$(scripts/llamacpp-cmake-args)")',
            ) from exc
        if not gguf.is_file():
            raise BadInputError(f"GGUF file {gguf} does not exist")
        count = threads or engine_threads()
        started = time.perf_counter()
        model = Llama(
            model_path=str(gguf),
            n_ctx=LLAMACPP_CONTEXT,
            n_threads=count,
            n_threads_batch=count,
            verbose=False,
        )
        return cls(model, chat_dir, time.perf_counter() - started, count)

    def encode_chat(self, user_message: str) -> list[int]:
        rendered = render_chat_template(self._chat_dir, [{"role": "user", "content": user_message}])
        return [
            int(t) for t in self._model.tokenize(rendered.encode(), add_bos=False, special=True)
        ]

    def generate(
        self, prompts: list[list[int]], max_new_tokens: int, ignore_eos: bool = False
    ) -> GenerationSample:
        prompt = _single(prompts, "llama.cpp")
        eos_id = self._model.token_eos()
        started = time.perf_counter()
        first = started
        ids: list[int] = []
        eos = False
        for token in self._model.generate(prompt, top_k=1, top_p=1.0, temp=0.0, reset=True):
            if not ids and not eos:
                first = time.perf_counter()
            if token == eos_id and not ignore_eos:
                eos = True
                break
            ids.append(int(token))
            if len(ids) >= max_new_tokens:
                break
        finished = time.perf_counter()
        text = self._model.detokenize(ids).decode(errors="replace")
        return _sample(
            len(prompt), ids, text, (first - started, finished - first, finished - started), eos
        )

    def score_text(self, text: str) -> tuple[list[int], list[float]] | None:
        return None  # llama-cpp-python keeps only the last position's logits unless built for all


@dataclass(frozen=True)
class OllamaServer:
    url: str
    model: str
    timeout_s: float = 600.0

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(
            self.url.rstrip("/") + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                data: dict[str, Any] = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise RemoteError(
                f"Ollama at {self.url} answered {exc.code}: {exc.read()[:200]!r}",
                hint=f"is the model pulled? `ollama pull {self.model}`",
            ) from exc
        except (urllib.error.URLError, OSError) as exc:
            raise RemoteError(
                f"cannot reach Ollama at {self.url}: {exc}",
                hint="start it with `ollama serve` or pass --ollama-url",
            ) from exc
        if "error" in data:
            raise RemoteError(f"Ollama: {data['error']}")
        return data


class OllamaEngine:
    """A running Ollama server's /api/chat, timed by its own fields (load, prompt eval, eval).

    Ollama returns text, not token ids; the gate compares token ids, so the answers are tokenized
    with the reference model's tokenizer (exact where the served model shares it).
    """

    supports_batching = False

    def __init__(self, server: OllamaServer, tokenizer: Any, load_s: float) -> None:
        self._server = server
        self._tokenizer = tokenizer
        self.load_s = load_s
        self.threads = engine_threads()

    @classmethod
    def load(cls, server: OllamaServer, tokenizer_dir: Path) -> OllamaEngine:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
        started = time.perf_counter()
        reply = server.post("/api/chat", {"model": server.model, "messages": []})
        measured = reply.get("load_duration", 0) / NS or time.perf_counter() - started
        return cls(server, tokenizer, measured)

    def encode_chat(self, user_message: str) -> str:
        return user_message

    def generate(
        self, prompts: list[str], max_new_tokens: int, ignore_eos: bool = False
    ) -> GenerationSample:
        text = _single(prompts, "Ollama")
        if ignore_eos:
            raise BadInputError("Ollama's /api/chat cannot be told to ignore end-of-sequence")
        reply = self._server.post("/api/chat", {
            "model": self._server.model,
            "messages": [{"role": "user", "content": text}],
            "stream": False,
            "options": {
                "temperature": 0, "top_k": 1, "seed": 0, "num_predict": max_new_tokens,
                # The threads and context of the engines it is compared with (Ollama's own
                # defaults differ by version and machine).
                "num_thread": self.threads, "num_ctx": LLAMACPP_CONTEXT,
            },
        })  # fmt: skip
        answer = str(reply["message"]["content"])
        ids = [int(i) for i in self._tokenizer.encode(answer, add_special_tokens=False).ids]
        prefill = reply["prompt_eval_duration"] / NS
        decode = reply["eval_duration"] / NS
        total = reply["total_duration"] / NS
        eos = reply.get("done_reason") == "stop"
        sample = _sample(
            int(reply["prompt_eval_count"]), ids, answer, (prefill, decode, total), eos
        )
        sample.new_tokens = [int(reply["eval_count"])]
        return sample

    def score_text(self, text: str) -> tuple[list[int], list[float]] | None:
        return None


@dataclass(frozen=True)
class BaselineRequest:
    engine: str
    """"llamacpp" or "ollama"."""
    reference_model: str
    """The source model the answers are judged against (any --model reference)."""
    gguf: Path | None = None
    ollama_model: str | None = None
    ollama_url: str = OLLAMA_DEFAULT_URL
    threads: int | None = None


def bench_baseline(
    request: BaselineRequest,
    options: BenchOptions,
    cache_root: Path,
    progress: ProgressCallback = lambda *a: None,
) -> tuple[RunResult, GateSubject]:
    """Measure a baseline engine like a bundle; return the result and what to judge it as."""
    source = resolve_model_source(request.reference_model, cache_root)
    loader, label, identity = _baseline_loader(request, source.directory)
    bundle = {
        "dir": identity["location"],
        "bundle_id": identity["id"],
        "model": source.spec.name,
        "target": "this machine",
        "backend": "llama.cpp" if request.engine == "llamacpp" else "ollama",
        "precision": label,
        "engine_bytes": identity.get("bytes"),
        "limits": {"n_ctx": LLAMACPP_CONTEXT},
    }
    prompts = options.prompts_file or data_dir("prompts") / "default.json"
    result = measure_engine(loader, prompts, options, bundle, "unknown", progress)
    subject = GateSubject.of_model(
        request.reference_model, cache_root, baseline_quality_class(label)
    )
    return result, subject


def _baseline_loader(
    request: BaselineRequest, reference_dir: Path
) -> tuple[Callable[[], Any], str, dict[str, Any]]:
    if request.engine == "llamacpp":
        gguf = request.gguf
        if gguf is None:
            raise BadInputError("--engine llamacpp needs --gguf FILE")
        if not gguf.is_file():
            raise BadInputError(f"GGUF file {gguf} does not exist")
        identity = {
            "location": str(gguf.resolve()),
            "id": sha256_file(gguf),
            "bytes": gguf.stat().st_size,
        }
        label = _gguf_quant_label(gguf.name)
        return lambda: LlamaCppEngine.load(gguf, reference_dir, request.threads), label, identity
    if request.engine == "ollama":
        if not request.ollama_model:
            raise BadInputError("--engine ollama needs --ollama-model NAME")
        server = OllamaServer(request.ollama_url, request.ollama_model)
        location = f"{request.ollama_url}#{request.ollama_model}"
        identity = {"location": location, "id": hashlib.sha256(location.encode()).hexdigest()}
        return lambda: OllamaEngine.load(server, reference_dir), request.ollama_model, identity
    raise BadInputError(f"unknown --engine {request.engine!r}", hint="bundle, llamacpp or ollama")


def _gguf_quant_label(filename: str) -> str:
    """The quantization named in a GGUF file name (Q4_1, Q4_K_M, F16), else the file name."""
    match = re.search(r"(?i)\b(q\d(_[a-z0-9]+)*|f16|f32|bf16)\b", filename.replace(".", " "))
    return match.group(1).upper() if match else filename

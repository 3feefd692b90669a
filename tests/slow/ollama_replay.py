"""A loopback HTTP server that replays recorded answers in Ollama's documented /api/chat format."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

FIXTURE = Path(__file__).parent.parent / "fixtures" / "ollama" / "answers.json"
RECORDED_MODEL = json.loads(FIXTURE.read_text())["model"]
"""The Ollama tag of the engine whose answers the fixture holds (a 4-bit one)."""
DECODE_NS_PER_TOKEN = 12_500_000  # 80 tok/s
PREFILL_NS_PER_TOKEN = 2_000_000


def _reply(model: str, content: str, done_reason: str, **timings: int) -> dict[str, Any]:
    return {
        "model": model,
        "created_at": "2026-11-27T12:00:00.000000Z",
        "message": {"role": "assistant", "content": content},
        "done_reason": done_reason,
        "done": True,
        **timings,
    }


def _answer(model: str, record: dict[str, Any], content: str) -> dict[str, Any]:
    prompt_ns = record["prompt_eval_count"] * PREFILL_NS_PER_TOKEN
    eval_ns = record["eval_count"] * DECODE_NS_PER_TOKEN
    return _reply(
        model, content, "stop" if record["eval_count"] < 128 else "length",
        total_duration=prompt_ns + eval_ns + 1_000_000, load_duration=1_000_000,
        prompt_eval_count=record["prompt_eval_count"], prompt_eval_duration=prompt_ns,
        eval_count=record["eval_count"], eval_duration=eval_ns,
    )  # fmt: skip


@contextmanager
def ollama_replay(rewrite: Callable[[str], str] = lambda answer: answer) -> Iterator[str]:
    """Serve the recorded answers (passed through ``rewrite``); yields the server's URL."""
    records = {r["prompt"]: r for r in json.loads(FIXTURE.read_text())["answers"]}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self.path != "/api/chat":
                self._send(404, {"error": f"unknown path {self.path}"})
            elif not body["messages"]:
                self._send(200, _reply(body["model"], "", "load"))
            else:
                record = records.get(body["messages"][-1]["content"])
                if record is None:
                    self._send(400, {"error": "no recorded answer for this prompt"})
                else:
                    self._send(200, _answer(body["model"], record, rewrite(record["answer"])))

        def _send(self, status: int, data: dict[str, Any]) -> None:
            payload = json.dumps(data).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()

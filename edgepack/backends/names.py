"""The closed set of backend names, importable without importing any backend."""

from __future__ import annotations

from typing import Literal, get_args

BackendName = Literal["ort", "edgellm", "trtllm", "trtrtx"]
BACKEND_NAMES: tuple[str, ...] = get_args(BackendName)

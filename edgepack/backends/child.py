"""What every stage worker (a child process: ``python -m edgepack.backends.X.worker JOB.json``)
shares: its command line, how it reports edgepack's own errors (an ``error:`` line for people, a
record line and the error's exit code for the parent, which raises the same kind), its peak
memory."""

from __future__ import annotations

import resource
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from edgepack.errors import EdgepackError
from edgepack.process import error_record

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "generation_config.json",
    "config.json",
)
"""What a runner needs of a Hugging Face folder besides the weights: tokenizer, chat template,
generation defaults, model config."""


def peak_rss_bytes() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux: KiB


def worker_main(
    argv: Sequence[str],
    module: str,
    run_job: Callable[[Path], dict[str, Any]],
    summary: Callable[[dict[str, Any]], str],
) -> int:
    """Run the job file ``argv[0]``; an EdgepackError is one ``error: MESSAGE (hint: …)`` line,
    its record (``process.error_record``) and its exit code as the status (the parent raises the
    same kind, ``process.tool_failure``), success one summary line."""
    if len(argv) != 1:
        print(f"usage: python -m {module} JOB.json", file=sys.stderr)
        return 2
    try:
        record = run_job(Path(argv[0]))
    except EdgepackError as exc:
        print(f"error: {exc.message}" + (f" (hint: {exc.hint})" if exc.hint else ""))
        print(error_record(exc), flush=True)
        return exc.exit_code
    print(summary(record))
    return 0

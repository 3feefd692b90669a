"""A warm rebuild: ``edgepack build`` of the demo int4 bundle when every stage is cached, end to
end (interpreter start-up included), against the interpreter's own start-up and ``--version``.

The first build (cold, minutes) fills the cache and is not timed; each timed build reuses every
stage and seals the bundle again.
"""

from __future__ import annotations

import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

from benchmarks.common import build_args, demo_bundle, edgepack, last_line, timed_samples
from benchmarks.needs import fail
from benchmarks.report import Row

TABLE = "Pipeline: warm rebuild (every stage cached)"
REBUILD = "edgepack build, all cached"
FLOORS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "edgepack --version": [sys.executable, "-m", "edgepack", "--version"],
}
"""What any command costs before it does anything: the peers that show what is left to cut."""


def params(quick: bool) -> dict[str, Any]:
    return {"precision": "int4", "repeats": 3 if quick else 10}


def measure(params: dict[str, Any], workdir: Path) -> dict[str, Any]:
    bundle = demo_bundle(workdir, params["precision"])
    rebuild = build_args(params["precision"], bundle)

    def build() -> None:
        done = edgepack(*rebuild, echo=False)
        if done.returncode != 0:
            fail(f"the warm rebuild failed: {last_line(done.stderr)}", done.returncode)

    timed = {REBUILD: timed_samples(build, params["repeats"])}
    for label, command in FLOORS.items():
        run = partial(subprocess.run, command, check=True, capture_output=True)
        timed[label] = timed_samples(run, params["repeats"])
    wall = {label: [seconds for seconds, _ in pairs] for label, pairs in timed.items()}
    cpu = {label: [seconds for _, seconds in pairs] for label, pairs in timed.items()}
    return {"command": ["edgepack", *rebuild], "wall_s": wall, "cpu_s": cpu}


def rows(result: dict[str, Any]) -> list[Row]:
    """Wall time, and where recorded CPU time (user + system), of the rebuild and its floors."""
    found = []
    for kind, suffix in (("wall_s", ""), ("cpu_s", " (CPU time)")):
        samples = result["data"].get(kind, {})
        for label in (REBUILD, *FLOORS) if samples else ():
            peers = tuple(floor + suffix for floor in FLOORS) if label == REBUILD else ()
            found.append(Row(TABLE, label + suffix, "s", tuple(samples[label]), peers,
                             higher_is_better=False))  # fmt: skip
    return found

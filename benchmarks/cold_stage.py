"""A cold stage: ``edgepack build --force --until engine`` of the demo int4 engine, end to end
(start-up, input hashing, the stage, its cache entry and the sealed bundle), against the same
onnxruntime-genai builder command run by hand on the same Hugging Face folder with the same
options. The runs alternate, so drift in the machine's speed falls on both sides alike.

The first build (cold, minutes: the demo model's conversion, the runtime) is not timed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.common import (
    DEMO_MODEL,
    build_args,
    demo_bundle,
    edgepack,
    last_line,
    timed_samples,
)
from benchmarks.needs import fail
from benchmarks.report import Row
from edgepack.process import OFFLINE_HUB

TABLE = "Pipeline: a cold engine stage against the same tool by hand"
EDGEPACK = "edgepack build --force --until engine"
STAGE = "its engine stage alone"
OUTSIDE = "the rest of the command (build − stage, per run)"
BY_HAND = "onnxruntime-genai builder by hand"


def params(quick: bool) -> dict[str, Any]:
    return {"precision": "int4", "repeats": 1 if quick else 5}


def by_hand_command(model_dir: Path, out: Path, stage_config: dict[str, Any]) -> list[str]:
    """The builder command a user would type for the engine edgepack's stage makes."""
    options = [f"{key}={value}" for key, value in stage_config.get("extra_options", {}).items()]
    provider, cache = stage_config["execution_provider"], out.parent / "builder-cache"
    command = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(model_dir),
               "-o", str(out), "-p", stage_config["precision"], "-e", provider,
               "-c", str(cache)]  # fmt: skip
    return command + (["--extra_options", *options] if options else [])


def measure(params: dict[str, Any], workdir: Path) -> dict[str, Any]:
    from edgepack.cache import default_cache_root
    from edgepack.demo import demo_name, materialize_demo_model

    warm = demo_bundle(workdir, params["precision"])
    manifest = json.loads((warm / "manifest.json").read_text("utf-8"))
    stage_config = manifest["recipe"]["stage_config"]["engine"]
    model_dir = materialize_demo_model(str(demo_name(DEMO_MODEL)), default_cache_root())
    cold = [*build_args(params["precision"], workdir / "cold"), "--force", "--until", "engine"]
    hand_out = workdir / "by-hand" / "engine"
    hand = by_hand_command(model_dir, hand_out, stage_config)
    stage_s: list[float] = []

    def through_edgepack() -> None:
        done = edgepack(*cold, echo=False)
        if done.returncode != 0:
            fail(f"the cold build failed: {last_line(done.stderr)}", done.returncode)
        stages = json.loads(done.stdout)["stages"]
        stage_s.append(next(s["wall_s"] for s in stages if s["name"] == "engine"))

    def by_hand() -> None:
        subprocess.run(hand, check=True, capture_output=True, env={**os.environ, **OFFLINE_HUB})

    timed: dict[str, list[tuple[float, float]]] = {EDGEPACK: [], BY_HAND: []}
    for _ in range(params["repeats"]):
        timed[EDGEPACK] += timed_samples(through_edgepack, 1)
        shutil.rmtree(hand_out.parent, ignore_errors=True)  # the last run's engine, not timed
        hand_out.mkdir(parents=True)
        timed[BY_HAND] += timed_samples(by_hand, 1)
    wall = {label: [seconds for seconds, _ in pairs] for label, pairs in timed.items()}
    cpu = {label: [seconds for _, seconds in pairs] for label, pairs in timed.items()}
    return {"command": ["edgepack", *cold], "by_hand": hand, "wall_s": wall | {STAGE: stage_s},
            "cpu_s": cpu}  # fmt: skip


def rows(result: dict[str, Any]) -> list[Row]:
    """Wall and CPU time of the cold build and of the builder by hand; the stage's own wall time
    (from the build's JSON) says how much of the difference is the stage and how much the rest.
    The builder's run-to-run spread is larger than edgepack's part, so that part is also shown as
    its own per-run difference, against the builder's median."""
    wall = result["data"]["wall_s"]
    outside = tuple(b - s for b, s in zip(wall[EDGEPACK], wall.get(STAGE, []), strict=False))
    found = (
        [Row(TABLE, OUTSIDE, "s", outside, (BY_HAND,), higher_is_better=False)] if outside else []
    )
    for kind, suffix in (("wall_s", ""), ("cpu_s", " (CPU time)")):
        samples = result["data"][kind]
        for label in (EDGEPACK, STAGE, BY_HAND):
            if label in samples:
                peers = (BY_HAND + suffix,) if label != BY_HAND else ()
                found.append(Row(TABLE, label + suffix, "s", tuple(samples[label]), peers,
                                 higher_is_better=False))  # fmt: skip
    return found

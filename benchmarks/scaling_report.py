"""The scaling section of docs/BENCHMARKS.md: one row per model size (seconds and seconds per GB
of bundle for each cost), a log-log plot of seconds against bundle bytes with a slope-1 line, and
which costs grow faster than the bytes (their log-log slope against the bundle's bytes)."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

from benchmarks.report import number

FASTER = 1.15
"""A log-log slope above this grows faster than the bytes (10 % more bytes, over 11 % more time);
below 1 / FASTER it grows slower (a fixed cost that the bytes have not yet outgrown)."""
PLOT = Path("benchmarks") / "scaling.png"
"""Where the plot goes, relative to the page's folder."""


def loglog_slope(xs: list[float], ys: list[float]) -> float:
    """The least-squares slope of log y against log x: 1 is proportional, 2 quadratic."""
    if len(xs) != len(ys) or len(xs) < 2:
        raise ValueError("a slope needs two or more points, as many x as y")
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    spread = sum((x - mx) ** 2 for x in lx)
    if spread == 0:
        raise ValueError("a slope needs two different x")
    return sum((x - mx) * (y - my) for x, y in zip(lx, ly, strict=True)) / spread


def growth(slope: float) -> str:
    if slope > FASTER:
        return "faster than the bytes"
    if slope < 1 / FASTER:
        return "slower than the bytes"
    return "with the bytes"


def per_gb(seconds: float, size_bytes: float) -> float:
    return seconds / (size_bytes / 1e9)


def series(sizes: list[dict[str, Any]]) -> dict[str, list[float | None]]:
    """Each cost's seconds, one per size (None where a size did not measure it): every build
    stage, the whole build and what of it is outside the stages, each deploy, the engine's first
    load and one decode step."""
    stages = list(
        dict.fromkeys(name for s in sizes for name in s.get("build", {}).get("stages", {}))
    )
    deploys = list(dict.fromkeys(name for s in sizes for name in s.get("deploy", {})))
    found: dict[str, list[float | None]] = {}
    for stage in stages:
        found[f"build: {stage} stage"] = [s.get("build", {}).get("stages", {}).get(stage)
                                          for s in sizes]  # fmt: skip
    found["build: end to end"] = [s.get("build", {}).get("wall_s") for s in sizes]
    found["build: outside its stages"] = [_outside_stages(s.get("build", {})) for s in sizes]
    for deploy in deploys:
        found[f"deploy: {deploy}"] = [s.get("deploy", {}).get(deploy) for s in sizes]
    found["bench: first load"] = [s.get("bench", {}).get("load_first_s") for s in sizes]
    found["bench: one decode step b1"] = [_step_s(s) for s in sizes]
    return found


def _outside_stages(build: dict[str, Any]) -> float | None:
    """What the build spends besides its stages: start-up, the plan, hashing the model, sealing."""
    if "wall_s" not in build:
        return None
    return max(build["wall_s"] - sum(build.get("stages", {}).values()), 0.0) or None


def _step_s(size: dict[str, Any]) -> float | None:
    rate = size.get("bench", {}).get("decode_tok_s_median")
    return 1 / rate if rate else None


def _points(
    sizes: list[dict[str, Any]], seconds: list[float | None]
) -> list[tuple[str, float, float]]:
    return [(s["size"], s["bundle_bytes"], y) for s, y in zip(sizes, seconds, strict=True)
            if y and s.get("bundle_bytes")]  # fmt: skip


def slopes(sizes: list[dict[str, Any]]) -> dict[str, float]:
    """Each cost's log-log slope against bundle bytes, over the sizes that measured it."""
    found = {}
    for label, seconds in series(sizes).items():
        points = _points(sizes, seconds)
        if len({x for _, x, _ in points}) >= 2:
            found[label] = loglog_slope([x for _, x, _ in points], [y for _, _, y in points])
    return found


def steps(sizes: list[dict[str, Any]]) -> dict[str, list[tuple[str, float]]]:
    """Each cost's slope from one size to the next ("135m→360m"): where a fit over all sizes
    averages a steep step away."""
    found: dict[str, list[tuple[str, float]]] = {}
    for label, seconds in series(sizes).items():
        points = _points(sizes, seconds)
        found[label] = [(f"{a[0]}→{b[0]}", loglog_slope([a[1], b[1]], [a[2], b[2]]))
                        for a, b in itertools.pairwise(points) if a[1] != b[1]]  # fmt: skip
    return found


def table(sizes: list[dict[str, Any]]) -> list[str]:
    """One row per size: params, bundle bytes, decode tok/s b1, then each cost's seconds and
    seconds per GB of bundle."""
    costs = series(sizes)
    head = ["size", "params", "bundle bytes", "decode tok/s b1 (median)",
            *(f"{label} s (s/GB)" for label in costs)]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for index, size in enumerate(sizes):
        nbytes = size.get("bundle_bytes") or 0
        rate = size.get("bench", {}).get("decode_tok_s_median")
        cells = [size["size"], f"{size['params'] / 1e6:.0f} M", f"{int(nbytes):,}",
                 number(rate) if rate else "–"]  # fmt: skip
        for seconds in costs.values():
            value = seconds[index]
            cells.append("–" if value is None or not nbytes
                         else f"{number(value)} ({number(per_gb(value, nbytes))})")  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def slope_lines(sizes: list[dict[str, Any]]) -> list[str]:
    """Per cost: the slope over all sizes and from each size to the next; the summary names each
    step steeper than :data:`FASTER`."""
    overall, stepped = slopes(sizes), steps(sizes)
    faster = [f"{label} ({where}: slope {slope:.2f})" for label, pairs in stepped.items()
              for where, slope in pairs if slope > FASTER]  # fmt: skip
    lines = [f"- {label}: slope {slope:.2f} over all sizes, {growth(slope)}; "
             + ", ".join(f"{where} {step:.2f}" for where, step in stepped[label])
             for label, slope in overall.items()]  # fmt: skip
    summary = (f"Faster than the bytes: {'; '.join(faster)}." if faster
               else "Nothing grows faster than the bytes.")  # fmt: skip
    return [summary, "", *lines]


def plot(sizes: list[dict[str, Any]], out: Path) -> None:
    """Seconds against bundle bytes, log-log, each cost a line, with a dashed slope-1 line
    through the smallest size's whole build."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(10, 5.5), dpi=110)
    for label, seconds in series(sizes).items():
        points = _points(sizes, seconds)
        if points:
            axes.plot([x for _, x, _ in points], [y for _, _, y in points], marker="o", label=label)
    _reference_line(axes, sizes)
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("bundle bytes")
    axes.set_ylabel("seconds")
    axes.set_title("int4 builds of random SmolLM2-shaped models: seconds against bundle bytes")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, metadata={"Software": None})
    plt.close(figure)


def _reference_line(axes: Any, sizes: list[dict[str, Any]]) -> None:
    measured = [s for s in sizes if s.get("bundle_bytes") and s.get("build", {}).get("wall_s")]
    if not measured:
        return
    first = measured[0]
    xs = [first["bundle_bytes"], max(s["bundle_bytes"] for s in sizes if s.get("bundle_bytes"))]
    scale = first["build"]["wall_s"] / first["bundle_bytes"]
    axes.plot(xs, [x * scale for x in xs], "k--", linewidth=1, label="slope 1 (∝ bytes)")


def section(result: dict[str, Any], page_dir: Path) -> list[str]:
    """The scaling section's markdown; writes the plot next to the page."""
    sizes = [s for s in result["data"]["sizes"] if "error" not in s]
    failed = [f"- {s['size']}: failed: {s['error']}" for s in result["data"]["sizes"]
              if "error" in s]  # fmt: skip
    lines = ["## Scaling: build, bundle, deploy and decode against model size", "",
             result["data"]["note"], ""]  # fmt: skip
    if sizes:
        plot(sizes, page_dir / PLOT)
        lines += [*table(sizes), "", f"![seconds against bundle bytes]({PLOT.as_posix()})", ""]
        lines += [*slope_lines(sizes), ""] if len(sizes) >= 2 else []
    return [*lines, *failed, *([""] if failed else [])]

"""Telemetry sampled on the device while a benchmark runs, and the parsers for what it records.

Three sources, each a plain-text log the sampler script writes next to the run:

- ``proc.log``: ``/proc/stat``'s aggregate cpu line and MemTotal/MemAvailable, every interval
  (every Linux device);
- ``nvidia-smi.csv``: ``nvidia-smi --query-gpu=... --format=csv,noheader,nounits -lms N``
  (discrete GPUs, DGX Spark);
- ``tegrastats.log``: one ``tegrastats --interval N`` line per sample (Jetson): RAM, per-core CPU
  load@MHz, EMC and GR3D (GPU) load@MHz, temperatures, power rails ``NAME cur mW/avg mW``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from edgepack.remote.power_rails import rule_for

NVIDIA_SMI_FIELDS = (
    "timestamp",
    "utilization.gpu",
    "memory.used",
    "power.draw",
    "clocks.sm",
    "clocks.mem",
    "temperature.gpu",
    "clocks_throttle_reasons.active",
)

# $1 run directory, $2 interval in ms, then the workload's argv. Samplers run in the background
# for exactly the workload's lifetime; the workload's exit status is the script's.
SAMPLER_SCRIPT = f"""out=$1; ms=$2; shift 2
secs=$(awk -v ms="$ms" 'BEGIN {{print ms / 1000}}')
(while :; do
  printf '%s %s %s\\n' "$(date +%s.%N)" "$(head -n1 /proc/stat)" \\
    "$(awk '/^MemTotal:|^MemAvailable:/ {{printf "%s ", $2}}' /proc/meminfo)"
  sleep "$secs"
done) > "$out/proc.log" 2>/dev/null &
pids=$!
if command -v tegrastats >/dev/null 2>&1; then
  tegrastats --interval "$ms" > "$out/tegrastats.log" 2>/dev/null & pids="$pids $!"
elif command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu={",".join(NVIDIA_SMI_FIELDS)} --format=csv,noheader,nounits \\
    -lms "$ms" > "$out/nvidia-smi.csv" 2>/dev/null & pids="$pids $!"
fi
"$@"
status=$?
kill $pids 2>/dev/null
exit $status"""


def _number(text: str) -> float | None:
    try:
        return float(text.strip())
    except ValueError:
        return None  # "[N/A]", "[Not Supported]"


def _stats(values: Sequence[float | None]) -> dict[str, float] | None:
    known = [v for v in values if v is not None]
    if not known:
        return None
    return {"mean": sum(known) / len(known), "min": min(known), "max": max(known), "n": len(known)}


def parse_proc_log(text: str) -> list[dict[str, float]]:
    """CPU utilisation between consecutive samples and memory in use, one row per interval."""
    rows = []
    previous: tuple[float, int, int] | None = None
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 12 or parts[1] != "cpu":
            continue
        ticks = [int(p) for p in parts[2:12]]
        idle = ticks[3] + ticks[4]  # idle + iowait
        busy_total = (float(parts[0]), sum(ticks[:8]), idle)  # guest time is already in user
        total_kb, available_kb = (int(p) for p in parts[12:14])
        if previous is not None:
            spent = busy_total[1] - previous[1]
            idled = busy_total[2] - previous[2]
            rows.append(
                {
                    "t": busy_total[0],
                    "cpu_util_pct": 100.0 * (spent - idled) / spent if spent else 0.0,
                    "mem_used_bytes": float((total_kb - available_kb) * 1024),
                }
            )
        previous = busy_total
    return rows


def parse_nvidia_smi_csv(text: str) -> list[dict[str, Any]]:
    rows = []
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.split(",")]
        if len(cells) != len(NVIDIA_SMI_FIELDS) or cells[0] == "timestamp":
            continue
        row: dict[str, Any] = {"timestamp": cells[0], "throttle_reasons": cells[7]}
        keys = ("gpu_util_pct", "mem_used_mib", "power_w", "sm_mhz", "mem_mhz", "temp_c")
        row |= {key: _number(cell) for key, cell in zip(keys, cells[1:7], strict=True)}
        rows.append(row)
    return rows


_RAM = re.compile(r"RAM (\d+)/(\d+)MB")
_CPU = re.compile(r"CPU \[([^\]]*)\]")
_LOAD_AT = re.compile(r"\b(EMC_FREQ|GR3D_FREQ) (\d+)%(?:@\[?([\d,]+)\]?)?")
_TEMP = re.compile(r"\b([A-Za-z][\w]*)@(-?[\d.]+)C\b")
_RAIL = re.compile(r"\b([A-Z][A-Z0-9_]+) (\d+)mW/(\d+)mW")


def parse_tegrastats_line(line: str) -> dict[str, Any] | None:
    ram = _RAM.search(line)
    if ram is None:
        return None
    row: dict[str, Any] = {"ram_used_mb": int(ram[1]), "ram_total_mb": int(ram[2])}
    cpu = _CPU.search(line)
    if cpu:
        cores = [c.split("%@") for c in cpu[1].split(",") if "%@" in c]
        row["cpu_load_pct"] = [float(load) for load, _ in cores]
        row["cpu_mhz"] = [float(mhz) for _, mhz in cores]
    for name, load, mhz in _LOAD_AT.findall(line):
        key = "gpu" if name == "GR3D_FREQ" else "emc"
        row[f"{key}_load_pct"] = float(load)
        if mhz:
            row[f"{key}_mhz"] = max(float(m) for m in mhz.split(",") if m)
    # -256 C is how tegrastats reports a sensor that is off.
    row["temps_c"] = {n: float(t) for n, t in _TEMP.findall(line) if float(t) > -256}
    row["rails_mw"] = {n: int(cur) for n, cur, _ in _RAIL.findall(line)}
    return row


def parse_tegrastats(text: str) -> list[dict[str, Any]]:
    return [row for line in text.splitlines() if (row := parse_tegrastats_line(line))]


def total_power_w(row: dict[str, Any]) -> float | None:
    """The board's total power from the rails its monitor layout adds up (``power_rails``);
    None where no rails are printed or their layout is not one NVIDIA documents."""
    rails: dict[str, int] = row.get("rails_mw", {})
    rule = rule_for(rails) if rails else None
    return None if rule is None else rule.total_mw(rails) / 1000


def _rails_record(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """Which rails made the total, and where that rule comes from (or why there is none)."""
    rails = next((row["rails_mw"] for row in rows if row.get("rails_mw")), None)
    if rails is None:
        return None
    rule = rule_for(rails)
    if rule is None:
        return {"board": None, "rails": sorted(rails), "note": "rail layout not recognised"}
    return {**rule.record(), "rails": sorted(rails)}


def summarize(logs: dict[str, str], interval_ms: int, decode_tok_s: float | None) -> dict[str, Any]:
    """One telemetry record for RunResult: per-source summaries and the raw samples."""
    summary: dict[str, Any] = {"interval_ms": interval_ms, "sources": sorted(logs)}
    power: list[float | None] = []
    if "proc.log" in logs:
        rows = parse_proc_log(logs["proc.log"])
        summary["proc"] = {
            "cpu_util_pct": _stats([r["cpu_util_pct"] for r in rows]),
            "mem_used_bytes": _stats([r["mem_used_bytes"] for r in rows]),
            "samples": rows,
        }
    if "nvidia-smi.csv" in logs:
        rows_gpu = parse_nvidia_smi_csv(logs["nvidia-smi.csv"])
        power = [r["power_w"] for r in rows_gpu]
        keys = ("gpu_util_pct", "power_w", "sm_mhz", "mem_mhz", "temp_c", "mem_used_mib")
        summary["nvidia_smi"] = {key: _stats([r[key] for r in rows_gpu]) for key in keys}
        summary["nvidia_smi"]["throttled_samples"] = sum(
            1 for r in rows_gpu if r["throttle_reasons"] not in ("", "0x0000000000000000")
        )
        summary["nvidia_smi"]["samples"] = rows_gpu
    if "tegrastats.log" in logs:
        rows_tegra = parse_tegrastats(logs["tegrastats.log"])
        power = [total_power_w(r) for r in rows_tegra]
        summary["tegrastats"] = {
            "gpu_load_pct": _stats([r.get("gpu_load_pct") for r in rows_tegra]),
            "gpu_mhz": _stats([r.get("gpu_mhz") for r in rows_tegra]),
            "emc_mhz": _stats([r.get("emc_mhz") for r in rows_tegra]),
            "max_temp_c": _stats([max(r["temps_c"].values(), default=None) for r in rows_tegra]),
            "power_rails": _rails_record(rows_tegra),
            "samples": rows_tegra,
        }
    watts = _stats(power)
    if watts:
        summary["power_w"] = watts
        if decode_tok_s:
            summary["energy_per_token_j"] = watts["mean"] / decode_tok_s
    return summary

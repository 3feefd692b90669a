"""Host specs, device facts, profile detection, compatibility and telemetry parsers."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from edgepack.bundle import Manifest
from edgepack.errors import BadInputError
from edgepack.remote.connector import LocalConnector, shell
from edgepack.remote.detect import compatibility_problems, detect_profiles
from edgepack.remote.facts import PROBE_SNIPPET, gather_facts, parse_facts
from edgepack.remote.hosts import parse_host, read_inventory
from edgepack.remote.telemetry import (
    parse_nvidia_smi_csv,
    parse_proc_log,
    parse_tegrastats,
    parse_tegrastats_line,
    summarize,
    total_power_w,
)
from edgepack.targets import TargetRegistry

FIXTURES = Path(__file__).parent.parent / "fixtures" / "telemetry"
ORIN_FACTS = """root=/home/nvidia/edgepack
free_kb=50000000
arch=aarch64
mem_total_kb=64335836
device_model=NVIDIA Jetson AGX Orin Developer Kit
l4t_release=# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64
tensorrt=10.3.0.30-1+cuda12.5
power_mode=MAXN
"""


@pytest.mark.parametrize(
    ("text", "kind", "host", "user", "port", "root"),
    [
        ("local", "local", "local", None, None, None),
        ("local:/srv/dev", "local", "local", None, None, "/srv/dev"),
        ("jetson", "ssh", "jetson", None, None, None),
        ("nvidia@10.0.0.5:/data/ep", "ssh", "10.0.0.5", "nvidia", None, "/data/ep"),
        ("ssh://me@orin.local:2222/opt/ep", "ssh", "orin.local", "me", 2222, "/opt/ep"),
    ],
)
def test_host_specs(
    text: str, kind: str, host: str, user: str | None, port: int | None, root: str | None
) -> None:
    spec = parse_host(text)
    assert (spec.kind, spec.host, spec.user, spec.port, spec.root) == (kind, host, user, port, root)


def test_inventory_skips_comments_and_rejects_empty(tmp_path: Path) -> None:
    inventory = tmp_path / "fleet.txt"
    inventory.write_text("# lab\norin-1\n\norin-2  # spare\n")
    assert [s.host for s in read_inventory(inventory)] == ["orin-1", "orin-2"]
    inventory.write_text("# nothing\n")
    with pytest.raises(BadInputError, match="lists no hosts"):
        read_inventory(inventory)


def test_facts_of_this_machine_survive_a_python3_that_never_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wedged = tmp_path / "bin" / "python3"  # like a pyenv shim waiting on a stale lock
    wedged.parent.mkdir()
    wedged.write_text("#!/bin/sh\nexec sleep 600\n")
    wedged.chmod(0o755)
    monkeypatch.setenv("PATH", f"{wedged.parent}{os.pathsep}{os.environ['PATH']}")
    started = time.monotonic()
    facts = gather_facts(LocalConnector(), str(tmp_path), python_limit_s=1)
    assert time.monotonic() - started < 30
    assert facts.arch == os.uname().machine
    assert facts.free_bytes > 0
    assert facts.python == str(wedged)
    assert facts.python_version is None


def test_facts_of_this_machine_are_what_python_reads_here(tmp_path: Path) -> None:
    facts = gather_facts(LocalConnector(), str(tmp_path))
    uname = os.uname()
    assert (facts.kernel, facts.hostname, facts.arch) == (uname.release, uname.nodename,
                                                          uname.machine)  # fmt: skip
    meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    assert facts.memory_bytes == int(meminfo["MemTotal"].split()[0]) * 1024
    assert facts.memory_available_bytes
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^(?:model name|Hardware|Model)\s*:(.*)$", cpuinfo, re.MULTILINE)
    assert model is not None and facts.cpu_model == model[1].strip()
    assert facts.cpu_cores == os.sysconf("SC_NPROCESSORS_ONLN")


def test_a_fact_is_one_line_whatever_its_value_holds(tmp_path: Path) -> None:
    script = PROBE_SNIPPET + "say os \"$(printf 'Debian\\nroot=/elsewhere\\tx')\"\n"
    said = LocalConnector().run(shell(script, str(tmp_path), "1")).stdout
    assert said.splitlines()[1:] == ["os=Debian root=/elsewhere x"]


def test_dpkg_is_asked_for_tensorrt_only_where_it_lists_a_tensorrt_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    status = Path("/var/lib/dpkg/status")
    text = status.read_text(errors="replace") if status.is_file() else ""
    listed = bool(re.search(r"^Package: (libnvinfer-bin|tensorrt)$", text, re.MULTILINE))
    asked = tmp_path / "asked"
    fake = tmp_path / "bin" / "dpkg-query"  # records that it ran
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\necho "$*" >> {asked}\nexit 1\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    assert gather_facts(LocalConnector(), str(tmp_path)).tensorrt is None  # the fake knows none
    assert asked.exists() == listed


def test_jetson_facts_detect_orin_and_derive_its_sm(registry: TargetRegistry) -> None:
    facts = parse_facts("orin", ORIN_FACTS)
    assert facts.l4t == "36.4"
    assert facts.memory_gb == pytest.approx(65.9, abs=0.1)
    names = [m.profile.name for m in detect_profiles(facts, registry)]
    assert names[0] == "jetson-agx-orin-64gb"
    assert "jetson-orin-nano-8gb" not in names  # 64 GB is over its max_memory_gb


def test_physical_cores_are_a_fact_and_the_probe_counts_them_here() -> None:
    """lscpu's (core, socket) pairs: SMT siblings count once; a device without lscpu (or whose
    lscpu finds no /sys) leaves the fact out rather than saying 0."""
    assert parse_facts("d", "root=/r\narch=x86_64\nphysical_cores=6\n").physical_cores == 6
    assert parse_facts("d", "root=/r\narch=x86_64\n").physical_cores is None
    here = gather_facts(LocalConnector("here"), "/tmp")
    assert here.physical_cores is not None
    assert 1 <= here.physical_cores <= (here.cpu_cores or 0)


def test_dgpu_facts_detect_by_gpu_name(registry: TargetRegistry) -> None:
    text = "root=/r\narch=x86_64\nmem_total_kb=131072000\n"
    text += "gpu=NVIDIA RTX 6000 Ada Generation, 8.9, 49140, 550.54\n"
    facts = parse_facts("ws", text)
    assert facts.gpu is not None and facts.gpu.compute_capability == "8.9"
    assert detect_profiles(facts, registry)[0].profile.name == "ada-sm89"


def _manifest(backend: str, **target: object) -> Manifest:
    return Manifest(
        edgepack_version="t", model={}, recipe={"backend": backend}, target=target,
        tools={}, plan={}, stages=[],
    )  # fmt: skip


def test_compatibility_names_both_sides(registry: TargetRegistry) -> None:
    orin = parse_facts("orin", ORIN_FACTS)
    ada_bundle = _manifest("trtllm", name="ada-sm89", arch="x86_64", cuda_arch="89")
    problems = compatibility_problems(ada_bundle, orin, registry)
    assert "bundle is for x86_64 (target ada-sm89) but device orin is aarch64" in problems
    assert any("built for SM89 (target ada-sm89) but device orin is SM87" in p for p in problems)
    assert any(
        "needs TensorRT 10.13.3 (target ada-sm89) but device orin has 10.3.0" in p for p in problems
    )

    orin_bundle = _manifest("edgellm", name="jetson-agx-orin-64gb", arch="aarch64", cuda_arch="87")
    assert compatibility_problems(orin_bundle, orin, registry) == []
    upgraded = parse_facts("orin", ORIN_FACTS.replace("REVISION: 4.3", "REVISION: 2.0"))
    assert any("L4T 36.4" in p for p in compatibility_problems(orin_bundle, upgraded, registry))


def test_tegrastats_orin_line() -> None:
    rows = parse_tegrastats((FIXTURES / "tegrastats-orin.log").read_text())
    assert len(rows) == 2
    first = rows[0]
    assert (first["ram_used_mb"], first["ram_total_mb"]) == (2448, 62840)
    assert first["cpu_load_pct"][:3] == [12.0, 8.0, 35.0] and len(first["cpu_load_pct"]) == 8
    assert (first["gpu_load_pct"], first["gpu_mhz"], first["emc_mhz"]) == (97.0, 1300.0, 3199.0)
    assert "CV0" not in first["temps_c"] and first["temps_c"]["GPU"] == 55.125
    assert first["rails_mw"]["VDD_GPU_SOC"] == 14395
    # VDD_GPU_SOC + VDD_CPU_CV + VIN_SYS_5V0; VDDQ_VDD2_1V8AO is part of VIN_SYS_5V0
    assert total_power_w(first) == pytest.approx(14.395 + 2.399 + 5.525)
    assert total_power_w(first) > first["rails_mw"]["VDD_GPU_SOC"] / 1000


@pytest.mark.parametrize(
    ("log", "board", "expected_w"),
    [
        ("tegrastats-thor.log", "Jetson AGX Thor", 41.27),
        ("tegrastats-orin-nano.log", "Jetson Orin NX / Orin Nano", 11.82),
        ("tegrastats-orin.log", "Jetson AGX Orin", 22.319),
    ],
)
def test_tegrastats_total_power_per_board(log: str, board: str, expected_w: float) -> None:
    text = (FIXTURES / log).read_text()
    rows = parse_tegrastats(text)
    assert total_power_w(rows[0]) == pytest.approx(expected_w)
    # The total is never below any one rail it contains.
    assert all(total_power_w(rows[0]) >= mw / 1000 for mw in rows[0]["rails_mw"].values())
    rails = summarize({"tegrastats.log": text}, 500, decode_tok_s=None)["tegrastats"]["power_rails"]
    assert rails["board"] == board and "Developer Guide" in rails["source"]


def test_thor_without_ina238_sums_its_module_rails() -> None:
    line = (FIXTURES / "tegrastats-thor.log").read_text().splitlines()[0]
    row = parse_tegrastats_line(line.rsplit(" VIN ", 1)[0])
    assert row is not None
    assert total_power_w(row) == pytest.approx(21.38 + 8.31 + 7.45)


def test_unknown_rail_layout_gives_no_total() -> None:
    line = "RAM 100/200MB CPU [1%@100] VDD_MYSTERY 5000mW/5000mW VIN_FOO 2000mW/2000mW"
    row = parse_tegrastats_line(line)
    assert row is not None and total_power_w(row) is None
    summary = summarize({"tegrastats.log": line}, 500, decode_tok_s=None)
    assert "power_w" not in summary
    assert summary["tegrastats"]["power_rails"]["note"] == "rail layout not recognised"


def test_tegrastats_older_format_has_no_power() -> None:
    [row] = parse_tegrastats((FIXTURES / "tegrastats-xavier-older.log").read_text())
    assert (row["gpu_load_pct"], row["gpu_mhz"]) == (0.0, 318.0)
    assert row["temps_c"]["Tboard"] == 36.0
    assert total_power_w(row) is None


def test_nvidia_smi_csv_and_summary() -> None:
    text = (FIXTURES / "nvidia-smi-query-gpu.csv").read_text()
    rows = parse_nvidia_smi_csv(text)
    assert [r["power_w"] for r in rows] == [21.43, 287.91, 296.02, None]
    summary = summarize({"nvidia-smi.csv": text}, 500, decode_tok_s=100.0)
    assert summary["nvidia_smi"]["throttled_samples"] == 2
    assert summary["power_w"]["max"] == 296.02
    assert summary["energy_per_token_j"] == pytest.approx(summary["power_w"]["mean"] / 100.0)


def test_proc_log_recorded_here() -> None:
    rows = parse_proc_log((FIXTURES / "proc.log").read_text())
    assert len(rows) == 3
    assert all(0.0 <= r["cpu_util_pct"] <= 100.0 for r in rows)
    assert all(r["mem_used_bytes"] > 0 for r in rows)

"""Which tegrastats power rails add up to a Jetson's total, per board.

tegrastats prints every INA3221/INA238 channel the board has (``NAME cur mW/avg mW``), and the
channels overlap differently on each board: summing all of them double-counts, and taking the
first ``VIN*`` rail (what this module replaced) reported AGX Orin's 5 V system rail as the board's
power. The rules below come from NVIDIA's Jetson Linux Developer Guide, "Platform Power and
Performance" (r36.4: Jetson Orin Nano / Orin NX / AGX Orin series, "Power monitors"; r38: Jetson
Thor product family), as recorded in tests/fixtures/telemetry/README.md. A rail set that matches no
rule gives no total: a guess would be a wrong number in a report.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

ORIN_GUIDE = (
    "Jetson Linux Developer Guide r36.4, Platform Power and Performance: Jetson Orin Nano, "
    "Orin NX and AGX Orin series, power monitors"
)
THOR_GUIDE = "Jetson Linux Developer Guide r38, Platform Power and Performance: Jetson Thor"


@dataclass(frozen=True)
class RailRule:
    board: str
    present: frozenset[str]
    """Rails whose presence identifies the board's monitor layout."""
    total_of: tuple[str, ...]
    """The rails whose sum is the total; the others are parts of them."""
    note: str
    source: str

    def matches(self, rails: Mapping[str, int]) -> bool:
        return self.present <= rails.keys()

    def total_mw(self, rails: Mapping[str, int]) -> int:
        return sum(rails[name] for name in self.total_of)

    def record(self) -> dict[str, object]:
        return {
            "board": self.board,
            "total_of": list(self.total_of),
            "note": self.note,
            "source": self.source,
        }


RULES = (
    RailRule(
        "Jetson AGX Thor",
        frozenset({"VIN", "VDD_CPU_SOC_MSS"}),
        ("VIN",),
        "VIN (INA238) is the module and carrier input; VDD_GPU, VDD_CPU_SOC_MSS and "
        "VIN_SYS_5V0 (INA3221) are parts of it",
        THOR_GUIDE,
    ),
    RailRule(
        "Jetson AGX Thor (no INA238 on the carrier)",
        frozenset({"VDD_GPU", "VDD_CPU_SOC_MSS", "VIN_SYS_5V0"}),
        ("VDD_GPU", "VDD_CPU_SOC_MSS", "VIN_SYS_5V0"),
        "without VIN the module total is its three INA3221 rails",
        THOR_GUIDE,
    ),
    RailRule(
        "Jetson AGX Orin",
        frozenset({"VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0"}),
        ("VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0"),
        "VDDQ_VDD2_1V8AO is included in VIN_SYS_5V0 and is not added again; VIN_SYS_5V0 is "
        "the 5 V system rail (IOs, DDR), not the board input",
        ORIN_GUIDE,
    ),
    RailRule(
        "Jetson Orin NX / Orin Nano",
        frozenset({"VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"}),
        ("VDD_IN",),
        "VDD_IN is the total module input; VDD_CPU_GPU_CV and VDD_SOC are parts of it",
        ORIN_GUIDE,
    ),
)


def rule_for(rails: Mapping[str, int]) -> RailRule | None:
    """The first rule whose rails are all present (the more specific layouts come first)."""
    return next((rule for rule in RULES if rule.matches(rails)), None)

"""The fault trials' short seeded profile (the full run: `python -m tests.integration.fault_trials
--full`, which writes docs/RELIABILITY.md), and eight devices at once with one powered off."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.conftest import require
from tests.integration.fault_load import fleet_with_one_killed
from tests.integration.fault_report import render
from tests.integration.fault_trials import SCENARIOS, environment_problem, run_trials

pytestmark = pytest.mark.integration


def test_a_seeded_trial_of_every_fault_leaves_a_verified_current_and_resumes(
    tmp_path: Path,
) -> None:
    problem = environment_problem()
    require(problem is None, str(problem))
    results = run_trials(tmp_path / "trials", per_scenario=1, seed=7)
    assert [t.scenario for t in results.trials] == list(SCENARIOS)
    failed = [t for t in results.trials if not t.ok]
    assert not failed, render(results)
    assert sum(t.fired for t in results.trials) >= len(SCENARIOS) - 1


def test_eight_devices_at_once_one_powered_off_the_others_finish(tmp_path: Path) -> None:
    problem = environment_problem()
    require(problem is None, str(problem))
    fleet = fleet_with_one_killed(tmp_path / "fleet", victim=5)
    assert fleet["ok"], fleet
    assert fleet["failed_hosts"] == ["d5"] and fleet["finished"] == 7

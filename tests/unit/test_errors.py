"""The error hierarchy: one exit code per failure kind, hints, did-you-mean."""

from __future__ import annotations

import pytest

from edgepack import errors
from edgepack.errors import EdgepackError, ExitCode, InvalidPlanError, did_you_mean


def _error_classes() -> list[type[EdgepackError]]:
    found: list[type[EdgepackError]] = []
    pending = [EdgepackError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return [cls for cls in found if cls.__module__ == errors.__name__]


def test_every_error_class_has_its_own_exit_code() -> None:
    classes = _error_classes()
    assert len(classes) >= 9  # the base and its eight kinds
    codes = {cls.__name__: cls.exit_code for cls in classes}
    assert len(set(codes.values())) == len(codes), codes


def test_exit_codes_are_distinct_and_nonzero_for_failures() -> None:
    values = {k: v for k, v in vars(ExitCode).items() if not k.startswith("_")}
    assert len(set(values.values())) == len(values)
    assert values.pop("OK") == 0
    assert 0 not in values.values()


@pytest.mark.parametrize(
    ("cls", "code"),
    [
        (errors.BadInputError, ExitCode.BAD_INPUT),
        (errors.ProfileError, ExitCode.INVALID_PROFILE),
        (errors.InvalidPlanError, ExitCode.INVALID_PLAN),
        (errors.BadInputError, 2),
        (errors.InvalidPlanError, 3),
        (errors.ProfileError, 4),
        (errors.RegressionError, ExitCode.REGRESSION),
        (errors.RegressionError, 10),
    ],
)
def test_codes_the_cli_documents(cls: type[EdgepackError], code: int) -> None:
    assert cls.exit_code == code


def test_error_carries_message_and_hint() -> None:
    error = errors.ToolMissingError("trtllm-build is missing", hint="use the NGC image")
    assert str(error) == "trtllm-build is missing"
    assert error.hint == "use the NGC image"
    assert error.exit_code == ExitCode.TOOL_MISSING


def test_invalid_plan_error_lists_every_problem() -> None:
    error = InvalidPlanError(["first thing", "second thing"])
    assert error.problems == ["first thing", "second thing"]
    assert "2 problems" in error.message
    assert "first thing" in error.message and "second thing" in error.message


def test_did_you_mean() -> None:
    assert did_you_mean("bandwith_gbps", ["size_gb", "bandwidth_gbps"]) == (
        ' (did you mean "bandwidth_gbps"?)'
    )
    assert did_you_mean("zzz", ["fp16", "fp8"]) == ""

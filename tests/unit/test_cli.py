"""The command line through ``edgepack.cli.main.run``: exit codes, JSON, errors, help."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import typer.main
import typer.rich_utils

from edgepack.cli import plan as plan_cli
from edgepack.cli.main import DEBUG_ENV, app, make_app
from edgepack.errors import ExitCode
from edgepack.plan import Limits
from edgepack.resources import TARGETS_PATH_ENV
from tests.unit.conftest import ANSI

# An ssh builder is not contacted at plan time: the plan is valid wherever it is made.
ADA_FP8 = (
    "plan", "--target", "ada-sm89", "--model", "qwen2.5-7b-instruct", "--precision", "fp8",
    "--builder", "ssh:gpu-box",
)  # fmt: skip
ORIN_FP8 = ("plan", "-t", "jetson-agx-orin-64gb", "-m", "qwen3-8b", "-p", "fp8")


def _error_lines(result):
    return [line for line in result.err.splitlines() if line.strip()]


# --- help and version -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--help"], ["plan", "targets"]),
        (["plan", "--help"], ["--target", "--precision", "--max-seq-len", "--json"]),
        (["targets", "--help"], ["list", "show", "validate"]),
        (["-h"], ["plan"]),
    ],
)
def test_help(cli, argv, expected) -> None:
    result = cli(*argv)
    assert result.code == ExitCode.OK
    for word in expected:
        assert word in result.out


@pytest.mark.parametrize(
    "argv", [["build", "--help"], ["targets", "list", "--help"], ["--debug", "plan", "--help"]]
)
def test_a_named_command_helps_as_in_the_whole_app(cli, capsys, argv) -> None:
    """``run`` builds only the command the line names; what it says is the whole app's."""
    narrowed = cli(*argv)
    with pytest.raises(SystemExit):
        app(args=argv, prog_name="edgepack")
    whole = ANSI.sub("", capsys.readouterr().out)
    assert narrowed.code == ExitCode.OK and narrowed.out == whole


def test_a_named_command_is_the_only_one_built() -> None:
    assert [c.name for c in make_app("build").registered_commands] == ["build"]
    assert make_app("build").registered_groups == []
    assert [g.name for g in make_app("targets").registered_groups] == ["targets"]
    assert len(app.registered_commands) + len(app.registered_groups) == 11


def _commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every command under ``command`` (Typer's own click types: no isinstance on them)."""
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, (*path, name))


def test_help_keeps_every_option_text_and_whole_paragraphs(cli, monkeypatch) -> None:
    """Rich reads "[default: ...]" as markup and drops it unless escaped; Typer keeps the
    docstring's line breaks unless main reflows them. On a wide console each paragraph is a line."""
    monkeypatch.setattr(typer.rich_utils, "MAX_WIDTH", 2000)
    commands = list(_commands(typer.main.get_command(app)))
    assert {("bench",), ("deploy",), ("targets", "detect")} <= {path for path, _ in commands}
    for path, command in commands:
        out = cli(*path, "--help").out
        for param in command.params:
            help_text = getattr(param, "help", None) or ""
            assert help_text.replace("\\[", "[") in out, (path, param.name)
        for paragraph in (command.help or "").split("\n\n")[1:]:
            if not paragraph.startswith((" ", "- ")):
                assert paragraph in (line.strip() for line in out.splitlines()), (path, paragraph)


def test_version(cli) -> None:
    result = cli("--version")
    assert result.code == 0
    assert result.out.startswith("edgepack ")


def test_usage_error_is_exit_2(cli) -> None:
    result = cli("plan", "--target", "ada-sm89", "--model", "qwen3-8b")
    assert result.code == 2
    assert "--precision" in result.err


def test_cli_defaults_equal_the_planner_defaults() -> None:
    defaults = Limits()
    assert defaults.max_batch_size == plan_cli.DEFAULT_MAX_BATCH
    assert defaults.max_input_len == plan_cli.DEFAULT_MAX_INPUT
    assert defaults.max_seq_len == plan_cli.DEFAULT_MAX_SEQ


# --- edgepack plan --------------------------------------------------------------------------


def test_plan_json_on_a_valid_plan(cli) -> None:
    result = cli(*ADA_FP8, "--json")
    assert result.code == ExitCode.OK
    summary = json.loads(result.out)
    assert summary["valid"] is True
    assert (summary["target"], summary["precision"], summary["backend"]) == (
        "ada-sm89",
        "fp8",
        "trtllm",
    )
    assert summary["memory"]["weight_bytes"] == pytest.approx(8.2e9, rel=0.10)
    assert summary["problems"] == []


def test_plan_human_output_on_a_valid_plan(cli) -> None:
    result = cli(*ADA_FP8)
    assert result.code == ExitCode.OK
    assert "plan is valid" in result.flat_out
    assert "SM89" in result.flat_out
    assert "problem:" not in result.out


def test_plan_limits_reach_the_planner(cli) -> None:
    result = cli(
        *ADA_FP8,
        "--max-batch-size",
        "3",
        "--max-input-len",
        "512",
        "--max-seq-len",
        "1024",
        "--json",
    )
    assert result.code == 0
    assert json.loads(result.out)["limits"] == {
        "max_batch_size": 3,
        "max_input_len": 512,
        "max_seq_len": 1024,
    }


def test_plan_backend_and_kv_options_reach_the_planner(cli) -> None:
    result = cli(*ADA_FP8, "--backend", "trtrtx", "--kv-cache-dtype", "fp16", "--json")
    assert result.code == 0
    summary = json.loads(result.out)
    assert (summary["backend"], summary["kv_cache_dtype"]) == ("trtrtx", "fp16")


def test_plan_kv_quantization_needs_the_flag(cli) -> None:
    refused = cli(*ADA_FP8, "--kv-cache-dtype", "fp8", "--json")
    assert refused.code == ExitCode.INVALID_PLAN
    allowed = cli(*ADA_FP8, "--kv-cache-dtype", "fp8", "--allow-kv-quantization", "--json")
    assert allowed.code == ExitCode.OK
    assert json.loads(allowed.out)["warnings"]


def test_plan_invalid_prints_every_problem_and_exits_3(cli) -> None:
    result = cli(*ORIN_FP8, "--backend", "trtllm", "--kv-cache-dtype", "fp8")
    assert result.code == ExitCode.INVALID_PLAN == 3
    assert result.out.count("problem:") >= 3
    text = result.flat_out
    assert "SM87" in text and "no FP8 tensor cores" in text
    assert "backend trtllm is not available for jetson-agx-orin-64gb" in text
    assert "plan is invalid" in text


def test_plan_invalid_json_exits_3(cli) -> None:
    result = cli(*ORIN_FP8, "--json")
    assert result.code == ExitCode.INVALID_PLAN
    summary = json.loads(result.out)
    assert summary["valid"] is False
    assert any("SM87" in problem for problem in summary["problems"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("plan", "-t", "ada-sm8", "-m", "qwen3-8b", "-p", "fp8"), "unknown target 'ada-sm8'"),
        (("plan", "-t", "ada-sm89", "-m", "qwen3-8c", "-p", "fp8"), "unknown model 'qwen3-8c'"),
        (("plan", "-t", "ada-sm89", "-m", "qwen3-8b", "-p", "fp9"), "unknown precision 'fp9'"),
        (
            ("plan", "-t", "ada-sm89", "-m", "qwen3-8b", "-p", "fp8", "-b", "trt-llm"),
            "unknown backend 'trt-llm'",
        ),
        (("targets", "show", "jetson-thorr"), "unknown target 'jetson-thorr'"),
    ],
)
def test_unknown_names_exit_2_with_one_line_and_a_hint(cli, argv, message) -> None:
    result = cli(*argv)
    assert result.code == ExitCode.BAD_INPUT == 2
    lines = _error_lines(result)
    assert len(lines) == 2, result.err
    assert lines[0].startswith("error: ") and message in lines[0]
    assert "did you mean" in lines[0]
    assert lines[1].startswith("hint: ")
    assert "Traceback" not in result.err
    assert result.out == ""


def test_plan_with_a_local_model_folder(cli, tmp_path) -> None:
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 64,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "vocab_size": 1000,
        "max_position_embeddings": 4096,
    }
    (tmp_path / "config.json").write_text(json.dumps(config), encoding="utf-8")
    result = cli("plan", "-t", "host-x86_64-cpu", "-m", str(tmp_path), "-p", "fp32", "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["model"] == tmp_path.name


# --- --debug --------------------------------------------------------------------------------

UNKNOWN_TARGET = ("plan", "-t", "nowhere", "-m", "qwen3-8b", "-p", "fp16")


def test_no_traceback_without_debug(cli) -> None:
    result = cli(*UNKNOWN_TARGET)
    assert result.code == ExitCode.BAD_INPUT
    assert "Traceback" not in result.err


def test_debug_flag_shows_the_traceback(cli) -> None:
    result = cli("--debug", *UNKNOWN_TARGET)
    assert result.code == ExitCode.BAD_INPUT
    assert "Traceback (most recent call last)" in result.err
    assert "BadInputError" in result.err
    assert "error: unknown target 'nowhere'" in result.err


def test_debug_env_shows_the_traceback(cli, monkeypatch) -> None:
    monkeypatch.setenv(DEBUG_ENV, "1")
    result = cli(*UNKNOWN_TARGET)
    assert result.code == ExitCode.BAD_INPUT
    assert "Traceback (most recent call last)" in result.err


# --- edgepack targets -----------------------------------------------------------------------


def test_targets_list(cli, registry) -> None:
    result = cli("targets", "list")
    assert result.code == 0
    for name in registry.names():
        assert name in result.out


def test_targets_list_json(cli, registry) -> None:
    result = cli("targets", "list", "--json")
    assert result.code == 0
    rows = {row["name"]: row for row in json.loads(result.out)}
    assert sorted(rows) == registry.names()
    orin = rows["jetson-agx-orin-64gb"]
    assert orin["sm"] == "SM87"
    assert "fp8" not in orin["precisions"]
    assert orin["backends"][0] == "edgellm"  # the default first
    assert rows["ada-sm89"]["backends"][0] == "trtllm"


def test_targets_list_includes_user_profiles(cli, profile_variant, monkeypatch) -> None:
    flag = profile_variant(
        "ada-sm89", ('name = "ada-sm89"', 'name = "from-flag"'), name="from-flag", directory="a"
    )
    env = profile_variant(
        "ada-sm89", ('name = "ada-sm89"', 'name = "from-env"'), name="from-env", directory="b"
    )
    monkeypatch.setenv(TARGETS_PATH_ENV, str(env.parent))
    result = cli("targets", "list", "--targets-dir", str(flag.parent), "--json")
    assert result.code == 0
    names = [row["name"] for row in json.loads(result.out)]
    assert {"from-flag", "from-env", "ada-sm89"} <= set(names)


@pytest.mark.parametrize(
    ("name", "sm", "cuda_arch"),
    [
        ("ada-sm89", "SM89", "89"),
        ("jetson-thor", "SM110", "110a"),
        ("dgx-spark", "SM121", "121a"),
        ("jetson-agx-orin-64gb", "SM87", "87"),
    ],
)
def test_targets_show_json_derived_values(cli, name, sm, cuda_arch) -> None:
    result = cli("targets", "show", name, "--json")
    assert result.code == 0
    data = json.loads(result.out)
    assert data["name"] == name
    assert data["derived"]["sm"] == sm
    assert data["derived"]["cuda_arch"] == cuda_arch
    assert data["derived"]["file"].endswith(f"{name}.toml")
    assert len(data["derived"]["profile_hash"]) == 64


def test_targets_show_cpu_profile_has_no_cuda_arch(cli) -> None:
    data = json.loads(cli("targets", "show", "host-x86_64-cpu", "--json").out)
    assert data["gpu"] is None
    assert data["derived"]["sm"] == "CPU (x86_64)"
    assert "cuda_arch" not in data["derived"]


def test_targets_show_user_override(cli, profile_variant) -> None:
    path = profile_variant(
        "ada-sm89", ("bandwidth_gbps = 960", "bandwidth_gbps = 1000"), directory="mine"
    )
    result = cli("targets", "show", "ada-sm89", "--targets-dir", str(path.parent), "--json")
    data = json.loads(result.out)
    assert data["memory"]["bandwidth_gbps"] == 1000
    assert data["derived"]["file"] == str(path)


def test_targets_show_human(cli) -> None:
    result = cli("targets", "show", "jetson-thor")
    assert result.code == 0
    assert "cuda_arch = 110a" in result.out
    assert "bandwidth_gbps = 273" in result.out


def test_targets_validate_good_files(cli, profile_variant) -> None:
    first, second = profile_variant("ada-sm89"), profile_variant("jetson-thor")
    result = cli("targets", "validate", str(first), str(second))
    assert result.code == 0
    assert result.flat_out.count("ok ") == 2


def test_targets_validate_bad_file_exits_4(cli, profile_variant) -> None:
    good = profile_variant("jetson-thor")
    bad = profile_variant("ada-sm89", ("bandwidth_gbps = 960", "bandwith_gbps = 960"))
    result = cli("targets", "validate", str(good), str(bad))
    assert result.code == ExitCode.INVALID_PROFILE == 4
    assert str(bad) in result.flat_err
    assert "memory.bandwith_gbps" in result.flat_err
    assert 'did you mean "bandwidth_gbps"' in result.flat_err
    assert "Traceback" not in result.err


def test_targets_validate_missing_file_exits_2(cli, tmp_path) -> None:
    assert cli("targets", "validate", str(tmp_path / "none.toml")).code == ExitCode.BAD_INPUT

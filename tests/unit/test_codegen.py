"""The C++ runtime's templates: variables, golden renders per target, toolchains from profiles."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta
import pytest

from edgepack.errors import BadInputError, ExitCode, ToolMissingError
from edgepack.plan import Limits
from edgepack.resources import data_dir
from edgepack.runtime.build import (
    HEADER_ROOT,
    LIBRARY_HEADERS,
    check_build_tools,
    check_library_headers,
)
from edgepack.runtime.render import (
    project_templates,
    render_files,
    render_project,
    sources_hash,
    template_environment,
)
from edgepack.runtime.spec import (
    RENDERED_BACKENDS,
    RuntimeBuild,
    RuntimeSpec,
    default_mode,
    host_arch,
)
from edgepack.targets import TargetProfile, TargetRegistry

GOLDEN = Path(__file__).parent.parent / "fixtures" / "golden"
UPDATE_ENV = "EDGEPACK_UPDATE_GOLDEN"
GOLDEN_CASES = [
    ("host-x86_64-cpu", "ort"),
    ("generic-aarch64-cpu", "ort"),
    ("jetson-agx-orin-64gb", "edgellm"),
    ("ada-sm89", "trtllm"),
]


def profile(name: str) -> TargetProfile:
    return TargetRegistry.default().get(name)


def spec_for(target: str, backend: str = "ort") -> RuntimeSpec:
    return RuntimeSpec.for_target(
        profile(target),
        backend=backend,
        model_name="smollm2-135m",
        precision="int4",
        kv_cache_dtype="fp16",
        limits=Limits(max_batch_size=4, max_input_len=1024, max_seq_len=2048),
    )


def all_template_names() -> list[str]:
    """The C++ runtime's templates (report/ holds the HTML report's, rendered from a report)."""
    root = data_dir("templates")
    names = (path.relative_to(root).as_posix() for path in root.rglob("*.j2"))
    return sorted(name for name in names if not name.startswith("report/"))


@pytest.mark.parametrize("name", all_template_names())
def test_every_template_variable_is_a_field_of_the_codegen_model(name: str) -> None:
    environment = template_environment()
    assert environment.loader is not None
    source, _, _ = environment.loader.get_source(environment, name)
    used = jinja2.meta.find_undeclared_variables(environment.parse(source))
    fields = {field.name for field in dataclasses.fields(RuntimeSpec)}
    assert used <= fields, f"{name} uses {sorted(used - fields)}, not fields of RuntimeSpec"


def test_templates_exist_for_every_rendered_backend() -> None:
    for backend in RENDERED_BACKENDS:
        names = project_templates(backend)
        assert {"CMakeLists.txt", "toolchain.cmake", "src/main.cpp"} <= set(names), backend


def test_undefined_variables_fail_the_render() -> None:
    with pytest.raises(jinja2.UndefinedError):
        template_environment().from_string("{{ no_such_field }}").render({})


@pytest.mark.parametrize(("target", "backend"), GOLDEN_CASES)
def test_rendered_project_matches_golden_files(target: str, backend: str) -> None:
    rendered = render_files(spec_for(target, backend))
    folder = GOLDEN / target / backend
    if os.environ.get(UPDATE_ENV):
        for name, text in rendered.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(text, encoding="utf-8")
    golden = {
        path.relative_to(folder).as_posix(): path.read_text(encoding="utf-8")
        for path in folder.rglob("*")
        if path.is_file()
    }
    assert set(golden) == set(rendered), f"rerun with {UPDATE_ENV}=1 after a deliberate change"
    for name, text in rendered.items():
        assert text == golden[name], f"{target}/{backend}/{name} differs from its golden file"


@pytest.mark.parametrize("target", ["jetson-agx-orin-64gb", "jetson-thor", "dgx-spark", "ada-sm89"])
def test_toolchain_comes_from_the_profile(target: str) -> None:
    facts = profile(target)
    assert facts.gpu is not None
    toolchain = render_files(spec_for(target, "edgellm"))["toolchain.cmake"]
    assert f"set(CMAKE_SYSTEM_PROCESSOR {facts.toolchain.cmake_system_processor})" in toolchain
    assert f"set(CMAKE_CXX_COMPILER {facts.toolchain.compiler_triple}-g++)" in toolchain
    assert f"set(CMAKE_CUDA_ARCHITECTURES {facts.gpu.cuda_arch})" in toolchain
    assert f"set(CUDA_CTK_VERSION {facts.toolchain.cuda} " in toolchain
    if facts.toolchain.embedded_target:
        assert f"set(EMBEDDED_TARGET {facts.toolchain.embedded_target} " in toolchain
    else:
        assert "EMBEDDED_TARGET" not in toolchain


def test_cpu_toolchain_has_no_cuda_and_a_sysroot_only_when_given() -> None:
    plain = render_files(spec_for("generic-aarch64-cpu"))["toolchain.cmake"]
    assert "CUDA" not in plain and "CMAKE_SYSROOT" not in plain
    with_root = dataclasses.replace(spec_for("generic-aarch64-cpu"), sysroot="/opt/l4t-root")
    assert 'set(CMAKE_SYSROOT "/opt/l4t-root")' in render_files(with_root)["toolchain.cmake"]


def test_config_header_carries_the_plan_limits_and_arch() -> None:
    spec = dataclasses.replace(spec_for("generic-aarch64-cpu"), max_batch_size=3)
    header = render_files(spec)["src/runtime_config.hpp"]
    assert "kMaxBatchSize = 3;" in header
    assert "kMaxInputLen = 1024;" in header
    assert "kKvCapacity = 2048;" in header
    assert 'kTargetArch = "aarch64";' in header
    assert 'kSelfTestPrompt = "What is the capital of France?";' in header


def test_render_project_adds_the_shared_cpp(tmp_path: Path) -> None:
    render_project(spec_for("host-x86_64-cpu"), tmp_path)
    assert (tmp_path / "cpp_runtime" / "include" / "edgepack" / "api" / "oga.h").is_file()
    assert (tmp_path / "cpp_runtime" / "src" / "sha256.cpp").is_file()
    assert (tmp_path / "src" / "main.cpp").is_file()


def test_sources_hash_is_stable_and_per_backend() -> None:
    assert sources_hash("ort") == sources_hash("ort")
    assert sources_hash("ort") != sources_hash("edgellm")


def test_unknown_backend_has_no_templates() -> None:
    with pytest.raises(BadInputError, match="no C\\+\\+ runtime templates"):
        project_templates("trtrtx")


def test_default_mode_is_native_only_on_the_targets_arch() -> None:
    for target in TargetRegistry.default().all():
        expected = "native" if target.arch == host_arch() else "cross"
        assert default_mode(target) == expected


def test_no_runtime_by_default_where_the_backend_needs_an_sdk(tmp_path: Path) -> None:
    from edgepack.cli.build import runtime_choice
    from edgepack.cli.plan import build_plan

    plan = build_plan("ada-sm89", "smollm2-135m", "fp16", "trtrtx", None, Limits(), False, None)
    assert default_mode(plan.target, "trtrtx") == "none"
    assert runtime_choice(None, plan, tmp_path).mode == "none"


def test_native_build_for_another_arch_is_refused_before_work() -> None:
    other = "aarch64" if host_arch() == "x86_64" else "x86_64"
    spec = dataclasses.replace(spec_for("generic-aarch64-cpu"), arch=other)
    with pytest.raises(BadInputError, match="cannot produce"):
        check_build_tools(spec, "native")


def test_a_missing_library_header_is_named_with_its_package(tmp_path: Path) -> None:
    with pytest.raises(ToolMissingError) as missing:
        check_library_headers(None, root=tmp_path)
    assert missing.value.exit_code == ExitCode.TOOL_MISSING and "\n" not in missing.value.message
    assert missing.value.message.startswith("nlohmann/json.hpp is missing")
    assert "nlohmann-json3-dev" in missing.value.message
    assert missing.value.hint == "apt-get install nlohmann-json3-dev"
    (tmp_path / "nlohmann").mkdir()
    (tmp_path / "nlohmann" / "json.hpp").touch()
    with pytest.raises(ToolMissingError, match=r"CLI/CLI\.hpp is missing.*libcli11-dev"):
        check_library_headers(None, root=tmp_path)


def test_library_headers_may_come_from_the_sysroot(tmp_path: Path) -> None:
    include = tmp_path / "sysroot" / "usr" / "include"
    for header in LIBRARY_HEADERS:
        (include / header).parent.mkdir(parents=True, exist_ok=True)
        (include / header).touch()
    check_library_headers(str(tmp_path / "sysroot"), root=tmp_path / "empty")


def test_runtime_choice_rejects_unknown_modes(tmp_path: Path) -> None:
    from edgepack.cli.build import runtime_choice
    from edgepack.cli.plan import build_plan

    plan = build_plan(
        "generic-aarch64-cpu", "smollm2-135m", "int4", None, None, Limits(), False, None
    )
    assert runtime_choice("cross", plan, tmp_path) == RuntimeBuild("cross", cache_root=tmp_path)
    assert runtime_choice(None, plan, tmp_path).mode == default_mode(plan.target)
    with pytest.raises(BadInputError, match='did you mean "native"'):
        runtime_choice("natve", plan, tmp_path)


def test_container_mode_without_an_engine_stops_the_build_before_any_work(
    cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-daemon.sock")  # docker answers no
    monkeypatch.setenv("CONTAINER_HOST", f"unix://{tmp_path}/no-daemon.sock")  # nor podman
    cache = tmp_path / "cache"
    result = cli(
        "build", "--target", "generic-aarch64-cpu", "--precision", "int4",
        "--model", "demo:smollm2-135m", "--runtime", "container", "--cache-dir", str(cache),
    )  # fmt: skip
    assert result.code == ExitCode.TOOL_MISSING
    assert "no container engine answers" in result.err or "neither docker nor podman" in result.err
    assert not (cache / "models").exists()  # the demo model was not converted first


def library_headers(project: Path) -> Path:
    """The libraries' header folders linked into one directory, as the CMake project does."""
    missing = [
        package
        for header, package in LIBRARY_HEADERS.items()
        if not (HEADER_ROOT / header).is_file()
    ]
    if missing:
        pytest.skip(f"apt-get install {' '.join(missing)}")
    folder = project / "library-headers"
    folder.mkdir(exist_ok=True)
    for header in LIBRARY_HEADERS:
        name = header.split("/")[0]
        if not (folder / name).exists():
            (folder / name).symlink_to(HEADER_ROOT / name)
    return folder


def syntax_check(compiler: str, project: Path) -> subprocess.CompletedProcess[str]:
    if shutil.which(compiler) is None:
        pytest.skip(f"{compiler} is not installed (Debian: g++-<triple with dashes>)")
    includes = ["-I", str(project / "src"), "-I", str(project / "cpp_runtime" / "include")]
    includes += ["-isystem", str(library_headers(project))]
    flags = ["-std=c++17", "-fsyntax-only", "-Wall", "-Wextra", "-Werror"]
    return subprocess.run(
        [compiler, *flags, *includes, str(project / "src" / "main.cpp")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("target", "backend"),
    [("host-x86_64-cpu", "ort"), ("jetson-agx-orin-64gb", "edgellm"), ("ada-sm89", "trtllm")],
)
def test_rendered_main_passes_a_syntax_check(target: str, backend: str, tmp_path: Path) -> None:
    """edgellm and trtllm compile against our declarations of their API (with the target's
    compiler) until a machine with their SDKs builds them for real."""
    spec = spec_for(target, backend)
    render_project(spec, tmp_path)
    done = syntax_check(f"{spec.compiler_triple}-g++", tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]


def test_a_compiler_for_the_wrong_arch_fails_at_compile_time(tmp_path: Path) -> None:
    wrong = "aarch64" if host_arch() == "x86_64" else "x86_64"
    spec = dataclasses.replace(spec_for("host-x86_64-cpu"), arch=wrong)
    render_project(spec, tmp_path)
    done = syntax_check("g++", tmp_path)
    assert done.returncode != 0
    assert "compiler targets the wrong architecture" in done.stderr

"""The generated C++ runtime, built for real and run on real demo bundles: natively, and cross-built
for aarch64 and run under qemu-user (REFERENCE.md §10: with an aarch64 /proc/cpuinfo bound over the
host's in a private mount namespace, where ONNX Runtime's CPU detection would crash otherwise)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from edgepack.cli.main import run
from tests.conftest import require_demo_stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BINARY = Path("runtime") / "bin" / "edgepack-runtime"
QEMU_LD_PREFIX = Path("/usr/aarch64-linux-gnu")
CAPITAL = "What is the capital of France?"
AARCH64_CPUINFO = "".join(
    f"processor\t: {index}\nBogoMIPS\t: 50.00\n"
    "Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm\n"
    "CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x3\nCPU part\t: 0xd0c\n"
    "CPU revision\t: 1\n\n"
    for index in range(os.cpu_count() or 1)
)


def run_binary(
    command: list[str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, **(env or {})},
    )


def native(bundle: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_binary([str(bundle / BINARY), *args])


def emulated(bundle: Path, cpuinfo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    script = 'mount --bind "$0" /proc/cpuinfo && exec qemu-aarch64 "$@"'
    command = ["unshare", "-m", "sh", "-c", script, str(cpuinfo), str(bundle / BINARY), *args]
    return run_binary(command, env={"QEMU_LD_PREFIX": str(QEMU_LD_PREFIX)})


def json_lines(done: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def outputs_and_timings(done: subprocess.CompletedProcess[str]) -> tuple[list[str], dict[str, Any]]:
    assert done.returncode == 0, done.stderr[-2000:]
    lines = json_lines(done)
    texts = [line["text"] for line in lines if line["type"] == "output"]
    return texts, lines[-1]


def require_program(name: str, hint: str) -> None:
    if shutil.which(name) is None:
        pytest.skip(f"{name} is not installed ({hint})")


@pytest.fixture(scope="module")
def int4_bundle(demo_bundles: dict[str, Path]) -> Path:
    bundle = demo_bundles["int4"]
    if not (bundle / BINARY).is_file():
        pytest.skip("the demo bundle has no runtime (cmake or g++ missing when it was built)")
    return bundle


@pytest.fixture(scope="module")
def aarch64_bundle(session_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`edgepack build --target generic-aarch64-cpu` of the int4 demo: a cross-built runtime."""
    require_demo_stack()
    require_program("aarch64-linux-gnu-g++", "apt-get install g++-aarch64-linux-gnu")
    require_program("cmake", "apt-get install cmake")
    output = tmp_path_factory.mktemp("aarch64") / "bundle"
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = run([
            "build", "--target", "generic-aarch64-cpu", "--precision", "int4",
            "--model", "demo:smollm2-135m", "--output", str(output), "--json",
        ])  # fmt: skip
    assert code == 0, buffer.getvalue()
    return output


@pytest.fixture(scope="module")
def cpuinfo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_program("qemu-aarch64", "apt-get install qemu-user")
    require_program("unshare", "util-linux")
    if os.geteuid() != 0:
        pytest.skip("binding a cpuinfo over /proc/cpuinfo needs root (unshare -m)")
    if not QEMU_LD_PREFIX.is_dir():
        pytest.skip(f"{QEMU_LD_PREFIX} is missing (apt-get install g++-aarch64-linux-gnu)")
    path = tmp_path_factory.mktemp("qemu") / "cpuinfo"
    path.write_text(AARCH64_CPUINFO, encoding="utf-8")
    return path


def python_runner_texts(bundle: Path, prompts: list[str], max_new_tokens: int) -> list[str]:
    from edgepack.bench.ort_runner import OrtEngine

    with OrtEngine.load(bundle / "engine") as engine:
        encoded = [engine.encode_chat(prompt) for prompt in prompts]
        return engine.generate(encoded, max_new_tokens).texts


def default_prompts(bundle: Path, count: int) -> list[str]:
    data = json.loads((bundle / "prompts.json").read_text(encoding="utf-8"))
    return [prompt["text"] for prompt in data["prompts"][:count]]


def test_native_self_test_passes_and_finds_paris(int4_bundle: Path) -> None:
    done = native(int4_bundle, "--self-test", "--expect", "Paris")
    assert done.returncode == 0, done.stderr
    report = json_lines(done)[-1]
    assert report["ok"] is True
    assert [check["name"] for check in report["checks"]] == ["files", "architecture", "generation"]


def test_native_runtime_answers_as_the_python_runner_does(
    int4_bundle: Path, tmp_path: Path
) -> None:
    prompts = default_prompts(int4_bundle, 3)
    prompts_file = tmp_path / "prompts.json"
    prompts_file.write_text(json.dumps(prompts), encoding="utf-8")
    done = native(
        int4_bundle, "--prompts", str(prompts_file), "--json", "--batch-size", "3",
        "--max-new-tokens", "32",
    )  # fmt: skip
    texts, timings = outputs_and_timings(done)
    assert texts == python_runner_texts(int4_bundle, prompts, 32)
    assert timings["type"] == "timings" and timings["decode_tok_s"] > 0
    assert timings["peak_rss_bytes"] > 0 and timings["load_s"] > 0


def test_streamed_text_is_the_answer(int4_bundle: Path) -> None:
    done = native(int4_bundle, "--prompt", CAPITAL, "--max-new-tokens", "24")
    assert done.returncode == 0, done.stderr
    first_line = done.stdout.splitlines()[0]
    assert first_line == "[p0] " + python_runner_texts(int4_bundle, [CAPITAL], 24)[0]


def test_self_test_fails_after_one_byte_of_the_engine_changes(
    int4_bundle: Path, tmp_path: Path
) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(int4_bundle, bundle)
    with (bundle / "engine" / "model.onnx.data").open("r+b") as data:
        data.seek(4096)
        byte = data.read(1)
        data.seek(4096)
        data.write(bytes([byte[0] ^ 0x01]))
    done = native(bundle, "--self-test")
    assert done.returncode == 3
    assert "engine/model.onnx.data: sha256 differs" in done.stderr


def test_self_test_refuses_a_bundle_for_another_target(int4_bundle: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(int4_bundle, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    manifest["target"]["name"] = "generic-aarch64-cpu"
    manifest["target"]["arch"] = "aarch64"
    (bundle / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    done = native(bundle, "--self-test")
    assert done.returncode == 4
    assert "the bundle is for generic-aarch64-cpu (aarch64)" in done.stderr


def test_unknown_option_is_a_usage_error(int4_bundle: Path) -> None:
    done = native(int4_bundle, "--no-such-option")
    assert done.returncode == 2
    assert "unknown option --no-such-option" in done.stderr


def test_aarch64_runtime_is_an_aarch64_binary(aarch64_bundle: Path) -> None:
    header = (aarch64_bundle / BINARY).read_bytes()[:20]
    assert header[:4] == b"\x7fELF"
    assert int.from_bytes(header[18:20], "little") == 183  # EM_AARCH64
    info = json.loads((aarch64_bundle / "runtime" / "build-info.json").read_text())
    assert info["mode"] == "cross" and info["arch"] == "aarch64"


def test_aarch64_self_test_under_qemu(aarch64_bundle: Path, cpuinfo: Path) -> None:
    done = emulated(aarch64_bundle, cpuinfo, "--self-test", "--expect", "Paris")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "generic-aarch64-cpu on aarch64" in done.stderr


def test_aarch64_runtime_answers_like_the_x86_one(
    aarch64_bundle: Path, int4_bundle: Path, cpuinfo: Path
) -> None:
    """x86 and aarch64 kernels round differently: the facts must agree, not every byte."""
    arguments = ["--prompt", CAPITAL, "--json", "--max-new-tokens", "24"]
    arm_texts, arm_timings = outputs_and_timings(emulated(aarch64_bundle, cpuinfo, *arguments))
    x86_texts, _ = outputs_and_timings(native(int4_bundle, *arguments))
    assert "Paris" in arm_texts[0] and "Paris" in x86_texts[0]
    assert arm_timings["arch"] == "aarch64"


def test_container_build_where_a_container_engine_runs(tmp_path: Path) -> None:
    from edgepack.codegen import RuntimeSpec, build_runtime
    from edgepack.container import CROSS_IMAGE, find_engine, require_image
    from edgepack.errors import ToolMissingError
    from edgepack.plan import Limits
    from edgepack.targets import TargetRegistry

    try:
        require_image(find_engine(), CROSS_IMAGE)
    except ToolMissingError as error:
        pytest.skip(f"container mode cannot run here: {error.message} ({error.hint})")
    spec = RuntimeSpec.for_target(
        TargetRegistry.default().get("generic-aarch64-cpu"),
        backend="ort",
        model_name="smollm2-135m",
        precision="int4",
        kv_cache_dtype="fp32",
        limits=Limits(),
    )
    info = build_runtime(spec, "container", tmp_path / "runtime", cache_root=tmp_path / "cache")
    assert info["mode"] == "container" and (tmp_path / "runtime" / "bin").is_dir()

"""The generated C++ runtime, built for real and run on real demo bundles: natively, and cross-built
for aarch64 and run under qemu-user (REFERENCE.md §10: with an aarch64 /proc/cpuinfo bound over the
host's in a private mount namespace, where ONNX Runtime's CPU detection would crash otherwise),
then deployed to an aarch64 device (arm64_device) and benched there through `bench --remote`."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from edgepack.bench.machine import engine_threads
from edgepack.cli.main import run
from tests.conftest import prompt_subset, require_demo_stack
from tests.integration.arm64_device import (
    AARCH64_CPUINFO,
    QEMU_STATIC,
    DeviceRoot,
)
from tests.integration.conftest import NetnsDevice, SshServer
from tests.integration.container_fixtures import (
    container_engine_with_base_image,
)

if TYPE_CHECKING:
    from docker import DockerClient

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BINARY = Path("runtime") / "bin" / "edgepack-runtime"
QEMU_LD_PREFIX = Path("/usr/aarch64-linux-gnu")
CAPITAL = "What is the capital of France?"


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
    """The aarch64 runtime under qemu-user, with one thread per host core: ONNX Runtime's own
    count reads one core under qemu, which doubles the time of every emulated generation."""
    script = f'mount --bind "$0" /proc/cpuinfo && exec {QEMU_STATIC} "$@"'
    threads = ["--threads", str(engine_threads())]
    command = ["unshare", "-m", "sh", "-c", script, str(cpuinfo), str(bundle / BINARY), *args]
    command += threads
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
    require_program(str(QEMU_STATIC), "apt-get install qemu-user-static")
    require_program("unshare", "util-linux")
    if os.geteuid() != 0:
        pytest.skip("binding a cpuinfo over /proc/cpuinfo needs root (unshare -m)")
    if not QEMU_LD_PREFIX.is_dir():
        pytest.skip(f"{QEMU_LD_PREFIX} is missing (apt-get install g++-aarch64-linux-gnu)")
    path = tmp_path_factory.mktemp("qemu") / "cpuinfo"
    path.write_text(AARCH64_CPUINFO, encoding="utf-8")
    return path


def python_runner_texts(bundle: Path, prompts: list[str], max_new_tokens: int) -> list[str]:
    from edgepack.backends.ort.runner import OrtEngine

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


def assert_self_test_passes_under_qemu(bundle: Path, cpuinfo: Path) -> None:
    done = emulated(bundle, cpuinfo, "--self-test", "--expect", "Paris")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "generic-aarch64-cpu on aarch64" in done.stderr


def test_aarch64_self_test_under_qemu(aarch64_bundle: Path, cpuinfo: Path) -> None:
    assert_self_test_passes_under_qemu(aarch64_bundle, cpuinfo)


def test_aarch64_runtime_answers_like_the_x86_one(
    aarch64_bundle: Path, int4_bundle: Path, cpuinfo: Path
) -> None:
    """x86 and aarch64 kernels round differently: the facts must agree, not every byte."""
    arguments = ["--prompt", CAPITAL, "--json", "--max-new-tokens", "24"]
    arm_texts, arm_timings = outputs_and_timings(emulated(aarch64_bundle, cpuinfo, *arguments))
    x86_texts, _ = outputs_and_timings(native(int4_bundle, *arguments))
    assert "Paris" in arm_texts[0] and "Paris" in x86_texts[0]
    assert arm_timings["arch"] == "aarch64"


# ---- an aarch64 device: the cross-built runtime deployed and benched over SSH -----------------


def test_aarch64_runtime_is_deployed_to_an_arm64_device_and_benched_there(
    aarch64_bundle: Path,
    arm64_root: DeviceRoot,
    netns_factory: Callable[[], NetnsDevice],
    sshd_factory: Callable[..., SshServer],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The cross-built runtime on a device whose sshd, shell and runtime are all aarch64: deploy
    sets its execute bit, `bench --remote --runner runtime` self-tests it, runs both passes with
    telemetry on the prompts given, and the host's gate judges the answers."""
    device = netns_factory()
    address = device.device_address
    sshd_factory("arm", address=address, port=22, netns=device.name, chroot=arm64_root)
    root = "/opt/edgepack"
    capsys.readouterr()
    assert run(["targets", "detect", "arm", "--root", root, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["target"] == "generic-aarch64-cpu"
    assert run(["deploy", "--host", "arm", "--root", root, "--bundle", str(aarch64_bundle)]) == 0
    deployed = arm64_root.path / "opt" / "edgepack" / "current" / BINARY
    assert os.access(deployed, os.X_OK) and elf_machine(deployed) == 183  # EM_AARCH64
    # Under qemu-user every prompt costs seconds of prefill: two (capital-france first), batched
    # together, will do.
    asked = prompt_subset(aarch64_bundle, tmp_path / "prompts.json", 2)
    out = tmp_path / "result.json"
    code = run([
        "bench", "--host", "arm", "--root", root, "--runner", "runtime", "--runs", "1",
        "--warmup", "0", "--max-new-tokens", "16", "--prompts", str(tmp_path / "prompts.json"),
        "--batch-size", "2", "--json-out", str(out),
    ])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    result = json.loads(out.read_text())
    assert result["location"] == "arm"
    assert result["machine"]["arch"] == result["raw"]["single"]["arch"] == "aarch64"
    assert result["machine"]["runtime_build"]["mode"] == "cross"
    assert result["settings"]["prompts_file"].startswith(f"{root}/prompts/")
    assert [output["id"] for output in result["outputs"]] == asked
    assert "Paris" in result["outputs"][0]["text"]
    assert result["metrics"]["decode_tok_s_batched"]["n"] == 1
    # The device's cores, from its facts, as the runtime's threads (ONNX Runtime's own count
    # under qemu is one; this device has no /sys for lscpu, so its online CPUs count).
    assert result["settings"]["threads"] == result["machine"]["logical_cores"] == os.cpu_count()
    assert result["gate_enforced"] is True
    assert result["quality"]["passed"] is True, result["quality"]["checks"]
    assert result["telemetry"]["proc"]["cpu_util_pct"]["n"] >= 1


# ---- container mode: the cross build in the Dockerfile's `cross` image ------------------------


@pytest.fixture(scope="session")
def container_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerClient]:
    """docker (or podman) answering, with the Dockerfile's base image; see container_fixtures."""
    with container_engine_with_base_image(tmp_path_factory.mktemp("container-engine")) as engine:
        yield engine


@pytest.fixture(scope="module")
def container_bundle(
    container_engine: DockerClient, session_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """`edgepack build --runtime container` for generic-aarch64-cpu: the int4 demo bundle (its
    engine stage shared with aarch64_bundle through the session cache), the runtime built in the
    cross image, which is built first when missing."""
    require_demo_stack()
    output = tmp_path_factory.mktemp("container") / "bundle"
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = run([
            "build", "--target", "generic-aarch64-cpu", "--precision", "int4",
            "--model", "demo:smollm2-135m", "--runtime", "container", "--output", str(output),
            "--json",
        ])  # fmt: skip
    assert code == 0, buffer.getvalue()
    return output


def elf_machine(binary: Path) -> int:
    header = binary.read_bytes()[:20]
    assert header[:4] == b"\x7fELF", f"{binary} is not an ELF file"
    return int.from_bytes(header[18:20], "little")


def container_names(client: DockerClient) -> list[str]:
    """Every container the engine has, running or not."""
    return [str(container.name) for container in client.containers.list(all=True)]


def created_container(log: list[str]) -> str:
    """The name edgepack gave the container, from its echoed `create` line."""
    created = [line.split("--name ")[1].split()[0] for line in log if " create --name " in line]
    assert len(created) == 1, log
    return created[0]


def test_container_runtime_is_an_aarch64_binary(container_bundle: Path) -> None:
    assert elf_machine(container_bundle / BINARY) == 183  # EM_AARCH64
    info = json.loads((container_bundle / "runtime" / "build-info.json").read_text())
    assert info["mode"] == "container" and info["arch"] == "aarch64"
    assert {"libonnxruntime-genai.so", "libonnxruntime.so.1"} <= set(info["libraries"])


def test_container_runtime_self_test_under_qemu(container_bundle: Path, cpuinfo: Path) -> None:
    assert_self_test_passes_under_qemu(container_bundle, cpuinfo)


def test_a_failed_container_build_removes_its_container(
    container_engine: DockerClient, session_cache: Path, tmp_path: Path
) -> None:
    from edgepack.backends.ort.libraries import ort_libraries
    from edgepack.container import containers_with_label
    from edgepack.errors import ExitCode, ToolFailedError
    from edgepack.plan import Limits
    from edgepack.runtime.build import build_in_container
    from edgepack.runtime.render import render_project
    from edgepack.runtime.spec import RuntimeSpec
    from edgepack.targets import TargetRegistry

    require_demo_stack()  # the target's ONNX Runtime libraries follow the installed versions
    spec = RuntimeSpec.for_target(
        TargetRegistry.default().get("generic-aarch64-cpu"),
        backend="ort", model_name="smollm2-135m", precision="int4", kv_cache_dtype="fp32",
        limits=Limits(),
    )  # fmt: skip
    source = tmp_path / "project"
    render_project(spec, source)
    broken = source / "cpp_runtime" / "src" / "json.cpp"
    broken.write_text(broken.read_text() + "\n#error edgepack-test: a broken source file\n")
    log: list[str] = []
    with pytest.raises(ToolFailedError) as failure:
        build_in_container(
            source, ort_libraries("aarch64", session_cache, log.append), tmp_path / "install",
            client=container_engine, log=log.append,
        )  # fmt: skip
    assert failure.value.exit_code == ExitCode.TOOL_FAILED and "\n" not in failure.value.message
    assert failure.value.message.startswith("cmake failed in the container (edgepack-cross)")
    assert "error: #error edgepack-test: a broken source file" in failure.value.message
    name = created_container(log)
    assert name not in container_names(container_engine)
    assert name not in containers_with_label(container_engine)
    assert not (tmp_path / "install").exists()


@pytest.mark.parametrize("when", ["start", "exec"])
def test_an_interrupted_container_is_removed(container_engine: DockerClient, when: str) -> None:
    """Ctrl-C while the container starts (inside __enter__) or while a command runs in it."""
    from edgepack.container import OCIContainer, default_dockerfile, stage_base_image

    dockerfile = default_dockerfile()
    assert dockerfile is not None
    log: list[str] = []

    def interrupt_at_start(line: str) -> None:
        log.append(line)
        if line.startswith("$ (engine) start "):
            raise KeyboardInterrupt

    image = stage_base_image(dockerfile)  # the fixture made it; the test needs no cross image
    with pytest.raises(KeyboardInterrupt):
        if when == "start":
            with OCIContainer(image, client=container_engine, log=interrupt_at_start):
                pytest.fail("the container started although it was interrupted")
        else:
            with OCIContainer(image, client=container_engine, log=log.append) as container:
                assert container.name in container_names(container_engine)
                container.exec(["true"])
                raise KeyboardInterrupt
    assert created_container(log) not in container_names(container_engine)


INTERRUPTED_BUILD = """
import signal, sys
from pathlib import Path
from edgepack.runtime.spec import RuntimeSpec
from edgepack.backends.ort.libraries import ort_libraries
from edgepack.runtime.render import render_project
from edgepack.runtime.build import build_in_container
from edgepack.plan import Limits
from edgepack.targets import TargetRegistry

signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, even if inherited off
work, cache = Path(sys.argv[1]), Path(sys.argv[2])
spec = RuntimeSpec.for_target(
    TargetRegistry.default().get("generic-aarch64-cpu"), backend="ort",
    model_name="smollm2-135m", precision="int4", kv_cache_dtype="fp32", limits=Limits(),
)
render_project(spec, work / "project")
libraries = ort_libraries("aarch64", cache, print)
build_in_container(
    work / "project", libraries, work / "install", log=lambda line: print(line, flush=True),
)
"""


def test_ctrl_c_during_a_container_build_removes_the_container(
    container_engine: DockerClient, session_cache: Path, tmp_path: Path
) -> None:
    """A real SIGINT to the whole process group, as a terminal's Ctrl-C sends it, while the
    compiler runs in the container (the child finds the engine as the fixture did)."""
    import signal
    import sys
    import time

    require_demo_stack()
    output = tmp_path / "output.log"
    with output.open("wb") as sink:
        child = subprocess.Popen(
            [sys.executable, "-c", INTERRUPTED_BUILD, str(tmp_path), str(session_cache)],
            stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 600
        while "cmake --build" not in output.read_text():
            assert child.poll() is None, output.read_text()[-2000:]
            assert time.monotonic() < deadline, "the build in the container never started"
            time.sleep(0.2)
        time.sleep(2)  # the compiler is running now
        os.killpg(child.pid, signal.SIGINT)
        child.wait(timeout=120)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
    log = output.read_text()
    assert child.returncode != 0 and "KeyboardInterrupt" in log, log[-2000:]
    assert created_container(log.splitlines()) not in container_names(container_engine)
    assert not (tmp_path / "install").exists()


def test_a_missing_base_image_names_the_debootstrap_recipe(
    container_engine: DockerClient, tmp_path: Path
) -> None:
    from edgepack.container import ensure_image
    from edgepack.errors import ToolFailedError

    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(
        "ARG DEBIAN_RELEASE=edgepack-no-such-release\n"
        "FROM debian:${DEBIAN_RELEASE}-slim AS cross\nRUN true\n"
    )
    with pytest.raises(ToolFailedError) as failure:
        ensure_image(
            container_engine, "edgepack-test-no-base", dockerfile=dockerfile, logs_dir=tmp_path
        )
    assert "\n" not in failure.value.message
    assert (
        failure.value.message.endswith(")") and f"(log: {tmp_path}/image-" in failure.value.message
    )
    assert failure.value.hint == (
        "no registry? make debian:edgepack-no-such-release-slim locally: debootstrap "
        "--variant=minbase edgepack-no-such-release ROOTFS http://deb.debian.org/debian && "
        "tar -C ROOTFS -c . | docker import - debian:edgepack-no-such-release-slim"
    )


def test_the_image_is_built_once_and_again_when_its_dockerfile_changes(
    container_engine: DockerClient, tmp_path: Path
) -> None:
    from edgepack.container import default_dockerfile, ensure_image, stage_base_image

    dockerfile = default_dockerfile()
    assert dockerfile is not None
    mine = tmp_path / "Dockerfile"
    image = "edgepack-test-rebuild"
    try:
        for content, builds in (("one", True), ("one", False), ("two", True)):
            mine.write_text(f"FROM {stage_base_image(dockerfile)} AS cross\nRUN echo {content}\n")
            built = ensure_image(container_engine, image, dockerfile=mine, logs_dir=tmp_path)
            assert built is builds, content
    finally:
        container_engine.images.remove(image, force=True)


def test_a_failed_image_build_is_one_line_with_a_hint(
    container_engine: DockerClient, tmp_path: Path
) -> None:
    from edgepack.container import default_dockerfile, ensure_image, stage_base_image
    from edgepack.errors import ExitCode, ToolFailedError

    dockerfile = default_dockerfile()
    assert dockerfile is not None
    broken = tmp_path / "Dockerfile"
    broken.write_text(
        f"FROM {stage_base_image(dockerfile)} AS cross\n"
        "RUN echo 'E: Unable to locate package edgepack-no-such-package' >&2 && false\n"
    )
    with pytest.raises(ToolFailedError) as failure:
        ensure_image(
            container_engine, "edgepack-test-broken", dockerfile=broken, logs_dir=tmp_path / "logs"
        )
    error = failure.value
    assert error.exit_code == ExitCode.TOOL_FAILED and "\n" not in error.message
    assert "building the container image edgepack-test-broken" in error.message
    reason, _, log_path = error.message.removesuffix(")").rpartition(" (log: ")
    assert reason.endswith("failed: E: Unable to locate package edgepack-no-such-package")
    assert Path(log_path).parent == tmp_path / "logs"
    assert ": RUN echo 'E: Unable to locate" in Path(log_path).read_text()  # the whole output
    assert error.hint and str(broken) in error.hint

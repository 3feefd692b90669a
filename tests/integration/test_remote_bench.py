"""Remote bench over a real sshd: telemetry sampled on the device, results pulled back."""

from __future__ import annotations

import json
import shutil
import sys
import venv
from collections.abc import Callable
from pathlib import Path

import pytest

from edgepack.cli.main import run
from edgepack.errors import ExitCode
from edgepack.remote.connect import open_connector
from edgepack.remote.device_run import run_with_telemetry
from edgepack.remote.hosts import parse_host
from edgepack.remote.runtime_bench import RUNTIME_BINARY
from edgepack.remote.telemetry import summarize
from tests.conftest import build_demo, prompt_subset, require_demo_stack
from tests.integration.conftest import NetnsDevice, SshServer, require
from tests.integration.gpu_host import SYSTEM_PATH

pytestmark = pytest.mark.integration


def test_workload_runs_with_proc_telemetry(
    sshd_factory: Callable[..., SshServer], tmp_path: Path
) -> None:
    sshd_factory("dev")
    busy = [sys.executable, "-c", "sum(i * i for i in range(6_000_000))"]
    with open_connector(parse_host("dev")) as device:
        done, logs = run_with_telemetry(device, str(tmp_path / "run"), busy, interval_ms=100)
    assert done.status == 0
    assert list(logs) == ["proc.log"]  # no nvidia-smi or tegrastats on this machine
    telemetry = summarize(logs, 100, decode_tok_s=None)
    assert telemetry["proc"]["cpu_util_pct"]["n"] >= 1
    assert telemetry["proc"]["mem_used_bytes"]["max"] > 0
    assert "power_w" not in telemetry


def device_python_version(host: str, root: str, capsys: pytest.CaptureFixture[str]) -> str:
    """major.minor of the device's python3, as deploy will see it."""
    capsys.readouterr()
    assert run(["targets", "detect", host, "--root", root, "--json"]) == 0
    version = json.loads(capsys.readouterr().out)["facts"]["python_version"]
    return ".".join(version.split(".")[:2])


@pytest.mark.slow
def test_bench_remote_on_a_deployed_ort_bundle(
    demo_bundles: dict[str, Path],
    netns_factory: Callable[[], NetnsDevice],
    sshd_factory: Callable[..., SshServer],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The demo int4 bundle, carrying wheels for the device's Python, deployed to a namespace
    device: deploy installs them into <root>/venv offline, the bench runs there, judged here."""
    device = netns_factory()
    sshd_factory("dev", address=device.device_address, port=22, netns=device.name)
    root = str(tmp_path / "device-root")
    python = device_python_version("dev", root, capsys)
    bundle = tmp_path / "int4-with-wheels"
    build_demo("int4", bundle, "--device-python", python)  # the engine comes from the cache
    assert any(p.name.startswith("onnxruntime_genai-") for p in (bundle / "wheels").iterdir())
    capsys.readouterr()
    assert run(["deploy", "--host", "dev", "--root", root, "--bundle", str(bundle), "--json"]) == 0
    [deployed] = json.loads(capsys.readouterr().out)
    assert deployed["venv"]["status"] == "created", deployed
    assert deployed["venv"]["path"] == f"{root}/venv"
    prompts = tmp_path / "prompts.json"
    asked = prompt_subset(bundle, prompts, 4)
    out = tmp_path / "result.json"
    code = run([
        "bench", "--host", "dev", "--root", root, "--runs", "1", "--warmup", "0",
        "--max-new-tokens", "16", "--prompts", str(prompts), "--json-out", str(out),
    ])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    result = json.loads(out.read_text())
    assert result["location"] == "dev"
    assert [output["id"] for output in result["outputs"]] == asked  # --prompts went along
    assert result["machine"]["python"].startswith(python)
    assert result["machine"]["python_prefix"] == f"{root}/venv"  # the deployed venv
    assert result["gate_enforced"] is True
    assert result["quality"]["passed"] is True, result["quality"]["checks"]
    assert result["quality"]["quality_class"] == "4bit"
    assert result["telemetry"]["proc"]["cpu_util_pct"]["n"] >= 1
    assert result["telemetry"]["proc"]["mem_used_bytes"]["max"] > 0
    assert result["machine"]["device_facts"]["root"] == root


def python_runner_token_ids(
    bundle: Path, prompts: list[str], max_new_tokens: int
) -> list[list[int]]:
    """What edgepack's Python runner generates here for each prompt alone (batch 1)."""
    from edgepack.backends.ort.runner import OrtEngine

    with OrtEngine.load(bundle / "engine") as engine:
        return [
            engine.generate([engine.encode_chat(text)], max_new_tokens).output_token_ids[0]
            for text in prompts
        ]


@pytest.mark.slow
def test_bench_remote_through_the_cpp_runtime(
    demo_bundles: dict[str, Path],
    netns_factory: Callable[[], NetnsDevice],
    sshd_factory: Callable[..., SshServer],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The demo int4 bundle's native runtime deployed to a namespace device without a venv and
    benched there with --runner runtime: its self-test, both passes with telemetry, the host's
    gate; the same token ids as the Python runner; a changed engine byte is refused."""
    bundle = demo_bundles["int4"]
    if not (bundle / RUNTIME_BINARY).is_file():
        pytest.skip("the demo bundle has no runtime (cmake or g++ missing when it was built)")
    device = netns_factory()
    sshd_factory("dev", address=device.device_address, port=22, netns=device.name)
    root = str(tmp_path / "device-root")
    capsys.readouterr()
    assert run(["targets", "detect", "dev", "--root", root, "--json"]) == 0
    device_arch = json.loads(capsys.readouterr().out)["facts"]["arch"]
    assert run(["deploy", "--host", "dev", "--root", root, "--bundle", str(bundle), "--json"]) == 0
    [deployed] = json.loads(capsys.readouterr().out)
    assert deployed["venv"] is None  # no Python environment on the device for this runner
    out = tmp_path / "result.json"
    code = run([
        "bench", "--host", "dev", "--root", root, "--runner", "runtime",
        "--runs", "2", "--warmup", "0", "--max-new-tokens", "16", "--json-out", str(out),
    ])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    result = json.loads(out.read_text())
    assert result["location"] == "dev"
    assert result["machine"]["arch"] == device_arch
    assert result["raw"]["single"]["arch"] == device_arch  # what the runtime saw on the device
    assert result["machine"]["runner"] == "runtime"
    assert result["machine"]["device_facts"]["root"] == root
    assert result["bundle"]["dir"].startswith(f"{root}/releases/")
    assert result["gate_enforced"] is True
    assert result["quality"]["passed"] is True, result["quality"]["checks"]
    assert result["quality"]["quality_class"] == "4bit"
    assert result["telemetry"]["proc"]["cpu_util_pct"]["n"] >= 1
    assert result["telemetry"]["proc"]["mem_used_bytes"]["max"] > 0
    metrics = result["metrics"]
    assert metrics["decode_tok_s"]["n"] == 2 and metrics["decode_tok_s_batched"]["n"] == 2
    assert result["settings"]["batch_size"] == 3
    compared = result["outputs"][:4]
    expected = python_runner_token_ids(bundle, [o["prompt"] for o in compared], 16)
    assert [o["token_ids"] for o in compared] == expected

    engine_data = Path(root) / "current" / "engine" / "model.onnx.data"
    with engine_data.open("r+b") as data:
        data.seek(4096)
        byte = data.read(1)
        data.seek(4096)
        data.write(bytes([byte[0] ^ 0x01]))
    capsys.readouterr()
    code = run(["bench", "--host", "dev", "--root", root, "--runner", "runtime", "--runs", "1"])
    assert code == ExitCode.REMOTE
    assert "the runtime's self-test failed" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_remote_without_runner_picks_the_cpp_runtime_for_a_plain_python(
    session_cache: Path,
    netns_factory: Callable[[], NetnsDevice],
    sshd_factory: Callable[..., SshServer],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A new user's path: the default build (its native C++ runtime in the bundle), deployed to a
    device whose python3 has no onnxruntime-genai, then `bench --remote` with no --runner: the
    runtime runs, the gate judges, and the result and stderr say which runner ran and why."""
    require_demo_stack()
    require(bool(shutil.which("cmake") and shutil.which("g++")), "cmake and g++ build the runtime")
    plain = tmp_path / "plain-python"
    venv.create(plain, with_pip=False)  # a real python3 with nothing installed
    home = tmp_path / "device-home"  # no shell startup files: nothing puts another python3 first
    home.mkdir()
    device = netns_factory()
    sshd_factory(
        "dev", address=device.device_address, port=22, netns=device.name,
        extra_config=(f"SetEnv HOME={home} PATH={plain / 'bin'}:{SYSTEM_PATH}",),
    )  # fmt: skip
    root = str(tmp_path / "device-root")
    capsys.readouterr()
    assert run(["targets", "detect", "dev", "--root", root, "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)["facts"]
    assert facts["python"] == str(plain / "bin" / "python3")
    assert "onnxruntime-genai" not in facts["packages"]
    bundle = tmp_path / "default"
    build_demo("int4", bundle)  # the default build: no --runtime, no --device-python
    assert (bundle / RUNTIME_BINARY).is_file()
    assert run(["deploy", "--host", "dev", "--root", root, "--bundle", str(bundle)]) == 0
    prompts = tmp_path / "prompts.json"
    asked = prompt_subset(bundle, prompts, 4)
    out = tmp_path / "result.json"
    capsys.readouterr()
    code = run([
        "bench", "--remote", "--runs", "1", "--warmup", "0", "--batch-size", "1",
        "--max-new-tokens", "16", "--prompts", str(prompts), "--json-out", str(out),
    ])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0, err
    said = [line for line in err.splitlines() if line.startswith("bench on dev: ")]
    assert said == [
        f"bench on dev: the C++ runtime (--runner runtime): {plain}/bin/python3 cannot import "
        f"onnxruntime-genai or edgepack; the bundle's runtime is built for {facts['arch']}"
    ]
    result = json.loads(out.read_text())
    assert result["machine"]["runner"] == "runtime"
    assert result["machine"]["runner_choice"] in said[0]
    assert result["raw"]["runner"] == "runtime"  # the runtime's own output made the figures
    assert [output["id"] for output in result["outputs"]] == asked
    assert result["gate_enforced"] is True
    assert result["quality"]["passed"] is True, result["quality"]["checks"]

"""The ssh engine builder against the stand-in GPU host (tests/integration/gpu_host.py): the
checkpoint shipped with the deploy machinery, trtllm-build (a fixture replaying TensorRT-LLM
1.2.x's log and files) run there, the engine fetched back and verified; its failures."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from edgepack.backends.trtllm.buildlog import explain_failure, parse_build_log
from edgepack.backends.trtllm.flags import trtllm_build_argv
from edgepack.backends.trtllm.tool import trtllm_build_tool
from edgepack.builders import BuildJob, require_tool
from edgepack.builders.ssh import SshBuilder
from edgepack.errors import ExitCode, RemoteError, ToolFailedError, ToolMissingError
from edgepack.remote.hosts import parse_host
from tests.integration.conftest import NetnsDevice, SshServer, nft_available, require
from tests.integration.gpu_host import GpuHost, start_gpu_host

pytestmark = pytest.mark.integration
MB = 1 << 20


@pytest.fixture
def gpu_host(
    tmp_path: Path,
    sshd_factory: Callable[..., SshServer],
    netns_factory: Callable[[], NetnsDevice],
) -> GpuHost:
    return start_gpu_host(tmp_path, sshd_factory, netns_factory)


def checkpoint(directory: Path, weights: int = MB) -> Path:
    directory.mkdir(parents=True)
    config = {"architecture": "LlamaForCausalLM", "dtype": "float16",
              "quantization": {"quant_algo": None, "kv_cache_quant_algo": None}}  # fmt: skip
    (directory / "config.json").write_text(json.dumps(config))
    (directory / "rank0.safetensors").write_bytes(os.urandom(weights))
    return directory


def builder(host: GpuHost, tmp_path: Path, io_timeout: float = 30.0) -> SshBuilder:
    return SshBuilder(parse_host(f"{host.alias}:{host.root}"), tmp_path / "logs",
                      io_timeout=io_timeout)  # fmt: skip


def job(source: Path, precision: str = "fp16") -> BuildJob:
    argv = trtllm_build_argv(precision, "fp16", 4, 256, 512)
    return BuildJob(trtllm_build_tool("1.2.1"), argv, {"checkpoint": source},
                    explain_failure=explain_failure, label="trtllm-build")  # fmt: skip


def test_an_engine_is_built_on_the_host_and_fetched_verified(
    gpu_host: GpuHost, tmp_path: Path
) -> None:
    source = checkpoint(tmp_path / "ckpt")
    ssh = builder(gpu_host, tmp_path)
    probe = require_tool(ssh, trtllm_build_tool("1.2.1"))
    assert probe.present and probe.version == "1.2.1"
    outcome = ssh.run(job(source, "fp8"), tmp_path / "engine", lambda line: None)
    engine = json.loads((tmp_path / "engine" / "config.json").read_text())
    assert engine["build_config"]["max_batch_size"] == 4
    assert engine["build_config"]["plugin_config"]["gemm_plugin"] is None  # fp8: plugin off
    assert (tmp_path / "engine" / "rank0.engine").is_file()
    assert {f.path for f in outcome.files} == {"config.json", "rank0.engine"}
    assert outcome.bytes_shipped >= MB
    figures = parse_build_log(outcome.log_text, str(outcome.log_path))
    assert figures["engine_generation_s"] == pytest.approx(35.9738)
    assert (figures["peak_cpu_mib"], figures["peak_gpu_mib"]) == (212, 775)
    assert figures["total_build_s"] == 41 and figures["tensorrt_llm"] == "1.2.1"
    assert figures["plugins"]["gemm_plugin"] == "disable"
    # The same checkpoint again: nothing is shipped a second time.
    again = ssh.run(job(source), tmp_path / "engine2", lambda line: None)
    assert again.bytes_shipped == 0


def test_a_build_out_of_gpu_memory_is_one_line(gpu_host: GpuHost, tmp_path: Path) -> None:
    gpu_host.set_state(mode="oom")
    with pytest.raises(ToolFailedError) as failure:
        builder(gpu_host, tmp_path).run(
            job(checkpoint(tmp_path / "ckpt")), tmp_path / "engine", lambda line: None
        )
    error = failure.value
    assert error.exit_code == ExitCode.TOOL_FAILED and "\n" not in error.message
    assert "ran out of GPU memory (TensorRT: Requested size was 16654532608 bytes.)" in (
        error.message
    )
    assert "Traceback" not in error.message
    assert error.hint and Path(error.hint.split(": ", 1)[1]).is_file()
    assert not (tmp_path / "engine").exists()


def test_a_tensorrt_llm_without_trtllm_build_is_refused_with_the_reason(
    gpu_host: GpuHost, tmp_path: Path
) -> None:
    gpu_host.remove_program("trtllm-build")
    gpu_host.set_state(version="1.3.0rc25")
    with pytest.raises(ToolMissingError) as failure:
        require_tool(builder(gpu_host, tmp_path), trtllm_build_tool("1.2.1"))
    assert "TensorRT-LLM 1.3.0rc25" in failure.value.message
    assert "removed after 1.3.0rc20" in failure.value.message


def test_another_release_line_is_refused(gpu_host: GpuHost, tmp_path: Path) -> None:
    gpu_host.set_state(version="1.1.0")
    with pytest.raises(ToolMissingError) as failure:
        require_tool(builder(gpu_host, tmp_path), trtllm_build_tool("1.2.1"))
    assert "pinned to the 1.2.x engine line" in failure.value.message


def _cut_when(partial_root: Path, name: str, at_least: int, cut: Callable[[], None]) -> None:
    def watch() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for file in partial_root.glob(f"*.partial/{name}"):
                if file.stat().st_size >= at_least:
                    cut()
                    return
            time.sleep(0.02)

    threading.Thread(target=watch, daemon=True).start()


def test_a_connection_cut_while_shipping_resumes(gpu_host: GpuHost, tmp_path: Path) -> None:
    require(nft_available(), "nft (nftables) is missing")
    size = 6 * MB
    source = checkpoint(tmp_path / "ckpt", size)
    gpu_host.device.limit_rate("20mbit")
    releases = gpu_host.root / "builds" / "releases"
    _cut_when(releases, "rank0.safetensors", size // 2, gpu_host.device.cut)
    with pytest.raises(RemoteError):
        builder(gpu_host, tmp_path, io_timeout=3).run(
            job(source), tmp_path / "engine", lambda line: None
        )
    partial = next(releases.glob("*.partial")) / "rank0.safetensors"
    already = partial.stat().st_size
    assert size // 2 <= already < size
    gpu_host.device.heal()
    outcome = builder(gpu_host, tmp_path, io_timeout=3).run(
        job(source), tmp_path / "engine", lambda line: None
    )
    assert outcome.bytes_shipped <= size - already + MB
    shipped = next(p for p in releases.iterdir() if not p.name.endswith(".partial"))
    assert (shipped / "rank0.safetensors").read_bytes() == (
        source / "rank0.safetensors"
    ).read_bytes()


# --- the whole build: checkpoint here, engine on the stand-in GPU host -------------------------


def build_over_ssh(host: GpuHost, output: Path, *extra: str) -> tuple[int, dict[str, object], str]:
    import contextlib
    import io

    from edgepack.cli.main import run

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run([
            "build", "--target", "ada-sm89", "--precision", "fp16", "--model", "demo:smollm2-135m",
            "--builder", f"ssh:{host.alias}:{host.root}", "--output", str(output), "--json",
            *extra,
        ])  # fmt: skip
    data = json.loads(out.getvalue()) if code == 0 else {}
    return code, data, err.getvalue()


def test_build_with_an_ssh_builder_makes_an_engine_bundle(
    gpu_host: GpuHost, session_cache: Path, tmp_path: Path
) -> None:
    from edgepack.bundle import read_manifest, verify_bundle
    from tests.conftest import require_demo_stack

    require_demo_stack()
    code, _data, err = build_over_ssh(gpu_host, tmp_path / "bundle")
    assert code == 0, err
    bundle = tmp_path / "bundle"
    verify_bundle(bundle)
    engine = json.loads((bundle / "engine" / "config.json").read_text())
    assert engine["version"] == "1.2.1" and engine["build_config"]["max_seq_len"] == 2048
    assert engine["pretrained_config"]["rotary_base"] == 100000.0
    assert (bundle / "engine" / "rank0.engine").is_file()
    assert (bundle / "engine" / "tokenizer" / "tokenizer.json").is_file()
    manifest = read_manifest(bundle)
    assert manifest.tools["trtllm-build"] == "1.2.1"
    assert manifest.tools["engine_builder"] == f"ssh:{gpu_host.alias}:{gpu_host.root}"
    assert {"nvidia-modelopt", "torch", "transformers"} <= set(manifest.tools)
    checkpoint, built = manifest.stages
    assert checkpoint["details"]["check"]["logits"]["top1_agreement"] == 9
    figures = built["details"]["build"]
    assert figures["engine_generation_s"] == pytest.approx(35.9738)
    assert figures["peak_gpu_mib"] == 775 and figures["parser"] == "TensorRT-LLM 1.2.x"
    assert built["details"]["builder"].startswith("ssh:")


def test_a_build_host_without_trtllm_build_stops_the_build_before_any_work(
    gpu_host: GpuHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gpu_host.remove_program("trtllm-build")
    gpu_host.set_state(version="1.3.0rc25")
    cache = tmp_path / "empty-cache"
    monkeypatch.setenv("EDGEPACK_CACHE_DIR", str(cache))
    started = time.monotonic()
    code, _, err = build_over_ssh(gpu_host, tmp_path / "bundle")
    assert code == ExitCode.TOOL_MISSING
    assert "has no trtllm-build" in err and "1.3.0rc20" in err
    assert not (cache / "stages").exists() and not (tmp_path / "bundle").exists()
    assert time.monotonic() - started < 60


def test_doctor_on_the_gpu_host_reports_its_gpu_and_tensorrt_llm(gpu_host: GpuHost) -> None:
    import contextlib
    import io

    from edgepack.cli.main import run

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = run(["doctor", "--host", f"{gpu_host.alias}:{gpu_host.root}", "--json"])
    assert code == 0
    rows = {(r["where"], r["component"]): r for r in json.loads(out.getvalue())}
    gpu = rows[(gpu_host.alias, "NVIDIA GPU")]
    assert gpu["found"] and "RTX 6000 Ada" in gpu["detail"] and "SM89" in gpu["detail"]
    assert rows[(gpu_host.alias, "TensorRT-LLM")]["detail"] == "1.2.1"
    assert rows[(gpu_host.alias, "trtllm-build")]["found"] is True

"""Build, bundle, deploy and bench times against model size: random-initialised models of the
demo's architecture at about 135 M, 360 M and 1 B parameters (``benchmarks.scaling_model``).

    python -m benchmarks run [--quick] scaling

Each size goes the user's way: an HF folder (fp32 safetensors, the demo's tokenizer), then
``edgepack build --target host-x86_64-cpu --precision int4 --model FOLDER --force --json
--runtime none`` (every stage rebuilt; the C++ runtime left out: its build does not depend on the
model), a first deploy to a fresh local directory (``--host local:DIR``) and over SSH to an sshd on
the loopback (no link shaping), and ``edgepack bench --no-gate --batch-size 1`` (the gate's
reference would be transformers on random weights: unusable, and minutes of CPU at 1 B). Build and
deploy are one run per size (n=1); bench takes its default runs. Nothing is asserted.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import TARGET, edgepack, last_line
from benchmarks.deploy_vs_scp_rsync import payload_bytes
from benchmarks.needs import missing_programs
from benchmarks.report import Row
from benchmarks.scaling_model import SHAPES, model_config, parameter_count
from benchmarks.scaling_report import section as section
from edgepack.remote.ssh import SSH_CONFIG_ENV

TABLE = "Scaling: int4 builds of random SmolLM2-shaped models (n=1 per size for build and deploy)"
ALIAS = "scaling-device"
NOTE = ("Random-initialised `LlamaForCausalLM` models of the demo's config at three shapes "
        "(the demo's; SmolLM2-360M's; Llama 3.2-1B's with the demo's vocabulary), fp32 "
        "safetensors, built int4 for `host-x86_64-cpu` with `--force --runtime none`, deployed "
        "first to a local directory and over SSH on the loopback, benched with `--no-gate "
        "--batch-size 1`. Build and deploy: one run per size (n=1); decode: the median of "
        "bench's runs. s/GB is seconds per GB (1e9 bytes) of bundle: a column that climbs down "
        "the table is a cost growing faster than the bytes.")  # fmt: skip


def params(quick: bool) -> dict[str, Any]:
    return {"sizes": ["135m"] if quick else list(SHAPES), "runs": 1 if quick else 3,
            "max_new_tokens": 32 if quick else 128}  # fmt: skip


def measure(params: dict[str, Any], workdir: Path) -> dict[str, Any]:
    from edgepack.cache import default_cache_root
    from edgepack.demo import materialize_demo_model

    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    demo = materialize_demo_model("smollm2-135m", default_cache_root())
    sizes = []
    with _loopback_sshd(workdir / "ssh") as ssh_host:
        for size in params["sizes"]:
            sizes.append(measure_size(size, demo, workdir / size, params, ssh_host))
            print(json.dumps(sizes[-1], indent=1), flush=True)
    return {"note": NOTE, "sizes": sizes}


class _NoSshd:
    def __enter__(self) -> str | None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


class _Sshd:
    """An sshd on 127.0.0.1 that accepts a key of its own as root (the integration fixtures')."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.server: Any = None

    def __enter__(self) -> str | None:
        from tests.integration.ssh_netns import make_client_side, start_sshd

        client = make_client_side(self.directory / "client")
        os.environ[SSH_CONFIG_ENV] = str(client.config)
        self.server = start_sshd(client, self.directory / "sshd", ALIAS)
        return ALIAS

    def __exit__(self, *exc: object) -> None:
        if self.server is not None:
            self.server.stop()


def _loopback_sshd(directory: Path) -> _Sshd | _NoSshd:
    """The SSH deploy's device, where this machine has sshd and runs as root; else none."""
    if os.geteuid() != 0 or missing_programs(["/usr/sbin/sshd", "ssh", "ssh-keygen"]):
        print("no loopback sshd (needs root and openssh-server): the SSH deploy is left out")
        return _NoSshd()
    return _Sshd(directory)


def measure_size(
    size: str, demo: Path, work: Path, params: dict[str, Any], ssh_host: str | None
) -> dict[str, Any]:
    base = json.loads((demo / "config.json").read_text(encoding="utf-8"))
    record: dict[str, Any] = {"size": size, "params": parameter_count(model_config(base, size)),
                              "shape": SHAPES[size]}  # fmt: skip
    work.mkdir(parents=True)
    model, bundle = work / "model", work / "bundle"
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "benchmarks.scaling_model", size, str(model), str(demo)],
                   check=True)  # fmt: skip
    record["make_model_s"] = time.perf_counter() - started
    record["model_bytes"] = payload_bytes(model)
    built = build(model, bundle, work / "cache")
    if "error" in built:
        return {**record, "error": built.pop("error"), "build": built}
    record["build"], record["bundle_bytes"] = built, payload_bytes(bundle)
    shutil.rmtree(model)
    record["deploy"] = deploys(bundle, work, ssh_host)
    record["bench"] = bench(bundle, work / "run.json", params)
    shutil.rmtree(bundle)
    shutil.rmtree(work / "cache", ignore_errors=True)
    return record


def timed_child(command: list[str]) -> tuple[subprocess.CompletedProcess[str], float, int]:
    """``command`` run to its end: its output, wall seconds and peak resident bytes (the largest
    of it and the processes it waited for, from ``wait4``)."""
    print("$", " ".join(command), flush=True)
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen(command, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        done = subprocess.CompletedProcess(command, child.returncode, out.read(), err.read())
    return done, seconds, usage.ru_maxrss * 1024


def build(model: Path, bundle: Path, cache: Path) -> dict[str, Any]:
    """One forced int4 build: its wall time, peak memory and each stage's own wall time."""
    command = [sys.executable, "-m", "edgepack", "build", "--target", TARGET, "--precision",
               "int4", "--model", str(model), "--output", str(bundle), "--force", "--json",
               "--runtime", "none", "--cache-dir", str(cache)]  # fmt: skip
    done, seconds, peak = timed_child(command)
    record: dict[str, Any] = {"wall_s": seconds, "peak_rss_bytes": peak}
    if done.returncode != 0:
        return {**record, "error": last_line(done.stderr)}
    result = json.loads(done.stdout)
    stages = {stage["name"]: stage["wall_s"] for stage in result["stages"]}
    return {**record, "stages": stages, "engine_bytes": result["engine_bytes"]}


def deploys(bundle: Path, work: Path, ssh_host: str | None) -> dict[str, float]:
    """First-deploy wall seconds to a fresh local directory and, where there is one, over SSH."""
    hosts = {"local directory": f"local:{work / 'device'}"}
    if ssh_host is not None:
        hosts["ssh loopback"] = f"{ssh_host}:{work / 'ssh-device'}"
    found = {}
    for label, host in hosts.items():
        command = [sys.executable, "-m", "edgepack", "deploy", "--json", "--host", host,
                   "--bundle", str(bundle)]  # fmt: skip
        done, seconds, _ = timed_child(command)
        if done.returncode == 0:
            found[label] = seconds
        else:
            print(f"deploy to {label} failed: {last_line(done.stderr)}", flush=True)
    for device in ("device", "ssh-device"):
        shutil.rmtree(work / device, ignore_errors=True)
    return found


def bench(bundle: Path, run_file: Path, params: dict[str, Any]) -> dict[str, Any]:
    """``edgepack bench`` without the gate at batch 1: load times and decode tok/s."""
    benched = edgepack("bench", "--bundle", str(bundle), "--runs", str(params["runs"]),
                       "--no-gate", "--batch-size", "1", "--max-new-tokens",
                       str(params["max_new_tokens"]), "--json-out", str(run_file))  # fmt: skip
    if not run_file.is_file():
        return {"error": last_line(benched.stderr)}
    run = json.loads(run_file.read_text(encoding="utf-8"))
    metrics = run["metrics"]
    return {"load_first_s": run["load"]["first_s"], "load_warm_s": run["load"]["warm"]["median"],
            "decode_tok_s": metrics["decode_tok_s"]["samples"],
            "decode_tok_s_median": metrics["decode_tok_s"]["median"],
            "ttft_s": metrics["ttft_s"]["samples"],
            "peak_rss_bytes": metrics["peak_rss_bytes"], "settings": run["settings"]}  # fmt: skip


def rows(result: dict[str, Any]) -> list[Row]:
    """Per size: the build's and each stage's seconds, each deploy's, and decode tok/s b1."""
    found = []
    for size in result["data"]["sizes"]:
        name = f"{size['size']} ({size['params'] / 1e6:.0f} M params)"
        if "error" in size:
            found.append(Row(TABLE, name, "", (), note=f"failed: {size['error']}"))
            continue
        found.append(Row(TABLE, f"{name}: build end to end", "s", (size["build"]["wall_s"],),
                         higher_is_better=False))  # fmt: skip
        found += [Row(TABLE, f"{name}: build, {stage} stage", "s", (seconds,),
                      higher_is_better=False)
                  for stage, seconds in size["build"]["stages"].items()]  # fmt: skip
        found += [Row(TABLE, f"{name}: first deploy, {label}", "s", (seconds,),
                      higher_is_better=False)
                  for label, seconds in size["deploy"].items()]  # fmt: skip
        rates = tuple(size["bench"].get("decode_tok_s", ()))
        found.append(Row(TABLE, f"{name}: decode tok/s b1", "tok/s", rates,
                         note=size["bench"].get("error", "")))  # fmt: skip
    return found

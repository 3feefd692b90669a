"""The host half of the Edge-LLM path: quantize and export, run in the Edge-LLM tool environment.

- ``quantize`` (every precision but fp16): Edge-LLM's own quantizer (``tensorrt-edgellm-quantize
  llm``'s ``quantize_and_export``) writes the unified Hugging Face checkpoint its export reads,
  calibrated on the bundle's prompt set (hashed into the config), on CUDA where the host has it
  and on the CPU otherwise; an FP8 KV cache only when the plan has one.
- ``export``: ``tensorrt-edgellm-export`` writes ``llm/`` (ONNX with Edge-LLM's plugin ops and its
  external data, ``config.json``, ``embedding.safetensors``, tokenizer files); the output is
  checked (``export_check``) before the stage counts as done.

Each tool's whole output goes to a log under ``<cache>/logs``; a failure is one line naming it.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgepack.backends.base import Requirement, Stage, StageContext
from edgepack.backends.calibration import calibration_prompts, calibration_record
from edgepack.backends.edgellm.export_check import check_export
from edgepack.backends.edgellm.toolchain import (
    DEVICE_ENGINE_RECORD,
    EDGELLM_VERSION,
    EXPORT_PROGRAM,
    LLM_DIR,
    MODELOPT_VERSION,
    QUANTIZE_FUNCTION,
    TOOLENV,
)
from edgepack.cache import default_cache_root
from edgepack.errors import ToolFailedError
from edgepack.process import run_logged, tool_failure
from edgepack.toolenv import UV_HINT, ToolEnv, ensure_toolenv, tool_variables

if TYPE_CHECKING:
    from edgepack.plan import Plan

UV = Requirement("python", "uv", UV_HINT, distribution="uv")
WORKER = Path(__file__).with_name("worker.py")
EXPORT_RECORD = "edgellm-export.json"
QUANTIZE_RECORD = "edgellm-quantize.json"
TIGHT_BUILD_SHARE = 0.5
"""Externalize weights when building the engine would take more than this share of the device's
memory: the engine then carries no copy of the externalized weights (Edge-LLM's
``--externalize-weights``), and the device builds and loads it with less."""


def host_stages(plan: Plan) -> list[Stage]:
    stages = []
    if plan.precision != "fp16":
        config = quantize_config(plan)
        stages.append(
            Stage(
                "quantize",
                f"{plan.precision} checkpoint (Edge-LLM quantizer, ModelOpt)",
                config,
                ("model",),
                _run(quantize, config),
                (UV,),
            )
        )
    source = "quantize" if stages else "model"
    config = export_config(plan)
    stages.append(
        Stage(
            "export",
            "ONNX export (tensorrt-edgellm-export), checked",
            config,
            (source, "model"),
            _run(export, config),
            (UV,),
        )
    )
    return stages


def _run(work: Callable[[dict[str, Any], StageContext], None], config: dict[str, Any]) -> Any:
    def run(context: StageContext) -> None:
        work(config, context)

    return run


def quantize_config(plan: Plan) -> dict[str, Any]:
    return {
        "tool": QUANTIZE_FUNCTION,
        "edgellm": EDGELLM_VERSION,
        "modelopt": MODELOPT_VERSION,
        "toolenv": TOOLENV.key,
        "quantization": plan.precision,
        "kv_cache_quantization": "fp8" if plan.kv_cache_dtype == "fp8" else None,
        "dtype": "fp16",
        "calibration": calibration_record(),
    }


def export_config(plan: Plan) -> dict[str, Any]:
    return {
        "tool": EXPORT_PROGRAM,
        "edgellm": EDGELLM_VERSION,
        "toolenv": TOOLENV.key,
        "arguments": export_arguments(plan),
        "precision": plan.precision,
    }


def export_arguments(plan: Plan) -> list[str]:
    """``--target-sm`` always (Edge-LLM picks SM-specific plugin ABIs from it, never from the
    export host's GPU); ``--externalize-weights all`` where the device's memory is tight."""
    arguments = []
    if plan.target.gpu is not None:
        arguments += ["--target-sm", plan.target.gpu.sm.removeprefix("SM")]
    if memory_is_tight(plan):
        arguments += ["--externalize-weights", "all"]
    return arguments


def memory_is_tight(plan: Plan) -> bool:
    return plan.memory.build_host_ram_bytes > TIGHT_BUILD_SHARE * plan.target.memory.size_gb * 1e9


def _toolenv(context: StageContext) -> ToolEnv:
    return ensure_toolenv(TOOLENV, log=context.log)


def _log_path(stage: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = default_cache_root() / "logs" / f"edgellm-{stage}-{stamp}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _tool(argv: list[str], stage: str, what: str, context: StageContext) -> Path:
    log_path = _log_path(stage)
    status = run_logged(argv, log_path, log=context.log, env=tool_variables())
    if status != 0:
        raise tool_failure(what, status, log_path)
    return log_path


def _worker(env: ToolEnv, job: dict[str, Any], stage: str, context: StageContext) -> Any:
    job_file = context.output_dir.parent / f"{context.output_dir.name}.{stage}.job.json"
    result_file = job_file.with_suffix(".result.json")
    job_file.write_text(json.dumps({**job, "result": str(result_file)}), encoding="utf-8")
    try:
        _tool([str(env.python), str(WORKER), str(job_file)], stage, f"edgellm {stage}", context)
        return json.loads(result_file.read_text(encoding="utf-8"))
    finally:
        job_file.unlink(missing_ok=True)
        result_file.unlink(missing_ok=True)


def quantize(config: dict[str, Any], context: StageContext) -> None:
    env = _toolenv(context)
    context.output_dir.mkdir(parents=True, exist_ok=True)
    job = {
        "job": "quantize",
        "model_dir": str(context.inputs["model"]),
        "output_dir": str(context.output_dir),
        "quantization": config["quantization"],
        "kv_cache_quantization": config["kv_cache_quantization"],
        "prompts": str(calibration_prompts()),
    }
    result = _worker(env, job, "quantize", context)
    record = {"config": config, "result": result, "toolenv": env.manifest_record()}
    (context.output_dir / QUANTIZE_RECORD).write_text(json.dumps(record, indent=2))


def export(config: dict[str, Any], context: StageContext) -> None:
    env = _toolenv(context)
    source = context.inputs.get("quantize") or context.inputs["model"]
    out = context.output_dir
    started = time.perf_counter()
    argv = [str(env.program(EXPORT_PROGRAM)), str(source), str(out), *config["arguments"]]
    log_path = _tool(argv, "export", EXPORT_PROGRAM, context)
    wall = time.perf_counter() - started
    shutil.copy2(log_path, out / "export.log")
    quantized = source / QUANTIZE_RECORD
    if quantized.is_file():  # the bundle keeps the record of every stage that made it
        shutil.copy2(quantized, out / QUANTIZE_RECORD)
    summary = _worker(env, {"job": "inspect", "llm_dir": str(out / LLM_DIR)}, "inspect", context)
    checks = check_export(summary, context.plan)
    record = {
        "config": config,
        "wall_s": wall,
        "toolenv": env.manifest_record(),
        "inspection": summary,
        "checks": [check.record() for check in checks],
    }
    failed = [check for check in checks if not check.ok]
    if failed:
        kept = log_path.with_suffix(".check.json")
        kept.write_text(json.dumps(record, indent=2), encoding="utf-8")
        raise ToolFailedError(
            f"the Edge-LLM export is not what the plan asked for: {failed[0].name}: "
            f"{failed[0].detail}" + (f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""),
            hint=f"every check and what the export holds: {kept}",
        )
    (out / EXPORT_RECORD).write_text(json.dumps(record, indent=2), encoding="utf-8")


def device_engine_stage(plan: Plan, host: str) -> Stage:
    """``build --host DEVICE``: the engine built on the device through the ssh builder (the ONNX
    shipped with the deploy machinery, ``llm_build`` run there, the engine left there with its
    sha256 and size computed there). The stage's output is the export again (the bundle must
    carry what another device builds from) plus the record of the device's engine."""
    config = {
        "tool": "llm_build",
        "edgellm": EDGELLM_VERSION,
        "device": host,
        "limits": {
            "max_batch_size": plan.limits.max_batch_size,
            "max_input_len": plan.limits.max_input_len,
            "max_kv_cache_capacity": plan.limits.max_seq_len,
        },
    }
    return Stage(
        "engine",
        f"llm_build on {host} (the engine stays there)",
        config,
        ("export",),
        _run(_device_engine(host), config),
    )


def _device_engine(host: str) -> Callable[[dict[str, Any], StageContext], None]:
    def run(config: dict[str, Any], context: StageContext) -> None:
        from edgepack.backends.edgellm.device import (
            build_memory_problem,
            device_problems,
            install_hint,
            llm_build_job,
        )
        from edgepack.backends.edgellm.on_device import fingerprint, probe
        from edgepack.builders.ssh import SshBuilder
        from edgepack.remote.connect import open_connector
        from edgepack.remote.facts import gather_facts
        from edgepack.remote.hosts import DEFAULT_ROOT, parse_host

        spec = parse_host(host)
        export_dir = context.inputs["export"]
        with open_connector(spec) as connector:
            facts = gather_facts(connector, spec.root or DEFAULT_ROOT)
            found = probe(connector)
        hint = install_hint(context.plan.target)
        exported = json.loads((export_dir / LLM_DIR / "config.json").read_text())
        problems = device_problems(exported.get("edgellm_version"), found, host, hint)
        memory = build_memory_problem(context.plan, facts)
        problems += [memory] if memory else []
        if problems:
            raise ToolFailedError(
                f"{host}: refusing to build the engine there, nothing was sent: "
                + "; ".join(problems),
                hint=hint,
            )
        assert found.plugin is not None  # device_problems refuses a missing plugin
        job = llm_build_job(context.plan, export_dir, found.tools["llm_build"], found.plugin, hint)
        builder = SshBuilder(spec, default_cache_root() / "logs")
        outcome = builder.run(job, context.output_dir / "device", context.log)
        shutil.copytree(export_dir, context.output_dir, dirs_exist_ok=True, copy_function=_link)
        record = {
            "device": fingerprint(facts, found),
            "edgellm_probe": found.record(),
            **outcome.record(),
            "log": outcome.log_text[-4000:],
        }
        (context.output_dir / DEVICE_ENGINE_RECORD).write_text(json.dumps(record, indent=2))

    return run


def _link(source: str, destination: str) -> None:
    """Hard links where the filesystem allows (the export is large and never modified)."""
    try:
        Path(destination).unlink(missing_ok=True)
        Path(destination).hardlink_to(source)
    except OSError:
        shutil.copy2(source, destination)

"""The work of the trtrtx stages, run in a child process:
``python -m edgepack.backends.trtrtx.worker JOB.json``.

The job file names the stage, its config (the same mapping that keys the stage cache), its input
directories and the output directory. Each stage writes its files and ``<stage>.json``: wall time,
peak resident memory of this process and what the stage learned (the export check, the quantizer's
settings, TensorRT-RTX's memory report). The engine stage copies the earlier records beside the
engine, so a bundle carries the record of every stage that made it.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgepack.backends.child import TOKENIZER_FILES, peak_rss_bytes, worker_main
from edgepack.backends.trtrtx.check import (
    ONNX_FILE,
    chat_prompt_ids,
    check_export,
    check_network,
)
from edgepack.backends.trtrtx.decode import DecoderLayout
from edgepack.backends.trtrtx.runner import ENGINE_FILE, LAYOUT_FILE
from edgepack.errors import ToolFailedError
from edgepack.resources import data_dir

ONNX_DATA = "model.onnx.data"
LOGITS = "logits"
Inputs = dict[str, Path]
StageWork = Callable[[dict[str, Any], Inputs, Path], dict[str, Any]]


# --- export ------------------------------------------------------------------------------------


def export(config: dict[str, Any], inputs: Inputs, out: Path) -> dict[str, Any]:
    """torch.onnx dynamo export of the model with explicit KV-cache inputs and outputs."""
    import torch
    from transformers import AutoModelForCausalLM

    model: Any = AutoModelForCausalLM.from_pretrained(
        str(inputs["model"]), dtype=torch.float32, attn_implementation="sdpa"
    )
    model.eval()
    layout = DecoderLayout.of_config(model.config.to_dict())
    started = time.perf_counter()
    program: Any = torch.onnx.export(
        _kv_module(model, layout),
        _example_inputs(layout),
        dynamic_shapes=_dynamic_shapes(layout),
        input_names=layout.input_names(),
        output_names=layout.output_names(),
        opset_version=config["opset"],
        dynamo=True,
        external_data=True,
        optimize=True,
    )
    program.save(str(out / ONNX_FILE), external_data=True)
    _name_total_length(out / ONNX_FILE)
    export_s = time.perf_counter() - started
    check = check_export(out / ONNX_FILE, model, inputs["model"], layout, config["check"])
    return {"export_s": export_s, "layout": layout.to_dict(), "check": check}


def _kv_module(model: Any, layout: DecoderLayout) -> Any:
    """The model as a function of flat tensors: ids, mask, positions, past K/V per layer."""
    import torch
    from transformers import DynamicCache

    class KvDecoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, position_ids: Any, past: Any) -> Any:
            cache = DynamicCache(config=self.model.config)
            for layer in range(layout.layers):
                cache.update(past[2 * layer], past[2 * layer + 1], layer)
            out = self.model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                past_key_values=cache,
                use_cache=True,
            )
            present = [
                t for layer in out.past_key_values.layers for t in (layer.keys, layer.values)
            ]
            return (out.logits, *present)

    return KvDecoder()


def _example_inputs(layout: DecoderLayout) -> tuple[Any, ...]:
    """Sizes above 1 everywhere, so the exporter keeps every dimension symbolic."""
    import torch

    batch, tokens, past = 2, 5, 3
    ids = torch.randint(0, 100, (batch, tokens))
    mask = torch.ones(batch, past + tokens, dtype=torch.int64)
    positions = torch.arange(past, past + tokens).expand(batch, tokens)
    kv = [torch.zeros(layout.past_shape(batch, past)) for _ in range(2 * layout.layers)]
    return ids, mask, positions, kv


def _dynamic_shapes(layout: DecoderLayout) -> dict[str, Any]:
    from torch.export import Dim

    batch, tokens = Dim("batch", min=1), Dim("tokens", min=1)
    past = Dim("past", min=0)
    return {
        "input_ids": {0: batch, 1: tokens},
        "attention_mask": {0: batch, 1: Dim.AUTO},
        "position_ids": {0: batch, 1: tokens},
        "past": [{0: batch, 2: past} for _ in range(2 * layout.layers)],
    }


def _name_total_length(path: Path) -> None:
    """The exporter names the mask's length after a symbol; call it what it is."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    for value in model.graph.input:
        if value.name == "attention_mask":
            value.type.tensor_type.shape.dim[1].dim_param = "total_tokens"
    onnx.save(model, str(path))


# --- quantize ----------------------------------------------------------------------------------


def quantize(config: dict[str, Any], inputs: Inputs, out: Path) -> dict[str, Any]:
    """fp16: the export converted. Otherwise ModelOpt's ONNX quantizer on a copy of the export (it
    rewrites its input in place), keeping the rest in fp32, then the same fp16 conversion."""
    shutil.copyfile(inputs["export"] / "export.json", out / "export.json")
    if config["precision"] == "fp16":
        details = convert_fp16(inputs["export"] / ONNX_FILE, out)
    else:
        details = _quantize_then_convert(config, inputs, out)
    return details | {"check": check_network(config, out, inputs["model"])}


def _quantize_then_convert(config: dict[str, Any], inputs: Inputs, out: Path) -> dict[str, Any]:
    scratch = out.parent / f"{out.name}.scratch"
    try:
        source = _copy_onnx(inputs["export"], scratch)
        details = _modelopt_quantize(config, source, inputs["model"], scratch / "quantized")
        return details | convert_fp16(scratch / "quantized" / ONNX_FILE, out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


NORM_STATISTICS = ("ReduceMean", "Add", "Sqrt", "Reciprocal")
"""What follows the Pow of an RMSNorm up to its reciprocal root. The demo model's residual stream
reaches |x| ≈ 25 000, whose square overflows fp16: these stay fp32 (as transformers keeps them)."""


def norm_statistics_nodes(model: Any) -> list[str]:
    """Names of every Pow node and the chain of norm statistics after it."""
    consumers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    found = []
    for node in (n for n in model.graph.node if n.op_type == "Pow"):
        chain = [node]
        while True:
            following = [
                n for n in consumers.get(chain[-1].output[0], []) if n.op_type in NORM_STATISTICS
            ]
            if len(following) != 1:
                break
            chain.append(following[0])
        found += [n.name for n in chain]
    return found


def convert_fp16(source: Path, out: Path) -> dict[str, Any]:
    """Every float tensor to fp16, the KV cache inputs and outputs included, except the norms'
    statistics (ModelOpt AutoCast)."""
    import onnx
    from modelopt.onnx.autocast import convert_to_mixed_precision

    kept = norm_statistics_nodes(onnx.load(str(source), load_external_data=False))
    started = time.perf_counter()
    model = convert_to_mixed_precision(
        str(source),
        nodes_to_exclude=["^(" + "|".join(re.escape(name) for name in kept) + ")$"],
        data_max=math.inf,
        keep_io_types=False,
    )
    save_onnx(model, out)
    elapsed = time.perf_counter() - started
    return {"fp16_conversion_s": elapsed, "io_dtype": "fp16", "nodes_kept_fp32": len(kept)}


def save_onnx(model: Any, out: Path) -> None:
    import onnx

    onnx.save(
        model,
        str(out / ONNX_FILE),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=ONNX_DATA,
    )


def _copy_onnx(export_dir: Path, scratch: Path) -> Path:
    scratch.mkdir(parents=True)
    for name in (ONNX_FILE, ONNX_DATA):
        shutil.copyfile(export_dir / name, scratch / name)
    return scratch / ONNX_FILE


def _modelopt_quantize(
    config: dict[str, Any], source: Path, model_dir: Path, out: Path
) -> dict[str, Any]:
    from modelopt.onnx.quantization import quantize as modelopt_quantize

    options: dict[str, Any] = {
        key: config[key]
        for key in ("block_size", "calibration_method", "op_types_to_quantize", "disable_mha_qdq")
        if key in config
    }
    excluded = [logits_producer(source)] if config["keep_lm_head"] else []
    if excluded:
        options["nodes_to_exclude"] = [f"^{re.escape(name)}$" for name in excluded]
    reader, samples = None, 0
    if config["calibration"] is not None:
        layout = DecoderLayout.of_config(json.loads((model_dir / "config.json").read_text()))
        windows = calibration_windows(model_dir, config["calibration"]["window_tokens"])
        reader, samples = CalibrationReader(windows, layout), len(windows)
    eight_bit = int8_layers(source, excluded) if config.get("weight_bits") == 8 else []
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    modelopt_quantize(
        str(source),
        quantize_mode=config["quantize_mode"],
        calibration_data_reader=reader,
        calibration_eps=config["calibration_eps"],
        high_precision_dtype=config["high_precision_dtype"],
        use_external_data_format=True,
        output_path=str(out / ONNX_FILE),
        **options,
        **({"layers_8bit": ",".join(eight_bit)} if eight_bit else {}),
    )
    elapsed = time.perf_counter() - started
    details = {"calibration_samples": samples, "options": options, "modelopt_s": elapsed}
    if eight_bit:
        details["weights"] = require_int8_weight_only(out / ONNX_FILE, len(eight_bit))
    return details


def weight_matmuls(model: Any, excluded: Sequence[str] = ()) -> list[str]:
    """Names of the MatMul/Gemm nodes that multiply by a weight (an initializer)."""
    weights = {initializer.name for initializer in model.graph.initializer}
    return [
        str(node.name)
        for node in model.graph.node
        if node.op_type in ("MatMul", "Gemm")
        and len(node.input) > 1
        and node.input[1] in weights
        and node.name not in excluded
    ]


LAYER_NAME = re.compile(r"^[/a-zA-Z0-9_.\-]+$")
"""What ModelOpt accepts in ``layers_8bit`` (its validate_8bit_layers)."""


def int8_layers(onnx_path: Path, excluded: Sequence[str]) -> list[str]:
    """Every weight MatMul but the excluded ones, for ModelOpt's ``layers_8bit``."""
    import onnx

    names = weight_matmuls(onnx.load(str(onnx_path), load_external_data=False), excluded)
    odd = [name for name in names if not LAYER_NAME.match(name)]
    if odd:
        raise ToolFailedError(
            f"ModelOpt cannot name these MatMuls for int8 weight-only quantization: {odd[:3]}",
            hint="the exporter names nodes in a way this edgepack does not handle; report it",
        )
    return names


def quantized_weights(model: Any) -> dict[str, Any]:
    """What quantization left in a graph: weights fed through a DequantizeLinear (their dtypes,
    how many have one scale per output channel, how many MatMuls take them) and the Q/DQ nodes on
    activations (any QuantizeLinear, any DequantizeLinear of a computed tensor)."""
    import onnx

    initializers = {initializer.name: initializer for initializer in model.graph.initializer}
    dequantize = [node for node in model.graph.node if node.op_type == "DequantizeLinear"]
    on_weights = [node for node in dequantize if node.input[0] in initializers]
    dequantized = {str(node.output[0]) for node in on_weights}
    dtypes: dict[str, int] = {}
    for node in on_weights:
        name = onnx.TensorProto.DataType.Name(initializers[node.input[0]].data_type)
        dtypes[name] = dtypes.get(name, 0) + 1
    per_channel = sum(
        1
        for node in on_weights
        if node.input[1] in initializers
        and list(initializers[node.input[1]].dims) == [initializers[node.input[0]].dims[-1]]
        and any(a.name == "axis" and a.i in (1, -1) for a in node.attribute)
    )
    matmuls = sum(
        1
        for node in model.graph.node
        if node.op_type in ("MatMul", "Gemm") and any(i in dequantized for i in node.input)
    )
    activation = sum(1 for node in model.graph.node if node.op_type == "QuantizeLinear")
    activation += len(dequantize) - len(on_weights)
    return {
        "weight_dtypes": dtypes,
        "per_output_channel": per_channel,
        "matmuls_on_quantized_weights": matmuls,
        "activation_qdq_nodes": activation,
    }


def require_int8_weight_only(onnx_path: Path, expected: int) -> dict[str, Any]:
    """The quantized graph must hold exactly ``expected`` int8 weights, one scale per output
    channel, each feeding a MatMul through a DequantizeLinear, and no activation Q/DQ."""
    import onnx

    found = quantized_weights(onnx.load(str(onnx_path), load_external_data=False))
    wanted = {
        "weight_dtypes": {"INT8": expected},
        "per_output_channel": expected,
        "matmuls_on_quantized_weights": expected,
        "activation_qdq_nodes": 0,
    }
    if found != wanted:
        raise ToolFailedError(
            f"ModelOpt's output is not int8 weight-only: found {found}, expected {wanted}",
            hint="ModelOpt's int4/layers_8bit behaviour changed; pin nvidia-modelopt 0.47",
        )
    return found


def logits_producer(onnx_path: Path) -> str:
    """The node that computes the logits: the lm_head MatMul."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    return next(str(n.name) for n in model.graph.node if LOGITS in n.output)


def calibration_windows(model_dir: Path, window: int) -> list[list[int]]:
    """The shipped prompts, chat-templated, packed into one stream and cut into equal windows."""
    prompts = json.loads((data_dir("prompts") / "default.json").read_text(encoding="utf-8"))
    texts = [prompt["text"] for prompt in prompts["prompts"]]
    stream = [token for ids in chat_prompt_ids(model_dir, *texts) for token in ids]
    return [stream[start : start + window] for start in range(0, len(stream) - window + 1, window)]


class CalibrationReader:
    """onnxruntime's CalibrationDataReader protocol, plus the ``get_first`` ModelOpt calls."""

    def __init__(self, windows: Sequence[list[int]], layout: DecoderLayout) -> None:
        self.feeds = [layout.prefill_feeds([w], np.float32) for w in windows]
        self._iterator: Iterator[dict[str, np.ndarray]] = iter(self.feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._iterator, None)

    def get_first(self) -> dict[str, np.ndarray]:
        return self.feeds[0]

    def rewind(self) -> None:
        self._iterator = iter(self.feeds)


# --- engine ------------------------------------------------------------------------------------


def engine(config: dict[str, Any], inputs: Inputs, out: Path) -> dict[str, Any]:
    """TensorRT-RTX: parse, add prefill and decode profiles, build for one compute capability."""
    import tensorrt_rtx as trt

    logger = _TrtLogger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(inputs["quantize"] / ONNX_FILE)):
        errors = "; ".join(str(parser.get_error(i).desc()) for i in range(parser.num_errors))
        raise ToolFailedError(f"TensorRT-RTX cannot parse the ONNX model: {errors}")
    builder_config = builder.create_builder_config()
    builder_config.num_compute_capabilities = 1
    builder_config.set_compute_capability(
        getattr(trt.ComputeCapability, config["compute_capability"]), 0
    )
    layout = DecoderLayout.from_dict(config["layout"])
    for profile in config["profiles"].values():
        builder_config.add_optimization_profile(_profile(builder, layout, profile))
    started = time.perf_counter()
    serialized = builder.build_serialized_network(network, builder_config)
    if serialized is None:
        raise ToolFailedError("TensorRT-RTX built no engine; the log above says why")
    (out / ENGINE_FILE).write_bytes(memoryview(serialized))
    build_s = time.perf_counter() - started
    _write_runner_files(config, inputs, out, trt.__version__)
    return {"build_s": build_s, "tensorrt_rtx": trt.__version__, **logger.memory_report()}


def _profile(builder: Any, layout: DecoderLayout, profile: dict[str, list[int]]) -> Any:
    shapes = builder.create_optimization_profile()
    rows = zip(profile["batch"], profile["tokens"], profile["past"], strict=True)
    corners = [(b, t, p) for b, t, p in rows]
    for name, shape in layout.input_shapes(corners).items():
        shapes.set_shape(name, *shape)
    return shapes


def _write_runner_files(config: dict[str, Any], inputs: Inputs, out: Path, version: str) -> None:
    """What the runner needs beside the engine: tokenizer, model config, I/O layout, records."""
    for name in TOKENIZER_FILES:
        if (inputs["model"] / name).is_file():
            shutil.copyfile(inputs["model"] / name, out / name)
    runner = {**config, "tensorrt_rtx": version, "engine": ENGINE_FILE}
    (out / LAYOUT_FILE).write_text(json.dumps(runner, indent=2, sort_keys=True) + "\n")
    for record in ("export.json", "quantize.json"):
        shutil.copyfile(inputs["quantize"] / record, out / record)


class _TrtLogger:
    """Forwards TensorRT-RTX messages to stdout and keeps its memory report."""

    MEMORY = re.compile(r"Total (Weights|Activation) Memory: (\d+) bytes")

    def __new__(cls, trt: Any) -> Any:
        class Logger(trt.ILogger):  # type: ignore[misc]
            def __init__(self) -> None:
                trt.ILogger.__init__(self)
                self.memory: dict[str, list[int]] = {"Weights": [], "Activation": []}

            def log(self, severity: Any, message: str) -> None:
                if severity <= trt.ILogger.Severity.INFO:
                    print(f"[TensorRT-RTX] {message}", flush=True)
                for kind, value in _TrtLogger.MEMORY.findall(message):
                    self.memory[kind].append(int(value))

            def memory_report(self) -> dict[str, Any]:
                return {
                    "weights_bytes": max(self.memory["Weights"], default=None),
                    "activation_bytes_per_profile": self.memory["Activation"],
                }

        return Logger()


# --- the child process -------------------------------------------------------------------------

STAGES: dict[str, StageWork] = {"export": export, "quantize": quantize, "engine": engine}


def run_job(job_path: Path) -> dict[str, Any]:
    job = json.loads(job_path.read_text(encoding="utf-8"))
    stage, out = job["stage"], Path(job["output_dir"])
    inputs = {name: Path(path) for name, path in job["inputs"].items()}
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    details = STAGES[stage](job["config"], inputs, out)
    record = {
        "stage": stage,
        "wall_s": time.perf_counter() - started,
        "peak_rss_bytes": peak_rss_bytes(),
        **details,
    }
    (out / f"{stage}.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return record


def _summary(record: dict[str, Any]) -> str:
    peak_gib = record["peak_rss_bytes"] / 2**30
    return f"{record['stage']} done in {record['wall_s']:.1f} s, peak RSS {peak_gib:.2f} GiB"


def main(argv: Sequence[str]) -> int:
    return worker_main(argv, "edgepack.backends.trtrtx.worker", run_job, _summary)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

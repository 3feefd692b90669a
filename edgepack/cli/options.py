"""Option types shared by several commands, declared once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgepack.resources import TARGETS_PATH_ENV

TargetsDirOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--targets-dir",
        help=f"Extra directory of target profiles (*.toml); also ${TARGETS_PATH_ENV}.",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON only.")]
TargetOption = Annotated[
    str, typer.Option("--target", "-t", help="Target profile name (`edgepack targets list`).")
]
ModelOption = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        help="Local HF model folder, a model card (qwen3-8b, ...) or demo:smollm2-135m.",
    ),
]
PrecisionOption = Annotated[
    str,
    typer.Option(
        "--precision",
        "-p",
        help="Weight precision: fp32 fp16 bf16 fp8 int8_sq "
        "int8_wo int4 int4_awq nvfp4 (what the target supports).",
    ),
]
BackendOption = Annotated[
    str | None,
    typer.Option("--backend", "-b", help="ort, edgellm, trtllm or trtrtx; default: the target's."),
]
KvDtypeOption = Annotated[
    str | None,
    typer.Option("--kv-cache-dtype", help="KV-cache dtype (fp16, fp32, bf16, fp8, int8)."),
]
AllowKvOption = Annotated[
    bool,
    typer.Option(
        "--allow-kv-quantization",
        help="Allow an FP8/INT8 KV cache on a model under 30 B parameters (strict quality gate).",
    ),
]
MaxBatchOption = Annotated[int, typer.Option("--max-batch-size", min=1, help="Largest batch.")]
MaxInputOption = Annotated[
    int, typer.Option("--max-input-len", min=1, help="Longest prompt (tokens).")
]
MaxSeqOption = Annotated[
    int, typer.Option("--max-seq-len", min=1, help="Longest prompt + generation (tokens).")
]
CacheDirOption = Annotated[
    Path | None,
    typer.Option(
        "--cache-dir", help="Stage cache \\[default: $EDGEPACK_CACHE_DIR or ~/.cache/edgepack]."
    ),
]
VerboseOption = Annotated[bool, typer.Option("--verbose", "-v", help="Stream the tools' output.")]
BuilderOption = Annotated[
    str | None,
    typer.Option(
        "--builder",
        help="Where the engine is built, for backends that build it on the GPU: local, "
        "container (the toolchain's image) or ssh:HOST (a GPU host, or for edgellm the device "
        "itself; --host HOST is the same) \\[default: local where the tool is installed, else "
        "container where an engine has its image; edgellm: deploy builds it on the device].",
        show_default=False,
    ),
]
GroupSizeOption = Annotated[
    int | None,
    typer.Option(
        "--group-size",
        min=1,
        help="Quantization group (block) size for int4_awq/int4_wo \\[default: 128, else 64 "
        "where 128 does not divide the model].",
        show_default=False,
    ),
]
GateConfigOption = Annotated[
    Path | None,
    typer.Option("--gate-config", help="TOML overriding gate thresholds per precision class."),
]
ReferenceModelHelp = "(a folder, demo:smollm2-135m, or a cached hub id)"

"""The Edge-LLM release edgepack drives, and the tool environment its host half runs in.

The ``tensorrt-edgellm`` wheel's ``[export]`` extra pins torch 2.13.0, transformers 5.14.1,
onnx 1.19.0, onnxscript 0.7.1, safetensors 0.8.0 and numpy 2.2.6; its quantize CLI imports
ModelOpt and ``datasets`` (its ``[tools]`` extra pins nvidia-modelopt 0.45.0, datasets 5.0.0 and
tqdm 4.69.0, among audio/vision packages an LLM does not need). ModelOpt 0.45 imports ``requests``
without declaring it. Measured here (2 cores, from an empty cache, other work beside it): uv
creates the environment in 33 s, 1.85 GB on disk (pip took 170 s for the same set).
"""

from __future__ import annotations

from edgepack.toolenv import ToolEnvSpec

EDGELLM_VERSION = "0.11.0"
MODELOPT_VERSION = "0.45.0"
TOOLENV = ToolEnvSpec(
    "edgellm",
    EDGELLM_VERSION,
    (
        f"tensorrt-edgellm[export]=={EDGELLM_VERSION}",
        f"nvidia-modelopt=={MODELOPT_VERSION}",
        "datasets==5.0.0",
        "tqdm==4.69.0",
        "requests==2.34.2",
    ),
)
EXPORT_PROGRAM = "tensorrt-edgellm-export"
QUANTIZE_FUNCTION = "tensorrt_edgellm.quantization.quantize.quantize_and_export"
"""What ``tensorrt-edgellm-quantize llm`` calls; edgepack calls it with its own calibration
prompts and ``device='cpu'`` where the host has no CUDA (the CLI's default is ``cuda``)."""
PLUGIN_DOMAIN = "trt_edgellm"
ATTENTION_PLUGIN = "AttentionPlugin"
LLM_DIR = "llm"
KV_PAGE_TOKENS = 128
"""Edge-LLM 0.11's paged KV pool: ``past_key_values_N [2, num_pages, 128, kv_heads, head_dim]``."""
DEVICE_ENGINE_RECORD = "device-engine.json"
"""The record ``build --host`` leaves in the bundle of the engine it made on a device."""

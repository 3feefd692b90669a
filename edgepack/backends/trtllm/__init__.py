"""TensorRT-LLM 1.2.x, the engine path for Ada/Hopper workstations: what it builds and needs."""

from edgepack.backends.trtllm.backend import TRTLLM

__all__ = ["TRTLLM"]

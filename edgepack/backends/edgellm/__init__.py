"""TensorRT Edge-LLM, the path for Jetson Thor/Orin and DGX Spark: what it builds and needs."""

from edgepack.backends.edgellm.backend import EDGELLM

__all__ = ["EDGELLM"]

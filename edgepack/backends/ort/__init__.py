"""ONNX Runtime GenAI, the embedded default: its description and stages (``backend``) and the
engine the bench runs (``runner``)."""

from edgepack.backends.ort.backend import ORT

__all__ = ["ORT"]

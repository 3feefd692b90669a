"""TensorRT for RTX: its description and stages (``backend``), the worker its stages run in a
child process (``worker``), the decode loop the export check and the bench share (``decode``) and
the engine the bench runs on an RTX GPU (``runner``)."""

from edgepack.backends.trtrtx.backend import TRTRTX

__all__ = ["TRTRTX"]

"""Edits to files that only a file's ctime gives away."""

from __future__ import annotations

import os
import time
from pathlib import Path


def rewrite_keeping_size_and_mtime(path: Path, data: bytes) -> None:
    """New bytes of the same length, the old mtime put back: only the ctime tells."""
    before = path.stat()
    for _ in range(200):  # the ctime clock ticks coarsely: write until it has moved
        path.write_bytes(data)
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        if path.stat().st_ctime_ns != before.st_ctime_ns:
            return
        time.sleep(0.01)
    raise AssertionError("the ctime never moved")


def flipped(data: bytes, *offsets: int) -> bytes:
    """``data`` with the byte at each offset changed (every bit inverted)."""
    changed = bytearray(data)
    for offset in offsets:
        changed[offset] ^= 0xFF
    return bytes(changed)

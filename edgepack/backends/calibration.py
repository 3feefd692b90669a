"""The calibration set quantizers are fed: the shipped prompt set, hashed into stage configs."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from edgepack.resources import data_dir


def calibration_prompts() -> Path:
    return data_dir("prompts") / "default.json"


def calibration_record() -> dict[str, Any]:
    """Which prompts calibrate the quantizers, with the hash of the file they come from."""
    path = calibration_prompts()
    return {"prompts": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}

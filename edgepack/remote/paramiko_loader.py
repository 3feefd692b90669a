"""Import paramiko without invoke, which it needs only for ``Match exec`` lines of ssh_config.

paramiko's config module imports invoke at the top, and invoke is 40-50 ms of paramiko's ~110 ms
import (measured on a 2-core Xeon): a third of a no-change deploy's budget. Without it paramiko
treats ``Match exec`` as unsupported, so a config that has one gets invoke loaded and handed to
paramiko before it is parsed.
"""

from __future__ import annotations

import importlib
import re
import sys
from types import ModuleType

MATCH_EXEC = re.compile(r"^\s*match\b.*\bexec\b", re.IGNORECASE | re.MULTILINE)


def load_paramiko() -> ModuleType:
    if "paramiko" not in sys.modules and "invoke" not in sys.modules:
        sys.modules["invoke"] = None  # type: ignore[assignment]  # `import invoke` raises
        try:
            importlib.import_module("paramiko")
        finally:
            del sys.modules["invoke"]
    return importlib.import_module("paramiko")


def enable_match_exec(config_text: str) -> None:
    """Give paramiko invoke when ``config_text`` has a ``Match exec`` line."""
    if not MATCH_EXEC.search(config_text):
        return
    paramiko_config = importlib.import_module("paramiko.config")
    if getattr(paramiko_config, "invoke", None) is None:
        paramiko_config.invoke = importlib.import_module("invoke")  # type: ignore[attr-defined]

"""The device half of the Edge-LLM path: what the device has, whether this export may go there,
and the ``llm_build`` job that makes the engine on it (run by ``edgepack.builders``, ssh kind,
with ``fetch_outputs=False``: the engine stays on the device, its sha256 and size computed there).

Edge-LLM ONNX is not portable across Edge-LLM releases (its builder refuses an export whose
``config.json`` names another ``edgellm_version``: "Re-export the model"), and engines are not
portable across TensorRT releases or SMs. So before a byte ships: the device's Edge-LLM, TensorRT,
CUDA, L4T (JetPack) and SM are compared with the export's and the profile's, and a mismatch is
refused with what to install or rebuild. The engine build is refused too when the plan's build
memory (3–4x the parameter bytes, REFERENCE.md §3) exceeds what the device has free.
"""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgepack.backends.base import DeviceCheck
from edgepack.backends.edgellm.toolchain import EDGELLM_VERSION, LLM_DIR
from edgepack.builders.job import BuildJob, InputPath, OutputPath, ToolProbe, ToolSpec

if TYPE_CHECKING:
    from pathlib import Path

    from edgepack.plan import Plan
    from edgepack.remote.connector import Connector
    from edgepack.remote.facts import DeviceFacts
    from edgepack.targets import TargetProfile

TOOLS = ("llm_build", "llm_inference", "llm_bench")
PLUGIN_LIBRARY = "libNvInfer_edgellm_plugin.so"
ENGINE_FILE = "llm.engine"
INSTALL_HINT = (
    "build TensorRT Edge-LLM {version} on the device (git clone NVIDIA/TensorRT-Edge-LLM, "
    "checkout v{version}, cmake -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64_linux_toolchain.cmake "
    "-DEMBEDDED_TARGET={target} -DCUDA_CTK_VERSION={cuda}, make) and put build/examples/llm on "
    "PATH or the checkout in $EDGELLM_HOME"
)
# Where the Edge-LLM tools are: on PATH, else in a checkout ($EDGELLM_HOME, ~/TensorRT-Edge-LLM,
# /opt/TensorRT-Edge-LLM) under build/examples/llm. The release is the checkout's
# tensorrt_edgellm/_version.py; the plugin is $EDGELLM_PLUGIN_PATH, else build/<library>.
PROBE_SCRIPT = f"""home=
for candidate in "${{EDGELLM_HOME:-}}" "$HOME/TensorRT-Edge-LLM" /opt/TensorRT-Edge-LLM; do
  [ -n "$candidate" ] && [ -x "$candidate/build/examples/llm/llm_build" ] &&
    home=$candidate && break
done
for tool in {" ".join(TOOLS)}; do
  found=$(command -v "$tool" 2>/dev/null)
  [ -z "$found" ] && [ -n "$home" ] && [ -x "$home/build/examples/llm/$tool" ] &&
    found=$home/build/examples/llm/$tool
  [ -n "$found" ] && printf '%s=%s\\n' "$tool" "$found"
done
[ -z "$home" ] && found=$(command -v llm_build 2>/dev/null) &&
  home=$(cd "$(dirname "$found")/../../.." 2>/dev/null && pwd)
[ -n "$home" ] && printf 'home=%s\\n' "$home"
version=$home/tensorrt_edgellm/_version.py
[ -r "$version" ] && printf 'edgellm_version=%s\\n' \\
  "$(sed -n 's/^__version__ = "\\(.*\\)"/\\1/p' "$version")"
plugin=${{EDGELLM_PLUGIN_PATH:-}}
[ -z "$plugin" ] && [ -n "$home" ] && plugin=$home/build/{PLUGIN_LIBRARY}
[ -n "$plugin" ] && printf 'plugin=%s\\n' "$plugin"
[ -n "$plugin" ] && [ -r "$plugin" ] && printf 'plugin_readable=yes\\n'
exit 0"""


@dataclass(frozen=True)
class DeviceEdgeLlm:
    """What the probe found of Edge-LLM on a device."""

    tools: dict[str, str]
    home: str | None = None
    version: str | None = None
    plugin: str | None = None
    plugin_readable: bool = False

    def record(self) -> dict[str, Any]:
        return {
            "tools": self.tools,
            "home": self.home,
            "edgellm_version": self.version,
            "plugin": self.plugin,
            "plugin_readable": self.plugin_readable,
        }


def parse_probe(text: str) -> DeviceEdgeLlm:
    values = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    return DeviceEdgeLlm(
        tools={tool: values[tool] for tool in TOOLS if tool in values},
        home=values.get("home"),
        version=values.get("edgellm_version") or None,
        plugin=values.get("plugin") or None,
        plugin_readable=values.get("plugin_readable") == "yes",
    )


def install_hint(target: TargetProfile | None) -> str:
    """How to get Edge-LLM's tools on a device of ``target`` (its profile, where known)."""
    toolchain = target.toolchain if target is not None else None
    return INSTALL_HINT.format(
        version=EDGELLM_VERSION,
        target=(toolchain.embedded_target if toolchain else None) or "auto",
        cuda=(toolchain.cuda if toolchain else None) or "<the device's CUDA>",
    )


def device_problems(
    export_version: str | None, device: DeviceEdgeLlm, host: str, hint: str
) -> list[str]:
    """Why the device cannot build or run this export with Edge-LLM, each with the fix."""
    missing = [tool for tool in TOOLS if tool not in device.tools]
    if missing:
        return [f"device {host} has no Edge-LLM {', '.join(missing)}; {hint}"]
    problems = []
    if not device.plugin or not device.plugin_readable:
        where = device.plugin or "no path"
        problems.append(
            f"device {host}: Edge-LLM's plugin library is not there ({where}); set "
            f"EDGELLM_PLUGIN_PATH to its {PLUGIN_LIBRARY} (in the Edge-LLM build directory); "
            "without it the ONNX parse fails"
        )
    if export_version and device.version != export_version:
        problems.append(
            f"the export is Edge-LLM {export_version} but device {host} has Edge-LLM "
            f"{device.version or 'of unknown version'} (Edge-LLM ONNX is not portable across "
            f"releases): build Edge-LLM {export_version} on the device, or re-export with "
            f"tensorrt-edgellm=={device.version or '<its version>'}"
        )
    return problems


def build_memory_problem(plan: Plan, facts: DeviceFacts) -> str | None:
    """The engine build needs 3-4x the parameter bytes of host memory on the device itself."""
    free = facts.memory_available_bytes
    needed = plan.memory.build_host_ram_bytes
    if free is None or needed <= free:
        return None
    return (
        f"building the {plan.model.name} engine on {facts.host} needs about {needed / 1e9:.1f} GB "
        f"of memory ({plan.target.name}'s builder: 3-4x the parameter bytes) but the device has "
        f"{free / 1e9:.1f} GB free; stop other work on it, or use a smaller model or precision"
    )


def llm_build_tool(hint: str) -> ToolSpec:
    return ToolSpec(
        program="llm_build",
        label=f"TensorRT Edge-LLM {EDGELLM_VERSION} (llm_build)",
        install_hint=hint,
        probe_argv=("llm_build", "--help"),
        check=lambda probe: None if probe.present else _absent(probe),
        gpus=True,
    )


def _absent(probe: ToolProbe) -> str:
    return f"llm_build is not installed on {probe.where}"


def llm_build_job(plan: Plan, onnx_dir: Path, program: str, plugin: str, hint: str) -> BuildJob:
    """``llm_build`` on the device with the plan's limits; the engine stays there."""
    limits = plan.limits
    argv = (
        program,
        "--onnxDir",
        InputPath("onnx", LLM_DIR),
        "--engineDir",
        OutputPath(),
        "--maxBatchSize",
        str(limits.max_batch_size),
        "--maxInputLen",
        str(limits.max_input_len),
        "--maxKVCacheCapacity",
        str(limits.max_seq_len),
    )
    return BuildJob(
        tool=llm_build_tool(hint),
        argv=argv,
        inputs={"onnx": onnx_dir},
        fetch_outputs=False,
        env={"EDGELLM_PLUGIN_PATH": plugin},
        explain_failure=explain_llm_build,
        label="llm_build",
    )


_LOG_LINE = re.compile(r"^\[[\d:.]+\] \[(INFO|WARNING|ERROR)\] \[[^\]]*\] (.*)$")
OUT_OF_MEMORY = ("NvMapMemAllocInternalTagged", "out of memory", "CUDA error 2", "std::bad_alloc")


def explain_llm_build(log: str) -> str:
    """The one line that says why ``llm_build`` failed, from its whole log."""
    if any(marker in log for marker in OUT_OF_MEMORY):
        return (
            "the device ran out of memory building the engine; lower --max-batch-size or "
            "--max-seq-len, stop other work on the device, or use a smaller precision"
        )
    if "Cannot open plugin library" in log or "Cannot find plugin" in log:
        return (
            f"Edge-LLM's plugin library was not loaded; set EDGELLM_PLUGIN_PATH ({PLUGIN_LIBRARY})"
        )
    errors = [m[2] for line in log.splitlines() if (m := _LOG_LINE.match(line)) and m[1] == "ERROR"]
    if errors:
        return errors[-1]
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def parse_llm_build_log(log: str) -> dict[str, Any]:
    """What ``llm_build`` says of itself (Edge-LLM 0.11 ``cpp/builder/llmBuilder.cpp``): the
    TensorRT it was built against, and the lines it logged at each level."""
    found = re.search(r"Using TRT_VERSION=(\S+)", log)
    levels: dict[str, int] = {}
    for line in log.splitlines():
        if match := _LOG_LINE.match(line):
            levels[match[1]] = levels.get(match[1], 0) + 1
    return {"tensorrt": found[1] if found else None, "log_lines": levels}


def doctor_rows(
    found: DeviceEdgeLlm, facts: DeviceFacts, target: TargetProfile | None
) -> list[DeviceCheck]:
    """What ``edgepack doctor --host`` shows of Edge-LLM on a device: each tool, the release,
    the plugin library, and the TensorRT, CUDA and JetPack (L4T) under them, compared with the
    device's profile where it is known; each missing piece with how to get it."""
    hint = install_hint(target)
    checks = [
        DeviceCheck(tool, tool in found.tools, found.tools.get(tool, "not found"),
                    "" if tool in found.tools else hint)
        for tool in TOOLS
    ]  # fmt: skip
    release_ok = found.version == EDGELLM_VERSION
    checks.append(
        DeviceCheck(
            "Edge-LLM release",
            release_ok,
            found.version or "unknown (no tensorrt_edgellm/_version.py in its checkout)",
            "" if release_ok else f"edgepack exports with Edge-LLM {EDGELLM_VERSION}; {hint}",
        )
    )
    where = found.plugin or "no EDGELLM_PLUGIN_PATH, no build/ in a checkout"
    checks.append(
        DeviceCheck(
            f"{PLUGIN_LIBRARY} (EDGELLM_PLUGIN_PATH)",
            found.plugin_readable,
            where if found.plugin_readable else f"not readable: {where}",
            ""
            if found.plugin_readable
            else f"set EDGELLM_PLUGIN_PATH to its {PLUGIN_LIBRARY} "
            "(in the Edge-LLM build directory), or build Edge-LLM there",
        )
    )
    return checks + stack_checks(facts, target)


def stack_checks(facts: DeviceFacts, target: TargetProfile | None) -> list[DeviceCheck]:
    """TensorRT, CUDA and JetPack (L4T) of the device against its profile's."""
    from edgepack.remote.detect import same_release

    toolchain = target.toolchain if target is not None else None
    jetpack = toolchain.jetpack if toolchain else None
    flash = f"flash JetPack {jetpack} (SDK Manager)" if jetpack else "install the JetPack it names"
    rows = (
        ("TensorRT", facts.tensorrt, toolchain.tensorrt if toolchain else None),
        ("CUDA", facts.cuda, toolchain.cuda if toolchain else None),
        ("JetPack (L4T)", facts.l4t, toolchain.l4t if toolchain else None),
    )
    checks = []
    for component, have, wanted in rows:
        ok = have is not None and (wanted is None or same_release(wanted, have))
        name = target.name if target is not None else "the device"
        need = f"{component} {wanted}" if wanted else component
        fix = "" if ok else f"{name} needs {need}: {flash}, or build for the device's own profile"
        checks.append(DeviceCheck(component, ok, have or "not found", fix))
    return checks


def read_record(connector: Connector, directory: str, name: str) -> dict[str, Any] | None:
    """A JSON record edgepack left in a directory on the device; None where absent or torn."""
    data = connector.read_bytes(posixpath.join(directory, name))
    if data is None:
        return None
    try:
        record: dict[str, Any] = json.loads(data)
    except ValueError:
        return None
    return record

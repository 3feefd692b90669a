"""Device facts, gathered in one round trip: one shell script that prints ``key=value`` lines.

The script only reads (``/proc``, ``/sys``, ``/etc``, ``--version`` style queries) and tolerates
every tool being absent: a missing fact is simply not printed. Which profile the facts describe is
decided elsewhere (``edgepack.remote.detect``) from the profile data alone.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel

from edgepack.errors import RemoteError
from edgepack.remote.connector import FREE_KB_SNIPPET, Connector, shell

PYTHON_LIMIT_S = 20
"""Seconds the device's python3 may take to say what it is."""

# $1 the deploy root, $2 the python3 time limit: `say KEY VALUE` prints a fact, `limited` runs a
# command under the limit, `$root` is the deploy root resolved as the device's shell sees it.
PROBE_SNIPPET = r"""
# A value is one line: a newline or tab in it becomes a space (tr runs only then: the probe
# says ~20 facts, and two forks each were most of its time).
say() {
  [ -n "$2" ] || return 0
  case $2 in
    *'
'* | *'	'*) printf '%s=%s\n' "$1" "$(printf '%s' "$2" | tr '\n\t' '  ')" ;;
    *) printf '%s=%s\n' "$1" "$2" ;;
  esac
}
has() { command -v "$1" >/dev/null 2>&1; }
root=$1
limit=$2
# The interpreter is asked last and under a time limit: a wedged python3 (a pyenv shim waiting on
# a stale lock, an NFS home) must cost seconds, not the whole probe.
limited() { if has timeout; then timeout "$limit" "$@"; else "$@"; fi; }
case "$root" in "~") root=$HOME ;; "~/"*) root=$HOME/${root#"~/"} ;; esac
case "$root" in /*) ;; *) root=$(pwd)/$root ;; esac
say root "$root"
"""

# What picks the wheels for the device (with python_version).
PLATFORM_SNIPPET = r"""say arch "$(uname -m)"
say glibc "$(getconf GNU_LIBC_VERSION 2>/dev/null | sed -n 's/^glibc //p')"
"""

# `facts` prints every fact (after PROBE_SNIPPET, with FREE_KB_SNIPPET), "facts=yes" first; with
# ask_python=no, none of python3's (through a pyenv shim, 0.1-0.2 s).
FACTS_FUNCTION = (
    "\nfacts() {\nsay facts yes\n"
    + PLATFORM_SNIPPET
    + r"""say free_kb "$(free_kb "$root")"
say kernel "$(uname -r)"
say hostname "$(uname -n)"
[ -r /etc/os-release ] && say os "$(. /etc/os-release && echo "$PRETTY_NAME")"
while IFS=: read -r key value; do
  case ${key%"${key##*[![:space:]]}"} in  # the key without its trailing blanks
    "model name" | Hardware | Model) say cpu_model "$value"; break ;;
  esac
done < /proc/cpuinfo
say cpu_cores "$(getconf _NPROCESSORS_ONLN 2>/dev/null)"
has lscpu && say physical_cores "$(lscpu -p=core,socket 2>/dev/null | grep -v '^#' | sort -u |
  grep -c . | grep -v '^0$')"
while read -r key value _; do
  case $key in
    MemTotal:) say mem_total_kb "$value" ;;
    MemAvailable:) say mem_available_kb "$value" ;;
  esac
done < /proc/meminfo
[ -r /proc/device-tree/model ] && say device_model "$(tr -d '\0' < /proc/device-tree/model)"
[ -r /etc/nv_tegra_release ] && say l4t_release "$(head -n1 /etc/nv_tegra_release)"
if has nvidia-smi; then
  say gpu "$(nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version \
    --format=csv,noheader,nounits 2>/dev/null | head -n1)"
  say cuda_driver "$(nvidia-smi 2>/dev/null |
    sed -n 's/.*CUDA Version: *\([0-9.]*\).*/\1/p' | head -n1)"
fi
for f in /usr/local/cuda/version.json /usr/local/cuda/version.txt; do
  [ -r "$f" ] && say cuda "$(grep -m1 -oE '[0-9]+\.[0-9]+(\.[0-9]+)?' "$f")" && break
done
has nvcc && say cuda "$(nvcc --version | sed -n 's/.*release \([0-9.]*\).*/\1/p')"
# dpkg-query loads the whole package database (tens of ms): asked only where dpkg's status file
# names one of the two packages at all.
if has dpkg-query && grep -qs -e '^Package: libnvinfer-bin$' -e '^Package: tensorrt$' \
  /var/lib/dpkg/status; then
  say tensorrt "$(dpkg-query -W -f='${Version}' libnvinfer-bin 2>/dev/null ||
    dpkg-query -W -f='${Version}' tensorrt 2>/dev/null)"
fi
has nvpmodel && say power_mode "$(nvpmodel -q 2>/dev/null | sed -n 's/^NV Power Mode: *//p')"
c=/sys/devices/system/cpu/cpu0/cpufreq
[ -r $c/scaling_governor ] && say cpu_governor "$(cat $c/scaling_governor)"
[ -r $c/scaling_cur_freq ] && say cpu_freq_khz "$(cat $c/scaling_cur_freq)"
[ -r $c/cpuinfo_max_freq ] && say cpu_max_freq_khz "$(cat $c/cpuinfo_max_freq)"
for g in /sys/class/devfreq/*gpu* /sys/class/devfreq/*.gpu /sys/devices/gpu.0/devfreq/*; do
  [ -r "$g/cur_freq" ] && say gpu_freq_hz "$(cat "$g/cur_freq")" && break
done
if [ "${ask_python:-yes}" = yes ] && has python3; then
  say python "$(command -v python3)"
  limited python3 - <<'PY' 2>/dev/null
import platform
print("python_version=" + platform.python_version(), flush=True)
import importlib.metadata as m  # Python 3.8+; an older one still reports its version
names = ["onnxruntime", "onnxruntime-genai", "tensorrt", "tensorrt_llm", "tensorrt-edgellm",
         "edgepack"]
found = []
for name in names:
    try:
        found.append(f"{name}=={m.version(name)}")
    except m.PackageNotFoundError:
        pass
if found:
    print("packages=" + ",".join(found))
PY
fi
}
"""
)

FACTS_SCRIPT = FREE_KB_SNIPPET + PROBE_SNIPPET + FACTS_FUNCTION + "facts\nexit 0\n"


class GpuFacts(BaseModel):
    name: str
    compute_capability: str | None = None
    memory_mib: int | None = None
    driver: str | None = None


class DeviceFacts(BaseModel):
    """What one probe learned about a device. Absent tools leave their fields empty."""

    host: str
    root: str
    free_bytes: int
    arch: str
    kernel: str = ""
    hostname: str = ""
    os: str = ""
    cpu_model: str = ""
    cpu_cores: int | None = None
    physical_cores: int | None = None
    """Online cores without SMT siblings (lscpu): ONNX Runtime's own default thread count."""
    memory_bytes: int | None = None
    memory_available_bytes: int | None = None
    device_model: str | None = None
    """/proc/device-tree/model: how a Jetson names itself ("NVIDIA Jetson AGX Orin ...")."""
    l4t_release: str | None = None
    gpu: GpuFacts | None = None
    cuda: str | None = None
    cuda_driver: str | None = None
    tensorrt: str | None = None
    power_mode: str | None = None
    cpu_governor: str | None = None
    cpu_freq_khz: int | None = None
    cpu_max_freq_khz: int | None = None
    gpu_freq_hz: int | None = None
    glibc: str | None = None
    """``getconf GNU_LIBC_VERSION``: what manylinux wheels are checked against."""
    python: str | None = None
    python_version: str | None = None
    packages: dict[str, str] = {}

    @property
    def memory_gb(self) -> float | None:
        return self.memory_bytes / 1e9 if self.memory_bytes else None

    @property
    def l4t(self) -> str | None:
        """``R36 (release), REVISION: 4.3`` → ``36.4``."""
        if not self.l4t_release:
            return None
        found = re.search(r"R(\d+).*REVISION:\s*(\d+)", self.l4t_release)
        return f"{found[1]}.{found[2]}" if found else None


def parse_facts(host: str, text: str) -> DeviceFacts:
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.isidentifier():
            values[key] = value.strip()
    if "arch" not in values or "root" not in values:
        raise RemoteError(
            f"{host}: the facts probe printed no architecture (is this a Linux host?)"
        )
    return DeviceFacts(**_typed(host, values))


def _typed(host: str, values: dict[str, str]) -> dict[str, Any]:
    numbers = {"cpu_cores", "physical_cores", "cpu_freq_khz", "cpu_max_freq_khz", "gpu_freq_hz"}
    kib = {"free_kb": "free_bytes", "mem_total_kb": "memory_bytes"}
    kib["mem_available_kb"] = "memory_available_bytes"
    fields: dict[str, Any] = {"host": host}
    for key, value in values.items():
        if key in kib:
            fields[kib[key]] = int(value) * 1024 if value.isdigit() else None
        elif key in numbers:
            fields[key] = int(value) if value.isdigit() else None
        elif key == "gpu":
            fields["gpu"] = _gpu(value)
        elif key == "packages":
            fields["packages"] = dict(p.split("==", 1) for p in value.split(",") if "==" in p)
        elif key in DeviceFacts.model_fields:
            fields[key] = value
    fields.setdefault("free_bytes", 0)
    return fields


def _gpu(csv_line: str) -> GpuFacts:
    """nvidia-smi ``name, compute_cap, memory.total, driver_version`` (csv, noheader, nounits)."""
    parts = [part.strip() for part in csv_line.split(",")]
    parts += [""] * (4 - len(parts))
    name, capability, memory, driver = parts[:4]
    return GpuFacts(
        name=name,
        compute_capability=capability if capability.replace(".", "").isdigit() else None,
        memory_mib=int(memory) if memory.isdigit() else None,
        driver=driver or None,
    )


def gather_facts(
    connector: Connector, root: str, python_limit_s: int = PYTHON_LIMIT_S
) -> DeviceFacts:
    result = connector.run(shell(FACTS_SCRIPT, root, str(python_limit_s)), timeout=60)
    return parse_facts(connector.label, result.stdout)

"""The device's Python environment: ``<root>/venv``, installed offline from the bundle's wheels.

Deploy picks, for each distribution the bundle carries, the wheel that fits the device's CPython
and architecture, and unpacks them into a fresh venv (``python3 -m venv --without-pip``: neither
pip nor network is needed on the device). Venvs live in ``<root>/venvs/<key>``, keyed by the
chosen wheels and the Python version, so a re-deploy of the same wheels reuses the venv; the
release records its venv in a sidecar link ``releases/<name>.venv -> ../venvs/<key>``; the
``venv`` link is switched with ``current`` (deploy and rollback alike), so a release always runs
with the venv it was deployed with, and a failed install changes nothing. Clean-up keeps every
venv a kept release names.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from dataclasses import dataclass

from edgepack.bundle import Manifest
from edgepack.errors import BundleError, RemoteError
from edgepack.remote.connector import Connector, shell
from edgepack.remote.facts import DeviceFacts

WHEELS_DIR = "wheels"
VENV_LINK = "venv"
VENVS_DIR = "venvs"
KEY_LENGTH = 16

# Run by the new venv's interpreter: unpack each wheel into its site-packages (what pip does for
# a wheel, minus entry-point scripts, which the runner does not use). Stdlib only, Python 3.8+.
UNPACK_WHEELS = r"""
import os, shutil, sys, sysconfig, zipfile
paths = sysconfig.get_paths()
homes = {"purelib": paths["purelib"], "platlib": paths["platlib"], "scripts": paths["scripts"]}
for wheel in sys.argv[1:]:
    with zipfile.ZipFile(wheel) as archive:
        for entry in archive.infolist():
            parts = entry.filename.split("/")
            if entry.is_dir():
                continue
            if entry.filename.startswith("/") or ".." in parts:
                sys.exit("unsafe path %s in %s" % (entry.filename, wheel))
            home = paths["purelib"]
            if parts[0].endswith(".data") and len(parts) > 2:
                if parts[1] not in homes:
                    continue
                home, parts = homes[parts[1]], parts[2:]
            target = os.path.join(home, *parts)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with archive.open(entry) as source, open(target, "wb") as sink:
                shutil.copyfileobj(source, sink)
            if (entry.external_attr >> 16) & 0o111:
                os.chmod(target, 0o755)
"""

# $1 root, $2 key, $3 python, $4 unpacker, $5 the release directory, then the wheels. Exit 4:
# the venv module is missing. The venv is synced to the disk before the release names it.
ENSURE_VENV = """set -e
root=$1 key=$2 python=$3 unpack=$4 release=$5
shift 5
target=$root/venvs/$key
status=reused
if [ ! -f "$target/.complete" ]; then
  status=created
  rm -rf -- "$target.partial"
  mkdir -p -- "$root/venvs"
  "$python" -m venv --without-pip "$target.partial" >&2 || { rm -rf -- "$target.partial"; exit 4; }
  "$target.partial/bin/python" -c "$unpack" "$@" || { rm -rf -- "$target.partial"; exit 5; }
  : > "$target.partial/.complete"
  { find "$target.partial" -type f -exec sync -- {} + &&
    find "$target.partial" -type d -exec sync -- {} +; } 2>/dev/null || sync
  rm -rf -- "$target"
  mv -- "$target.partial" "$target"
fi
ln -sfn -- "../venvs/$key" "$release.venv.tmp"
mv -T -- "$release.venv.tmp" "$release.venv"
sync -- "$root/venvs" "${release%/*}" 2>/dev/null || sync
echo "$status"
"""

# Removes every venv under $1/venvs that neither the venv link nor a release's sidecar names.
PRUNE_VENVS = """cd "$1" 2>/dev/null || exit 0
[ -d venvs ] || exit 0
keep=" $(readlink venv 2>/dev/null) "
for link in releases/*.venv; do
  [ -L "$link" ] && target=$(readlink "$link") && keep="$keep ${target#../} "
done
for dir in venvs/*; do
  case "$keep" in *" $dir "*) ;; *) rm -rf -- "$dir" ;; esac
done"""


Glibc = tuple[int, int]
LEGACY_MANYLINUX: dict[str, Glibc] = {
    "manylinux1": (2, 5),
    "manylinux2010": (2, 12),
    "manylinux2014": (2, 17),
}
"""PEP 600's names for the manylinux tags that came before it."""


def glibc_of_tag(tag: str) -> Glibc | None:
    """The glibc a manylinux platform tag needs (``manylinux_2_28_aarch64`` → (2, 28))."""
    found = re.match(r"manylinux_(\d+)_(\d+)_", tag)
    if found:
        return int(found[1]), int(found[2])
    return LEGACY_MANYLINUX.get(tag.split("_", 1)[0])


def parse_glibc(version: str | None) -> Glibc | None:
    found = re.match(r"(\d+)\.(\d+)", version or "")
    return (int(found[1]), int(found[2])) if found else None


@dataclass(frozen=True)
class WheelFile:
    """A wheel by its file name: ``name-version(-build)-python-abi-platform.whl``."""

    path: str
    distribution: str
    pythons: tuple[str, ...]
    abis: tuple[str, ...]
    platforms: tuple[str, ...]

    @classmethod
    def parse(cls, path: str) -> WheelFile:
        parts = posixpath.basename(path).removesuffix(".whl").split("-")
        if len(parts) not in (5, 6):
            raise BundleError(f"{path} is not a wheel file name", hint="rebuild the bundle")
        python, abi, platform = parts[-3:]
        name = re.sub(r"[-_.]+", "-", parts[0]).lower()
        return cls(
            path, name, tuple(python.split(".")), tuple(abi.split(".")), tuple(platform.split("."))
        )

    def glibc_needed(self, arch: str) -> Glibc | None:
        """The oldest glibc one of its platform tags for ``arch`` runs on; None: any (pure or
        plain ``linux_ARCH`` wheels)."""
        needs = [glibc_of_tag(tag) for tag in self.platforms if tag.endswith("_" + arch)]
        known = [need for need in needs if need is not None]
        return min(known) if known and len(known) == len(needs) else None

    def rank(self, minor: int, arch: str, glibc: Glibc | None = None) -> int | None:
        """How well it fits CPython 3.<minor> on ``arch`` with ``glibc`` (None: not known) (lower
        is better); None: it does not."""
        if not any(tag == "any" or tag.endswith("_" + arch) for tag in self.platforms):
            return None
        needed = self.glibc_needed(arch)
        if glibc is not None and needed is not None and needed > glibc:
            return None
        exact = f"cp3{minor}"
        if exact in self.abis:
            return 0
        stable = [int(t[3:]) for t in self.pythons if re.fullmatch(r"cp3\d+", t)]
        if "abi3" in self.abis and any(oldest <= minor for oldest in stable):
            return 1
        if "none" in self.abis and {"py3", f"py3{minor}", exact} & set(self.pythons):
            return 2
        return None


@dataclass(frozen=True)
class VenvReport:
    path: str
    python: str
    wheels: int
    status: str
    """created, reused, or planned (dry run)."""


def carried_wheels(manifest: Manifest) -> list[WheelFile]:
    return [
        WheelFile.parse(record.path)
        for record in manifest.files
        if record.path.startswith(WHEELS_DIR + "/") and record.path.endswith(".whl")
    ]


def carried_pythons(manifest: Manifest) -> list[str]:
    config = manifest.recipe.get("stage_config", {}).get("wheels", {})
    return list(config.get("pythons", []))


def python_minor(facts: DeviceFacts) -> int | None:
    match = re.match(r"3\.(\d+)", facts.python_version or "")
    return int(match.group(1)) if match else None


def venv_problems(manifest: Manifest, facts: DeviceFacts) -> list[str]:
    """Why the bundle's wheels cannot be installed on this device ([] if they can or none)."""
    pythons = carried_pythons(manifest)
    if not pythons:
        return []
    minor = python_minor(facts)
    if minor is None:
        return [f"the bundle carries wheels for CPython {', '.join(pythons)}, "
                "but the device has no working python3"]  # fmt: skip
    if f"3.{minor}" not in pythons:
        return [f"the bundle carries wheels for CPython {', '.join(pythons)}, "
                f"the device runs Python {facts.python_version}"]  # fmt: skip
    return []


def glibc_problems(manifest: Manifest, facts: DeviceFacts) -> list[str]:
    """Wheels of the device's Python whose every build needs a newer glibc than the device's."""
    minor, glibc = python_minor(facts), parse_glibc(facts.glibc)
    if minor is None or glibc is None or not carried_pythons(manifest):
        return []
    wheels = carried_wheels(manifest)
    fitting = {wheel.distribution for wheel in choose_wheels(wheels, minor, facts.arch, glibc)}
    short = [
        wheel
        for wheel in choose_wheels(wheels, minor, facts.arch)
        if wheel.distribution not in fitting
    ]
    return [
        f"the bundle's {wheel.distribution} wheel needs glibc "
        f"{'.'.join(map(str, wheel.glibc_needed(facts.arch) or ()))}, the device has {facts.glibc}"
        for wheel in short
    ]


def choose_wheels(
    wheels: list[WheelFile], minor: int, arch: str, glibc: Glibc | None = None
) -> list[WheelFile]:
    """Per distribution, the best-fitting wheel; distributions with none are another Python's
    (or need a newer glibc than ``glibc``: glibc_problems() names those)."""
    best: dict[str, tuple[int, WheelFile]] = {}
    for wheel in wheels:
        rank = wheel.rank(minor, arch, glibc)
        if rank is not None and (
            wheel.distribution not in best or rank < best[wheel.distribution][0]
        ):
            best[wheel.distribution] = (rank, wheel)
    return [best[name][1] for name in sorted(best)]


def venv_key(manifest: Manifest, chosen: list[WheelFile], python_version: str) -> str:
    digests = {record.path: record.sha256 for record in manifest.files}
    text = python_version + "\n" + "\n".join(sorted(digests[w.path] for w in chosen))
    return hashlib.sha256(text.encode()).hexdigest()[:KEY_LENGTH]


def ensure_venv(
    connector: Connector,
    manifest: Manifest,
    facts: DeviceFacts,
    release_dir: str,
    dry_run: bool = False,
) -> VenvReport | None:
    """Install the bundle's wheels into ``<root>/venv`` (reusing an identical venv)."""
    if facts.python is None or (picked := venv_wheels(manifest, facts)) is None:
        return None  # venv_problems() refused the other cases before anything was sent
    chosen, key = picked
    path = posixpath.join(facts.root, VENV_LINK)
    if dry_run:
        return venv_report(facts, chosen, "planned")
    wheels = [posixpath.join(release_dir, wheel.path) for wheel in chosen]
    script = shell(ENSURE_VENV, facts.root, key, facts.python, UNPACK_WHEELS, release_dir, *wheels)
    result = connector.run(script, timeout=900, check=False)
    if result.status != 0:
        hint = (
            "install the venv module (Debian/Ubuntu: apt install python3-venv)"
            if result.status == 4
            else "rerun with --debug; deploy --no-venv skips the Python environment"
        )
        raise RemoteError(
            f"{connector.label}: installing the bundle's wheels into {path} failed: "
            f"{result.error_line()}; `current` was not switched",
            hint=hint,
        )
    return venv_report(facts, chosen, result.stdout.strip())


def venv_wheels(manifest: Manifest, facts: DeviceFacts) -> tuple[list[WheelFile], str] | None:
    """The wheels deploy installs on this device and their venv's key; None: it installs none."""
    minor = python_minor(facts)
    if not carried_pythons(manifest) or minor is None:
        return None
    chosen = choose_wheels(carried_wheels(manifest), minor, facts.arch, parse_glibc(facts.glibc))
    return chosen, venv_key(manifest, chosen, facts.python_version or "")


def venv_report(facts: DeviceFacts, chosen: list[WheelFile], status: str) -> VenvReport:
    path = posixpath.join(facts.root, VENV_LINK)
    return VenvReport(path, facts.python_version or "", len(chosen), status)

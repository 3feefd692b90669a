"""Deploy's shortcut: one read-only round trip that recognises a bundle already current.

``current`` names a copy of the bundle's release, the release holds exactly the manifest's files,
each with the size, mtime, ctime and inode its fingerprint record has (remote/fingerprints.py)
and the record's sha256 the manifest's, no deploy holds the lock, and the venv links are the ones
a deploy would leave. Anything else (or any doubt) means the full deploy.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from edgepack.remote.connector import FREE_KB_SNIPPET, Connector, shell
from edgepack.remote.detect import VERSION_BOUND_BACKENDS
from edgepack.remote.device_env import (
    VENVS_DIR,
    VenvReport,
    carried_pythons,
    venv_report,
    venv_wheels,
)
from edgepack.remote.facts import (
    FACTS_FUNCTION,
    PLATFORM_SNIPPET,
    PROBE_SNIPPET,
    PYTHON_LIMIT_S,
    DeviceFacts,
    parse_facts,
)
from edgepack.remote.fingerprints import SNIPPET, Listing
from edgepack.remote.layout import CURRENT, RELEASES, is_generation
from edgepack.remote.sync_plan import DeployPlan, FileStep, LocalBundle, RemoteState

# $1 the deploy root, $2 the python3 time limit, $3 "venv" to report the venv links and what
# picks the venv's wheels, $4 the bundle's release, $5 "yes" for python3's facts. Prints the
# device's facts instead of the listing where the deploy will need them: no current release of
# the bundle, or a deploy holds the lock (the full deploy then needs no second round trip).
CURRENT_SCRIPT = (
    FREE_KB_SNIPPET
    + PROBE_SNIPPET
    + SNIPPET
    + FACTS_FUNCTION
    + r"""
ask_python=$5
cd "$root" 2>/dev/null && [ ! -e .deploy-lock ] || { facts; exit 0; }
current=$(readlink current) || { facts; exit 0; }
say current "$current"
name=${current#releases/}
case $name in "$current" | "" | */* | .*) facts; exit 0 ;; esac
case $name in "$4" | "$4~"*) ;; *) facts; exit 0 ;; esac
[ -d "releases/$name" ] && [ ! -L "releases/$name" ] || { facts; exit 0; }
listing "releases/$name" ".fingerprints/$name"
[ "$3" = venv ] || exit 0
say venv_link "$(readlink venv)"
sidecar=$(readlink "releases/$name.venv") || exit 0
say sidecar "$sidecar"
[ -f "releases/$sidecar/.complete" ] && say venv_complete yes
"""
    + PLATFORM_SNIPPET
    + r"""has python3 && say python "$(command -v python3)" &&
  say python_version "$(limited python3 -S -c 'import platform; print(platform.python_version())')"
exit 0
"""
)


@dataclass(frozen=True)
class Current:
    plan: DeployPlan
    """The plan deploy would have made: every file kept."""
    venv: VenvReport | None


@dataclass(frozen=True)
class CurrentCheck:
    current: Current | None
    """The bundle as current on the device; None: not (or not sure)."""
    facts: DeviceFacts | None
    """The device's facts, where the check found the deploy would need them."""


def check_current(connector: Connector, bundle: LocalBundle, root: str, venv: bool) -> CurrentCheck:
    """One round trip: the bundle as current on the device, or the facts a deploy starts from
    (python3's only where the deploy uses them: a venv to build, a TensorRT version to check,
    which pip may have installed)."""
    wants_venv = venv and bool(carried_pythons(bundle.manifest))
    python = wants_venv or bundle.manifest.recipe.get("backend") in VERSION_BOUND_BACKENDS
    script = shell(CURRENT_SCRIPT, root, str(PYTHON_LIMIT_S), "venv" if wants_venv else "",
                   bundle.manifest.short_id, "yes" if python else "no")  # fmt: skip
    output = connector.run(script, timeout=60).stdout
    facts = parse_facts(connector.label, output) if "\nfacts=yes\n" in output else None
    return CurrentCheck(None if facts else _current(connector, bundle, output, wants_venv), facts)


def _current(
    connector: Connector, bundle: LocalBundle, output: str, wants_venv: bool
) -> Current | None:
    listing = Listing.read(output)
    values: dict[str, str] = {}
    for line in output.splitlines():
        key, _, value = line.partition("=")
        values.setdefault(key, value)
    name = posixpath.basename(values.get(CURRENT, ""))
    wanted = {path: (size, digest) for path, size, digest in bundle.files}
    if not is_generation(name, bundle.manifest.short_id) or set(listing.sizes) != set(wanted):
        return None
    if len(listing.trusted(wanted)) != len(wanted):
        return None
    report = _venv_in_place(connector.label, bundle, output, values) if wants_venv else None
    if wants_venv and report is None:
        return None
    steps = [FileStep(path, size, digest, "keep") for path, size, digest in bundle.files]
    state = RemoteState(posixpath.join(RELEASES, name), None, {})
    plan = DeployPlan(connector.label, values["root"], name, "current", steps, [], name, state,
                      bundle.manifest.short_id)  # fmt: skip
    return Current(plan, report)


def _venv_in_place(
    host: str, bundle: LocalBundle, output: str, values: dict[str, str]
) -> VenvReport | None:
    """The venv report of a deploy that finds the venv links as it would leave them."""
    if "arch" not in values or "python" not in values:
        return None
    facts = parse_facts(host, output)
    picked = venv_wheels(bundle.manifest, facts)
    if picked is None:
        return None
    chosen, key = picked
    target = posixpath.join(VENVS_DIR, key)
    in_place = (
        values.get("venv_link") == target
        and values.get("sidecar") == posixpath.join("..", target)
        and values.get("venv_complete") == "yes"
    )
    return venv_report(facts, chosen, "reused") if in_place else None

"""Host keys as OpenSSH treats them (ssh_config(5)).

``StrictHostKeyChecking``: ``yes`` connects only to hosts whose key is known; ``accept-new``
(edgepack's default) records the key of a host seen for the first time; ``ask`` asks on the
terminal first; ``no`` connects whatever the key, and only with ``--insecure-host-keys`` (printed
every time: anyone on the path can then pose as the device). Without that flag a ``no`` in the
config is checked as ``accept-new``. A changed key is refused in every other mode, and so is a
host known under a different key type. Keys are read from every ``UserKnownHostsFile`` and every
``GlobalKnownHostsFile`` (hashed ``|1|`` entries too); a new one is added to the first user file,
hashed when ``HashKnownHosts`` is yes.
"""

from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgepack.errors import RemoteError

if TYPE_CHECKING:
    import paramiko

MODES = ("yes", "ask", "accept-new", "no")
DEFAULT_MODE = "accept-new"
USER_FILES = ("~/.ssh/known_hosts", "~/.ssh/known_hosts2")
GLOBAL_FILES = ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2")
INSECURE_ENV = "EDGEPACK_INSECURE_HOST_KEYS"
_insecure = [False]
_prompt_lock = threading.Lock()


def allow_insecure(enabled: bool) -> None:
    """--insecure-host-keys: honour ``StrictHostKeyChecking no``."""
    _insecure[0] = enabled


def insecure_allowed() -> bool:
    return _insecure[0] or os.environ.get(INSECURE_ENV, "") not in ("", "0")


@dataclass(frozen=True)
class HostKeyPolicy:
    mode: str
    user_files: tuple[Path, ...]
    global_files: tuple[Path, ...]
    hash_new: bool = False

    @property
    def record_in(self) -> Path:
        return self.user_files[0]


def _paths(value: Any, default: tuple[str, ...]) -> tuple[Path, ...]:
    words = str(value).split() if value else list(default)
    return tuple(Path(word).expanduser() for word in words if word.lower() != "none")


def policy_from_config(entry: dict[str, Any]) -> HostKeyPolicy:
    """The host key settings of one ssh_config entry (paramiko.SSHConfig.lookup's dict)."""
    given = str(entry.get("stricthostkeychecking", DEFAULT_MODE)).lower()
    mode = {"true": "yes", "false": "no", "off": "no"}.get(given, given)
    if mode not in MODES:
        mode = "yes"  # an unknown value must not weaken checking
    users = _paths(entry.get("userknownhostsfile"), USER_FILES) or _paths(None, USER_FILES)
    globals_ = _paths(entry.get("globalknownhostsfile"), GLOBAL_FILES)
    hashed = str(entry.get("hashknownhosts", "no")).lower() in ("yes", "true")
    return HostKeyPolicy(mode, users, globals_, hashed)


def effective_mode(policy: HostKeyPolicy, alias: str) -> str:
    if policy.mode != "no":
        return policy.mode
    if insecure_allowed():
        sys.stderr.write(
            f"WARNING: host key checking is OFF for {alias} (StrictHostKeyChecking no and "
            "--insecure-host-keys): anyone on the network path can pose as this device\n"
        )
        return "no"
    sys.stderr.write(
        f"warning: {alias}: StrictHostKeyChecking no is ignored without --insecure-host-keys; "
        "checking the host key as accept-new\n"
    )
    return "accept-new"


def load_known_hosts(client: paramiko.SSHClient, policy: HostKeyPolicy) -> None:
    """Every global and user known-hosts file into ``client`` (global ones are never written)."""
    for path in policy.global_files:
        if path.is_file():
            client.load_system_host_keys(str(path))
    for path in policy.user_files:
        if path.is_file():
            client.get_host_keys().load(str(path))


def known_in(policy: HostKeyPolicy, name: str) -> Path | None:
    """The first known-hosts file with an entry for ``name`` (for the removal hint)."""
    import paramiko

    for path in (*policy.user_files, *policy.global_files):
        if path.is_file() and paramiko.HostKeys(str(path)).lookup(name):
            return path
    return None


def missing_key_policy(
    policy: HostKeyPolicy, mode: str, alias: str, port: int, address: str
) -> paramiko.MissingHostKeyPolicy:
    import paramiko

    class Policy(paramiko.MissingHostKeyPolicy):  # type: ignore[misc]
        def missing_host_key(
            self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
        ) -> None:
            if mode == "no":
                return
            known = {**(client.get_host_keys().lookup(hostname) or {})}
            known |= client._system_host_keys.lookup(hostname) or {}
            if known:
                raise RemoteError(
                    f"{alias}: host key changed: known as {', '.join(sorted(known))}, the host "
                    f"now offers {key.get_name()} {_fingerprint(key)}; refusing to connect",
                    hint="if the device was reinstalled, remove the old key: "
                    f"ssh-keygen -R '{hostname}'",
                )
            files = ", ".join(str(p) for p in (*policy.user_files, *policy.global_files))
            if mode == "yes":
                raise RemoteError(
                    f"{alias}: host key {key.get_name()} {_fingerprint(key)} is not in {files} "
                    "and StrictHostKeyChecking is yes",
                    hint=f"check the key, then `ssh-keyscan -p {port} {address} >> "
                    f"{policy.record_in}`",
                )
            if mode == "ask" and not _confirm(alias, hostname, key):
                raise RemoteError(
                    f"{alias}: host key {_fingerprint(key)} not accepted",
                    hint="answer yes on a terminal, or add the key to known_hosts first "
                    "(StrictHostKeyChecking ask needs a terminal)",
                )
            record(policy, client, hostname, key)

    return Policy()


def _fingerprint(key: paramiko.PKey) -> str:
    return str(key.fingerprint)


def _confirm(alias: str, hostname: str, key: paramiko.PKey) -> bool:
    """OpenSSH's question, asked on the controlling terminal (never on stdin)."""
    try:
        terminal = Path("/dev/tty").open("r+", encoding="utf-8")  # noqa: SIM115 - closed below
    except OSError:
        return False
    with _prompt_lock, terminal:
        terminal.write(
            f"The authenticity of host '{hostname}' ({alias}) can't be established.\n"
            f"{key.get_name()} key fingerprint is {_fingerprint(key)}.\n"
            "Are you sure you want to continue connecting (yes/no)? "
        )
        terminal.flush()
        return terminal.readline().strip().lower() == "yes"


def record(
    policy: HostKeyPolicy, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
) -> None:
    import paramiko

    client.get_host_keys().add(hostname, key.get_name(), key)
    name = paramiko.HostKeys.hash_host(hostname) if policy.hash_new else hostname
    path = policy.record_in
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as known:
        known.write(f"{name} {key.get_name()} {key.get_base64()}\n")

"""sha256s of a release's files on the device, remembered by what ``stat`` says of each file.

``<root>/.fingerprints/<release>`` (outside the release, whose directory holds exactly the
manifest's files) has one line per file: size, mtime, ctime (ns), inode, sha256, path. A file whose
``stat`` still gives the recorded size, mtime, ctime and inode is not read again: any write moves
the ctime and a replaced file has a new inode. Only an exact match is trusted, and only when the
recorded sha256 is the manifest's. Hard links share an inode and each new link moves its
ctime, so the exact match may be in the record of the release linked last: every record beside
the release's own counts. A device whose ``stat`` cannot print ns times, an unreadable or
stale record, simply means hashing.
"""

from __future__ import annotations

import posixpath
import re
import uuid
from dataclasses import dataclass, field

from edgepack.bundle import path_problem
from edgepack.remote.connector import Connector, shell

# fp_format DIR: sets $format to the stat format of fingerprints ("fp=SIZE MTIME CTIME INODE
# PATH") where stat prints ns times for DIR, else to "file=SIZE PATH".
# clock ROOT: prints the device's file clock ("now=", the ctime of a file made now).
# listing DIR RECORD: every file under DIR as fp_format has it (one stat call), then RECORD as
# "record=" lines and the other records beside it as "peer=" lines.
# write_record ROOT NAME TOKEN: stdin becomes ROOT/.fingerprints/NAME, atomically.
SNIPPET = """fp_format() {
  case $(stat -c %.9Y -- "$1" 2>/dev/null) in
    *[!0-9.]* | "") format='file=%s %n' ;;
    *.?????????) format='fp=%s %.9Y %.9Z %i %n' ;;
    *) format='file=%s %n' ;;
  esac
}
clock() {
  mkdir -p -- "$1/.fingerprints" 2>/dev/null || return 0
  : > "$1/.fingerprints/.clock-$$" &&
    printf 'now=%s\\n' "$(stat -c %.9Z -- "$1/.fingerprints/.clock-$$" 2>/dev/null)"
  rm -f -- "$1/.fingerprints/.clock-$$"
}
listing() {
  fp_format "$1"
  (cd "$1" && find . -type f -exec stat -c "$format" {} +)
  [ "${format%%=*}" = fp ] || return 0
  [ -f "$2" ] && sed 's/^/record=/' "$2"
  for peer in "${2%/*}"/*; do
    case $peer in "$2" | *.tmp-*) continue ;; esac
    [ -f "$peer" ] && sed 's/^/peer=/' "$peer"
  done
  return 0
}
write_record() {
  mkdir -p -- "$1/.fingerprints" && cat > "$1/.fingerprints/$2.tmp-$3" &&
    mv -f -- "$1/.fingerprints/$2.tmp-$3" "$1/.fingerprints/$2"
  rm -f -- "$1/.fingerprints/$2.tmp-$3"
}"""

# $1 the deploy root, $2 a directory, $3 "hash" or "stat", then files in it: the clock, their
# fingerprints, then (hash) their sha256s ("sha256=DIGEST  PATH"). Each stat comes before the
# hash: a later write moves it.
HASH_SCRIPT = (
    SNIPPET
    + """
clock "$1"
cd "$2" || exit 1
mode=$3
shift 3
fp_format .
[ "${format%%=*}" = fp ] && stat -c "$format" -- "$@"
[ "$mode" = hash ] && sha256sum -- "$@" | sed 's/^/sha256=/'
exit 0"""
)

RECORDS_DIR = ".fingerprints"
Record = dict[str, tuple[str, str]]
"""A fingerprint record's entries: path → (fingerprint "size mtime ctime inode", sha256)."""

_TIME = re.compile(r"(\d+)\.(\d{9})")
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass
class Listing:
    """What ``listing`` printed of one release directory."""

    sizes: dict[str, int] = field(default_factory=dict)
    """Every file under it (strays included) → its size."""
    stats: dict[str, str] = field(default_factory=dict)
    """Path → "size mtime ctime inode" (absent where stat could not print ns times)."""
    recorded: Record = field(default_factory=dict)
    """Path → (fingerprint, sha256) as the record has them."""
    now_ns: int | None = None
    """The device's file clock before the listing: newer files are not recorded yet."""
    digests: dict[str, str] = field(default_factory=dict)
    """Path → sha256 as ``sha256sum`` printed it."""
    peers: dict[str, str] = field(default_factory=dict)
    """Fingerprint → sha256 from the other releases' records. A file that hard links share has
    one inode, and each link moves its ctime: the release linked last holds the fingerprint that
    is still true, for every release holding the file (a rollback then reads nothing)."""

    @classmethod
    def read(cls, output: str) -> Listing:
        """The listing of a device script's whole output (its ``key=value`` lines)."""
        listing = cls()
        for line in output.splitlines():
            key, _, value = line.partition("=")
            listing.add(key, value)
        return listing

    def add(self, key: str, value: str) -> None:
        """One ``key=value`` line of the listing; other keys are ignored."""
        if key == "file":
            size, _, path = value.partition(" ")
            self._add_file(path, size, None)
        elif key == "fp":
            parts = value.split(" ", 4)
            if len(parts) == 5:
                self._add_file(parts[4], parts[0], " ".join(parts[:4]))
        elif key in ("record", "peer"):
            parts = value.split(" ", 5)
            if len(parts) == 6 and _SHA256.fullmatch(parts[4]):
                if key == "record":
                    self.recorded[parts[5]] = (" ".join(parts[:4]), parts[4])
                else:
                    self.peers[" ".join(parts[:4])] = parts[4]
        elif key == "now":
            self.now_ns = _nanoseconds(value)
        elif key == "sha256":
            digest, _, path = value.partition("  ")
            self.digests[path] = digest

    def _add_file(self, path: str, size: str, stat: str | None) -> None:
        path = path.removeprefix("./")
        # A name the bundle could not hold (a newline, `..`) is no file of this release.
        if path_problem(path) is None and size.isdigit():
            self.sizes[path] = int(size)
            if stat is not None:
                self.stats[path] = stat

    def trusted(self, wanted: dict[str, tuple[int, str]]) -> dict[str, str]:
        """Path → sha256 for the files of ``wanted`` (path → size, sha256) whose fingerprint is
        the recorded one (in this release's record or another's), with the recorded sha256 the
        manifest's."""
        found = {}
        for path, (size, digest) in wanted.items():
            stat = self.stats.get(path)
            if stat is None or self.sizes[path] != size:
                continue
            if self.recorded.get(path) == (stat, digest) or self.peers.get(stat) == digest:
                found[path] = digest
        return found

    def record(self, digests: dict[str, str]) -> Record:
        """What the record should hold once ``digests`` were measured: files changed since the
        listing began are left out (a write within the same clock tick would not move them)."""
        if self.now_ns is None:
            return {}
        return {
            path: (stat, digest)
            for path, digest in digests.items()
            if (stat := self.stats.get(path)) is not None and _ctime_ns(stat) < self.now_ns
        }


def _nanoseconds(text: str) -> int | None:
    found = _TIME.fullmatch(text)
    return int(found[1]) * 10**9 + int(found[2]) if found else None


def _ctime_ns(stat: str) -> int:
    parts = stat.split(" ")
    ctime = _nanoseconds(parts[2]) if len(parts) == 4 else None
    return ctime if ctime is not None else 1 << 62  # never older than the clock: never recorded


def hash_files(
    connector: Connector, root: str, directory: str, paths: list[str]
) -> tuple[dict[str, str], Record]:
    """sha256 of each existing file of ``paths`` (relative to ``directory``), in one command, and
    the record entries it makes."""
    if not paths:
        return {}, {}
    script = shell(HASH_SCRIPT, root, directory, "hash", *paths)
    listing = Listing.read(connector.run(script, check=False, timeout=None).stdout)
    return listing.digests, listing.record(listing.digests)


def same_inode(stat: str, other: str) -> bool:
    """Two fingerprints of one unchanged file, whatever its ctime: same size, mtime and inode
    (a hard link made since moves the ctime and nothing else)."""
    ours, theirs = stat.split(" "), other.split(" ")
    return len(ours) == len(theirs) == 4 and (ours[0], ours[1], ours[3]) == (
        theirs[0],
        theirs[1],
        theirs[3],
    )


def fingerprint_links(
    connector: Connector, root: str, directory: str, links: dict[str, tuple[str, str]]
) -> tuple[dict[str, str], Record]:
    """Files just hard-linked from a file of a fingerprinted release, ``links``: path → (the
    source's fingerprint when it was linked, its sha256). One ``stat``, no reading: those still
    the same inode, size and mtime have the source's sha256; the others are left to hashing."""
    if not links:
        return {}, {}
    script = shell(HASH_SCRIPT, root, directory, "stat", *links)
    listing = Listing.read(connector.run(script, check=False, timeout=None).stdout)
    digests = {
        path: digest
        for path, (source, digest) in links.items()
        if (stat := listing.stats.get(path)) is not None and same_inode(stat, source)
    }
    return digests, listing.record(digests)


def record_text(entries: Record) -> bytes:
    lines = (f"{stat} {digest} {path}\n" for path, (stat, digest) in sorted(entries.items()))
    return "".join(lines).encode()


def read_record(connector: Connector, root: str, release: str) -> Record:
    """``release``'s fingerprint record as it is on the device (empty where there is none)."""
    data = connector.read_bytes(posixpath.join(root, RECORDS_DIR, release))
    if data is None:
        return {}
    listing = Listing()
    for line in data.decode(errors="replace").splitlines():
        listing.add("record", line)
    return listing.recorded


def write_record(connector: Connector, root: str, release: str, entries: Record) -> None:
    script = shell(SNIPPET + '\nwrite_record "$@"', root, release, uuid.uuid4().hex[:8])
    connector.run(script, stdin=record_text(entries), check=False)

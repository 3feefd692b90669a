"""sha256s of a release's files on the device, remembered by what ``stat`` says of each file.

``<root>/.fingerprints/<release>`` (outside the release, whose directory holds exactly the
manifest's files) has one line per file: size, mtime, ctime (ns), inode, sha256, path. A file whose
``stat`` still gives the recorded size, mtime, ctime and inode is not read again: any write moves
the ctime and a replaced file has a new inode. Only an exact match is trusted, and only when the
recorded sha256 is the manifest's; a device whose ``stat`` cannot print ns times, an unreadable or
stale record, simply means hashing.
"""

from __future__ import annotations

import posixpath
import re
import uuid
from dataclasses import dataclass, field

from edgepack.bundle import path_problem
from edgepack.remote.connector import Connector, shell
from edgepack.remote.layout import FINGERPRINTS

# listing DIR RECORD: "fp=SIZE MTIME CTIME INODE ./PATH" for every file under DIR (one stat call;
# "file=SIZE ./PATH" where stat cannot print ns times), then RECORD as "record=" lines.
LISTING_SNIPPET = """listing() {
  case $(stat -c %.9Y -- "$1" 2>/dev/null) in
    *[!0-9.]* | "") format='file=%s %n' ;;
    *.?????????) format='fp=%s %.9Y %.9Z %i %n' ;;
    *) format='file=%s %n' ;;
  esac
  (cd "$1" && find . -type f -exec stat -c "$format" {} +)
  [ "${format%%=*}" = fp ] && [ -f "$2" ] && sed 's/^/record=/' "$2"
  return 0
}"""

# $1 the record's directory, $2 its name, $3 a token: the record from stdin, replaced atomically.
WRITE_SCRIPT = """mkdir -p -- "$1" && cat > "$1/$2.tmp-$3" && mv -f -- "$1/$2.tmp-$3" "$1/$2"
status=$?
rm -f -- "$1/$2.tmp-$3"
exit $status"""

_TIME = re.compile(r"(\d+)\.(\d{9})")
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass
class Listing:
    """What ``listing`` printed of one release directory."""

    sizes: dict[str, int] = field(default_factory=dict)
    """Every file under it (strays included) → its size."""
    stats: dict[str, str] = field(default_factory=dict)
    """Path → "size mtime ctime inode" (absent where stat could not print ns times)."""
    recorded: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Path → (fingerprint, sha256) as the record has them."""
    now_ns: int | None = None
    """The device's file clock before the listing: newer files are not recorded yet."""

    def add(self, key: str, value: str) -> None:
        """One ``key=value`` line of the listing; other keys are ignored."""
        if key == "file":
            size, _, path = value.partition(" ")
            self._add_file(path, size, None)
        elif key == "fp":
            parts = value.split(" ", 4)
            if len(parts) == 5:
                self._add_file(parts[4], parts[0], " ".join(parts[:4]))
        elif key == "record":
            parts = value.split(" ", 5)
            if len(parts) == 6 and _SHA256.fullmatch(parts[4]):
                self.recorded[parts[5]] = (" ".join(parts[:4]), parts[4])
        elif key == "now":
            self.now_ns = _nanoseconds(value)

    def _add_file(self, path: str, size: str, stat: str | None) -> None:
        path = path.removeprefix("./")
        # A name the bundle could not hold (a newline, `..`) is no file of this release.
        if path_problem(path) is None and size.isdigit():
            self.sizes[path] = int(size)
            if stat is not None:
                self.stats[path] = stat

    def trusted(self, wanted: dict[str, tuple[int, str]]) -> dict[str, str]:
        """Path → sha256 for the files of ``wanted`` (path → size, sha256) whose fingerprint is
        the recorded one, with the recorded sha256 the manifest's."""
        found = {}
        for path, (size, digest) in wanted.items():
            stat, known = self.stats.get(path), self.recorded.get(path)
            if stat is not None and known == (stat, digest) and self.sizes[path] == size:
                found[path] = digest
        return found

    def record(self, digests: dict[str, str]) -> dict[str, tuple[str, str]]:
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


def record_path(root: str, release: str) -> str:
    return posixpath.join(root, FINGERPRINTS, release)


def write_record(
    connector: Connector, root: str, release: str, entries: dict[str, tuple[str, str]]
) -> None:
    text = "".join(f"{stat} {digest} {path}\n" for path, (stat, digest) in sorted(entries.items()))
    directory = posixpath.join(root, FINGERPRINTS)
    script = shell(WRITE_SCRIPT, directory, release, uuid.uuid4().hex[:8])
    connector.run(script, stdin=text.encode(), check=False)

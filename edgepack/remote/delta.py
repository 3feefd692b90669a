"""Deploy's block-level delta: a changed big file is rebuilt on the device from a copy it already
has at the same path (the previous release's, or the partial release's own half-written one).

Two levels, so that both directions stay small: the device hashes its copy in coarse blocks
(1 MiB, more for files over ~256 MiB) and this side compares them with the bundle's; only inside
the coarse blocks that differ does the device hash 4 KiB blocks, and only the 4 KiB blocks that
differ are sent. The device needs only POSIX tools (dd, sha256sum, split, mktemp; GNU split's
``--filter`` is used where it exists); a device without them gets the whole file. The hash lists
it returns count as bytes on the wire, and a delta is planned only where it sends less than the
upload (or resume) it replaces. Correctness never rests on the comparison: the rebuilt file is
verified by its sha256 like every upload.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from edgepack.remote.connector import Connector, shell

DELTA_MIN_BYTES = 1 << 20
"""Files (and device copies) smaller than this are sent whole."""
FINE_BLOCK = 4096
HASH_CHARS = 32
SAMPLES = 8
"""The first 128 bits of each block's sha256, in hex: a false match is caught by the whole file's
sha256 afterwards, and it halves the lists."""

Range = tuple[int, int]

# Per file: a coarse block size, the file, sample blocks of the bundle's file as INDEX:HASH, "--".
# For each file "=SIZE" (empty when it is not a readable file), then, unless samples were given and
# none of them matches the file (a new quantization, say: nothing to gain from a delta), the hash
# of each of its coarse blocks. split runs each filter with $SHELL: a login shell started from an
# SSH session may read its rc files every time (pyenv, conda: 0.2 s a block).
COARSE_SCRIPT = """export LC_ALL=C SHELL=/bin/sh
echo x | split -b 1 --filter='cat >/dev/null' >/dev/null 2>&1 && filter=yes
sample() {
  [ "$(dd if="$f" bs="$block" skip="${1%%:*}" count=1 2>/dev/null | sha256sum | cut -c1-32)" \\
    = "${1#*:}" ]
}
while [ $# -gt 1 ]; do
  block=$1 f=$2 related=yes
  shift 2
  size=$( { [ -f "$f" ] && wc -c < "$f"; } 2>/dev/null | tr -d ' ')
  [ "$1" != -- ] && related=
  while [ $# -gt 0 ] && [ "$1" != -- ]; do
    [ -z "$related" ] && [ -n "$size" ] && sample "$1" && related=yes
    shift
  done
  shift
  printf '=%s\\n' "$size"
  [ -n "$size" ] && [ -n "$related" ] || continue
  if [ -n "$filter" ]; then
    split -b "$block" --filter=sha256sum -- "$f"
  else
    i=0
    while [ $((i * block)) -lt "$size" ]; do
      dd if="$f" bs="$block" skip="$i" count=1 2>/dev/null | sha256sum
      i=$((i + 1))
    done
  fi | cut -c1-32
done"""

# $1 the fine block size, then per file: its coarse block size, the file, the coarse block
# indices (ascending), "--". For each file "=", then the hash of every fine block of those coarse
# blocks, in order. The blocks are split into a scratch directory (tmpfs where there is one).
FINE_SCRIPT = """export LC_ALL=C
fine=$1
shift
t=$(mktemp -d /dev/shm/edgepack-delta.XXXXXX 2>/dev/null) || t=$(mktemp -d) || exit 1
trap 'rm -rf -- "$t"' EXIT
trap 'exit 1' HUP INT TERM
n=0
while [ $# -gt 1 ]; do
  block=$1 f=$2
  shift 2
  n=$((n + 1))
  mkdir -- "$t/$n" || exit 1
  size=$(wc -c < "$f") || exit 1
  echo =
  while [ $# -gt 0 ] && [ "$1" != -- ]; do
    i=$1
    shift
    # A last, shorter block makes fewer pieces: none of the previous block's may remain.
    [ $(((i + 1) * block)) -gt "$size" ] && rm -f -- "$t/$n"/b*
    dd if="$f" bs="$block" skip="$i" count=1 2>/dev/null | split -b "$fine" -a 4 - "$t/$n/b" &&
      sha256sum -- "$t/$n"/b* | cut -c1-32 || exit 1
  done
  shift
done"""


def coarse_block(size: int) -> int:
    """The coarse block that roughly balances the two hash lists (√(size × fine block)), a power
    of two of at least 1 MiB: 1 MiB for 100 MB (100 + 256 hashes for a one-byte change)."""
    balanced = math.isqrt(size * FINE_BLOCK)
    return max(DELTA_MIN_BYTES, 1 << max(0, balanced - 1).bit_length())


@dataclass(frozen=True)
class Base:
    """A copy on the device to rebuild a file from."""

    path: str
    """Its absolute path there."""
    own: bool = False
    """The partial release's own copy at the file's path: rebuilt in place, not copied first."""


@dataclass(frozen=True)
class DeltaStep:
    """What the plan records for one file rebuilt from a base."""

    base: Base
    ranges: tuple[Range, ...]
    """(start, end) of the bundle file's bytes to write; the rest is the base's."""
    hash_bytes: int
    """What the device's hash lists cost on the wire."""

    @property
    def bytes_to_send(self) -> int:
        return self.hash_bytes + sum(end - start for start, end in self.ranges)


@dataclass
class _Candidate:
    local: Path
    size: int
    base: Base
    block: int
    base_size: int = 0
    base_hashes: list[str] = field(default_factory=list)
    local_hashes: list[str] = field(default_factory=list)
    hash_bytes: int = 0
    ranges: list[Range] = field(default_factory=list)

    def differing(self) -> list[int]:
        """Coarse blocks of the bundle file that the base does not have at the same place."""
        theirs, ours = self.base_hashes, self.local_hashes
        return [i for i in range(len(ours)) if i >= len(theirs) or theirs[i] != ours[i]]


def _span(index: int, size: int, block: int) -> Range:
    return index * block, min((index + 1) * block, size)


def block_hashes(path: Path, start: int, end: int, block: int) -> list[str]:
    """The truncated sha256 of each ``block``-sized piece of ``path[start:end]``."""
    hashes = []
    with path.open("rb") as source:
        source.seek(start)
        position = start
        while position < end:
            chunk = source.read(min(block, end - position))
            if not chunk:
                break
            hashes.append(hashlib.sha256(chunk).hexdigest()[:HASH_CHARS])
            position += len(chunk)
    return hashes


def deltas(
    connector: Connector,
    wanted: dict[str, tuple[Path, int, Base]],
    say: Callable[[str], None],
) -> dict[str, DeltaStep]:
    """For each path → (bundle file, its size, a base on the device): the delta that rebuilds it,
    where the base shares blocks with it. Two device commands for all of them."""
    candidates = {
        path: _Candidate(local, size, base, coarse_block(size))
        for path, (local, size, base) in wanted.items()
    }
    if not candidates:
        return {}
    say(f"comparing {len(candidates)} files block by block with the device's copies")
    if not _coarse(connector, list(candidates.values())):
        say("the device cannot hash blocks (dd, sha256sum): sending whole files")
        return {}
    useful = {p: c for p, c in candidates.items() if _shares_blocks(c)}
    if useful and not _fine(connector, list(useful.values())):
        say("the device cannot split blocks (split, mktemp): sending differing coarse blocks whole")
        for candidate in useful.values():
            candidate.ranges = [_span(i, candidate.size, candidate.block)
                                for i in candidate.differing()]  # fmt: skip
    return {
        path: DeltaStep(c.base, tuple(_merged(c.ranges)), c.hash_bytes)
        for path, c in useful.items()
    }


def _shares_blocks(candidate: _Candidate) -> bool:
    """Worth the fine hashes: a base big enough, and not one whose every coarse block differs
    (a new quantization, say); two blocks can both differ by a byte and a shorter last block."""
    blocks = len(candidate.local_hashes)
    differing = len(candidate.differing())
    return candidate.base_size >= DELTA_MIN_BYTES and (differing < blocks or blocks <= 2)


def _samples(candidate: _Candidate) -> list[str]:
    """A few coarse blocks of the bundle's file, spread over it, as INDEX:HASH (none for a small
    file): a base that has none of them at the same place is not hashed whole."""
    count = -(-candidate.size // candidate.block)
    if count <= SAMPLES:
        return []
    samples = []
    for index in sorted({j * count // SAMPLES for j in range(SAMPLES)}):
        start, end = _span(index, candidate.size, candidate.block)
        [digest] = block_hashes(candidate.local, start, end, candidate.block)
        samples.append(f"{index}:{digest}")
    return samples


def _coarse(connector: Connector, candidates: list[_Candidate]) -> bool:
    """Both sides' coarse hashes (this side's while the device works); False: the device could
    not make them."""
    args = [a for c in candidates for a in (str(c.block), c.base.path, *_samples(c), "--")]
    with ThreadPoolExecutor(1) as pool:
        local = pool.map(lambda c: block_hashes(c.local, 0, c.size, c.block), candidates)
        result = connector.run(shell(COARSE_SCRIPT, *args), check=False, timeout=None)
        for candidate, hashes in zip(candidates, local, strict=True):
            candidate.local_hashes = hashes
    sections = _sections(result.stdout)
    if len(sections) != len(candidates):
        return False
    for candidate, (head, hashes, cost) in zip(candidates, sections, strict=True):
        candidate.hash_bytes += cost
        if head.isdigit() and len(hashes) == -(-int(head) // candidate.block):
            candidate.base_size, candidate.base_hashes = int(head), hashes
    return any(c.base_hashes for c in candidates)


def _fine(connector: Connector, candidates: list[_Candidate]) -> bool:
    """The fine hashes inside the differing coarse blocks, and from them the ranges to send."""
    args = [str(FINE_BLOCK)]
    for c in candidates:
        inside = [i for i in c.differing() if i < len(c.base_hashes)]
        args += [str(c.block), c.base.path, *map(str, inside), "--"]
    result = connector.run(shell(FINE_SCRIPT, *args), check=False, timeout=None)
    sections = _sections(result.stdout)
    if result.status != 0 or len(sections) != len(candidates):
        return False
    for candidate, (_, hashes, cost) in zip(candidates, sections, strict=True):
        candidate.hash_bytes += cost
        candidate.ranges = _fine_ranges(candidate, hashes)
    return True


def _fine_ranges(c: _Candidate, device: list[str]) -> list[Range]:
    """The bundle file's byte ranges that differ from the base: whole coarse blocks past the
    base's end, fine blocks inside the others (all of a coarse block if its list is short)."""
    ranges, position = [], 0
    for index in c.differing():
        start, end = _span(index, c.size, c.block)
        if index >= len(c.base_hashes):
            ranges.append((start, end))
            continue
        base_start, base_end = _span(index, c.base_size, c.block)
        count = -(-(base_end - base_start) // FINE_BLOCK)
        theirs, position = device[position : position + count], position + count
        ours = block_hashes(c.local, start, end, FINE_BLOCK)
        if len(theirs) != count:
            ranges.append((start, end))
            continue
        for j, digest in enumerate(ours):
            if j >= count or theirs[j] != digest:
                ranges.append((start + j * FINE_BLOCK, min(start + (j + 1) * FINE_BLOCK, end)))
    return ranges


def _sections(output: str) -> list[tuple[str, list[str], int]]:
    """``=HEAD`` lines each followed by hash lines: (head, hashes, the section's bytes)."""
    sections: list[tuple[str, list[str], int]] = []
    for line in output.splitlines():
        cost = len(line) + 1
        if line.startswith("="):
            sections.append((line[1:].strip(), [], cost))
        elif sections:
            head, hashes, used = sections[-1]
            hashes.append(line.strip())
            sections[-1] = (head, hashes, used + cost)
    return sections


def _merged(ranges: list[Range]) -> list[Range]:
    merged: list[Range] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged

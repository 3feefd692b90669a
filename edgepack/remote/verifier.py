"""Deploy's check of what it wrote: sha256 on the device, in the background while later files
are still uploading, and the fingerprints that let the next deploy skip reading them."""

from __future__ import annotations

import posixpath
import threading
import time

from edgepack.remote.connector import Connector
from edgepack.remote.fingerprints import Record, fingerprint_links, hash_files
from edgepack.remote.layout import RELEASES

RACY_RETRIES, RACY_WAIT_S = 2, 0.01


class DeviceVerifier:
    """Hashes uploaded files on the device in the background while later files are uploading.

    One worker thread; each device command hashes every file queued since the previous one.
    """

    def __init__(self, connector: Connector, root: str, directory: str) -> None:
        self.connector, self.root, self.directory = connector, root, directory
        self.digests: dict[str, str] = {}
        self.entries: Record = {}
        self.count = 0
        self._pending: list[str] = []
        self._links: dict[str, tuple[str, str]] = {}
        """Hard links from fingerprinted files: path → (source fingerprint, sha256)."""
        self._pending_links: dict[str, tuple[str, str]] = {}
        self._ready = threading.Condition()
        self._closed = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="edgepack-verify", daemon=True)

    def __enter__(self) -> DeviceVerifier:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._close()

    def add(self, paths: list[str]) -> None:
        with self._ready:
            self._pending.extend(paths)
            self.count += len(paths)
            self._ready.notify()

    def add_links(self, links: dict[str, tuple[str, str]]) -> None:
        """Files hard-linked from a fingerprinted source: a ``stat`` shows them unchanged."""
        with self._ready:
            self._pending_links |= links
            self._links |= links
            self.count += len(links)
            self._ready.notify()

    def finish(self) -> dict[str, str]:
        self._close()
        if self._error is not None:
            raise self._error
        self._fingerprint_the_last_written()
        return self.digests

    def _fingerprint_the_last_written(self) -> None:
        """Files written within the file clock's tick before their hash are not recorded (a write
        in that tick after the stat would not move their ctime); a file system clock ticks every
        few ms, so hashing them again a moment later records them."""
        for _ in range(RACY_RETRIES):
            racy = [path for path in self.digests if path not in self.entries]
            if not racy:
                return
            time.sleep(RACY_WAIT_S)
            links = {path: self._links[path] for path in racy if path in self._links}
            hashed = [path for path in racy if path not in links]
            digests, entries = hash_files(self.connector, self.root, self.directory, hashed)
            linked, linked_entries = fingerprint_links(
                self.connector, self.root, self.directory, links
            )
            digests, entries = digests | linked, entries | linked_entries
            self.entries |= {p: e for p, e in entries.items() if digests[p] == self.digests[p]}

    def _close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify()
        self._thread.join()

    def _work(self) -> None:
        while True:
            batch, links = self._next_batch()
            if not batch and not links:
                return
            try:
                linked, entries = fingerprint_links(
                    self.connector, self.root, self.directory, links
                )
                # A link whose stat moved is hashed like an upload.
                batch += [path for path in links if path not in linked]
                digests, hashed_entries = hash_files(
                    self.connector, self.root, self.directory, batch
                )
                self.digests |= linked | digests
                self.entries |= entries | hashed_entries
            except BaseException as error:  # re-raised by finish() in the deploying thread
                self._error = error
                return

    def _next_batch(self) -> tuple[list[str], dict[str, tuple[str, str]]]:
        with self._ready:
            while not self._pending and not self._pending_links and not self._closed:
                self._ready.wait()
            batch, self._pending = self._pending, []
            links, self._pending_links = self._pending_links, {}
            return batch, links


def prune_and_restat(
    connector: Connector, root: str, release: str, pruned: list[str], record: Record
) -> Record:
    """Remove the ``pruned`` releases, then take ``release``'s ``record`` again by ``stat``:
    removing a release that shares files (hard links) with it moves their ctimes. A file with the
    same inode, size and mtime as the deploy just verified keeps its sha256; the deploy holds the
    lock, so that unlink was the only change."""
    connector.remove_trees([posixpath.join(root, RELEASES, name) for name in pruned])
    time.sleep(RACY_WAIT_S)  # the file clock moves past the unlinks: their ctimes can be recorded
    directory = posixpath.join(root, RELEASES, release)
    return fingerprint_links(connector, root, directory, record)[1]

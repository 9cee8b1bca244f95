"""Deleted image ids, shared by the processes of one machine: the embedded cache's delete mark.

Each process of ``srstore serve --workers N`` keeps its own in-process cache, so a delete
served by one process cannot reach the others' memory. It marks the id here instead (an
empty file in the data directory), and every process checks the mark on each hit and before
each write, so none serves, or caches again, an image deleted by another.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path

_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
SWEEP_INTERVAL_SECONDS = 60.0


class Tombstones:
    """A mark lives ``lifetime_seconds``: longer than a cache entry or a render can."""

    def __init__(
        self,
        directory: Path,
        lifetime_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = directory
        self.lifetime_seconds = lifetime_seconds
        self.clock = clock
        self._swept_at = clock()

    def mark(self, image_id: str) -> None:
        """Stamp the mark with this object's clock, the one ``marked`` and the sweep read."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path, now = self._path(image_id), self.clock()
        path.touch()
        os.utime(path, (now, now))
        if now - self._swept_at > SWEEP_INTERVAL_SECONDS:
            self._sweep()

    def marked(self, image_id: str) -> bool:
        try:
            marked_at = os.stat(self._path(image_id)).st_mtime
        except FileNotFoundError:
            return False
        return marked_at > self.clock() - self.lifetime_seconds

    def _path(self, image_id: str) -> Path:
        if not _ID.match(image_id):
            raise ValueError(f"not an image id: {image_id!r}")
        return self.directory / image_id

    def _sweep(self) -> None:
        """Forget marks older than their lifetime, so deletes do not pile up files."""
        self._swept_at = self.clock()
        oldest = self._swept_at - self.lifetime_seconds
        for entry in os.scandir(self.directory):
            try:
                if entry.stat().st_mtime <= oldest:
                    os.unlink(entry.path)
            except FileNotFoundError:
                continue  # another process swept it first

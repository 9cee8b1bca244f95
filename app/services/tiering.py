"""Tiering by access: an upload stays as it came while it is read, and is compacted when cold.

Reads are remembered cheaply: a read only sets an entry in this process's memory; every
``SRSTORE_ACCESS_FLUSH_SECONDS`` the last read of each image seen goes to the ledger in one
write (a Redis sorted set, or the SQLite file), where an earlier time never replaces a later
one, so any number of processes may report and a restart forgets at most one flush. Nothing
is written to the object store on a read.

A sweep every ``compact_after_idle / 8`` (at most a minute) asks the ledger for the images
last read (or uploaded) before ``now - compact_after_idle`` and hands each to compaction with
the cold policy and floor; once handed over, an image is no longer tracked. A cold image
read again is not expanded back (the trace showed no gain worth a second copy's CPU).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from config.settings import Settings
from ledger import Ledger, LedgerUnavailable

log = logging.getLogger(__name__)

SWEEP_BATCH = 100
MAX_SWEEP_SECONDS = 60.0

CompactCold = Callable[[str], Awaitable[None]]
"""Queue the compaction of a hot image to the cold policy and floor."""


class Tiering:
    def __init__(
        self,
        settings: Settings,
        ledger: Ledger,
        compact: CompactCold,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.ledger = ledger
        self.compact = compact
        self.clock = clock
        self._reads: dict[str, float] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def read(self, image_id: str) -> None:
        """A read of a hot image: one dictionary write, nothing else on the request path."""
        self._reads[image_id] = self.clock()

    async def uploaded(self, image_id: str) -> None:
        """A new hot image: tracked from its upload, as if read then."""
        self._reads[image_id] = self.clock()
        await self.flush()

    async def flush(self) -> None:
        reads, self._reads = self._reads, {}
        if not reads:
            return
        try:
            await self.ledger.touch(reads)
        except LedgerUnavailable as exc:
            log.warning("last reads not recorded (kept for the next flush): %s", exc)
            for image_id, at in reads.items():
                self._reads[image_id] = max(at, self._reads.get(image_id, 0.0))

    async def sweep(self) -> int:
        """Hand every image idle past the threshold to compaction; how many were."""
        await self.flush()
        before = self.clock() - self.settings.compact_after_idle
        handed = 0
        for image_id in await self.ledger.idle(before, SWEEP_BATCH):
            if image_id in self._reads:  # read since the flush above
                continue
            await self.compact(image_id)
            await self.ledger.forget(image_id)
            handed += 1
        return handed

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._every(self.settings.access_flush_seconds, self.flush)),
            asyncio.create_task(self._every(self._sweep_seconds(), self._sweep_logged)),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.flush()

    def _sweep_seconds(self) -> float:
        return min(MAX_SWEEP_SECONDS, self.settings.compact_after_idle / 8)

    async def _sweep_logged(self) -> None:
        try:
            if handed := await self.sweep():
                log.info("tiering: %d idle image(s) handed to compaction", handed)
        except Exception:
            log.exception("tiering sweep failed; the next one tries again")

    @staticmethod
    async def _every(seconds: float, action: Callable[[], Awaitable[object]]) -> None:
        while True:
            await asyncio.sleep(seconds)
            with contextlib.suppress(LedgerUnavailable):
                await action()

"""Admission control for cache misses: bounded renders, a bounded wait, then 503.

A refused or timed-out miss is told when to come back (``Retry-After``) from the backlog and
the rate at which renders have been finishing: the embedded default counts its own renders,
queue mode counts every completion the workers announce.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

RETRY_AFTER_BOUNDS = (1, 300)  # seconds: never "now", never "in an hour"


class Saturated(RuntimeError):
    """Too much is waiting to be rendered; the client should retry after ``retry_after`` s."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class QueueFull(Saturated):
    """So many renders are waiting that a new miss is refused at once."""


class CompactionBacklogFull(Saturated):
    """So many uploads wait for compaction that a new upload is refused before it is stored."""


class RenderTimeout(Saturated):
    """The miss was not rendered before its deadline."""


class Backlog:
    """Renders finished over the last ``window`` seconds: how long a backlog takes to clear."""

    def __init__(
        self,
        fallback_seconds: float,
        window: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fallback_seconds = fallback_seconds
        self.window = window
        self.clock = clock
        self._finished: deque[float] = deque()

    def finished(self) -> None:
        self._finished.append(self.clock())

    def retry_after(self, backlog: int) -> int:
        """Seconds until ``backlog`` renders are done at the recent rate (bounded)."""
        now = self.clock()
        while self._finished and self._finished[0] < now - self.window:
            self._finished.popleft()
        if not self._finished:
            seconds = self.fallback_seconds
        else:
            rate = len(self._finished) / max(now - self._finished[0], 1.0)
            seconds = backlog / rate
        low, high = RETRY_AFTER_BOUNDS
        return max(low, min(high, math.ceil(seconds)))


class RenderSlots:
    """At most ``concurrent`` renders at once; a miss waits at most ``wait_seconds`` for one.

    Beyond ``max_waiting`` waiting misses a new one is refused at once.
    """

    def __init__(
        self, concurrent: int, max_waiting: int, wait_seconds: float, backlog: Backlog
    ) -> None:
        self.concurrent = concurrent
        self.max_waiting = max_waiting
        self.wait_seconds = wait_seconds
        self.backlog = backlog
        self._slots = asyncio.Semaphore(concurrent)
        self._running = 0
        self._waiting = 0

    @property
    def queued(self) -> int:
        """Renders running or waiting for a slot."""
        return self._running + self._waiting

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self._slots.locked() and self._waiting >= self.max_waiting:
            raise QueueFull(
                f"{self._waiting} renders are already waiting",
                self.backlog.retry_after(self.queued),
            )
        self._waiting += 1
        try:
            async with asyncio.timeout(self.wait_seconds):
                await self._slots.acquire()
        except TimeoutError:
            raise RenderTimeout(
                f"no render slot freed within {self.wait_seconds:g} s",
                self.backlog.retry_after(self.queued),
            ) from None
        finally:
            self._waiting -= 1
        self._running += 1
        try:
            yield
        finally:
            self._running -= 1
            self._slots.release()
            self.backlog.finished()

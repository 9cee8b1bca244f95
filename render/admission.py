"""Admission control for cache misses: bounded renders, a bounded wait, then 503.

A refused or timed-out miss is told when to come back (``Retry-After``) from the backlog and
the rate at which renders have been finishing: the embedded default counts its own renders,
queue mode counts every completion the workers announce.

Slots are handed out fairly among clients (:class:`FairSlots`, the client named by
:data:`CLIENT`): a client that sends a burst of misses queues behind itself, not in front of
everyone else.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar

RETRY_AFTER_BOUNDS = (1, 300)  # seconds: never "now", never "in an hour"

# Who the work being admitted is for: set by the API around a render it starts.
CLIENT: ContextVar[str] = ContextVar("srstore_client", default="")
# Whether that work is heavy (estimated over SRSTORE_HEAVY_WORK_SECONDS): it then waits for
# and runs on a lane of its own, at a lower OS priority (render.priority).
HEAVY: ContextVar[bool] = ContextVar("srstore_heavy", default=False)


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


class FairSlots:
    """``slots`` pieces of work at once, handed out fairly among clients.

    When a slot frees it goes to the waiting client running the fewest (then to the one
    waiting longest), and a client never runs more than ``per_client`` at once.
    """

    def __init__(self, slots: int, per_client: int) -> None:
        self.free = slots
        self.per_client = per_client
        self._running: dict[str, int] = {}
        self._waiting: list[tuple[int, str, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def running(self, client: str) -> int:
        return self._running.get(client, 0)

    async def acquire(self, client: str, timeout: float) -> None:
        """A slot for ``client``, or ``TimeoutError`` after ``timeout`` seconds."""
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (next(self._order), client, granted)
        self._waiting.append(entry)
        self._dispatch()
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(granted)
        except BaseException:
            if granted.done():
                self.release(client)  # granted just as the wait ended: hand it on
            else:
                self._waiting.remove(entry)
                granted.cancel()
            raise

    def release(self, client: str) -> None:
        self.free += 1
        left = self.running(client) - 1
        if left:
            self._running[client] = left
        else:
            self._running.pop(client, None)
        self._dispatch()

    def _dispatch(self) -> None:
        while self.free > 0:
            eligible = [e for e in self._waiting if self.running(e[1]) < self.per_client]
            if not eligible:
                return
            chosen = min(eligible, key=lambda e: (self.running(e[1]), e[0]))
            self._waiting.remove(chosen)
            self.free -= 1
            self._running[chosen[1]] = self.running(chosen[1]) + 1
            chosen[2].set_result(None)


def share_of(slots: int, client_share: float) -> int:
    """The slots one client may run on at once: its share, and at least one."""
    return max(1, math.floor(slots * client_share))


class RenderSlots:
    """At most ``concurrent`` renders at once; a miss waits at most ``wait_seconds`` for one.

    Beyond ``max_waiting`` waiting misses a new one is refused at once. Slots go fairly to
    clients (:data:`CLIENT`), at most ``per_client`` to one.
    """

    def __init__(
        self,
        concurrent: int,
        max_waiting: int,
        wait_seconds: float,
        backlog: Backlog,
        per_client: int | None = None,
    ) -> None:
        self.concurrent = concurrent
        self.max_waiting = max_waiting
        self.wait_seconds = wait_seconds
        self.backlog = backlog
        self._slots = FairSlots(concurrent, per_client or concurrent)
        self._running = 0
        self._waiting = 0

    @property
    def queued(self) -> int:
        """Renders running or waiting for a slot."""
        return self._running + self._waiting

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        client = CLIENT.get()
        if self._slots.free == 0 and self._waiting >= self.max_waiting:
            raise QueueFull(
                f"{self._waiting} renders are already waiting",
                self.backlog.retry_after(self.queued),
            )
        self._waiting += 1
        try:
            await self._slots.acquire(client, self.wait_seconds)
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
            self._slots.release(client)
            self.backlog.finished()

"""Whether each dependency answers, refreshed in the background so that probes never wait.

A frozen object store (it accepts connections and never answers) used to hold ``/readyz`` and
``/metrics`` for 10 s each, past the kubelet's 3 s probe timeout and Prometheus's 10 s scrape
timeout. Here each dependency is pinged every ``interval`` seconds, one ping at a time and at
most ``timeout`` seconds each; the probes read the last answers and return at once.

A dependency counts as down after ``misses`` pings in a row went unanswered (two by default),
as a kubelet's ``failureThreshold`` would: one ping that a starved process could not finish
in time (the issue-23 soak saw three) does not take a replica out of service.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping

from cache import CacheUnavailable
from storage import ObjectNotFound, StorageUnavailable

log = logging.getLogger(__name__)

Ping = Callable[[], Awaitable[None]]
_DOWN = (TimeoutError, StorageUnavailable, ObjectNotFound, CacheUnavailable)


class DependencyMonitor:
    def __init__(
        self, pings: Mapping[str, Ping], interval: float, timeout: float, misses: int = 2
    ) -> None:
        self.pings = dict(pings)
        self.interval = interval
        self.timeout = timeout
        self.misses = misses
        self._up = dict.fromkeys(self.pings, False)
        self._missed = dict.fromkeys(self.pings, 0)
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def up(self) -> dict[str, bool]:
        """The last answer of each dependency (``False`` until it first answered)."""
        return dict(self._up)

    async def start(self) -> None:
        await self._check_all()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Ends on an event it checks every interval, not on cancellation alone (see
        ``ModelControl.announcements``)."""
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.interval)
            if not self._stop.is_set():
                await self._check_all()

    async def _check_all(self) -> None:
        await asyncio.gather(*(self._check(name, ping) for name, ping in self.pings.items()))

    async def _check(self, name: str, ping: Ping) -> None:
        try:
            await asyncio.wait_for(ping(), self.timeout)
        except _DOWN as exc:
            self._missed[name] += 1
            if self._up[name] and self._missed[name] >= self.misses:
                log.warning("%s stopped answering: %s", name, str(exc) or "timed out")
                self._up[name] = False
            return
        self._missed[name] = 0
        self._up[name] = True

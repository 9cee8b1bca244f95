"""CPU work apart from I/O, admitted by its estimated cost, with a share per client.

Renditions made from a stored copy, upload scoring and in-process renders used to run on the
default executor beside every object-store call and the readiness ping: eight AVIF
enlargements made ``/readyz`` fail on two probes in three. Now object-store I/O keeps the
default executor (sized by ``SRSTORE_IO_THREADS``) and CPU work runs on a pool of its own
(``SRSTORE_CPU_THREADS``), so it can never take the threads the store and the probes need.

Each piece of CPU work a request starts is first admitted against its estimated cost in
CPU-seconds (``imaging.costs``): at most ``SRSTORE_CPU_BACKLOG_SECONDS`` of work per CPU
thread may be admitted at once, and one client at most ``SRSTORE_CPU_CLIENT_SHARE`` of that.
Past either, the request is refused at once (503 ``cpu_busy`` or 429 ``client_busy``) with
a ``Retry-After`` computed from the work admitted ahead of it, rather than queued behind it.
Work that alone exceeds a bound is admitted when nothing else is, so every permitted request
can be served on an idle server.

Admitted work then waits for a thread fairly (``render.admission.FairSlots``): when one
frees, the waiting client running the least goes first, and no client runs on more than its
share of the threads; a wait past ``SRSTORE_REQUEST_DEADLINE_SECONDS`` is 503 ``cpu_busy``.
Heavy work (estimated over ``SRSTORE_HEAVY_WORK_SECONDS``) waits for and runs on a thread of
its own at a lower OS priority (``render.priority``), so it neither holds the ordinary
threads nor takes the cores from them.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import math
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from render.admission import RETRY_AFTER_BOUNDS, FairSlots, Saturated, share_of
from render.priority import HEAVY_NICENESS, niced_pool

T = TypeVar("T")


class CpuBusy(Saturated):
    """The CPU work already admitted would take too long to clear (HTTP 503)."""


class ClientBusy(Saturated):
    """This client already holds its share of the CPU work (HTTP 429)."""


def _retry_after(seconds: float) -> int:
    low, high = RETRY_AFTER_BOUNDS
    return max(low, min(high, math.ceil(seconds)))


class CpuAdmission:
    """Estimated CPU-seconds admitted and not yet finished, in all and per client."""

    def __init__(self, threads: int, backlog_seconds: float, client_share: float) -> None:
        self.threads = threads
        self.capacity = backlog_seconds * threads
        self.client_capacity = self.capacity * client_share
        self.admitted = 0.0
        self._by_client: dict[str, float] = {}

    def held_by(self, client: str) -> float:
        return self._by_client.get(client, 0.0)

    @contextlib.contextmanager
    def admit(self, client: str, cost: float) -> Iterator[None]:
        """Hold ``cost`` for the block, or refuse at once with the wait it would have had."""
        held = self.held_by(client)
        if held > 0 and held + cost > self.client_capacity:
            raise ClientBusy(
                f"this client already has {held:.1f} CPU-seconds of work under way",
                _retry_after(held / self.threads),
            )
        if self.admitted > 0 and self.admitted + cost > self.capacity:
            raise CpuBusy(
                f"{self.admitted:.1f} CPU-seconds of work are under way",
                _retry_after(self.admitted / self.threads),
            )
        self.admitted += cost
        self._by_client[client] = held + cost
        try:
            yield
        finally:
            self.admitted -= cost
            left = self._by_client[client] - cost
            if left <= 1e-9:
                del self._by_client[client]
            else:
                self._by_client[client] = left
            if self.admitted < 1e-9:
                self.admitted = 0.0


class CpuPool:
    """The pool CPU work runs on, behind :class:`CpuAdmission` and :class:`FairSlots`."""

    def __init__(
        self, threads: int, backlog_seconds: float, client_share: float, wait_seconds: float
    ) -> None:
        self.admission = CpuAdmission(threads, backlog_seconds, client_share)
        self.slots = FairSlots(threads, share_of(threads, client_share))
        self.heavy_slots = FairSlots(1, 1)
        self.wait_seconds = wait_seconds
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="cpu")
        self._heavy_pool = niced_pool(1, "cpu-heavy", HEAVY_NICENESS)

    async def call(self, client: str, work: Callable[[], T], heavy: bool = False) -> T:
        """``work()`` on the pool (the heavy lane if ``heavy``) in ``client``'s turn, for work
        already admitted. A caller that stops waiting (a disconnect) still holds its thread
        until the work ends: the CPU is spent either way."""
        slots, pool = (self.heavy_slots, self._heavy_pool) if heavy else (self.slots, self._pool)
        try:
            await slots.acquire(client, self.wait_seconds)
        except TimeoutError:
            raise CpuBusy(
                f"no CPU thread freed within {self.wait_seconds:g} s",
                _retry_after(self.wait_seconds),
            ) from None
        try:
            # In the caller's context, as asyncio.to_thread runs it: the request id of its log
            # lines, and the per-key account of its CPU (render.costs.account).
            context = contextvars.copy_context()
            future = asyncio.wrap_future(pool.submit(context.run, work))
            try:
                return await asyncio.shield(future)
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    await future
                raise
        finally:
            slots.release(client)

    def close(self) -> None:
        for pool in (self._pool, self._heavy_pool):
            pool.shutdown(wait=True, cancel_futures=True)

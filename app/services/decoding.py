"""Upload decoding on its own small pool, admitted against a memory budget.

Storage I/O runs on the default executor; decoding runs here, so a few expensive uploads
cannot starve every request that touches the store. Each upload's peak memory is estimated
from its header before any pixel is decoded (``imaging.decode_memory_bytes``) and reserved
from the process's budget while the upload is processed; an upload that does not fit waits
a little, then gets 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from imaging import ImageTooLarge

T = TypeVar("T")


class DecodeBusy(RuntimeError):
    """The decode budget stayed spent for the whole wait: the client should retry later."""


class DecodeGate:
    def __init__(self, threads: int, budget_bytes: int, wait_seconds: float) -> None:
        self.budget_bytes = budget_bytes
        self.wait_seconds = wait_seconds
        self.reserved_bytes = 0
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="decode")
        self._freed = asyncio.Event()

    @contextlib.asynccontextmanager
    async def reserve(self, cost_bytes: int) -> AsyncIterator[None]:
        """Hold ``cost_bytes`` of the budget for the block; 413 if it can never fit."""
        if cost_bytes > self.budget_bytes:
            raise ImageTooLarge(
                f"decoding this image needs about {cost_bytes // 2**20} MiB; the decode budget "
                f"(SRSTORE_DECODE_MEMORY_BUDGET_BYTES) is {self.budget_bytes // 2**20} MiB"
            )
        await self._wait_for_room(cost_bytes)
        try:
            yield
        finally:
            self.reserved_bytes -= cost_bytes
            self._freed.set()

    async def run(self, work: Callable[[], T]) -> T:
        """``work()`` on the decode pool. A caller that stops waiting (a disconnect) still
        waits for the work to end, so the memory it holds stays reserved until then. It runs
        in the caller's context: the per-key account of its CPU (``render.costs.account``)."""
        context = contextvars.copy_context()
        future = asyncio.wrap_future(self._pool.submit(context.run, work))
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await future
            raise

    async def _wait_for_room(self, cost_bytes: int) -> None:
        """The loop runs one task at a time: nothing comes between the last check and the add."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_seconds
        while self.reserved_bytes + cost_bytes > self.budget_bytes:
            self._freed.clear()
            try:
                await asyncio.wait_for(self._freed.wait(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise DecodeBusy(
                    f"{self.reserved_bytes // 2**20} MiB of decoding is under way; retry later"
                ) from None
        self.reserved_bytes += cost_bytes

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

"""Upload decoding on its own small pool, admitted against a memory budget.

Storage I/O runs on the default executor; decoding runs here, so a few expensive uploads
cannot starve every request that touches the store. Each upload's peak memory is estimated
from its header before any pixel is decoded (``imaging.decode_memory_bytes``) and reserved
from the process's budget; an upload that does not fit waits a little, then gets 503.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
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

    async def run(self, cost_bytes: int, work: Callable[[], T]) -> T:
        """``work()`` on the decode pool once ``cost_bytes`` of the budget are free."""
        if cost_bytes > self.budget_bytes:
            raise ImageTooLarge(
                f"decoding this image needs about {cost_bytes // 2**20} MiB; the decode budget "
                f"(SRSTORE_DECODE_MEMORY_BUDGET_BYTES) is {self.budget_bytes // 2**20} MiB"
            )
        loop = asyncio.get_running_loop()
        await self._reserve(cost_bytes, loop.time() + self.wait_seconds)
        future: Future[T] = self._pool.submit(work)
        # Released when the decode ends, not when its caller stops waiting (a disconnect).
        future.add_done_callback(lambda _: loop.call_soon_threadsafe(self._release, cost_bytes))
        return await asyncio.wrap_future(future)

    async def _reserve(self, cost_bytes: int, deadline: float) -> None:
        """The loop runs one task at a time: nothing comes between the last check and the add."""
        loop = asyncio.get_running_loop()
        while self.reserved_bytes + cost_bytes > self.budget_bytes:
            self._freed.clear()
            try:
                await asyncio.wait_for(self._freed.wait(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise DecodeBusy(
                    f"{self.reserved_bytes // 2**20} MiB of decoding is under way; retry later"
                ) from None
        self.reserved_bytes += cost_bytes

    def _release(self, cost_bytes: int) -> None:
        self.reserved_bytes -= cost_bytes
        self._freed.set()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

"""Concurrent callers asking for the same key share one computation."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class SingleFlight(Generic[T]):
    """The computation runs as its own task, so a caller that disconnects cancels only its wait."""

    def __init__(self) -> None:
        self._flights: dict[str, asyncio.Task[T]] = {}

    async def run(self, key: str, compute: Callable[[], Coroutine[Any, Any, T]]) -> T:
        task = self._flights.get(key)
        if task is None:
            task = asyncio.ensure_future(compute())
            self._flights[key] = task
            task.add_done_callback(lambda _: self._flights.pop(key, None))
        return await asyncio.shield(task)

    def in_flight(self) -> int:
        return len(self._flights)

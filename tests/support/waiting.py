"""Waiting for something a test can observe, instead of sleeping and hoping it happened."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable

POLL_SECONDS = 0.02


async def until(
    condition: Callable[[], bool | Awaitable[bool]], what: str, timeout: float = 30
) -> None:
    """Return as soon as ``condition`` holds (it may be a coroutine function); fail the test,
    naming ``what``, if it has not held within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        held = condition()
        if inspect.isawaitable(held):
            held = await held
        if held:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not observed within {timeout} s")
        await asyncio.sleep(POLL_SECONDS)

"""Waiting for an upload's background compaction by observing its ``/meta``, never by sleeping."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

POLL_SECONDS = 0.05


async def compacted(client: httpx.AsyncClient, image_id: str, timeout: float = 120) -> Any:
    """The image's metadata once its receipt is no longer ``pending``."""
    deadline = time.monotonic() + timeout
    while True:
        response = await client.get(f"/v1/images/{image_id}/meta")
        response.raise_for_status()
        meta = response.json()
        if (meta.get("receipt") or {}).get("state") != "pending":
            return meta
        if time.monotonic() > deadline:
            raise TimeoutError(f"{image_id} was still pending after {timeout} s")
        await asyncio.sleep(POLL_SECONDS)


def compacted_sync(client: httpx.Client, image_id: str, timeout: float = 120) -> Any:
    """:func:`compacted` for a blocking client (a real ``srstore serve`` process)."""
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(f"/v1/images/{image_id}/meta")
        response.raise_for_status()
        meta = response.json()
        if (meta.get("receipt") or {}).get("state") != "pending":
            return meta
        if time.monotonic() > deadline:
            raise TimeoutError(f"{image_id} was still pending after {timeout} s")
        time.sleep(POLL_SECONDS)


async def evict(app: Any, image_id: str) -> None:
    """Drop what compaction cached of an image, for tests of what a cold read does."""
    await app.state.image_service.cache.drop_image(image_id)

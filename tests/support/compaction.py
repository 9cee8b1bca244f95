"""Waiting for an upload's background compaction by observing its ``/meta``, never by sleeping."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from render.compaction import PENDING_PREFIX
from storage import ObjectStore

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


async def keys(store: ObjectStore, image_id: str) -> list[str]:
    """Every object the store holds for the image: its copy and any pending upload."""
    found = await store.list_keys("images/") + await store.list_keys(PENDING_PREFIX)
    return [key for key in found if key.endswith(image_id)]


async def until_pending_dropped(store: ObjectStore, image_id: str, timeout: float = 60) -> None:
    """Compaction deletes the pending upload last, right after the receipt is recorded and
    its metadata cached: then nothing of it is still running."""
    deadline = time.monotonic() + timeout
    while await keys(store, image_id) != [f"images/{image_id}"]:
        assert time.monotonic() < deadline, await keys(store, image_id)
        await asyncio.sleep(POLL_SECONDS)

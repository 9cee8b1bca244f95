"""Waiting for an upload's background compaction by observing its ``/meta``, never by sleeping."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx
from fastapi import FastAPI

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


class HeldCompactions:
    """Holds every compaction of ``app`` after scoring, before anything is written (its
    claim on the image taken), until released."""

    def __init__(self, app: FastAPI) -> None:
        self.compactor = app.state.image_service.compactions.compactor
        self.scored = asyncio.Event()
        self.release = asyncio.Event()
        score = self.compactor._score

        async def held(*args: object) -> object:
            result = await score(*args)
            self.scored.set()
            await self.release.wait()
            return result

        self.compactor._score = held


class GatedCompactions:
    """Holds every compaction of ``app`` before it claims the image, until the gate opens;
    ``outcomes`` collects what each one came to."""

    def __init__(self, app: FastAPI) -> None:
        self.compactor = app.state.image_service.compactions.compactor
        self.gate = asyncio.Event()
        self.outcomes: list[str] = []
        compact: Callable[[str, str], Any] = self.compactor.compact

        async def gated(image_id: str, model: str) -> str:
            await self.gate.wait()
            outcome = str(await compact(image_id, model))
            self.outcomes.append(outcome)
            return outcome

        self.compactor.compact = gated


# ``srstore``'s own leases, configured from SRSTORE_* like any process, holding the lease
# named on the command line until the process is killed.
_CLAIMER = """
import asyncio, sys
from cache import make_leases
from config.settings import Settings

async def main(lease):
    async with make_leases(Settings()).hold(lease) as held:
        print("held" if held else "refused", flush=True)
        await asyncio.sleep(3600)

asyncio.run(main(sys.argv[1]))
"""


def claimed_elsewhere(env: dict[str, str], lease: str) -> subprocess.Popen[str]:
    """Another process, configured by ``env``, once it holds ``lease`` (kill it to end)."""
    process = subprocess.Popen(
        [sys.executable, "-c", _CLAIMER, lease],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )
    assert process.stdout is not None
    if process.stdout.readline().strip() != "held":
        process.kill()
        process.wait()
        raise AssertionError(f"the other process could not take {lease}")
    return process

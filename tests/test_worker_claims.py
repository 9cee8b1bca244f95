"""A worker never holds more jobs than its concurrency, even while it adopts a dead worker's.

Issue 12, item 10: the read for new jobs and the claim of stale ones each took the free
slots, so a worker could hold two jobs with one slot, then asked Redis for a negative count
(``XREADGROUP count must be a positive integer``) and stalled until a job finished.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

import pytest
from redis import asyncio as aioredis

from cache import CacheKey
from render.queue import JobQueue, RenderJob
from tests.support.servers import RedisServer
from worker.consumer import Worker


class HeldEngine:
    """Renders nothing until released; counts the jobs it holds at once."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.holding = 0
        self.most_held = 0

    async def render_object(self, store: object, key: CacheKey) -> bytes:
        self.holding += 1
        self.most_held = max(self.most_held, self.holding)
        try:
            await self.release.wait()
            return b"rendered"
        finally:
            self.holding -= 1


class NoCache:
    async def get(self, key: CacheKey) -> bytes | None:
        return None

    async def put(self, key: CacheKey, data: bytes) -> None:
        return None


async def test_claiming_a_dead_workers_job_never_exceeds_the_concurrency(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    client = aioredis.from_url(redis_server.url, decode_responses=True)
    queue = JobQueue(client, f"srstore:render:{uuid.uuid4().hex[:8]}", 16)
    await queue.ensure_group()
    deadline = time.time() + 60
    await queue.enqueue(RenderJob(CacheKey("dead0000000000000000aa", "bicubic", "png"), deadline))
    assert len(await queue.read("dead-worker", 1, 10)) == 1  # it took the job, then died
    await asyncio.sleep(0.3)
    await queue.enqueue(RenderJob(CacheKey("live0000000000000000aa", "bicubic", "png"), deadline))
    engine = HeldEngine()
    worker = Worker("survivor", queue, engine, None, NoCache(), 1, 0.2)  # type: ignore[arg-type]
    stop = asyncio.Event()
    caplog.set_level(logging.WARNING, logger="worker.consumer")

    running = asyncio.create_task(worker.run(stop))
    await asyncio.sleep(2.0)  # both the read and the claim keeper have had their turns
    held_while_busy = engine.most_held
    engine.release.set()
    await asyncio.sleep(1.5)  # the second job (the dead worker's) is adopted and rendered
    stop.set()
    await asyncio.wait_for(running, 30)
    (shard,) = queue.shards
    pending = await client.xpending(shard, "workers")
    await client.aclose()

    assert held_while_busy == 1
    assert "cannot read jobs" not in caplog.text
    assert pending["pending"] == 0

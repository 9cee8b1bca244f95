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
from render.queue import GROUP, JobQueue, RenderJob
from tests.support.servers import RedisServer
from tests.support.waiting import until
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


async def held_by(client: aioredis.Redis, queue: JobQueue, consumer: str) -> list[dict]:
    """The jobs delivered to ``consumer`` and not yet acknowledged, with their idle times."""
    return await client.xpending_range(  # type: ignore[no-any-return]
        queue.shards[0], GROUP, min="-", max="+", count=100, consumername=consumer
    )


def job(name: str) -> RenderJob:
    return RenderJob(CacheKey(f"{name:0<22}", "bicubic", "png"), time.time() + 60)


async def test_claiming_a_dead_workers_job_never_exceeds_the_concurrency(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    client = aioredis.from_url(redis_server.url, decode_responses=True)
    queue = JobQueue(client, f"srstore:render:{uuid.uuid4().hex[:8]}", 16)
    await queue.ensure_group()
    await queue.enqueue(job("dead"))
    assert len(await queue.read("dead-worker", 1, 10)) == 1  # it took the job, then died

    async def stale() -> bool:
        return bool((await held_by(client, queue, "dead-worker"))[0]["time_since_delivered"] > 200)

    await until(stale, "the dead worker's job going stale")
    await queue.enqueue(job("live"))
    engine = HeldEngine()
    worker = Worker("survivor", queue, engine, None, NoCache(), 1, 0.2)  # type: ignore[arg-type]
    stop = asyncio.Event()
    caplog.set_level(logging.WARNING, logger="worker.consumer")
    running = asyncio.create_task(worker.run(stop))

    await until(lambda: engine.holding == 1, "the survivor adopting the dead worker's job")
    first = await held_by(client, queue, "survivor")
    last_idle, renewals = [first[0]["time_since_delivered"]], [0]

    async def renewed_twice() -> bool:  # the claim keeper has had two turns meanwhile
        idle = (await held_by(client, queue, "survivor"))[0]["time_since_delivered"]
        renewals[0] += idle < last_idle[0]
        last_idle[0] = idle
        return renewals[0] >= 2

    await until(renewed_twice, "two renewals of the survivor's claim")
    held_while_busy = (engine.most_held, len(await held_by(client, queue, "survivor")))
    engine.release.set()

    async def all_done() -> bool:
        return await queue.depth() == 0

    await until(all_done, "both jobs finishing")
    stop.set()
    await asyncio.wait_for(running, 30)
    pending = await client.xpending(queue.shards[0], GROUP)
    await client.aclose()

    assert held_while_busy == (1, 1)
    assert "cannot read jobs" not in caplog.text
    assert pending["pending"] == 0


async def test_a_busy_worker_reads_only_as_many_new_jobs_as_it_has_free_slots(
    redis_server: RedisServer,
) -> None:
    """Concurrency 2 with one job in hand: of three jobs that arrive together it takes one."""
    client = aioredis.from_url(redis_server.url, decode_responses=True)
    queue = JobQueue(client, f"srstore:render:{uuid.uuid4().hex[:8]}", 16)
    engine = HeldEngine()
    worker = Worker("busy", queue, engine, None, NoCache(), 2, 30.0)  # type: ignore[arg-type]
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    await queue.enqueue(job("first"))

    await until(lambda: engine.holding == 1, "the first job reaching the engine")
    async with client.pipeline(transaction=True) as pipe:  # one blocked read wakes to all 3
        for name in ("second", "third", "fourth"):
            pipe.xadd(queue.shards[0], job(name).fields())  # type: ignore[arg-type]
        await pipe.execute()
    await until(lambda: engine.holding == 2, "a second job reaching the engine")
    held = len(await held_by(client, queue, "busy"))
    engine.release.set()

    async def all_done() -> bool:
        return await queue.depth() == 0

    await until(all_done, "every job finishing")
    stop.set()
    await asyncio.wait_for(running, 30)
    await client.aclose()

    assert held == 2
    assert engine.most_held == 2

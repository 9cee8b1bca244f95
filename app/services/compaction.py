"""Compaction off the request path: where an acknowledged upload waits to be compacted.

Embedded mode (:class:`BackgroundCompactions`): a bounded pool inside ``srstore serve``, at
``SRSTORE_COMPACTION_THREADS`` at once, each waiting while renders are in flight. Queue mode
(:class:`QueueCompactions`): a job on the compactions' Redis stream, taken by ``srstore
worker`` when no render waits (see ``worker.consumer``).

In both, the work item is the durable ``pending/{id}`` object (see :mod:`render.compaction`),
not the in-memory queue or the stream entry: a sweep at start-up and every
``SRSTORE_COMPACTION_SWEEP_SECONDS`` lists ``pending/`` and queues what is not queued yet, so
a restart, a lost job or a compaction put back because a dependency was down is picked up
again. At most ``SRSTORE_COMPACTION_QUEUE_MAX`` uploads wait; beyond that an upload gets 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from redis.exceptions import RedisError

from app.services.ingest import ModelSource
from config.logs import REQUEST_ID
from config.settings import Settings
from keyspace import connect
from render import metrics
from render.admission import Backlog, CompactionBacklogFull, RenderSlots
from render.compaction import PENDING_PREFIX, CompactionRetry, Compactor
from render.queue import JobQueue, compaction_job, compaction_stream
from storage import ObjectStore, StorageUnavailable

log = logging.getLogger(__name__)

OBSERVE_SECONDS = 2.0  # how often the embedded pool refreshes its pending gauges
YIELD_POLL_SECONDS = 0.05
MAX_YIELD_SECONDS = 2.0  # a compaction waits at most this long for renders to finish


async def pending_ids(store: ObjectStore) -> list[str]:
    """Every upload whose compaction has not finished, from the store itself."""
    return [key.removeprefix(PENDING_PREFIX) for key in await store.list_keys(PENDING_PREFIX)]


class _Sweeping:
    """The sweep loop both modes share; ``sweep`` queues what the store says is pending."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def sweep(self) -> None:
        raise NotImplementedError

    async def _sweep_forever(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.sweep()
            except (StorageUnavailable, RedisError) as exc:
                log.warning("cannot look for pending compactions: %s; retrying", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._stopping.wait(), self.settings.compaction_sweep_seconds
                )

    async def _stop_tasks(self) -> None:
        self._stopping.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class BackgroundCompactions(_Sweeping):
    """The embedded mode's pool: in-memory order, durable work items."""

    def __init__(
        self,
        settings: Settings,
        compactor: Compactor,
        store: ObjectStore,
        models: ModelSource,
        renders: RenderSlots | None = None,
    ) -> None:
        super().__init__(settings)
        self.compactor = compactor
        self.store = store
        self.models = models
        self.renders = renders
        self.backlog = Backlog(fallback_seconds=settings.compaction_sweep_seconds)
        self._waiting: dict[str, float] = {}  # id -> when it was queued (monotonic)
        self._queue: asyncio.Queue[str] = asyncio.Queue()

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    async def admit(self) -> None:
        if len(self._waiting) >= self.settings.compaction_queue_max:
            raise CompactionBacklogFull(
                f"{len(self._waiting)} uploads are waiting for compaction",
                self.backlog.retry_after(len(self._waiting)),
            )

    async def submit(self, image_id: str) -> None:
        if image_id not in self._waiting:
            self._waiting[image_id] = time.monotonic()
            self._queue.put_nowait(image_id)
        self._observe()

    async def sweep(self) -> None:
        for image_id in await pending_ids(self.store):
            if len(self._waiting) >= self.settings.compaction_queue_max:
                break
            await self.submit(image_id)

    async def start(self) -> None:
        threads = self.settings.compaction_threads
        self._tasks = [asyncio.create_task(self._work()) for _ in range(threads)]
        self._tasks.append(asyncio.create_task(self._sweep_forever()))
        self._tasks.append(asyncio.create_task(self._observe_forever()))

    async def _work(self) -> None:
        while not self._stopping.is_set():
            image_id = await self._queue.get()
            REQUEST_ID.set(None)
            try:
                await self._yield_to_renders()
                outcome = await self.compactor.compact(image_id, self.models.label)
                log.info("compaction of %s: %s", image_id, outcome)
                if outcome == "busy":  # another process compacts it; it stays pending if that
                    continue  # one dies, and the next sweep queues it again
            except CompactionRetry as exc:
                log.warning("compaction of %s put back until the next sweep: %s", image_id, exc)
            except Exception:
                log.exception("compaction of %s failed; the next sweep tries again", image_id)
            else:
                self.backlog.finished()
            finally:
                self._waiting.pop(image_id, None)
                self._observe()

    async def _yield_to_renders(self) -> None:
        """Renders first: wait (a bounded time) until none is in flight."""
        deadline = time.monotonic() + MAX_YIELD_SECONDS
        while self.renders is not None and self.renders.queued and time.monotonic() < deadline:
            await asyncio.sleep(YIELD_POLL_SECONDS)

    async def _observe_forever(self) -> None:
        """The oldest pending age grows while nothing finishes: the alert must see it grow."""
        while not self._stopping.is_set():
            self._observe()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), OBSERVE_SECONDS)

    def _observe(self) -> None:
        metrics.COMPACTIONS_PENDING.set(len(self._waiting))
        oldest = min(self._waiting.values(), default=None)
        metrics.COMPACTION_OLDEST_SECONDS.set(0 if oldest is None else time.monotonic() - oldest)

    async def close(self) -> None:
        """Unfinished compactions stay pending in the store for the next start."""
        await self._stop_tasks()
        await asyncio.to_thread(self.compactor.close)
        await self.compactor.leases.close()


class QueueCompactions(_Sweeping):
    """Queue mode: compactions go to the workers through their own stream."""

    def __init__(self, settings: Settings, store: ObjectStore, models: ModelSource) -> None:
        super().__init__(settings)
        assert settings.redis_url, "queue mode needs SRSTORE_REDIS_URL"
        self.store = store
        self.models = models
        self.client = connect(settings.redis_url, settings.redis_cluster, decode_responses=True)
        self.queue = JobQueue(
            self.client,
            compaction_stream(settings.queue_stream),
            settings.compaction_queue_max,
        )
        self.backlog = Backlog(fallback_seconds=settings.compaction_sweep_seconds)

    async def admit(self) -> None:
        try:
            depth = await self.queue.depth()
        except RedisError:
            return  # the upload is still stored; the sweep queues its compaction later
        if depth >= self.queue.max_length:
            raise CompactionBacklogFull(
                f"{depth} uploads are waiting for compaction", self.backlog.retry_after(depth)
            )

    async def submit(self, image_id: str) -> None:
        job = compaction_job(image_id, self.models.label, REQUEST_ID.get() or "")
        try:
            await self.queue.enqueue(job)
        except RedisError as exc:
            log.warning("compaction of %s not queued (%s); the next sweep queues it", image_id, exc)

    async def sweep(self) -> None:
        for image_id in await pending_ids(self.store):
            if await self.queue.enqueue(compaction_job(image_id, self.models.label)) == "full":
                break
        metrics.COMPACTIONS_PENDING.set(await self.queue.depth())
        metrics.COMPACTION_OLDEST_SECONDS.set(await self.queue.oldest_age())

    async def start(self) -> None:
        await self.queue.ensure_group()
        self._tasks = [asyncio.create_task(self._sweep_forever())]

    async def close(self) -> None:
        await self._stop_tasks()
        await self.client.aclose()
